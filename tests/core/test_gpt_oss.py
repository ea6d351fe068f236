"""gpt-oss: MXFP4 experts per MoE backend, sliding windows, CUDA graphs and the V1 runner's
profile, worked out by hand from vLLM 0.26.0's source (files named in each test) and checked
against the H200 run (bench/gpu/results/h200-i11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpushare.errors import ConfigError, InputError
from gpushare.hfconfig import ModelArch, parse_config
from gpushare.memory import GpuTarget, ServeSettings, capture_sizes, estimate
from gpushare.memory.coefficients import Coefficients
from gpushare.memory.cudagraphs import v1_cudagraph_estimate_bytes
from gpushare.memory.mxfp4 import gpt_oss_tensors, gpt_oss_workspace_bytes, mxfp4_backend
from gpushare.memory.weights import weights_on_gpu
from gpushare.units import GiB, MiB

HF_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hf_configs"
H200 = GpuTarget("NVIDIA H200", cuda_total_bytes=150_109_880_320, nvml_total_bytes=150_754_820_096)
A100 = GpuTarget(
    "NVIDIA A100-SXM4-80GB",
    cuda_total_bytes=int(79.25 * GiB),
    nvml_total_bytes=85_899_345_920,
    is_a100=True,
    compute_capability=(8, 0),
)


def arch_of(name: str) -> ModelArch:
    raw = json.loads((HF_CONFIGS / f"openai--{name}.json").read_text())
    return parse_config(raw, f"openai/{name}")


def test_config_reads_as_vllm_builds_it() -> None:
    """gpt_oss.py:157-170: even layers slide over 128 tokens, odd ones attend fully; 8 KV heads of
    64; the quantization is MXFP4 (served as gpt_oss_mxfp4, models/config.py:342-380)."""
    arch = arch_of("gpt-oss-20b")
    assert arch.layer_kinds == ("sliding", "full") * 12
    assert arch.sliding_window == 128
    assert (arch.num_kv_heads, arch.head_dim) == (8, 64)
    assert arch.quantization is not None and arch.quantization.method == "mxfp4"
    assert arch.moe is not None and (arch.moe.num_experts, arch.moe.experts_per_token) == (32, 4)


# gpt-oss-20b on one Hopper GPU (TRITON backend), by hand:
#   embedding and lm_head: 201,088 × 2880 × 2 B each                          = 2,316,533,760
#   per layer: 2 norms 2 × 2880 × 2, qkv (64 + 16) × 64 = 5120 rows × 2880 + bias 5120, o_proj
#     2880 × 4096 + bias 2880, 64 sinks, router 32 × 2880 + 32, all bf16      =    53,296,192
#   experts per layer, E = 32, I = H = 2880 (no padding at these sizes):
#     values 32 × (5760 × 1440 + 2880 × 1440)                                 =   398,131,200
#     swizzled scales 32 × (ru(5760, 256) · ru(90, 4) + ru(2880, 256) · 92)
#       = 32 × (5888 × 92 + 3072 × 92)                                        =    26,378,240
#     fp32 biases 32 × (5760 + 2880) × 4                                      =     1,105,920
#   final norm 5760, yarn rope cache 131,072 × 64 × 4 B fp32                  =    33,554,432
#   → 2,316,533,760 + 24 × 478,911,552 + 5760 + 33,554,432 = 13,843,971,200 B (12.893 GiB)
# plus the 2 MiB block tails of the load-time allocator per layer: qkv 28.125 MiB → 1.875,
# o_proj 22.5 → 1.5, w13 values 253.125 → 0.875, w2 values 126.5625 → 1.4375 (the scales split):
# 5.6875 MiB × 24, and 1.39 MiB for each of embedding and lm_head → 13.03 GiB, as logged.
def test_gpt_oss_20b_weights_on_hopper_are_what_vllm_loaded() -> None:
    arch = arch_of("gpt-oss-20b")
    tensors = gpt_oss_tensors(arch, 1, "triton-hopper")
    assert tensors.tensor_bytes == 13_843_971_200
    weights, source = weights_on_gpu(arch, ServeSettings(max_model_len=8192), H200, None)
    assert source == "config"
    assert round(weights / GiB, 2) == 13.03  # "Model loading took 13.03 GiB" on the H200


@pytest.mark.parametrize(
    ("case", "cc", "backend"),
    [
        ("H100/H200", (9, 0), "triton-hopper"),
        ("B200 without flashinfer", (10, 0), "triton-blackwell"),
        ("A100", (8, 0), "marlin"),
        ("L40S/L4", (8, 9), "marlin"),
        ("RTX PRO 6000", (12, 0), "marlin"),
    ],
)
def test_backend_per_gpu(case: str, cc: tuple[int, int], backend: str) -> None:
    """oracle/mxfp4.py:307-327, 442-563 with the default wheel (no flashinfer)."""
    assert mxfp4_backend(cc) == backend


def test_gpus_below_ampere_are_refused() -> None:
    with pytest.raises(InputError, match="compute capability 8.0"):
        mxfp4_backend((7, 5))


@pytest.mark.parametrize(
    ("case", "name", "backend", "gib"),
    [
        # Marlin rounds I to 2944 and H to 3072, keeps e8m0 scales unpadded and biases in bf16:
        # 24 × 32 × (5888 × 1536 + 3072 × 1472 + 5888 × 96 + 3072 × 92 + (5888 + 3072) × 2) B
        # = 10,429,083,648 of experts; 13.702 GiB in all.
        ("20b Marlin (A100, L40S)", "gpt-oss-20b", "marlin", 13.702),
        ("120b Hopper", "gpt-oss-120b", "triton-hopper", 61.074),
        ("120b Marlin", "gpt-oss-120b", "marlin", 65.928),
    ],
)
def test_tensor_bytes_per_backend(case: str, name: str, backend: str, gib: float) -> None:
    tensors = gpt_oss_tensors(arch_of(name), 1, backend)  # type: ignore[arg-type]
    assert round(tensors.tensor_bytes / GiB, 3) == gib


def test_marlin_experts_of_20b_by_hand() -> None:
    e = gpt_oss_tensors(arch_of("gpt-oss-20b"), 1, "marlin").experts
    assert sum(e) == 24 * 32 * (5888 * 1536 + 3072 * 1472 + 5888 * 96 + 3072 * 92 + (5888 + 3072) * 2)


def test_tensor_parallel_splits_the_experts_along_the_intermediate_size() -> None:
    """I per rank 1440 → 1472 (TRITON rounds to 64); vocab, heads split, router replicated."""
    arch = arch_of("gpt-oss-20b")
    one = gpt_oss_tensors(arch, 1, "triton-hopper").tensor_bytes
    two = gpt_oss_tensors(arch, 2, "triton-hopper").tensor_bytes
    assert one / 2 < two < one / 2 * 1.05
    with pytest.raises(InputError, match="does not split"):
        gpt_oss_tensors(arch, 7, "triton-hopper")


def test_moe_workspace_only_with_marlin() -> None:
    """TRITON's monolithic experts keep no workspace; Marlin's modular kernel keeps
    M × topk × (max(N, K) + max(2N, K)) bf16 (experts/marlin_moe.py:682-750):
    2048 × 4 × (3072 + 5888) × 2 B = 140 MiB at the A100's 2048 batched tokens."""
    arch = arch_of("gpt-oss-20b")
    assert gpt_oss_workspace_bytes(arch, 1, "triton-hopper", 8192) == 0
    assert gpt_oss_workspace_bytes(arch, 1, "marlin", 2048) == 140 * MiB


