"""The memory model's answers: one vLLM instance on one GPU, forward (from a utilization or a
fixed KV size to KV tokens and the footprint) and inverse (from a capacity target to the least
utilization and KV size).

    num_blocks  = kv_budget // (page_bytes × layers per KV group)      (memory/kv.py)
    kv_budget   = requested − budget overhead                          (memory/budget.py)

Pure: no I/O. Terms that vLLM measures rather than computes (peak activation, CUDA graphs,
non-torch, context) come from `Coefficients`, fitted on real runs and recorded in BENCHMARKS.md,
or from a calibration's `MeasuredTerms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gpushare.architectures import check_runner, check_served
from gpushare.errors import DoesNotFitError, InputError, KvCacheTooSmallError
from gpushare.hfconfig import ModelArch
from gpushare.memory.activation import (
    activation_bytes,
    encoder_warmup_bytes,
    mla_dummy_bytes,
    moe_mla_activation_bytes,
    moe_workspace_bytes,
    sampler_warmup_bytes,
    v1_runner_sampler_bytes,
)
from gpushare.memory.budget import Budget, requested_bytes, utilization_for
from gpushare.memory.coefficients import Coefficients, MeasuredTerms
from gpushare.memory.cudagraphs import cuda_graph_bytes, cudagraphs_in_budget, v1_cudagraph_estimate_bytes
from gpushare.memory.kv import KvLayout, kv_layout, tokens_for_blocks
from gpushare.memory.multimodal import encoder_inputs_bytes, serve_time_note, v1_encoder_profile
from gpushare.memory.mxfp4 import gpt_oss_workspace_bytes, is_gpt_oss, mxfp4_backend
from gpushare.memory.parallel import PARALLEL_NOTE, nccl_communicators, parallel_terms
from gpushare.memory.settings import (
    DTYPE_BYTES,
    SETTING_RULES,
    V1_MOE_NOTE,
    GpuTarget,
    ServeSettings,
    default_utilization,
    model_dtype,
    moe_on_v1_runner,
    with_batching_defaults,
)
from gpushare.memory.weights import weights_on_gpu
from gpushare.units import format_bytes


class TargetTooLargeError(DoesNotFitError):
    """The capacity target needs more than the GPU's whole memory inside vLLM's budget."""

    def __init__(self, message: str, hint: str, needed_bytes: int) -> None:
        super().__init__(message, hint)
        self.needed_bytes = needed_bytes


@dataclass(frozen=True)
class Estimate:
    """One instance of one model on one GPU (per GPU when tensor parallel). All sizes in bytes.

    The terms around the KV cache are in `budget`; the properties below read them from there."""

    model: str
    gpu: str
    vllm_version: str
    dtype: str
    kv_cache_dtype: str
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    tensor_parallel_size: int
    block_size: int
    budget: Budget
    weights_source: str
    kv_bytes_per_token: int
    kv_block_bytes: int
    requested_bytes: int
    kv_cache_bytes: int
    kv_cache_tokens: int
    num_blocks: int
    max_concurrency: float
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None
    process_bytes: int
    cuda_total_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def weights_bytes(self) -> int:
        return self.budget.weights_bytes

    @property
    def has_kv_cache(self) -> bool:
        """False for an encoder-only model, which vLLM serves with no KV cache."""
        return self.kv_block_bytes > 0

    @property
    def activation_bytes(self) -> int:
        return self.budget.activation_bytes

    @property
    def non_torch_bytes(self) -> int:
        return self.budget.non_torch_bytes

    @property
    def cuda_graph_bytes(self) -> int:
        return self.budget.cuda_graph_bytes

    @property
    def cuda_graph_in_budget(self) -> bool:
        return self.budget.cuda_graph_in_budget

    @property
    def overhead_bytes(self) -> int:
        """Context and handles outside vLLM's budget (CUDA graphs too, where it does not count them)."""
        return self.budget.outside_bytes

    def to_json(self) -> dict[str, Any]:
        """The estimate as `gpushare estimate --json` prints it (and each planned instance carries).
        `cuda_graph_estimate_bytes` only where vLLM subtracts an estimate of its own for the graphs
        (`Budget.cuda_graph_estimate_bytes`), so the other estimates' JSON keeps its keys."""
        graph_estimate = self.budget.cuda_graph_estimate_bytes
        return {
            "model": self.model,
            "gpu": self.gpu,
            "vllm_version": self.vllm_version,
            "dtype": self.dtype,
            "kv_cache_dtype": self.kv_cache_dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "tensor_parallel_size": self.tensor_parallel_size,
            "block_size": self.block_size,
            "weights_bytes": self.weights_bytes,
            "weights_source": self.weights_source,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_block_bytes": self.kv_block_bytes,
            "activation_bytes": self.activation_bytes,
            "non_torch_bytes": self.non_torch_bytes,
            "cuda_graph_bytes": self.cuda_graph_bytes,
            "cuda_graph_in_budget": self.cuda_graph_in_budget,
            **({"cuda_graph_estimate_bytes": graph_estimate} if graph_estimate is not None else {}),
            "overhead_bytes": self.overhead_bytes,
            "parallel_bytes": self.budget.parallel_bytes,
            "requested_bytes": self.requested_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "kv_cache_tokens": self.kv_cache_tokens,
            "num_blocks": self.num_blocks,
            "max_concurrency": self.max_concurrency,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "process_bytes": self.process_bytes,
            "cuda_total_bytes": self.cuda_total_bytes,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        """Read back what `to_json` wrote (a plan file); `Estimate.from_json(e.to_json()) == e`.

        The budget's context is not written on its own: `overhead_bytes` is the context plus the
        TP buffers and the CUDA graphs beyond what vLLM reserves for them (`Budget.outside_bytes`),
        so it comes back from those. A file written before `parallel_bytes` existed has none (its
        TP buffers, if any, were inside the budget's non-torch). Raises KeyError/TypeError/
        ValueError on a malformed object (the caller names the file)."""
        graph_estimate = data.get("cuda_graph_estimate_bytes")
        budget = Budget(
            weights_bytes=int(data["weights_bytes"]),
            activation_bytes=int(data["activation_bytes"]),
            non_torch_bytes=int(data["non_torch_bytes"]),
            cuda_graph_bytes=int(data["cuda_graph_bytes"]),
            cuda_graph_in_budget=bool(data["cuda_graph_in_budget"]),
            context_bytes=0,
            cuda_graph_estimate_bytes=None if graph_estimate is None else int(graph_estimate),
            parallel_bytes=int(data.get("parallel_bytes", 0)),
        )
        budget = replace(budget, context_bytes=int(data["overhead_bytes"]) - budget.outside_bytes)
        kv_fixed = data["kv_cache_memory_bytes"]
        return cls(
            model=str(data["model"]),
            gpu=str(data["gpu"]),
            vllm_version=str(data["vllm_version"]),
            dtype=str(data["dtype"]),
            kv_cache_dtype=str(data["kv_cache_dtype"]),
            max_model_len=int(data["max_model_len"]),
            max_num_seqs=int(data["max_num_seqs"]),
            max_num_batched_tokens=int(data["max_num_batched_tokens"]),
            tensor_parallel_size=int(data["tensor_parallel_size"]),
            block_size=int(data["block_size"]),
            budget=budget,
            weights_source=str(data["weights_source"]),
            kv_bytes_per_token=int(data["kv_bytes_per_token"]),
            kv_block_bytes=int(data["kv_block_bytes"]),
            requested_bytes=int(data["requested_bytes"]),
            kv_cache_bytes=int(data["kv_cache_bytes"]),
            kv_cache_tokens=int(data["kv_cache_tokens"]),
            num_blocks=int(data["num_blocks"]),
            max_concurrency=float(data["max_concurrency"]),
            gpu_memory_utilization=float(data["gpu_memory_utilization"]),
            kv_cache_memory_bytes=None if kv_fixed is None else int(kv_fixed),
            process_bytes=int(data["process_bytes"]),
            cuda_total_bytes=int(data["cuda_total_bytes"]),
            notes=tuple(str(n) for n in data["notes"]),
        )


@dataclass(frozen=True)
class _Fixed:
    """Everything that does not depend on the KV size."""

    dtype: str
    max_model_len: int
    num_seqs: int
    batched: int
    layout: KvLayout | None  # None: an encoder-only model, no KV cache
    weights_source: str
    budget: Budget
    notes: tuple[str, ...] = ()


def _fixed(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    coeff: Coefficients,
    weights_override: int | None,
    measured: MeasuredTerms | None = None,
) -> _Fixed:
    if settings.tensor_parallel_size < 1:
        raise InputError("tensor_parallel_size must be ≥ 1")
    if arch.num_attention_heads % settings.tensor_parallel_size:
        raise InputError(
            f"{arch.name}: {arch.num_attention_heads} attention heads do not split over "
            f"tensor_parallel_size {settings.tensor_parallel_size}",
            hint="pick a tensor_parallel_size that divides the number of attention heads",
        )
    served_note = check_served(
        arch.name,
        arch.architectures,
        settings.vllm_version,
        exact_weights=weights_override is not None or measured is not None,
    )
    check_runner(arch.name, arch.row, settings.runner, settings.task)
    notes = (served_note,) if served_note else ()
    dtype = model_dtype(arch, settings)
    dtype_bytes = DTYPE_BYTES[dtype]
    max_len = settings.max_model_len or arch.max_position_embeddings
    if max_len > arch.max_position_embeddings:
        raise InputError(
            f"{arch.name}: max_model_len {max_len} is above the model's limit "
            f"(max_position_embeddings {arch.max_position_embeddings})",
            hint=f"use --max-model-len {arch.max_position_embeddings} or less",
        )
    pinned = with_batching_defaults(replace(settings, max_model_len=max_len), gpu, arch)
    assert pinned.max_num_seqs is not None and pinned.max_num_batched_tokens is not None
    num_seqs, batched = pinned.max_num_seqs, pinned.max_num_batched_tokens
    tp = settings.tensor_parallel_size
    weights, source = weights_on_gpu(arch, settings, gpu, weights_override)
    non_torch = coeff.non_torch_bytes  # TP adds nothing inside the budget (memory/parallel.py)
    parallel = parallel_terms(arch, tp, gpu.compute_capability, coeff)
    if arch.encoder_only:
        return _encoder_fixed(
            arch, pinned, coeff, dtype, weights, source, non_torch, parallel.outside_bytes, measured, notes
        )
    layout = kv_layout(arch, settings, gpu, max_len, batched)
    in_budget = cudagraphs_in_budget(settings, arch)
    if measured is not None:
        if measured.outside_bytes is None:
            sampler = sampler_warmup_bytes(arch, batched, num_seqs, coeff, settings.runner)
            # the fitted context and sampler, net of the measured activation pool freed after profiling
            context = coeff.context_bytes + max(0, sampler - measured.activation_bytes)
            parallel_bytes = parallel.outside_bytes
        else:
            context = measured.outside_bytes  # the sampler warm-up and any TP buffers are inside it
            parallel_bytes = 0
        budget = Budget(
            weights_bytes=measured.weights_bytes,
            activation_bytes=measured.activation_bytes,
            non_torch_bytes=measured.non_torch_bytes,
            cuda_graph_bytes=measured.cuda_graph_bytes,
            cuda_graph_in_budget=in_budget,
            context_bytes=context,
            parallel_bytes=parallel_bytes,
        )
        return _Fixed(dtype, max_len, num_seqs, batched, layout, "calibration", budget, notes)
    activation = activation_bytes(arch, dtype_bytes, batched, tp, coeff, settings.runner)
    graphs = cuda_graph_bytes(arch, settings, num_seqs, batched, coeff)
    graphs_estimate = None
    if is_gpt_oss(arch):
        kept = gpt_oss_workspace_bytes(arch, tp, mxfp4_backend(gpu.compute_capability), batched)
    else:
        kept = moe_workspace_bytes(arch, dtype_bytes, batched, tp)  # 0 without MoE
    v1_runner = moe_on_v1_runner(arch)
    if v1_runner and settings.runner == "generate":
        activation = max(activation, kept + v1_runner_sampler_bytes(arch, dtype_bytes, batched, num_seqs))
        if in_budget:
            graphs_estimate = v1_cudagraph_estimate_bytes(
                arch, settings, num_seqs, batched, dtype_bytes, coeff
            )
    elif arch.moe is not None or arch.mla is not None:
        mla_dummy = mla_dummy_bytes(arch, dtype_bytes, max_len, num_seqs, layout.block_size, tp)
        moe_mla = moe_mla_activation_bytes(arch, dtype_bytes, batched, tp, kept, mla_dummy)
        activation = max(activation, moe_mla)
        if graphs:
            # piecewise captures run MLA without metadata too: the dummy's block stays reserved
            graphs += mla_dummy
    sampler = sampler_warmup_bytes(arch, batched, num_seqs, coeff, settings.runner)
    context = coeff.context_bytes + max(0, sampler - (activation - kept))
    if arch.vision is not None:
        if v1_runner:
            profiled = v1_encoder_profile(arch, settings, dtype_bytes, batched, num_seqs, max_len)
            if profiled is not None:
                outputs, tower_peak, _ = profiled
                activation = max(activation + outputs, tower_peak)
        else:
            context += encoder_inputs_bytes(arch, settings, batched, dtype_bytes)
        note = serve_time_note(arch, settings, v1_runner, num_seqs, max_len)
        notes = (*notes, note) if note else notes
    budget = Budget(
        weights_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=graphs,
        cuda_graph_in_budget=in_budget,
        # the sampler warm-up beyond the activation pool freed after profiling (less the buffers
        # vLLM keeps: the MoE workspace)
        context_bytes=context,
        parallel_bytes=parallel.outside_bytes,
        cuda_graph_estimate_bytes=graphs_estimate,
    )
    return _Fixed(dtype, max_len, num_seqs, batched, layout, source, budget, notes)


ENCODER_NOTE = (
    "encoder-only pooling model: vLLM keeps no KV cache and runs no memory profile, so "
    "--gpu-memory-utilization only gates its start (free ≥ utilization × total) and a KV size or "
    "target has no effect"
)
ENCODER_GRAPHS_NOTE = (
    "its CUDA-graph term (torch.compile's first run and the graph pool, PIECEWISE) was measured on "
    "bge-m3 only (H200, vLLM 0.26.0); `gpushare calibrate` measures it"
)


def _encoder_fixed(
    arch: ModelArch,
    pinned: ServeSettings,
    coeff: Coefficients,
    dtype: str,
    weights: int,
    source: str,
    non_torch: int,
    parallel_bytes: int,
    measured: MeasuredTerms | None,
    notes: tuple[str, ...],
) -> _Fixed:
    """An encoder-only model (bge-m3, rerankers, BERT): no KV cache, so no profile run and no
    budget to size (v1/engine/core.py L274-290: has_kv_cache false → available memory 0, no
    determine_available_memory). The process holds the context, the weights, non-torch memory,
    the final warm-up's blocks and the CUDA graphs."""
    assert pinned.max_model_len is not None and pinned.max_num_batched_tokens is not None
    assert pinned.max_num_seqs is not None
    max_len, batched, num_seqs = pinned.max_model_len, pinned.max_num_batched_tokens, pinned.max_num_seqs
    if batched < max_len:
        # config/scheduler.py L274-285: without chunked prefill a batch must hold a whole request.
        raise InputError(
            f"{arch.name}: max_num_batched_tokens {batched} is below max_model_len {max_len}; vLLM "
            "refuses that for an encoder-only model (it has no chunked prefill)",
            hint=f"use --max-num-batched-tokens {max_len} or more, or leave it to vLLM",
        )
    notes = (*notes, ENCODER_NOTE)
    if measured is not None:
        budget = Budget(
            weights_bytes=measured.weights_bytes,
            activation_bytes=0,
            non_torch_bytes=measured.non_torch_bytes,
            cuda_graph_bytes=measured.cuda_graph_bytes,
            cuda_graph_in_budget=False,
            context_bytes=coeff.context_bytes if measured.outside_bytes is None else measured.outside_bytes,
            parallel_bytes=parallel_bytes if measured.outside_bytes is None else 0,
        )
        return _Fixed(dtype, max_len, num_seqs, batched, None, "calibration", budget, notes)
    graphs = cuda_graph_bytes(arch, pinned, num_seqs, batched, coeff)
    if graphs:
        notes = (*notes, ENCODER_GRAPHS_NOTE)
    held = encoder_warmup_bytes(arch, DTYPE_BYTES[dtype], batched, num_seqs, coeff)
    budget = Budget(
        weights_bytes=weights,
        activation_bytes=0,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=graphs,
        cuda_graph_in_budget=False,
        context_bytes=coeff.context_bytes + held,
        parallel_bytes=parallel_bytes,
    )
    return _Fixed(dtype, max_len, num_seqs, batched, None, source, budget, notes)


def _encoder_estimate(
    arch: ModelArch, gpu: GpuTarget, settings: ServeSettings, f: _Fixed, utilization: float
) -> Estimate:
    """The encoder-only answer: no KV cache; the process is its fixed footprint whatever the
    utilization (which vLLM only checks against free memory at start)."""
    return Estimate(
        model=arch.name,
        gpu=gpu.name,
        vllm_version=settings.vllm_version,
        dtype=f.dtype,
        kv_cache_dtype=settings.kv_cache_dtype,
        max_model_len=f.max_model_len,
        max_num_seqs=f.num_seqs,
        max_num_batched_tokens=f.batched,
        tensor_parallel_size=settings.tensor_parallel_size,
        block_size=settings.block_size or 16,
        budget=f.budget,
        weights_source=f.weights_source,
        kv_bytes_per_token=0,
        kv_block_bytes=0,
        requested_bytes=requested_bytes(utilization, gpu.cuda_total_bytes),
        kv_cache_bytes=0,
        kv_cache_tokens=0,
        num_blocks=0,
        max_concurrency=float(f.num_seqs),
        gpu_memory_utilization=utilization,
        kv_cache_memory_bytes=None,
        process_bytes=f.budget.overhead_bytes + f.budget.outside_bytes,
        cuda_total_bytes=gpu.cuda_total_bytes,
        notes=(*f.notes, *_parallel_notes(arch, settings, f.budget)),
    )


def _parallel_notes(arch: ModelArch, settings: ServeSettings, budget: Budget) -> tuple[str, ...]:
    """The note every estimate with modelled TP buffers carries (a calibration's measured outside
    bytes already hold them: no note)."""
    if not budget.parallel_bytes:
        return ()
    comms = nccl_communicators(arch, settings.tensor_parallel_size)
    return (PARALLEL_NOTE.format(size=format_bytes(budget.parallel_bytes), comms=comms),)


def _finish(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    f: _Fixed,
    utilization: float,
    kv_budget: int,
    kv_fixed: int | None,
    notes: tuple[str, ...] = (),
) -> Estimate:
    layout = f.layout
    assert layout is not None
    notes = (*f.notes, *notes)
    if moe_on_v1_runner(arch) and f.weights_source != "calibration":
        notes = (*notes, V1_MOE_NOTE)
    notes = (*notes, *_parallel_notes(arch, settings, f.budget))
    num_blocks = max(0, kv_budget // layout.kv_block_bytes)
    kv_bytes = num_blocks * layout.kv_block_bytes
    requested = requested_bytes(utilization, gpu.cuda_total_bytes)
    # With a fixed KV size vLLM uses what it needs; otherwise the KV cache fills the request.
    in_use = f.budget.overhead_bytes + kv_bytes if kv_fixed is not None else requested
    return Estimate(
        model=arch.name,
        gpu=gpu.name,
        vllm_version=settings.vllm_version,
        dtype=f.dtype,
        kv_cache_dtype=settings.kv_cache_dtype,
        max_model_len=f.max_model_len,
        max_num_seqs=f.num_seqs,
        max_num_batched_tokens=f.batched,
        tensor_parallel_size=settings.tensor_parallel_size,
        block_size=layout.block_size,
        budget=f.budget,
        weights_source=f.weights_source,
        kv_bytes_per_token=layout.kv_bytes_per_token,
        kv_block_bytes=layout.kv_block_bytes,
        requested_bytes=requested,
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=tokens_for_blocks(layout, num_blocks, f.max_model_len),
        num_blocks=num_blocks,
        max_concurrency=round(num_blocks / layout.blocks_per_request, 2),
        gpu_memory_utilization=utilization,
        kv_cache_memory_bytes=kv_fixed,
        process_bytes=in_use + f.budget.outside_bytes,
        cuda_total_bytes=gpu.cuda_total_bytes,
        notes=notes,
    )


def _require_one_request(arch: ModelArch, e: Estimate, layout: KvLayout, what: str) -> None:
    """vLLM refuses to start when one request of max_model_len does not fit (kv_cache_utils)."""
    if e.num_blocks < layout.blocks_per_request:
        short = max(0, layout.one_request_bytes() - e.kv_cache_bytes)
        if e.kv_cache_bytes <= 0:
            detail = (
                f"weights {format_bytes(e.weights_bytes)} + activation {format_bytes(e.activation_bytes)} "
                f"leave no room for a KV cache in {format_bytes(e.requested_bytes)}"
            )
        else:
            detail = (
                f"its KV cache ({e.kv_cache_tokens} tokens) cannot hold one request of "
                f"max_model_len {e.max_model_len}, short by {format_bytes(short)}"
            )
        raise KvCacheTooSmallError(
            f"{arch.name} on {e.gpu} with {what}: {detail}",
            hint="raise --gpu-memory-utilization, lower --max-model-len, or use --kv-cache-dtype fp8",
        )


def estimate(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    *,
    gpu_memory_utilization: float | None = None,
    kv_cache_memory_bytes: int | None = None,
    weights_bytes: int | None = None,
    coeff: Coefficients | None = None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """Forward: from a utilization (or a fixed KV size) to KV bytes, tokens and the footprint."""
    coeff = coeff or Coefficients()
    f = _fixed(arch, gpu, settings, coeff, weights_bytes, measured)
    util = (
        gpu_memory_utilization
        if gpu_memory_utilization is not None
        else default_utilization(settings.vllm_version)
    )
    if not 0 < util <= 1:
        raise InputError(f"gpu_memory_utilization must be in (0, 1], got {util}")
    if f.layout is None:
        return _encoder_estimate(arch, gpu, settings, f, util)
    if kv_cache_memory_bytes is not None:
        budget = kv_cache_memory_bytes
        what = f"--kv-cache-memory-bytes {kv_cache_memory_bytes}"
    else:
        budget = f.budget.kv_budget_bytes(util, gpu.cuda_total_bytes)
        what = f"gpu_memory_utilization {util}"
    e = _finish(arch, gpu, settings, f, util, budget, kv_cache_memory_bytes)
    _require_one_request(arch, e, f.layout, what)
    return e


def minimum_for_target(
    arch: ModelArch,
    gpu: GpuTarget,
    settings: ServeSettings,
    *,
    concurrency: int | None = None,
    kv_tokens: int | None = None,
    weights_bytes: int | None = None,
    coeff: Coefficients | None = None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """Inverse: the least gpu_memory_utilization (and matching --kv-cache-memory-bytes) that gives
    `concurrency` requests of max_model_len, or `kv_tokens` tokens of KV cache."""
    coeff = coeff or Coefficients()
    f = _fixed(arch, gpu, settings, coeff, weights_bytes, measured)
    layout = f.layout
    if (concurrency is None) == (kv_tokens is None):
        raise InputError("give exactly one target: concurrent requests or KV tokens")
    if layout is None:  # no KV cache: the target needs nothing beyond the fixed footprint
        return _encoder_estimate(arch, gpu, settings, f, f.budget.utilization_for(0, gpu.cuda_total_bytes))
    if concurrency is not None:
        if (problem := SETTING_RULES["concurrency"].problem(concurrency)) is not None:
            raise InputError(f"concurrency: {problem}")
        blocks = concurrency * layout.blocks_per_request
    else:
        assert kv_tokens is not None
        if (problem := SETTING_RULES["kv_tokens"].problem(kv_tokens)) is not None:
            raise InputError(f"kv_tokens: {problem}")
        blocks = layout.blocks_for_tokens(kv_tokens)
    blocks = max(blocks, layout.blocks_per_request)
    kv_bytes = blocks * layout.kv_block_bytes
    needed = f.budget.overhead_bytes + kv_bytes
    util = utilization_for(needed, gpu.cuda_total_bytes)
    if util > 1:
        short = needed - gpu.cuda_total_bytes
        raise TargetTooLargeError(
            f"{arch.name} on {gpu.name}: the target needs {format_bytes(needed)} inside vLLM's budget "
            f"but the GPU has {format_bytes(gpu.cuda_total_bytes)} (short by {format_bytes(short)})",
            hint="lower the target or max_model_len, use --kv-cache-dtype fp8, a quantized variant "
            "or a larger GPU",
            needed_bytes=needed,
        )
    e = _finish(arch, gpu, settings, f, util, kv_bytes, kv_bytes)
    return replace(e, kv_cache_memory_bytes=kv_bytes)
