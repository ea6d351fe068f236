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
from gpushare.memory.mxfp4 import gpt_oss_tensors, is_gpt_oss, mxfp4_backend
from gpushare.memory.settings import (
    DTYPE_BYTES,
    GpuTarget,
    ServeSettings,
    model_dtype,
    online_quantization,
    with_batching_defaults,
)
from gpushare.memory.vision import tower_bytes, tower_is_built
from gpushare.weights import load_rounding_bytes, machete_extra_bytes, weight_bytes_from_config

WeightsSource = Literal["config", "safetensors headers", "calibration"]


def rotary_cache_bytes(arch: ModelArch, dtype_bytes: int) -> int:
    """vLLM's rotary cos/sin caches: rows × rotary_dim in the model dtype, one per distinct rotary
    embedding (hfrope.py: M-RoPE 4 × max_position rows, linear scaling max_position × factor,
    Gemma-3 a second one for its sliding layers). Gemma-3-4B: (131,072 × 8 + 131,072) × 256 × 2 B
    = 576 MiB, part of the 8.61 GiB vLLM loads on the H200. None for an encoder with learned
    absolute positions (BERT, RoBERTa)."""
    if arch.encoder is not None:
        return 0
    rot = arch.mla.qk_rope_head_dim if arch.mla else arch.head_dim
    rows = sum(arch.rope_cache_rows) or arch.max_position_embeddings
    return rows * rot * dtype_bytes


def weights_on_gpu(
    arch: ModelArch, settings: ServeSettings, gpu: GpuTarget, header_bytes: int | None
) -> tuple[int, WeightsSource]:
    """(bytes, source) of the weights vLLM loads on one rank: the checkpoint's tensors
    (`header_bytes` from safetensors headers when known, else from the config) plus the rotary
    cache, Machete's extra tensors (compute capability 9.0, no online quantization) and the
    allocator's block tails; a multimodal model's vision tower when vLLM builds it
    (memory/vision.py); gpt-oss in its MXFP4 backend's layout (memory/mxfp4.py)."""
    dtype_bytes = DTYPE_BYTES[model_dtype(arch, settings)]
    online = online_quantization(settings)  # refuses what is not modelled before anything is cached
    tp = settings.tensor_parallel_size
    if is_gpt_oss(arch):
        # the checkpoint's MXFP4 blocks are converted to the backend's layout: headers do not say
        return gpt_oss_tensors(arch, tp, mxfp4_backend(gpu.compute_capability)).loaded_bytes, "config"
    machete = gpu.compute_capability == (9, 0) and settings.quantization is None
    weights, source = _weights_on_gpu(
        arch,
        dtype_bytes,
        tp,
        settings.quantization,
        settings.runner == "pooling",
        settings.runner == "pooling" and settings.task == "classify",
        machete,
        header_bytes,
    )
    if tower_is_built(arch, settings):
        # header_bytes never hold the tower (estimate_job leaves its tensors out): it is computed
        batched = with_batching_defaults(settings, gpu).max_num_batched_tokens or 0
        weights += tower_bytes(arch, settings, dtype_bytes, batched, arch.quantization or online)
    return weights, source


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
