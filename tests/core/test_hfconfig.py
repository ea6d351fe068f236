"""Config normalisation against exact copies of published config.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpushare.errors import ConfigError, UnsupportedModelError
from gpushare.hfconfig import parse_config

# Exact copies of published config.json files (a link to the bundled catalog).
HF_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hf_configs"

FIXTURES = Path(__file__).parents[1] / "fixtures"


def load(repo_id: str) -> dict[str, object]:
    path = HF_CONFIGS / (repo_id.replace("/", "--", 1) + ".json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


# id, repo, layers, kv heads, KV head size (MLA: kv_lora_rank + rope dim), layer kinds, sliding window, tied
CASES = [
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 32, 8, 128, {"full"}, None, False),
    ("llama2-7b", "meta-llama/Llama-2-7b-chat-hf", 32, 32, 128, {"full"}, None, False),
    ("mistral-7b-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", 32, 8, 128, {"full"}, None, False),
    ("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", 24, 2, 64, {"full"}, None, True),
    ("qwen2.5-7b-use_sliding_window-false", "Qwen/Qwen2.5-7B-Instruct", 28, 4, 128, {"full"}, None, False),
    ("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 80, 8, 128, {"full"}, None, False),
    ("qwen3-0.6b-explicit-head_dim", "Qwen/Qwen3-0.6B", 28, 8, 128, {"full"}, None, True),
    ("qwen3-8b", "Qwen/Qwen3-8B", 36, 8, 128, {"full"}, None, False),
    ("chatglm3-aliases", "THUDM/chatglm3-6b", 28, 2, 128, {"full"}, None, False),
    ("gemma2-alternating", "google/gemma-2-9b-it", 42, 8, 256, {"full", "sliding"}, 4096, True),
    ("phi3-mini-window", "microsoft/Phi-3-mini-4k-instruct", 32, 32, 96, {"sliding"}, 2047, False),
    ("mixtral-moe", "mistralai/Mixtral-8x7B-v0.1", 32, 8, 128, {"full"}, None, False),
    ("deepseek-v2-lite-mla", "deepseek-ai/DeepSeek-V2-Lite", 27, 16, 576, {"mla"}, None, False),
]


@pytest.mark.parametrize(
    ("repo", "layers", "kv_heads", "head_dim", "kinds", "window", "tied"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_catalog_configs_normalise(
    repo: str, layers: int, kv_heads: int, head_dim: int, kinds: set[str], window: int | None, tied: bool
) -> None:
    arch = parse_config(load(repo), repo)
    assert arch.num_layers == layers
    assert arch.num_kv_heads == kv_heads
    assert arch.kv_head_size == head_dim
    assert set(arch.layer_kinds) == kinds
    assert arch.sliding_window == window
    assert arch.tie_word_embeddings is tied


def test_gemma2_even_layers_slide() -> None:
    arch = parse_config(load("google/gemma-2-9b-it"), "gemma")
    assert arch.layer_kinds[:4] == ("sliding", "full", "sliding", "full")


def test_mla_dims_and_moe() -> None:
    arch = parse_config(load("deepseek-ai/DeepSeek-V2-Lite"), "dsv2")
    assert arch.mla is not None and arch.mla.kv_lora_rank == 512 and arch.mla.qk_rope_head_dim == 64
    assert arch.kv_head_size == 576
    assert arch.moe is not None and arch.moe.num_experts == 64 and arch.moe.first_dense_layers == 1


def test_gptq_quantization_config() -> None:
    arch = parse_config(load("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4"), "gptq")
    q = arch.quantization
    assert q is not None
    assert (q.method, q.bits, q.group_size, q.zero_point, q.desc_act) == ("gptq", 4, 128, False, False)


BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 2,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        pytest.param(
            {"multi_query": True, "model_type": "falcon", "num_key_value_heads": None},
            lambda a: a.num_kv_heads == 1,
            id="falcon-multi_query-one-kv-head",
        ),
        pytest.param({"n_head_kv": 4}, lambda a: a.num_kv_heads == 4, id="n_head_kv-alias-wins"),
        pytest.param({"head_dim": 256}, lambda a: a.head_dim == 256, id="explicit-head_dim"),
        pytest.param({"head_dim": 0}, lambda a: a.head_dim == 128, id="zero-head_dim-falls-back"),
        pytest.param(
            {"text_config": {**BASE, "num_hidden_layers": 5}, "num_hidden_layers": None},
            lambda a: a.num_layers == 5,
            id="text_config-nesting",
        ),
        pytest.param(
            {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 512},
            lambda a: a.layer_kinds == ("sliding", "full") and a.sliding_window == 512,
            id="layer_types",
        ),
        pytest.param(
            {"sliding_window": 4096},
            lambda a: a.layer_kinds == ("full", "full"),
            id="window-at-max-position-is-full",
        ),
        pytest.param(
            {"sliding_window": 1024},
            lambda a: a.layer_kinds == ("sliding", "sliding"),
            id="mistral-style-window",
        ),
        pytest.param(
            {
                "quantization_config": {
                    "quant_method": "awq",
                    "bits": 4,
                    "group_size": 128,
                    "zero_point": True,
                    "modules_to_not_convert": ["visual"],
                }
            },
            lambda a: a.quantization.zero_point and a.quantization.modules_not_converted == ("visual",),
            id="awq",
        ),
        pytest.param(
            {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
            lambda a: a.quantization.bits == 8 and a.quantization.block_size == (128, 128),
            id="fp8-block",
        ),
        pytest.param(
            {
                "quantization_config": {
                    "quant_method": "compressed-tensors",
                    "config_groups": {
                        "group_0": {
                            "weights": {
                                "num_bits": 4,
                                "type": "int",
                                "strategy": "group",
                                "group_size": 128,
                                "symmetric": True,
                            },
                            "targets": ["Linear"],
                        }
                    },
                    "ignore": ["lm_head"],
                }
            },
            lambda a: (a.quantization.bits, a.quantization.group_size) == (4, 128),
            id="compressed-tensors-w4a16",
        ),
    ],
)
def test_aliases(overrides: dict[str, object], check: object) -> None:
    cfg = {**BASE, **overrides}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    arch = parse_config(cfg, "m")
    assert check(arch)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("overrides", "error", "words"),
    [
        pytest.param({"num_hidden_layers": None}, ConfigError, "num_hidden_layers", id="missing-layers"),
        pytest.param(
            {"hidden_size": "4096"}, ConfigError, "'hidden_size' must be an integer", id="string-size"
        ),
        pytest.param({"num_key_value_heads": 7}, ConfigError, "not a multiple", id="bad-kv-heads"),
        pytest.param(
            {"quantization_config": {"quant_method": "bitsandbytes"}},
            ConfigError,
            "not modelled",
            id="unknown-quant-method",
        ),
        pytest.param({"model_type": "jamba"}, UnsupportedModelError, "not supported yet", id="jamba"),
        pytest.param(
            {"layers_block_type": ["mamba", "attention"]},
            UnsupportedModelError,
            "not supported yet",
            id="hybrid-keys",
        ),
        pytest.param(
            {"layer_types": ["linear_attention", "full_attention"]},
            UnsupportedModelError,
            "not supported yet",
            id="linear-attention-layers",
        ),
        pytest.param({"model_type": "bert"}, UnsupportedModelError, "encoder-only", id="encoder-only"),
    ],
)
def test_bad_configs_name_model_and_field(
    overrides: dict[str, object], error: type[Exception], words: str
) -> None:
    cfg = {k: v for k, v in {**BASE, **overrides}.items() if v is not None}
    with pytest.raises(error) as info:
        parse_config(cfg, "acme/model")
    assert "acme/model" in str(info.value)
    assert words in str(info.value)
