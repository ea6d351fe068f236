"""The CUDA-graph term: what captured graphs hold, what vLLM's profiler estimates for them, and
whether vLLM counts them inside its budget.

Pure: no I/O.
"""

from __future__ import annotations

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.memory.mxfp4 import is_gpt_oss
from gpushare.memory.settings import ServeSettings, on_v1_runner, parse_version
from gpushare.units import MiB

# gpt-oss raises the largest capture size from 512 to 1024 unless capture sizes are set
# (model_executor/models/config.py:360-380 in 0.26.0): 83 graphs instead of 51 (its comment says
# 67, from before the steps of 16 above 256).
GPT_OSS_MAX_CAPTURE = 1024
DEFAULT_MAX_CAPTURE = 512


def cudagraphs_in_budget(settings: ServeSettings, arch: ModelArch) -> bool:
    """Whether vLLM subtracts CUDA-graph memory from the KV budget (profiler estimate on).

    Seen on 0.26.0 (H100, H200): not subtracted for models on the V2 model runner (every dense
    model), whose profiler returns 0; subtracted for MoE models on the V1 runner, which estimates
    the graphs before sizing the KV cache ("Estimated CUDA graph memory: 0.74 GiB total" for
    Qwen3-30B-A3B-FP8, 0.58 GiB for gpt-oss-20b), and for every pooling model, also on V1
    (Qwen3-Embedding-0.6B: "Estimated CUDA graph memory: 0.26 GiB total"). Later releases turn
    the estimate on for all; we take 0.30.0 as the first (the 0.33.0 source reads it as on),
    overridable per instance.
    """
    if settings.estimate_cudagraphs is not None:
        return settings.estimate_cudagraphs
    if on_v1_runner(arch, settings):
        return True
    return parse_version(settings.vllm_version) >= (0, 30, 0)


def max_capture_size(arch: ModelArch | None, max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """vLLM's largest capture size (config/vllm.py:1788-1798): min(2 × max_num_seqs, 512) — 1024
    for gpt-oss — and never above max_num_batched_tokens."""
    cap = (
        GPT_OSS_MAX_CAPTURE
        if arch is not None and is_gpt_oss(arch)
        else min(2 * max_num_seqs, DEFAULT_MAX_CAPTURE)
    )
    return min(cap, max_num_batched_tokens)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, arch: ModelArch | None = None) -> list[int]:
    """vLLM's default CUDA-graph capture sizes (config/vllm.py:1817-1845): 1, 2, 4, then steps of 8
    below 256, then steps of 16, up to `max_capture_size`; max_num_batched_tokens too when it is
    within that cap."""
    cap = max_capture_size(arch, max_num_seqs, max_num_batched_tokens)
    sizes = {s for s in [1, 2, 4, *range(8, 256, 8), *range(256, cap + 1, 16)] if s <= cap}
    if max_num_batched_tokens <= cap:
        sizes.add(max_num_batched_tokens)
    return sorted(sizes)


def cuda_graph_bytes(
    arch: ModelArch, settings: ServeSettings, num_seqs: int, batched: int, coeff: Coefficients
) -> int:
    """Memory of captured CUDA graphs (FULL_AND_PIECEWISE): piecewise graphs for every capture
    size, full decode graphs for the sizes up to max_num_seqs. Llama-3.1-8B: 0.98 GiB with 1024
    sequences, 0.59 GiB with 256 (H200, vLLM 0.26.0)."""
    if settings.enforce_eager:
        return 0
    if arch.encoder_only:
        return coeff.encoder_cudagraph_bytes
    if settings.runner == "pooling":
        # "Pooling models do not support full cudagraphs. Overriding cudagraph_mode to PIECEWISE"
        # (config/vllm.py L1337-1350): the fixed part only. Qwen3-Embedding-0.6B: 0.24 GiB.
        return int(coeff.cudagraph_base_bytes)
    full_tokens = sum(s for s in capture_sizes(num_seqs, batched, arch) if s <= num_seqs)
    per_token = coeff.cudagraph_bytes_per_token_hidden * arch.hidden_size
    return int(coeff.cudagraph_base_bytes + full_tokens * per_token)


def v1_cudagraph_estimate_bytes(
    arch: ModelArch,
    settings: ServeSettings,
    num_seqs: int,
    batched: int,
    dtype_bytes: int,
    coeff: Coefficients,
) -> int:
    """What the V1 runner's profiler subtracts for CUDA graphs (gpu_model_runner.py:6576-6737): it
    captures the two largest sizes of each mode and takes the first capture plus (graphs − 1) × the
    second's cost, the FULL and PIECEWISE first captures overlaid. Structure: the first piecewise
    capture holds activations of the largest size in every layer; each further graph costs the
    driver's per-graph memory, one piece per layer (+1) for PIECEWISE and one graph per size for
    FULL, at least 1 MiB each. Fitted on two logs: gpt-oss-20b on an H200 (180 MiB + 82 × (4 + 1)
    MiB = 0.58 GiB) and Qwen3-30B-A3B-FP8 on an H100 (258 MiB + 50 × (6 + 4) MiB = 0.74 GiB)."""
    if settings.enforce_eager:
        return 0
    sizes = capture_sizes(num_seqs, batched, arch)
    full = [s for s in sizes if s <= num_seqs]
    layers = arch.num_layers
    first = int(
        sizes[-1] * layers * arch.hidden_size * dtype_bytes * coeff.v1_cudagraph_first_per_layer_hidden
    )
    piecewise = max(MiB, (layers + 1) * coeff.v1_cudagraph_piece_bytes) * (len(sizes) - 1)
    full_graphs = max(MiB, layers * coeff.v1_cudagraph_full_layer_bytes) * max(0, len(full) - 1)
    return first + piecewise + full_graphs
