"""Weight sizes: parameter counts against published ones, quantized layouts against real headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpushare.hfconfig import parse_config
from gpushare.memory.vision import tower_parameter_count
from gpushare.weights import (
    allocator_segment_bytes,
    allocator_segments,
    load_rounding_bytes,
    machete_extra_bytes,
    model_tensors,
    parameter_count,
    parse_header,
    quantized_linear_bytes,
    weight_bytes_from_config,
    weights_from_header,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
# Exact copies of published config.json files (a link to the bundled catalog).
HF_CONFIGS = FIXTURES / "hf_configs"
PUBLISHED = json.loads((FIXTURES / "published_params.json").read_text())


def arch_of(repo_id: str, **overrides: object):  # type: ignore[no-untyped-def]
    cfg = json.loads((HF_CONFIGS / (repo_id.replace("/", "--", 1) + ".json")).read_text())
    cfg.update(overrides)
    return parse_config(cfg, repo_id)


# Published parameter counts from the models' Hub pages (safetensors "Model size"), where the
# fixture file has no entry. id, repo, params.
MODEL_CARD_PARAMS = [
    ("llama2-7b", "meta-llama/Llama-2-7b-chat-hf", 6_738_415_616),
    ("mistral-7b-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", 7_248_023_552),
    ("gemma2-9b", "google/gemma-2-9b-it", 9_241_705_984),
    ("phi3-mini", "microsoft/Phi-3-mini-4k-instruct", 3_821_079_552),
    ("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", 46_702_792_704),
    ("chatglm3-6b", "THUDM/chatglm3-6b", 6_243_584_000),
    ("deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", 15_700_000_000),  # model card: 15.7B
]
FIXTURE_PARAMS = [
    (repo.split("/")[1].lower(), repo, entry["params"])
    for repo, entry in PUBLISHED.items()
    if (HF_CONFIGS / (repo.replace("/", "--", 1) + ".json")).exists()
]


@pytest.mark.parametrize(
    ("repo", "published"), [pytest.param(r, p, id=i) for i, r, p in MODEL_CARD_PARAMS + FIXTURE_PARAMS]
)
def test_parameter_count_within_half_a_percent(repo: str, published: int) -> None:
    arch = arch_of(repo)
    ours = parameter_count(arch, pooling="Embedding" in repo)
    if arch.vision is not None:  # a published count holds the vision tower too (memory/vision.py)
        ours += tower_parameter_count(arch.vision)
    assert abs(ours - published) / published < 0.005, f"{repo}: {ours:,} vs published {published:,}"


def test_fixture_covers_catalog_models() -> None:
    assert len(FIXTURE_PARAMS) >= 2


def test_bf16_weight_bytes_match_published_total_size() -> None:
    # model.safetensors.index.json total_size of Qwen2.5-7B-Instruct is the exact bf16 byte count.
    entry = PUBLISHED["Qwen/Qwen2.5-7B-Instruct"]
    ours = weight_bytes_from_config(arch_of("Qwen/Qwen2.5-7B-Instruct"), dtype_bytes=2)
    assert abs(ours - entry["weight_bytes"]) / entry["weight_bytes"] < 0.005


def test_tensor_parallel_shards_sum_close_to_whole() -> None:
    arch = arch_of("meta-llama/Llama-3.1-8B-Instruct")
    whole = weight_bytes_from_config(arch, 2, tp=1)
    half = weight_bytes_from_config(arch, 2, tp=2)
    assert half * 2 == pytest.approx(whole, rel=0.001)  # only norms are replicated


def test_kv_heads_replicated_when_fewer_than_ranks() -> None:
    arch = arch_of("Qwen/Qwen2.5-0.5B-Instruct")  # 2 KV heads
    by_name = {t.name: t for t in model_tensors(arch)}
    assert by_name["layers.0.self_attn.k_proj"].out_features == 2 * 64
    # tp=4: each rank holds one whole KV head (replicated), not half a head.
    assert weight_bytes_from_config(arch, 2, tp=4) > weight_bytes_from_config(arch, 2, tp=1) / 4


AWQ_HEADER = json.loads((FIXTURES / "safetensors_headers" / "Qwen--Qwen3-4B-AWQ.json").read_text())
AWQ = arch_of(
    "Qwen/Qwen3-8B",
    quantization_config={
        "quant_method": "awq",
        "bits": 4,
        "group_size": 128,
        "zero_point": True,
        "version": "gemm",
    },
).quantization


@pytest.mark.parametrize(
    "module",
    [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ],
)
def test_awq_layout_matches_real_checkpoint_header(module: str) -> None:
    """Qwen/Qwen3-4B-AWQ's tensors: qweight [K, N/8] I32, qzeros [K/128, N/8] I32, scales [K/128, N] F16."""
    tensors = {t.name: t for t in parse_header(AWQ_HEADER, "awq")}
    prefix = f"model.layers.0.{module}"
    k_in, packed = tensors[f"{prefix}.qweight"].shape
    n_out = packed * 8
    real = sum(
        tensors[f"{prefix}.{part}"].numel * (4 if tensors[f"{prefix}.{part}"].dtype == "I32" else 2)
        for part in ("qweight", "qzeros", "scales")
    )
    assert AWQ is not None
    assert quantized_linear_bytes(n_out, k_in, AWQ, dtype_bytes=2) == real


