"""The architecture table (gpushare/architectures.py): every row against an exact copy of a
published config.json, with the numbers derived by hand from vLLM's source; what is not in the
table is refused, naming what vLLM's registry says of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpushare.architectures import (
    ROWS,
    TABLE,
    check_served,
    known_registries,
    registry_entry,
    resolve_pooling,
)
from gpushare.errors import ArchitectureError, InputError, UnsupportedModelError
from gpushare.hfconfig import parse_config, with_model_type_defaults
from gpushare.memory import GpuTarget, ServeSettings, estimate
from gpushare.memory.kv import kv_bytes_per_token_per_layer
from gpushare.memory.settings import model_dtype, with_batching_defaults
from gpushare.units import GiB
from gpushare.weights import parameter_count, weight_bytes_from_config

FIXTURES = Path(__file__).parents[1] / "fixtures"
HF_CONFIGS = FIXTURES / "hf_configs"  # exact published copies (the bundled catalog)
CONSTRUCTED = FIXTURES / "constructed_configs"  # built from known values: SOURCES.md says so
UNSUPPORTED = FIXTURES / "unsupported_configs"

# The H200 of bench/gpu/results/h200-i11 (gpuinfo.json).
H200 = GpuTarget("NVIDIA H200", cuda_total_bytes=150_109_880_320, nvml_total_bytes=150_754_820_096)
A100 = GpuTarget(
    "NVIDIA A100-SXM4-80GB", 85_051_572_224, 85_899_345_920, is_a100=True, compute_capability=(8, 0)
)


def load(folder: Path, repo_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / (repo_id.replace("/", "--", 1) + ".json")).read_text())
    return data


def test_every_catalog_config_names_a_row_served_by_the_checked_release() -> None:
    # Today's catalog (and with it tests/fixtures/hf_configs) stays accepted.
    for path in sorted(HF_CONFIGS.glob("*.json")):
        arch = parse_config(json.loads(path.read_text()), path.stem)
        assert arch.architecture is not None, path.name
        assert check_served(arch.name, arch.architectures, "0.26.0", exact_weights=False) is None


def test_every_row_is_in_the_registry_of_the_release_it_was_checked_against() -> None:
    for row in ROWS:
        entry = registry_entry(row.name, "0.26.0")
        assert entry is not None
        if row.served.until is None:
            assert f"{entry.category}" != "None", row.name
            assert entry.vllm_class == row.vllm_class, row.name
        else:  # dropped: vLLM's _PREVIOUSLY_SUPPORTED_MODELS names the last release
            assert entry.category is None and entry.last_release == row.served.until, row.name
    assert "0.26.0" in known_registries()


# ---- one test per architecture against a published config: parameters as vLLM builds them
#
# (id, folder, repo, parameters, note on how they follow from vLLM's source)
PARAMS = [
    # Qwen3ForCausalLM (models/qwen3.py): embed 151,669×1024 (tied), 28 layers of
    # 2 norms 2×1024 + q 2048×1024 + k, v 1024×1024 each + o 1024×2048 + q/k norms 2×128
    # + gate_up 6144×1024 + down 1024×3072, final norm 1024 → 595,776,512 (the checkpoint's sum).
    ("qwen3-embedding-0.6b", HF_CONFIGS, "Qwen/Qwen3-Embedding-0.6B", 595_776_512),
    # Gemma3ForCausalLM (models/gemma3.py): embed 262,144×1152 (tied), 26 layers of 4 norms
    # + q 1024×1152 + k, v 256×1152 + o 1152×1024 + q/k norms 2×256 + gate_up 13,824×1152
    # + down 1152×6912, final norm → 999,885,952 (google/gemma-3-1b-it's model card: 1.0 B).
    ("gemma-3-1b-it", HF_CONFIGS, "google/gemma-3-1b-it", 999_885_952),
    # ChatGLMForCausalLM (models/chatglm.py): 2 × 65,024×4096 + 28 × (2·4096 + 4096·4608
    # + 4608 + 4096·4096 + 4096·27,392 + 13,696·4096) + 4096 (vllm-facts §5).
    ("chatglm3-6b", HF_CONFIGS, "THUDM/chatglm3-6b", 6_243_584_000),
    # QWenLMHeadModel (vLLM 0.23.0 models/qwen.py): 2 × 151,936×4096 + 32 × (2·4096
    # + 4096·12,288 + 12,288 + 4096·4096 + 4096·22,016 + 11,008·4096) + 4096: the MLP is
    # intermediate_size // 2 = 11,008 wide (vllm-facts §5). Config built from known values.
    ("qwen-7b-chat", CONSTRUCTED, "Qwen/Qwen-7B-Chat", 7_721_324_544),
    # Qwen3-8B's published parameter count (Hub: 8.19 B = 8,190,735,360).
    ("qwen3-8b", HF_CONFIGS, "Qwen/Qwen3-8B", 8_190_735_360),
]


@pytest.mark.parametrize(("folder", "repo", "params"), [pytest.param(*c[1:], id=c[0]) for c in PARAMS])
def test_parameters_as_vllm_builds_them(folder: Path, repo: str, params: int) -> None:
    assert parameter_count(parse_config(load(folder, repo), repo)) == params


def test_qwen_7b_chat_mlp_is_half_its_intermediate_size_and_refused_after_0_23() -> None:
    arch = parse_config(load(CONSTRUCTED, "Qwen/Qwen-7B-Chat"), "Qwen/Qwen-7B-Chat")
    assert (arch.intermediate_size, arch.num_kv_heads, arch.qkv_bias) == (11_008, 32, True)
    # bf16: 2 bytes per parameter, 14.38 GiB (the old reading, intermediate 22016 per half: 22.45)
    assert weight_bytes_from_config(arch, 2) == 2 * 7_721_324_544
    served = ServeSettings(max_model_len=8192, vllm_version="0.23.0")
    assert estimate(arch, A100, served).weights_bytes < 14.5 * GiB
    with pytest.raises(ArchitectureError) as info:
        estimate(arch, A100, ServeSettings(max_model_len=8192, vllm_version="0.26.0"))
    assert "until 0.23.0" in info.value.message
    assert info.value.hint is not None and "Qwen2ForCausalLM" in info.value.hint


def test_chatglm3_kv_heads_are_its_query_groups() -> None:
    arch = parse_config(load(HF_CONFIGS, "THUDM/chatglm3-6b"), "glm")
    # GLMAttention: multi_query_group_num KV heads with multi_query_attention; head_dim 4096/32.
    assert (arch.num_kv_heads, arch.head_dim, arch.max_position_embeddings) == (2, 128, 8192)
    assert kv_bytes_per_token_per_layer(arch, 2, 1) == 2 * 2 * 128 * 2  # 1 KiB per layer
    no_mqa = {**load(HF_CONFIGS, "THUDM/chatglm3-6b"), "multi_query_attention": False}
    assert parse_config(no_mqa, "glm").num_kv_heads == 32


def test_gemma_3_1b_layers_and_window() -> None:
    arch = parse_config(load(HF_CONFIGS, "google/gemma-3-1b-it"), "g")
    # sliding_window_pattern 6: layers 5, 11, 17, 23 attend fully, the other 22 slide over 512.
    assert arch.layer_kinds.count("full") == 4 and arch.sliding_window == 512
    assert [i for i, k in enumerate(arch.layer_kinds) if k == "full"] == [5, 11, 17, 23]


# ---- per-model_type defaults


def test_gemma_3_4b_text_config_takes_gemma3_text_defaults() -> None:
    # google/gemma-3-4b-it's text_config as published (/work/notes/i11/configs, two copies):
    # no heads, KV heads, head_dim, vocab or max_position_embeddings.
    text = {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    }
    filled = with_model_type_defaults(text, "gemma3_text")
    # Gemma3TextConfig (transformers 4.57.6 L169-199): 8 heads, 4 KV heads, head_dim 256,
    # vocab 262,208, 131,072 positions, tied, pattern 6.
    assert {k: filled[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")} == {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
    }
    arch = parse_config({"architectures": ["Gemma3ForCausalLM"], **text}, "gemma-3-4b text")
    assert (arch.vocab_size, arch.max_position_embeddings, arch.tie_word_embeddings) == (
        262_208,
        131_072,
        True,
    )
    assert arch.layer_kinds.count("full") == 5  # layers 5, 11, 17, 23, 29
    # A composite Gemma-3 config's text_config without a model_type is still a Gemma3TextConfig.
    wrapped = {"model_type": "gemma3", "architectures": ["Gemma3ForCausalLM"], "text_config": text}
    assert parse_config(wrapped, "g").num_attention_heads == 8


@pytest.mark.parametrize(
    ("model_type", "key", "value"),
    [
        pytest.param("qwen3", "head_dim", 128, id="qwen3-explicit-head_dim"),
        pytest.param("xlm-roberta", "pad_token_id", 1, id="xlm-roberta-pad"),
        pytest.param("bert", "pad_token_id", 0, id="bert-pad"),
        pytest.param("chatglm", "seq_length", 2048, id="chatglm-seq_length"),
        pytest.param("qwen", "kv_channels", 128, id="qwen-kv_channels"),
    ],
)
def test_defaults_fill_only_what_is_missing(model_type: str, key: str, value: int) -> None:
    assert with_model_type_defaults({}, model_type)[key] == value
    assert with_model_type_defaults({key: 7}, model_type)[key] == 7


def test_a_default_never_shadows_an_alias_the_file_uses() -> None:
    # An old Qwen file says n_embd: the hidden_size default must not win over it.
    assert "hidden_size" not in with_model_type_defaults({"n_embd": 5120}, "qwen")


# ---- pooling models


def test_bge_m3_is_an_encoder_sized_as_vllm_holds_it() -> None:
    arch = parse_config(load(HF_CONFIGS, "BAAI/bge-m3"), "bge-m3")
    pooling = ServeSettings(max_model_len=8192, runner="pooling")
    # float32 checkpoint served in float16 under the pooling runner (config/model.py
    # _resolve_auto_dtype); RoBERTa positions start at pad + 1: 8194 − 2 = 8192 usable.
    assert model_dtype(arch, pooling) == "float16" and arch.max_position_embeddings == 8192
    # models/roberta.py: (250,002 → 250,048 + 8194 → 8256 + 1 → 64 rows) × 1024 + LayerNorm
    # 2·1024 + 24 × (qkv 3072·1024 + 3072 + dense 1024·1024 + 1024 + 2 LN 2·1024 + intermediate
    # 4096·1024 + 4096 + output 1024·4096 + 1024) = 566,880,256 parameters (the published
    # 567,754,752 less the HF pooler's 1,049,600, plus 175,104 padding rows' worth) in fp16, and
    # the int64 position_ids buffer 8194 × 8.
    assert weight_bytes_from_config(arch, 2, pooling=True) == 566_880_256 * 2 + 8194 * 8
    reranker = parse_config(load(HF_CONFIGS, "BAAI/bge-reranker-v2-m3"), "reranker")
    # RobertaClassificationHead in fp32: dense 1024·1024 + 1024, out_proj 1·1024 + 1.
    head = (1024 * 1024 + 1024 + 1024 + 1) * 4
    assert weight_bytes_from_config(reranker, 2, pooling=True) == 566_880_256 * 2 + 8194 * 8 + head


def test_bert_model_from_bertconfig_defaults() -> None:
    # No exact published BertModel config was found; BertConfig's defaults (transformers 4.57.6
    # L100-116) are google-bert/bert-base-uncased's values. models/bert.py, no pooler:
    # (30,522 + 512 + 2) × 768 + LN 2·768 + 12 × (qkv 2304·768 + 2304 + dense 768·768 + 768
    # + LN 2·768 + 3072·768 + 3072 + 768·3072 + 768 + LN 2·768) = 108,891,648
    # (bert-base-uncased's 109,482,240 less its pooler, 768·768 + 768).
    arch = parse_config({"architectures": ["BertModel"], "model_type": "bert"}, "bert-base")
    assert parameter_count(arch) == 108_891_648
    assert arch.encoder is not None and arch.encoder.position_offset == 0
    assert arch.max_position_embeddings == 512


def test_encoder_batch_holds_a_whole_request() -> None:
    arch = parse_config(load(HF_CONFIGS, "BAAI/bge-m3"), "bge-m3")
    pooling = ServeSettings(max_model_len=8192, runner="pooling")
    # No chunked prefill: an A100's default 2048 becomes max(8192, 2048); its 256 seqs stay.
    pinned = with_batching_defaults(pooling, A100, arch)
    assert (pinned.max_num_batched_tokens, pinned.max_num_seqs) == (8192, 256)
    with pytest.raises(InputError, match="below max_model_len"):
        estimate(arch, A100, ServeSettings(max_model_len=8192, runner="pooling", max_num_batched_tokens=4096))


# Measured on the H200 with vLLM 0.26.0 (bench/gpu/results/h200-i11 and h200-i11-pooling):
# NVML bytes of the server's process at ready.
MEASURED = [
    ("bge-m3", "BAAI/bge-m3", {}, 2_743_074_816),
    ("bge-m3-eager", "BAAI/bge-m3", {"enforce_eager": True}, 2_030_043_136),
    ("bge-m3-128-seqs", "BAAI/bge-m3", {"max_num_seqs": 128}, 2_682_257_408),
    ("bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", {}, 2_738_880_512),
]


@pytest.mark.parametrize(("repo", "extra", "nvml"), [pytest.param(*c[1:], id=c[0]) for c in MEASURED])
def test_encoder_process_within_3_percent_of_nvml(repo: str, extra: dict[str, object], nvml: int) -> None:
    arch = parse_config(load(HF_CONFIGS, repo), repo)
    settings = ServeSettings(max_model_len=8192, runner="pooling", **extra)  # type: ignore[arg-type]
    e = estimate(arch, H200, settings, gpu_memory_utilization=0.05)
    assert (e.kv_cache_bytes, e.num_blocks, e.activation_bytes) == (0, 0, 0)
    assert abs(e.process_bytes - nvml) / nvml < 0.03


def test_qwen3_embedding_keeps_its_kv_cache_and_profiles_the_pooler() -> None:
    arch = parse_config(load(HF_CONFIGS, "Qwen/Qwen3-Embedding-0.6B"), "qemb")
    settings = ServeSettings(max_model_len=8192, runner="pooling", task="embed")
    e = estimate(arch, H200, settings, gpu_memory_utilization=0.08)
    # vLLM logged (alone, H200): torch peak 0.32 GiB, CUDA graphs estimated 0.26 GiB and
    # subtracted (V1 runner), 86,672 KV tokens, NVML 12,415,139,840 B.
    assert abs(e.activation_bytes / GiB - 0.32) < 0.01 and e.cuda_graph_in_budget
    assert abs(e.kv_cache_tokens - 86_672) / 86_672 < 0.02
    assert abs(e.process_bytes - 12_415_139_840) / 12_415_139_840 < 0.03


# ---- runner and task


def test_runner_and_task_resolve_as_vllm_resolves_them() -> None:
    bge, qwen3 = TABLE["XLMRobertaModel"], TABLE["Qwen3ForCausalLM"]
    assert resolve_pooling(bge, "auto", None, False) == ("pooling", None)
    assert resolve_pooling(qwen3, "auto", None, True) == ("pooling", "embed")  # a ST folder
    assert resolve_pooling(qwen3, "auto", None, False) == ("generate", None)
    assert resolve_pooling(qwen3, "auto", "rerank", False) == ("pooling", "classify")
    with pytest.raises(InputError):
        resolve_pooling(qwen3, "generate", "embed", False)


def test_a_pooling_class_refuses_the_generate_runner_and_foreign_tasks() -> None:
    arch = parse_config(load(HF_CONFIGS, "BAAI/bge-m3"), "bge-m3")
    with pytest.raises(ArchitectureError, match="runner generate"):
        estimate(arch, H200, ServeSettings(max_model_len=8192, runner="generate"))
    with pytest.raises(ArchitectureError, match="serves embed only"):
        estimate(arch, H200, ServeSettings(max_model_len=8192, runner="pooling", task="classify"))


# ---- refusals


FROB = {
    "architectures": ["FrobForCausalLM"],
    "model_type": "frobnicator",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


def test_an_unknown_architecture_is_refused_not_sized_as_a_llama() -> None:
    arch = parse_config(FROB, "frob")
    with pytest.raises(ArchitectureError, match="FrobForCausalLM") as info:
        estimate(arch, H200, ServeSettings(max_model_len=4096))
    assert "not in vLLM 0.26.0's model registry" in info.value.message
    # exact weights do not help an architecture vLLM does not serve
    with pytest.raises(ArchitectureError):
        estimate(arch, H200, ServeSettings(max_model_len=4096), weights_bytes=13 * GiB)


def test_a_served_architecture_outside_the_table_needs_exact_weights() -> None:
    falcon = {**FROB, "architectures": ["FalconForCausalLM"], "model_type": "falcon"}
    arch = parse_config(falcon, "falcon")
    with pytest.raises(ArchitectureError, match="falcon.FalconForCausalLM") as info:
        estimate(arch, H200, ServeSettings(max_model_len=4096))
    assert info.value.hint is not None and "safetensors" in info.value.hint
    e = estimate(arch, H200, ServeSettings(max_model_len=4096), weights_bytes=13 * GiB)
    assert any("not in gpushare's table" in note for note in e.notes)


def test_qwen3_next_stays_not_supported_yet() -> None:
    cfg = load(UNSUPPORTED, "Qwen/Qwen3-Next-80B-A3B-Instruct")
    with pytest.raises(UnsupportedModelError, match="not supported yet"):
        parse_config(cfg, "qwen3-next")


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}


def _ct(weights: dict[str, object]) -> dict[str, object]:
    return {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": weights}}}


@pytest.mark.parametrize(
    ("quant", "words"),
    [
        pytest.param({**GPTQ, "bits": 3}, "GPTQ 3-bit", id="gptq-3-bit"),
        pytest.param({**GPTQ, "bits": 2}, "GPTQ 2-bit", id="gptq-2-bit"),
        pytest.param({**GPTQ, "sym": False}, "asymmetric", id="gptq-asymmetric"),
        pytest.param({**GPTQ, "group_size": 256}, "group_size 256", id="gptq-group-256"),
        pytest.param({"quant_method": "awq", "bits": 8, "group_size": 128}, "AWQ 8-bit", id="awq-8-bit"),
        pytest.param(
            _ct({"num_bits": 3, "type": "int", "strategy": "group", "group_size": 128}),
            "3-bit integer",
            id="compressed-tensors-3-bit",
        ),
        pytest.param(
            _ct({"num_bits": 4, "type": "float"}),
            "float weights",
            id="nvfp4",
        ),
    ],
)
def test_quantization_vllm_refuses_is_refused(quant: dict[str, object], words: str) -> None:
    cfg = {**load(HF_CONFIGS, "Qwen/Qwen2.5-7B-Instruct"), "quantization_config": quant}
    with pytest.raises(UnsupportedModelError, match=words):
        parse_config(cfg, "q")


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_4_and_8_bit_symmetric_are_served(bits: int) -> None:
    cfg = {**load(HF_CONFIGS, "Qwen/Qwen2.5-7B-Instruct"), "quantization_config": {**GPTQ, "bits": bits}}
    assert parse_config(cfg, "q").quantization is not None