def test_capture_sizes_go_to_1024() -> None:
    """models/config.py:360-380 raises the largest capture size to 1024: 83 graphs, as the H200 log
    shows ("PIECEWISE=83 (largest=1024)"), where other models get 51 (1, 2, 4, 8..248, 256..512;
    "PIECEWISE=51 (largest=512)" for Qwen3-30B-A3B; vLLM's comment there still says 67)."""
    arch = arch_of("gpt-oss-20b")
    assert len(capture_sizes(1024, 8192, arch)) == 83
    assert capture_sizes(1024, 8192, arch)[-1] == 1024
    assert len(capture_sizes(1024, 8192)) == 51


def test_v1_graph_estimate_is_close_to_the_logged_one() -> None:
    """ "Estimated CUDA graph memory: 0.58 GiB total" (180 MiB first capture + 82 × 4 MiB
    piecewise + 82 × 1 MiB full) on the H200."""
    arch = arch_of("gpt-oss-20b")
    est = v1_cudagraph_estimate_bytes(arch, ServeSettings(), 1024, 8192, 2, Coefficients())
    assert abs(est / GiB - 0.58) < 0.04


def test_kv_tokens_match_the_h200_run() -> None:
    """Fixed 4 GiB: 2 groups of 12 layers, a block 16 × 2 × 8 × 64 × 2 B × 12 = 384 KiB →
    10,922 blocks; a request needs 512 (full) + cdiv(min(127 + 2 × 8192, 8192), 16) + 1 = 513
    (sliding) → int(10,922 / 1025 × 8192) = 87,290, as logged. At utilization 0.30 vLLM logged
    550,614 (budget 41.94 − 13.03 weights − 2.87 peak − 0.23 non-torch − 0.58 graphs GiB)."""
    arch = arch_of("gpt-oss-20b")
    fixed = estimate(arch, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    assert fixed.num_blocks == 10_922
    assert fixed.kv_cache_tokens == 87_290
    util = estimate(arch, H200, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.30)
    assert abs(util.kv_cache_tokens - 550_614) / 550_614 < 0.02
    # V1 sampler run on 1024 rows of 201,088 logits: 2.87 GiB logged as the peak, no workspace
    assert round(util.activation_bytes / GiB, 2) == 2.87


def test_process_matches_nvml_at_a_fixed_kv_size() -> None:
    """NVML showed 24,169,676,800 B for the server's process (the fixed 4 GiB run)."""
    arch = arch_of("gpt-oss-20b")
    e = estimate(arch, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    assert abs(e.process_bytes - 24_169_676_800) / 24_169_676_800 < 0.03


def test_mxfp4_outside_gpt_oss_is_refused() -> None:
    raw = json.loads((HF_CONFIGS / "meta-llama--Llama-3.1-8B-Instruct.json").read_text())
    raw["quantization_config"] = {"quant_method": "mxfp4"}
    with pytest.raises(ConfigError, match="gpt-oss only"):
        parse_config(raw, "llama-mxfp4")


def test_a100_estimate_uses_marlin_and_its_workspace() -> None:
    arch = arch_of("gpt-oss-20b")
    e = estimate(arch, A100, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB)
    assert round(e.weights_bytes / GiB, 1) == 13.8
