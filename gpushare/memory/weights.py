"""The weights term: what vLLM's "Model loading took" counts on one GPU (one tensor-parallel rank).

The tensors themselves come from gpushare/weights.py (from the config, or exact from safetensors
headers); vLLM adds its rotary cos/sin cache, Machete's extra tensors for GPTQ/AWQ on Hopper and
the 2 MiB block tails of its load-time allocator. The sum depends only on the model and the
settings that shape the tensors, so it is computed once per (model, settings) and reused: a plan
evaluates the memory model hundreds of times for a handful of models.

Pure: no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from gpushare.hfconfig import ModelArch
from gpushare.memory.settings import (
    DTYPE_BYTES,
    GpuTarget,
    ServeSettings,
    model_dtype,
    online_quantization,
)
from gpushare.weights import load_rounding_bytes, machete_extra_bytes, weight_bytes_from_config

WeightsSource = Literal["config", "safetensors headers", "calibration"]


def rotary_cache_bytes(arch: ModelArch, dtype_bytes: int) -> int:
    """vLLM's rotary cos/sin cache: max_position × rotary_dim, in the model dtype (one shared copy).
    None for an encoder with learned absolute positions (BERT, RoBERTa)."""
    if arch.encoder is not None:
        return 0
    rot = arch.mla.qk_rope_head_dim if arch.mla else arch.head_dim
    return arch.max_position_embeddings * rot * dtype_bytes


def weights_on_gpu(
    arch: ModelArch, settings: ServeSettings, gpu: GpuTarget, header_bytes: int | None
) -> tuple[int, WeightsSource]:
    """(bytes, source) of the weights vLLM loads on one rank: the checkpoint's tensors
    (`header_bytes` from safetensors headers when known, else from the config) plus the rotary
    cache, Machete's extra tensors (compute capability 9.0, no online quantization) and the
    allocator's block tails."""
    dtype_bytes = DTYPE_BYTES[model_dtype(arch, settings)]
    online_quantization(settings)  # refuses what is not modelled before anything is cached
    machete = gpu.compute_capability == (9, 0) and settings.quantization is None
    return _weights_on_gpu(
        arch,
        dtype_bytes,
        settings.tensor_parallel_size,
        settings.quantization,
        settings.runner == "pooling",
        settings.runner == "pooling" and settings.task == "classify",
        machete,
        header_bytes,
    )


@lru_cache(maxsize=1024)
def _weights_on_gpu(
    arch: ModelArch,
    dtype_bytes: int,
    tp: int,
    quantization: str | None,
    pooling: bool,
    classify: bool,
    machete: bool,
    header_bytes: int | None,
) -> tuple[int, WeightsSource]:
    online = online_quantization(ServeSettings(quantization=quantization))
    source: WeightsSource
    if header_bytes is not None:
        weights, source = header_bytes, "safetensors headers"
    else:
        weights = weight_bytes_from_config(arch, dtype_bytes, tp, online, pooling=pooling, classify=classify)
        source = "config"
    weights += rotary_cache_bytes(arch, dtype_bytes)
    if machete:
        weights += machete_extra_bytes(arch, dtype_bytes, tp)
    weights += load_rounding_bytes(arch, dtype_bytes, tp, online, pooling=pooling, classify=classify)
    return weights, source