def test_gptq_symmetric_drops_zero_points_and_g_idx() -> None:
    arch = arch_of("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4")
    q = arch.quantization
    assert q is not None and not q.zero_point and not q.desc_act
    # 4-bit, group 128, K=5120, N=5120: qweight K*N/2 + scales (K/128)*N*2.
    assert quantized_linear_bytes(5120, 5120, q, 2) == 5120 * 5120 // 2 + 40 * 5120 * 2
    # About 0.516 bytes per parameter at 4 bit, g=128 (VLLM-MEMORY.md), plus 16-bit embeddings.
    bpp = weight_bytes_from_config(arch, 2) / parameter_count(arch)
    assert 0.55 < bpp < 0.65


def test_header_weights_apply_vllm_rules() -> None:
    arch = arch_of("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4")
    header = {
        "model.layers.0.mlp.down_proj.qweight": {"dtype": "I32", "shape": [27648 // 8, 5120]},
        "model.layers.0.mlp.down_proj.qzeros": {"dtype": "I32", "shape": [216, 640]},
        "model.layers.0.mlp.down_proj.scales": {"dtype": "F16", "shape": [216, 5120]},
        "model.layers.0.mlp.down_proj.g_idx": {"dtype": "I32", "shape": [27648]},
        "model.norm.weight": {"dtype": "F32", "shape": [5120]},
    }
    got = weights_from_header(parse_header(header, "h"), arch, dtype_bytes=2)
    # qzeros and g_idx are freed (symmetric, no desc_act); the fp32 norm is cast to fp16.
    assert got == 3456 * 5120 * 4 + 216 * 5120 * 2 + 5120 * 2


def test_header_weights_add_vocab_padding() -> None:
    arch = arch_of("meta-llama/Llama-2-7b-chat-hf", vocab_size=32001)  # e.g. one added token
    header = {"model.embed_tokens.weight": {"dtype": "F16", "shape": [32001, 4096]}}
    got = weights_from_header(parse_header(header, "h"), arch, dtype_bytes=2)
    # embed and lm_head are both padded to 32064 rows (a multiple of 64) by vLLM.
    assert got == 32001 * 4096 * 2 + 2 * 63 * 4096 * 2


def test_awq_whole_checkpoint_header_matches_config_layout() -> None:
    """Every tensor of a real Llama-2-7B AWQ checkpoint against the layout computed from the config."""
    header = json.loads((FIXTURES / "safetensors_headers" / "TheBloke--Llama-2-7B-AWQ.json").read_text())
    arch = arch_of(
        "meta-llama/Llama-2-7b-chat-hf",
        torch_dtype="float16",
        quantization_config={
            "quant_method": "awq",
            "bits": 4,
            "group_size": 128,
            "zero_point": True,
            "version": "gemm",
        },
    )
    from_header = weights_from_header(parse_header(header, "awq"), arch, dtype_bytes=2)
    from_config = weight_bytes_from_config(arch, dtype_bytes=2)
    assert from_header == from_config


def test_machete_keeps_gptq_zero_points_and_g_idx() -> None:
    """On Hopper vLLM runs GPTQ through Machete, which keeps the packed qzeros and g_idx that Marlin
    frees: per vLLM linear (q, k and v merged), (K/128) × N / 2 bytes of qzeros and K × 4 of g_idx.
    Qwen2.5-32B: qkv 5120→7168, o 5120→5120, gate_up 5120→55296, down 27648→5120, 64 layers."""
    arch = arch_of("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4")
    linears = [(7168, 5120), (5120, 5120), (55296, 5120), (5120, 27648)]
    per_layer = sum((k // 128) * n // 2 + k * 4 for n, k in linears)
    assert machete_extra_bytes(arch, dtype_bytes=2) == 64 * per_layer


def test_machete_unpacks_awq_zero_points() -> None:
    """AWQ on Machete: zero points become fp16 (K/g × N × 2 B) instead of packed 4-bit (× 0.5 B)."""
    arch = arch_of(
        "meta-llama/Llama-2-7b-chat-hf",
        torch_dtype="float16",
        quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True},
    )
    linears = [(3 * 4096, 4096), (4096, 4096), (2 * 11008, 4096), (4096, 11008)]
    assert machete_extra_bytes(arch, dtype_bytes=2) == 32 * sum((k // 128) * n * 3 // 2 for n, k in linears)


def test_machete_leaves_shapes_it_cannot_take_and_other_methods() -> None:
    """Machete needs K % 64 and N % 128: a layer outside that goes to Marlin (no extra bytes)."""
    gptq = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
    odd = arch_of("Qwen/Qwen2.5-0.5B-Instruct", intermediate_size=4800, quantization_config=gptq)
    even = arch_of("Qwen/Qwen2.5-0.5B-Instruct", quantization_config=gptq)
    # gate_up N = 9600 and down K = 4800 fail Machete's shape test: only attention layers count
    assert 0 < machete_extra_bytes(odd, dtype_bytes=2) < machete_extra_bytes(even, dtype_bytes=2)
    assert machete_extra_bytes(arch_of("Qwen/Qwen2.5-7B-Instruct"), dtype_bytes=2) == 0
    fp8 = arch_of("Qwen/Qwen3-30B-A3B-Thinking-2507-FP8")
    assert machete_extra_bytes(fp8, dtype_bytes=2) == 0


def test_load_rounding_counts_the_tails_of_odd_sized_tensors() -> None:
    """vLLM loads with PyTorch's max_split_size_mb=20: a tensor of 20 MiB or more keeps its whole
    2 MiB-rounded block. Qwen2.5-7B per layer: qkv 31.5 MiB (tail 0.5), o 24.5 (1.5), gate_up 259
    (1.0), down 129.5 (0.5); embed and lm_head 1039.5 MiB (0.5 each). vLLM logged 14.29 GiB of
    weights where the tensors hold 14.19."""
    MiB = 1 << 20
    assert load_rounding_bytes(arch_of("Qwen/Qwen2.5-7B-Instruct"), dtype_bytes=2) == (28 * 3.5 + 1) * MiB
    # Llama-3.1-8B's matrices are 2 MiB multiples: nothing (15.00 GiB logged, tensors 14.99)
    assert load_rounding_bytes(arch_of("meta-llama/Llama-3.1-8B-Instruct"), dtype_bytes=2) == 0
    # 10-20 MiB tensors keep a tail of 1 MiB or less; below 10 MiB nothing is kept
    small = arch_of("Qwen/Qwen2.5-0.5B-Instruct")
    assert load_rounding_bytes(small, dtype_bytes=2) < 2 * MiB


def test_model_facts_read_their_headers_once_per_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    import gpushare.estimate_job as estimate_job
    from gpushare.estimate_job import ModelFacts
    from gpushare.memory import ServeSettings
    from gpushare.resolve import ResolvedModel

    header = json.loads((FIXTURES / "safetensors_headers" / "TheBloke--Llama-2-7B-AWQ.json").read_text())
    config = json.loads((FIXTURES / "hf_configs" / "meta-llama--Llama-2-7b-chat-hf.json").read_text())
    resolved = ResolvedModel("llama", "test", config, tuple(parse_header(header, "awq")), None)
    facts = ModelFacts(resolved, resolved.arch())
    walks: list[int] = []

    def counting(tensors: list[object], arch: object, dtype_bytes: int) -> int:
        walks.append(dtype_bytes)
        return weights_from_header(tensors, arch, dtype_bytes)  # type: ignore[arg-type]

    monkeypatch.setattr(estimate_job, "weights_from_header", counting)
    first = facts.weights_bytes(ServeSettings(max_model_len=4096))
    assert first == facts.weights_bytes(ServeSettings(max_model_len=2048, max_num_seqs=8))
    assert walks == [2]  # another context length or batch size: the same bytes, not read again
    wider = facts.weights_bytes(ServeSettings(dtype="float32"))
    assert wider is not None and first is not None and wider > first
    assert walks == [2, 4]
    assert facts.weights_bytes(ServeSettings(tensor_parallel_size=2)) is None


def test_allocator_segments_give_large_tensors_their_own_and_pack_the_rest() -> None:
    """CUDACachingAllocator: 10 MiB or more its own segment rounded to 2 MiB; over 1 MiB shared
    20 MiB segments; the rest shared 2 MiB ones."""
    MiB = 1 << 20
    assert allocator_segment_bytes(112 * MiB) == 112 * MiB
    assert allocator_segment_bytes(129 * MiB + MiB // 2) == 130 * MiB
    assert allocator_segments([259 * MiB, 3 * MiB, 4 * MiB, 8 * MiB, 14 * MiB, 4096, 8192]) == [
        260 * MiB,
        14 * MiB,
        20 * MiB,
        2 * MiB,
    ]
    assert allocator_segments([8 * MiB] * 5) == [20 * MiB] * 2
