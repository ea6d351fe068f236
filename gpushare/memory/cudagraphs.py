"""The CUDA-graph term: what captured graphs hold, and whether vLLM counts it inside its budget.

Pure: no I/O.
"""

from __future__ import annotations

from gpushare.hfconfig import ModelArch
from gpushare.memory.coefficients import Coefficients
from gpushare.memory.settings import ServeSettings, on_v1_runner, parse_version


def cudagraphs_in_budget(settings: ServeSettings, arch: ModelArch) -> bool:
    """Whether vLLM subtracts CUDA-graph memory from the KV budget (profiler estimate on).

    Seen on 0.26.0 (H100, H200): not subtracted for models on the V2 model runner (every dense
    model), whose profiler returns 0; subtracted for MoE models on the V1 runner, which estimates
    the graphs before sizing the KV cache ("Estimated CUDA graph memory: 0.74 GiB total" for
    Qwen3-30B-A3B-FP8), and for every pooling model, also on V1 (Qwen3-Embedding-0.6B:
    "Estimated CUDA graph memory: 0.26 GiB total"). Later releases turn the estimate on for all;
    we take 0.30.0 as the first (the 0.33.0 source reads it as on), overridable per instance.
    """
    if settings.estimate_cudagraphs is not None:
        return settings.estimate_cudagraphs
    if on_v1_runner(arch, settings):
        return True
    return parse_version(settings.vllm_version) >= (0, 30, 0)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes (config/compilation.py): 1, 2, 4, then steps of 8
    up to 256, then steps of 16, capped at min(2 × max_num_seqs, 512, max_num_batched_tokens)."""
    cap = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, cap + 1, 16)]
    return [s for s in sizes if s <= cap]


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
    full_tokens = sum(s for s in capture_sizes(num_seqs, batched) if s <= num_seqs)
    per_token = coeff.cudagraph_bytes_per_token_hidden * arch.hidden_size
    return int(coeff.cudagraph_base_bytes + full_tokens * per_token)
