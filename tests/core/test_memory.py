"""The memory model: KV arithmetic exactly as vLLM does it, forward and inverse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gpushare.errors import InputError, KvCacheTooSmallError
from gpushare.hfconfig import ModelArch, parse_config
from gpushare.memory import (
    Budget,
    Coefficients,
    GpuTarget,
    ServeSettings,
    capture_sizes,
    default_batching,
    default_utilization,
    estimate,
    minimum_for_target,
    utilization_for,
)
from gpushare.units import GiB, MiB

# Exact copies of published config.json files (a link to the bundled catalog).
HF_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hf_configs"

# The H100 80GB HBM3: NVML total 85,520,809,984 B; torch/vLLM see 79.18 GiB of it.
H100 = GpuTarget("NVIDIA H100 80GB HBM3", cuda_total_bytes=int(79.18 * GiB), nvml_total_bytes=85_520_809_984)
H200 = GpuTarget("NVIDIA H200", cuda_total_bytes=150_109_880_320, nvml_total_bytes=150_754_820_096)
A100_40 = GpuTarget(
    "NVIDIA A100-SXM4-40GB",
    cuda_total_bytes=int(39.39 * GiB),
    nvml_total_bytes=42_949_672_960,
    is_a100=True,
    compute_capability=(8, 0),
)


def arch_of(repo_id: str) -> ModelArch:
    cfg = json.loads((HF_CONFIGS / (repo_id.replace("/", "--", 1) + ".json")).read_text())
    return parse_config(cfg, repo_id)


# Bytes of K and V for one token over all layers, worked out by hand from each config:
# layers × 2 × kv_heads × head_size × dtype bytes (MLA: layers × (kv_lora_rank + rope) × bytes).
KV_PER_TOKEN = [
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 32 * 2 * 8 * 128 * 2),
    ("llama2-7b-mha", "meta-llama/Llama-2-7b-chat-hf", 32 * 2 * 32 * 128 * 2),
    ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3", 32 * 2 * 8 * 128 * 2),
    ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 24 * 2 * 2 * 64 * 2),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 28 * 2 * 4 * 128 * 2),
    ("qwen2.5-32b", "Qwen/Qwen2.5-32B-Instruct", 64 * 2 * 8 * 128 * 2),
    ("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 80 * 2 * 8 * 128 * 2),
    ("qwen2.5-32b-gptq", "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", 64 * 2 * 8 * 128 * 2),
    ("qwen3-0.6b", "Qwen/Qwen3-0.6B", 28 * 2 * 8 * 128 * 2),
    ("qwen3-8b", "Qwen/Qwen3-8B", 36 * 2 * 8 * 128 * 2),
    ("chatglm3-6b", "THUDM/chatglm3-6b", 28 * 2 * 2 * 128 * 2),
    ("gemma2-9b", "google/gemma-2-9b-it", 42 * 2 * 8 * 256 * 2),
    ("phi3-mini", "microsoft/Phi-3-mini-4k-instruct", 32 * 2 * 32 * 96 * 2),
    ("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", 32 * 2 * 8 * 128 * 2),
    ("deepseek-v2-lite-mla", "deepseek-ai/DeepSeek-V2-Lite", 27 * (512 + 64) * 2),
]


@pytest.mark.parametrize(("repo", "expected"), [pytest.param(r, e, id=i) for i, r, e in KV_PER_TOKEN])
def test_kv_bytes_per_token_exact(repo: str, expected: int) -> None:
    arch = arch_of(repo)
    e = estimate(
        arch,
        H100,
        ServeSettings(max_model_len=4096),
        gpu_memory_utilization=0.95,
        kv_cache_memory_bytes=40 * GiB,
    )
    assert e.kv_bytes_per_token == expected
    block = 16  # MLA too: FLASH_ATTN_MLA on Hopper (DeepSeek-V2-Lite, H100: 36,345 blocks of 16)
    assert e.block_size == block
    groups_layers = e.kv_block_bytes // (block * expected // arch.num_layers)
    assert groups_layers * e.num_blocks * block * expected // arch.num_layers == e.kv_cache_bytes


@pytest.mark.parametrize(
    ("repo", "kv_dtype", "expected"),
    [
        pytest.param("meta-llama/Llama-3.1-8B-Instruct", "fp8", 32 * 2 * 8 * 128, id="fp8-halves"),
        pytest.param("deepseek-ai/DeepSeek-V2-Lite", "fp8", 27 * 576, id="fp8-mla"),
    ],
)
def test_fp8_kv_cache(repo: str, kv_dtype: str, expected: int) -> None:
    e = estimate(
        arch_of(repo),
        H100,
        ServeSettings(max_model_len=4096, kv_cache_dtype=kv_dtype),
        kv_cache_memory_bytes=10 * GiB,
    )
    assert e.kv_bytes_per_token == expected


@pytest.mark.parametrize(
    ("repo", "tokens"),
    [
        # Seen on the H100 with vLLM 0.26.0 and --kv-cache-memory-bytes 10GiB (VLLM-MEMORY.md).
        pytest.param("meta-llama/Llama-3.1-8B-Instruct", 81_920, id="llama3.1-8b-10GiB"),
        pytest.param("Qwen/Qwen2.5-7B-Instruct", 187_232, id="qwen2.5-7b-10GiB"),
    ],
)
def test_fixed_kv_tokens_match_vllm_on_h100(repo: str, tokens: int) -> None:
    e = estimate(
        arch_of(repo),
        H100,
        ServeSettings(max_model_len=8192),
        gpu_memory_utilization=0.45,
        kv_cache_memory_bytes=10 * GiB,
    )
    assert e.kv_cache_tokens == tokens


def test_tensor_parallel_splits_kv_heads_but_not_below_one() -> None:
    qwen05 = arch_of("Qwen/Qwen2.5-0.5B-Instruct")  # 2 KV heads, 14 attention heads
    llama = arch_of("meta-llama/Llama-3.1-8B-Instruct")  # 8 KV heads
    one = estimate(llama, H100, ServeSettings(max_model_len=4096), kv_cache_memory_bytes=GiB)
    two = estimate(
        llama, H100, ServeSettings(max_model_len=4096, tensor_parallel_size=2), kv_cache_memory_bytes=GiB
    )
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    two_q = estimate(
        qwen05, H100, ServeSettings(max_model_len=4096, tensor_parallel_size=2), kv_cache_memory_bytes=GiB
    )
    assert two_q.kv_bytes_per_token == 24 * 2 * 1 * 64 * 2
    with pytest.raises(InputError, match="do not split"):
        estimate(qwen05, H100, ServeSettings(tensor_parallel_size=4), kv_cache_memory_bytes=GiB)


def test_sliding_window_groups_match_vllm_on_h200() -> None:
    """Gemma-2-9B at 0.5 on the H200 (vLLM 0.26.0): 19,754 blocks, 157,877 tokens logged, 19.27x."""
    gemma = arch_of("google/gemma-2-9b-it")
    page = 16 * 2 * 8 * 256 * 2
    # Two groups of 21 layers share the pool: a block costs a page in 21 layers.
    e = estimate(gemma, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=19_754 * page * 21)
    assert e.num_blocks == 19_754
    # A request needs 512 blocks in the full group, cdiv(min(4095 + 8192, 8192), 16) + 1 = 513 in the other.
    assert e.max_concurrency == 19.27
    assert e.kv_cache_tokens == 157_877


def test_sliding_window_holds_two_batches_in_flight() -> None:
    """vLLM 0.26.0 keeps KV for window − 1 + 2 × max_num_batched_tokens tokens per sliding layer
    when async scheduling is on (every generate model), for one batch on the pooling runner
    (kv_cache_interface.py:567-598, config/vllm.py:511-533, 1059-1107)."""
    gemma = arch_of("google/gemma-2-9b-it")  # window 4096, 21 sliding + 21 full layers
    page = 16 * 2 * 8 * 256 * 2
    settings = ServeSettings(max_model_len=8192, max_num_batched_tokens=1024)
    e = estimate(gemma, H200, settings, kv_cache_memory_bytes=10_000 * page * 21)
    # full: 8192 / 16 = 512 blocks; sliding: cdiv(min(4095 + 2 × 1024, 8192), 16) + 1 = 385
    assert e.num_blocks == 10_000
    assert e.max_concurrency == round(10_000 / (512 + 385), 2)
    assert e.kv_cache_tokens == int(10_000 / 897 * 8192)
    pooled = estimate(
        gemma,
        H200,
        ServeSettings(max_model_len=8192, max_num_batched_tokens=1024, runner="pooling"),
        kv_cache_memory_bytes=10_000 * page * 21,
    )
    # one batch in flight: cdiv(4095 + 1024, 16) + 1 = 321
    assert pooled.max_concurrency == round(10_000 / (512 + 321), 2)


def test_nearly_even_layer_kinds_share_groups_of_the_larger_count() -> None:
    """12 sliding + 13 full layers: vLLM pads the sliding kind to one group of 13 rather than
    splitting 13 full layers into two groups of 12 (kv_cache_utils.py:1218-1227)."""
    cfg = json.loads((HF_CONFIGS / "google--gemma-2-9b-it.json").read_text())
    cfg["num_hidden_layers"] = 25  # even layers slide: 13 sliding, 12 full
    gemma25 = parse_config(cfg, "gemma-2-25-layers")
    page = 16 * 2 * 8 * 256 * 2
    e = estimate(gemma25, H200, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=5000 * page * 13)
    assert e.kv_block_bytes == page * 13
    assert e.num_blocks == 5000
    # 2 groups: 512 blocks (full) + 513 (sliding) per request
    assert e.max_concurrency == round(5000 / 1025, 2)


def test_forward_budget_follows_vllm() -> None:
    llama = arch_of("meta-llama/Llama-3.1-8B-Instruct")
    e = estimate(llama, H100, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.45)
    requested = -(-H100.cuda_total_bytes * 45 // 100)
    assert e.requested_bytes == requested
    assert e.kv_cache_bytes <= requested - e.weights_bytes - e.activation_bytes - e.non_torch_bytes
    assert (
        e.kv_cache_bytes
        > requested - e.weights_bytes - e.activation_bytes - e.non_torch_bytes - e.kv_block_bytes
    )
    assert e.kv_cache_tokens % e.block_size == 0
    # 0.26.0 captures CUDA graphs on top of the budget, so the process shows more than requested.
    assert not e.cuda_graph_in_budget
    assert e.process_bytes == e.overhead_bytes + requested


def test_later_vllm_puts_cuda_graphs_inside_the_budget() -> None:
    llama = arch_of("meta-llama/Llama-3.1-8B-Instruct")
    old = estimate(llama, H100, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.45)
    new = estimate(
        llama, H100, ServeSettings(max_model_len=8192, vllm_version="0.33.0"), gpu_memory_utilization=0.45
    )
    assert new.cuda_graph_in_budget
    assert new.kv_cache_bytes < old.kv_cache_bytes
    assert new.process_bytes < old.process_bytes


def test_enforce_eager_has_no_graphs() -> None:
    e = estimate(
        arch_of("Qwen/Qwen2.5-7B-Instruct"),
        H100,
        ServeSettings(max_model_len=8192, enforce_eager=True),
        gpu_memory_utilization=0.5,
    )
    assert e.cuda_graph_bytes == 0


@pytest.mark.parametrize(
    ("version", "util"),
    [pytest.param("0.19.1", 0.9, id="before-0.20"), pytest.param("0.26.0", 0.92, id="from-0.20")],
)
def test_default_utilization(version: str, util: float) -> None:
    assert default_utilization(version) == util


@pytest.mark.parametrize(
    ("gpu", "defaults"),
    [pytest.param(H100, (8192, 1024), id="h100"), pytest.param(A100_40, (2048, 256), id="a100-40")],
)
def test_default_batching(gpu: GpuTarget, defaults: tuple[int, int]) -> None:
    assert default_batching(gpu) == defaults


def test_large_gpu_batching_tier_from_vllm_0_28() -> None:
    b200 = GpuTarget("NVIDIA B200", 191_500_000_000, 192_500_000_000)
    assert default_batching(b200, "0.26.0") == (8192, 1024)
    assert default_batching(b200, "0.28.0") == (16384, 1024)


def test_capture_sizes_default() -> None:
    sizes = capture_sizes(1024, 8192)
    assert sizes[:4] == [1, 2, 4, 8] and sizes[-1] == 512 and len(sizes) == 51
    assert capture_sizes(8, 8192)[-1] == 16


@pytest.mark.parametrize(
    ("target", "value"),
    [pytest.param("concurrency", 8, id="concurrency"), pytest.param("kv_tokens", 100_000, id="kv-tokens")],
)
def test_inverse_then_forward_meets_the_target(target: str, value: int) -> None:
    arch = arch_of("Qwen/Qwen2.5-7B-Instruct")
    settings = ServeSettings(max_model_len=16384)
    inv = minimum_for_target(arch, H100, settings, **{target: value})
    assert inv.kv_cache_memory_bytes == inv.kv_cache_bytes
    fwd = estimate(arch, H100, settings, gpu_memory_utilization=inv.gpu_memory_utilization)
    if target == "concurrency":
        assert fwd.max_concurrency >= value
    else:
        assert fwd.kv_cache_tokens >= value
    # And it is the least: one step (0.0001) lower no longer meets it.
    lower = estimate(
        arch, H100, settings, gpu_memory_utilization=round(inv.gpu_memory_utilization - 0.0001, 4)
    )
    assert lower.kv_cache_bytes < inv.kv_cache_bytes


def test_inverse_kv_tokens_are_whole_blocks() -> None:
    inv = minimum_for_target(
        arch_of("meta-llama/Llama-3.1-8B-Instruct"), H100, ServeSettings(max_model_len=8192), kv_tokens=10_001
    )
    assert inv.kv_cache_tokens == 10_016
    assert inv.kv_cache_memory_bytes == 10_016 * 131_072


def test_max_model_len_above_limit_names_field_and_fix() -> None:
    with pytest.raises(InputError) as info:
        estimate(arch_of("microsoft/Phi-3-mini-4k-instruct"), H100, ServeSettings(max_model_len=8192))
    text = f"{info.value.message} {info.value.hint}"
    assert "microsoft/Phi-3-mini-4k-instruct" in text and "max_model_len" in text and "4096" in text


def test_kv_cache_that_cannot_hold_one_request() -> None:
    with pytest.raises(KvCacheTooSmallError) as info:
        estimate(
            arch_of("meta-llama/Llama-3.1-8B-Instruct"),
            H100,
            ServeSettings(max_model_len=131072),
            gpu_memory_utilization=0.25,
        )
    assert "max_model_len 131072" in info.value.message
    assert info.value.exit_code == 2
    assert info.value.hint and "--max-model-len" in info.value.hint


def test_weights_override_from_headers_is_used() -> None:
    arch = arch_of("Qwen/Qwen2.5-7B-Instruct")
    e = estimate(
        arch, H100, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=GiB, weights_bytes=15_231_233_024
    )
    assert e.weights_source == "safetensors headers"
    # + rotary cache + the load-time allocator tails (99 MiB for Qwen2.5-7B, test_weights.py)
    assert e.weights_bytes == 15_231_233_024 + 32768 * 128 * 2 + 99 * MiB


def test_coefficients_are_injectable() -> None:
    arch = arch_of("Qwen/Qwen2.5-7B-Instruct")
    base = estimate(arch, H100, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.5)
    more = estimate(
        arch,
        H100,
        ServeSettings(max_model_len=8192),
        gpu_memory_utilization=0.5,
        coeff=Coefficients(context_bytes=base.overhead_bytes + 100 * MiB),
    )
    assert more.process_bytes > base.process_bytes


# Measured with vLLM 0.26.0 on an H200 (bench/gpu/results/h200-vllm0.26.0): the KV tokens vLLM
# logged and the NVML footprint of the server at ready. id, repo, utilization, serve settings,
# KV tokens, process bytes.
H200_RUNS = [
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 0.45, {}, 381_552, 69_415_731_200),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 0.45, {}, 885_120, 69_671_583_744),
    ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 0.30, {}, 3_533_120, 47_211_085_824),
    ("qwen2.5-7b-eager", "Qwen/Qwen2.5-7B-Instruct", 0.45, {"enforce_eager": True}, 885_248, 68_593_647_616),
    (
        "llama3.1-8b-2048",
        "meta-llama/Llama-3.1-8B-Instruct",
        0.45,
        {"max_num_batched_tokens": 2048, "max_num_seqs": 256},
        382_320,
        68_146_954_240,
    ),
    ("gemma2-9b", "google/gemma-2-9b-it", 0.50, {}, 157_877, 77_793_853_440),
    ("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3", 0.45, {}, 395_200, 68_681_728_000),
]


@pytest.mark.parametrize(
    ("repo", "util", "extra", "kv_tokens", "process"), [pytest.param(*r[1:], id=r[0]) for r in H200_RUNS]
)
def test_accuracy_against_real_vllm_runs(
    repo: str, util: float, extra: dict[str, object], kv_tokens: int, process: int
) -> None:
    settings = ServeSettings(max_model_len=8192, **extra)  # type: ignore[arg-type]
    e = estimate(arch_of(repo), H200, settings, gpu_memory_utilization=util)
    assert abs(e.kv_cache_tokens - kv_tokens) / kv_tokens < 0.02
    assert abs(e.process_bytes - process) / process < 0.03


# Measured with vLLM 0.26.0 on an H100 80GB HBM3 (bench/gpu/results/h100-vllm0.26.0, collect.py):
# KV tokens vLLM logged and the server's NVML footprint at ready. The GPTQ and AWQ checkpoints run
# on Machete there; DeepSeek-V2-Lite is MLA + MoE on vLLM's V2 model runner.
H100_MEASURED = GpuTarget(
    "NVIDIA H100 80GB HBM3", cuda_total_bytes=85_017_493_504, nvml_total_bytes=85_520_809_984
)
H100_RUNS = [
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 0.45, {}, 158_080, 40_087_060_480),
    ("llama3.1-8b-0.8", "meta-llama/Llama-3.1-8B-Instruct", 0.80, {}, 385_104, 69_937_922_048),
    ("qwen2.5-32b-gptq", "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", 0.40, {}, 47_856, 36_461_084_672),
    ("qwen2.5-32b-gptq-0.7", "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", 0.70, {}, 145_152, 61_962_452_992),
    ("deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", 0.60, {}, 581_520, 53_479_473_152),
    ("deepseek-v2-lite-0.8", "deepseek-ai/DeepSeek-V2-Lite", 0.80, {}, 1_128_176, 70_466_404_352),
    ("gemma2-9b", "google/gemma-2-9b-it", 0.50, {}, 63_370, 45_246_054_400),
    ("phi3-mini", "microsoft/Phi-3-mini-4k-instruct", 0.40, {"max_model_len": 4096}, 64_547, 35_085_352_960),
]


@pytest.mark.parametrize(
    ("repo", "util", "extra", "kv_tokens", "process"), [pytest.param(*r[1:], id=r[0]) for r in H100_RUNS]
)
def test_accuracy_against_real_vllm_runs_on_h100(
    repo: str, util: float, extra: dict[str, object], kv_tokens: int, process: int
) -> None:
    settings = ServeSettings(**{"max_model_len": 8192, **extra})  # type: ignore[arg-type]
    e = estimate(arch_of(repo), H100_MEASURED, settings, gpu_memory_utilization=util)
    assert abs(e.kv_cache_tokens - kv_tokens) / kv_tokens < 0.02
    assert abs(e.process_bytes - process) / process < 0.03


def test_mla_moe_activation_follows_vllm_v2_runner() -> None:
    """DeepSeek-V2-Lite at 8192 batched tokens: the kept MoE workspace (8192 × 6 experts ×
    (2048 + 2816) × 2 B) + the MLA layer's dummy kv_b_proj output (65,536 rows × 16 heads × 256 ×
    2 B) + the tensors around it; vLLM logged 1.10 GiB. The dummy comes back in the piecewise
    CUDA-graph captures (logged 1.20 GiB)."""
    e = estimate(
        arch_of("deepseek-ai/DeepSeek-V2-Lite"),
        H100_MEASURED,
        ServeSettings(max_model_len=8192),
        gpu_memory_utilization=0.6,
    )
    workspace = 8192 * 6 * (2048 + 2816) * 2
    dummy = 65536 * 16 * 256 * 2
    around = 8192 * 2 * (2 * 2048 + 16 * (128 + 64 + 128) + 2 * 512 + 64)
    assert e.activation_bytes == workspace + dummy + around
    assert abs(e.activation_bytes - 1.10 * GiB) < 0.01 * GiB
    eager = estimate(
        arch_of("deepseek-ai/DeepSeek-V2-Lite"),
        H100_MEASURED,
        ServeSettings(max_model_len=8192, enforce_eager=True),
        gpu_memory_utilization=0.6,
    )
    assert eager.cuda_graph_bytes == 0
    assert e.cuda_graph_bytes > dummy


def test_moe_on_vllm_v1_runner_follows_its_sampler_profile() -> None:
    """MoE models outside vLLM's V2-runner list (Qwen3-MoE) profile on the V1 runner: the kept MoE
    workspace + its dummy sampler run on 1024 full-vocab rows; vLLM logged 2.68 GiB and subtracted
    its CUDA-graph estimate from the budget (160,784 KV tokens at 0.6 on an H100). They get a note."""
    arch = arch_of("Qwen/Qwen3-30B-A3B-Thinking-2507-FP8")
    settings = ServeSettings(max_model_len=8192)
    e = estimate(arch, H100_MEASURED, settings, gpu_memory_utilization=0.6)
    assert abs(e.activation_bytes - 2.68 * GiB) < 0.02 * GiB
    assert e.cuda_graph_in_budget
    assert abs(e.kv_cache_tokens - 160_784) / 160_784 < 0.02
    assert any("V1 model runner" in n and "gpushare calibrate" in n for n in e.notes)
    dense = estimate(arch_of("Qwen/Qwen3-8B"), H100_MEASURED, settings)
    assert not dense.notes
    assert not dense.cuda_graph_in_budget


@pytest.mark.parametrize(
    ("repo", "logged_gib"),
    [
        pytest.param("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", 18.15, id="gptq-32b-machete"),
        pytest.param("Qwen/Qwen2.5-7B-Instruct", 14.29, id="qwen2.5-7b"),
        pytest.param("Qwen/Qwen2.5-0.5B-Instruct", 0.93, id="qwen2.5-0.5b"),
        pytest.param("meta-llama/Llama-3.1-8B-Instruct", 15.00, id="llama3.1-8b"),
        pytest.param("deepseek-ai/DeepSeek-V2-Lite", 29.34, id="deepseek-v2-lite"),
    ],
)
def test_weights_equal_vllms_model_loading_line_on_h100(repo: str, logged_gib: float) -> None:
    """vLLM's "Model loading took X GiB" (rounded to 0.01 GiB) on the H100: Machete's kept tensors
    and the allocator's block tails included. Left within 0.015 GiB: allocator reuse of freed
    blocks (Llama's rope temporaries, +16 MiB); DeepSeek-V2-Lite loads 0.04 GiB more than its
    tensors (not explained)."""
    e = estimate(
        arch_of(repo), H100_MEASURED, ServeSettings(max_model_len=8192), kv_cache_memory_bytes=4 * GiB
    )
    assert abs(e.weights_bytes / GiB - logged_gib) <= (0.05 if "DeepSeek" in repo else 0.015)


# --- the budget: one object answers what is inside vLLM's budget and what is outside -------------


@pytest.mark.parametrize(
    ("case", "in_budget", "overhead", "outside"),
    [
        ("graphs outside (vLLM 0.26, dense)", False, 10 + 2 + 1, 5 + 3),
        ("graphs inside (profiler estimate on)", True, 10 + 2 + 1 + 3, 5),
    ],
)
def test_budget_places_the_cuda_graphs_once(case: str, in_budget: bool, overhead: int, outside: int) -> None:
    budget = Budget(10, 2, 1, 3, in_budget, context_bytes=5)
    assert budget.overhead_bytes == overhead
    assert budget.outside_bytes == outside
    total = 80 * GiB
    util = budget.utilization_for(40 * GiB, total)
    assert math.ceil(total * util) >= overhead + 40 * GiB > math.ceil(total * round(util - 0.0001, 4))
    assert budget.kv_budget_bytes(util, total) >= 40 * GiB


def test_an_estimate_reads_its_terms_from_its_budget() -> None:
    e = estimate(arch_of("meta-llama/Llama-3.1-8B-Instruct"), H200, ServeSettings(max_model_len=8192))
    b = e.budget
    assert (e.weights_bytes, e.activation_bytes, e.non_torch_bytes) == (
        b.weights_bytes,
        b.activation_bytes,
        b.non_torch_bytes,
    )
    assert e.overhead_bytes == b.outside_bytes == b.context_bytes + e.cuda_graph_bytes
    # The KV cache is what the request leaves after the budget's overhead, in whole blocks.
    assert e.kv_cache_bytes == (e.requested_bytes - b.overhead_bytes) // e.kv_block_bytes * e.kv_block_bytes
    assert e.process_bytes == e.requested_bytes + b.outside_bytes


def test_inverse_asks_the_budget_for_its_utilization() -> None:
    arch = arch_of("Qwen/Qwen2.5-7B-Instruct")
    e = minimum_for_target(arch, H100, ServeSettings(max_model_len=8192), concurrency=4)
    assert e.gpu_memory_utilization == utilization_for(
        e.budget.overhead_bytes + e.kv_cache_bytes, H100.cuda_total_bytes
    )


def test_weights_are_computed_once_per_model_and_settings() -> None:
    from gpushare.memory.weights import _weights_on_gpu

    _weights_on_gpu.cache_clear()  # earlier tests in the session may have asked for the same keys
    arch = arch_of("Qwen/Qwen2.5-7B-Instruct")
    first = estimate(arch, H100, ServeSettings(max_model_len=4096, max_num_seqs=17))
    before = _weights_on_gpu.cache_info()
    # Other context lengths, batch sizes and utilizations do not change the weights.
    for length in (2048, 8192, 16384):
        again = estimate(
            arch, H100, ServeSettings(max_model_len=length, max_num_seqs=17), gpu_memory_utilization=0.8
        )
        assert again.weights_bytes == first.weights_bytes
    after = _weights_on_gpu.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)
    # Settings that shape the tensors are computed anew.
    tp2 = estimate(arch, H100, ServeSettings(max_model_len=4096, tensor_parallel_size=2))
    assert tp2.weights_bytes < first.weights_bytes
    assert _weights_on_gpu.cache_info().misses >= after.misses + 1
