"""The `estimate` job as data: resolve a model, pick the GPU, run the memory model.

Shared by `gpushare estimate` and the planner so both read models the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpushare.devices.base import Gpu
from gpushare.errors import InputError
from gpushare.hfconfig import ModelArch
from gpushare.memory import (
    DTYPE_BYTES,
    Coefficients,
    Estimate,
    GpuTarget,
    MeasuredTerms,
    ServeSettings,
    estimate,
    minimum_for_target,
    model_dtype,
)
from gpushare.memory.mxfp4 import is_gpt_oss
from gpushare.memory.vision import is_tower_tensor
from gpushare.resolve import HubClient, ResolvedModel, resolve_model
from gpushare.weights import weights_from_header

DEFAULT_GPU = "H100"


def gpu_target(gpu: Gpu) -> GpuTarget:
    """The memory model's view of a GPU from the inventory/catalog's."""
    from gpushare.catalog.gpus import compute_capability_of

    return GpuTarget(
        name=gpu.name,
        cuda_total_bytes=gpu.cuda_total_bytes,
        nvml_total_bytes=gpu.total_bytes,
        is_a100="a100" in gpu.name.lower(),  # vLLM's own test of the name (engine/arg_utils.py)
        compute_capability=compute_capability_of(gpu.name),
    )


def parse_one_gpu(spec: str, what: str = "--gpu") -> Gpu:
    from gpushare.catalog.gpus import parse_gpu_spec

    gpus = parse_gpu_spec(spec, what)
    if len(gpus) != 1:
        raise InputError(f"{what} {spec!r}: give one GPU (a name such as H100 or a size such as 80GiB)")
    return gpus[0]


@dataclass(frozen=True)
class ModelFacts:
    """A resolved model with its normalised architecture and exact weights when known."""

    resolved: ResolvedModel
    arch: ModelArch
    # Header bytes by serving dtype width: a plan asks for them once per estimate, hundreds of times.
    _header_bytes: dict[int, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def weights_bytes(self, settings: ServeSettings) -> int | None:
        """Exact bytes from safetensors headers (tp=1, no online quantization), else None."""
        if self.resolved.tensors is None or settings.tensor_parallel_size != 1 or settings.quantization:
            return None
        if is_gpt_oss(self.arch):
            return None  # MXFP4 experts are re-laid out for the kernel: the config decides (memory/mxfp4.py)
        dtype_bytes = DTYPE_BYTES[model_dtype(self.arch, settings)]
        if dtype_bytes not in self._header_bytes:
            # a vision tower is sized from the config whether vLLM builds it or not (LLaVA builds
            # fewer layers than the checkpoint holds): its tensors are left out here
            tensors = [t for t in self.resolved.tensors if not is_tower_tensor(t.name)]
            self._header_bytes[dtype_bytes] = weights_from_header(tensors, self.arch, dtype_bytes)
        return self._header_bytes[dtype_bytes]


def load_model(reference: str, hub: HubClient | None = None) -> ModelFacts:
    resolved = resolve_model(reference, hub)
    return ModelFacts(resolved, resolved.arch())


def run_estimate(
    facts: ModelFacts,
    gpu: GpuTarget,
    settings: ServeSettings,
    *,
    gpu_memory_utilization: float | None = None,
    kv_cache_memory_bytes: int | None = None,
    concurrency: int | None = None,
    kv_tokens: int | None = None,
    coeff: Coefficients | None = None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """Forward when given a utilization or KV size, inverse when given a capacity target.
    `measured`: a calibration's terms for this model, GPU and settings (gpushare calibrate)."""
    weights = facts.weights_bytes(settings)
    if concurrency is not None or kv_tokens is not None:
        if gpu_memory_utilization is not None or kv_cache_memory_bytes is not None:
            raise InputError(
                "give either a capacity target (--concurrency/--kv-tokens) or a size "
                "(--gpu-memory-utilization/--kv-cache-memory-bytes), not both"
            )
        return minimum_for_target(
            facts.arch,
            gpu,
            settings,
            concurrency=concurrency,
            kv_tokens=kv_tokens,
            weights_bytes=weights,
            coeff=coeff,
            measured=measured,
        )
    return estimate(
        facts.arch,
        gpu,
        settings,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        weights_bytes=weights,
        coeff=coeff,
        measured=measured,
    )
