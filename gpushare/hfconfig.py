"""Normalise a Hugging Face config.json once into a frozen `ModelArch`.

Everything downstream reads `ModelArch`, never the raw dict. Renamed keys are handled with alias
lists in the spirit of vLLM's `getattr_iter` (vllm/transformers_utils/config.py and
vllm/config/model.py::get_num_kv_heads / get_head_size), so the numbers follow vLLM's reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.errors import ConfigError, UnsupportedModelError
from gpushare.hfrope import rope_cache_rows, uses_mrope
from gpushare.hfvision import VisionTower, parse_vision_tower

LayerKind = Literal["full", "sliding", "mla"]

# model_type values (and architectures) of models whose layers hold recurrent state (Mamba,
# linear attention). vLLM sizes their KV cache differently (fixed state per request, page
# alignment); we do not model that yet, so they get a clear error instead of a wrong number.
_HYBRID_MODEL_TYPES = frozenset(
    {
        "mamba",
        "mamba2",
        "jamba",
        "bamba",
        "zamba",
        "zamba2",
        "falcon_h1",
        "falcon_mamba",
        "granitemoehybrid",
        "nemotron_h",
        "plamo2",
        "lfm2",
        "lfm2_moe",
        "minimax",
        "minimax_text_01",
        "qwen3_next",
        "rwkv",
        "recurrent_gemma",
        "kimi_linear",
    }
)
_HYBRID_KEYS = (
    "layers_block_type",
    "hybrid_override_pattern",
    "attn_layer_indices",
    "mamba_d_state",
    "ssm_cfg",
)

# Encoder-only/embedding families that vLLM serves without a KV cache (pooling runner).
_ENCODER_ONLY_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "xlm_roberta", "nomic_bert", "modernbert"})

_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "falcon", "gpt2", "opt", "bloom"})

SUPPORTED_QUANT_METHODS = ("gptq", "awq", "fp8", "compressed-tensors", "mxfp4 (gpt-oss)")


@dataclass(frozen=True)
class MlaDims:
    """DeepSeek-style multi-head latent attention."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None


@dataclass(frozen=True)
class MoeDims:
    num_experts: int
    experts_per_token: int
    moe_intermediate_size: int
    shared_experts: int  # count of shared experts of moe_intermediate_size each (DeepSeek)
    shared_expert_intermediate_size: int  # one shared expert of this size (Qwen2-MoE); 0 if none
    first_dense_layers: int  # DeepSeek first_k_dense_replace
    moe_layer_freq: int


@dataclass(frozen=True)
class Quantization:
    """A checkpoint's weight quantization, from `quantization_config`.

    `bits` is the weight bit width (8 for fp8); `group_size` -1 means one group per input channel
    row (per-channel); `zero_point` tells whether zero points are stored (asymmetric).
    """

    method: str
    bits: int
    group_size: int
    zero_point: bool
    desc_act: bool = False
    modules_not_converted: tuple[str, ...] = ()
    weight_kind: Literal["int", "float"] = "int"
    block_size: tuple[int, int] | None = None  # fp8 block-wise scales (DeepSeek-V3 style)


@dataclass(frozen=True)
class ModelArch:
    """The facts about a model that vLLM's memory use depends on."""

    name: str
    model_type: str
    architectures: tuple[str, ...]
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int  # q/k head size for standard attention
    v_head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str  # the checkpoint's dtype as written in config.json ("bfloat16", ...)
    layer_kinds: tuple[LayerKind, ...]
    sliding_window: int | None
    gated_mlp: bool
    qkv_bias: bool
    norms_per_layer: int
    mla: MlaDims | None = None
    moe: MoeDims | None = None
    quantization: Quantization | None = None
    vision: VisionTower | None = None  # a multimodal model's vision tower (hfvision.py)
    mrope: bool = False  # multimodal rotary embeddings (Qwen-VL)
    rope_cache_rows: tuple[int, ...] = ()  # rows of each rotary cache (hfrope.py); () = max_position

    @property
    def kv_head_size(self) -> int:
        """Per-token, per-layer, per-head size of one of K or V (vLLM `get_head_size`)."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return self.head_dim


# ---------------------------------------------------------------------------------------------
# Parsing helpers


def _first(cfg: Mapping[str, Any], keys: Iterable[str], default: Any = None) -> Any:
    """The first present, non-None value among `keys` (vLLM's getattr_iter)."""
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return default


class _Reader:
    """Reads typed fields from a config dict, with errors that name the model and field."""

    def __init__(self, cfg: Mapping[str, Any], name: str) -> None:
        self.cfg = cfg
        self.name = name

    def int_(self, keys: tuple[str, ...], default: int | None = None, *, minimum: int = 1) -> int:
        value = _first(self.cfg, keys)
        if value is None:
            if default is not None:
                return default
            raise ConfigError(
                f"{self.name}: config.json has no {' / '.join(keys)}",
                hint="the config is incomplete; use the model's published config.json",
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{self.name}: config.json field {keys[0]!r} must be an integer, got {value!r}",
                hint="fix the value in config.json",
            )
        if value < minimum:
            raise ConfigError(
                f"{self.name}: config.json field {keys[0]!r} must be ≥ {minimum}, got {value}",
                hint="fix the value in config.json",
            )
        return value

    def opt_int(self, keys: tuple[str, ...]) -> int | None:
        if _first(self.cfg, keys) is None:
            return None
        return self.int_(keys, minimum=0)


def _text_config(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal wrappers (Gemma-3, Llava, Qwen2-VL...) nest the language model in text_config."""
    for key in ("text_config", "llm_config", "language_config"):
        inner = raw.get(key)
        if isinstance(inner, Mapping) and _first(inner, ("num_hidden_layers", "num_layers", "n_layer")):
            merged = dict(inner)
            for inherited in ("quantization_config", "torch_dtype", "dtype", "architectures"):
                if inherited not in merged and inherited in raw:
                    merged[inherited] = raw[inherited]
            merged.setdefault("tie_word_embeddings", raw.get("tie_word_embeddings"))
            return merged
    return raw


def _check_supported(cfg: Mapping[str, Any], model_type: str, name: str) -> None:
    archs = " ".join(str(a) for a in cfg.get("architectures") or ())
    if model_type in _HYBRID_MODEL_TYPES or any(k in cfg for k in _HYBRID_KEYS) or "Mamba" in archs:
        raise UnsupportedModelError(
            f"{name}: {model_type or archs} (recurrent/Mamba hybrid layers) is not supported yet",
            hint="gpushare models transformer attention KV caches only; size this model by hand",
        )
    if model_type in _ENCODER_ONLY_TYPES:
        raise UnsupportedModelError(
            f"{name}: encoder-only model_type {model_type!r} is not supported yet",
            hint="embedding models with a decoder architecture (e.g. e5-mistral) are supported",
        )
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list):
        odd = sorted({str(t) for t in layer_types} - {"full_attention", "sliding_attention", "attention"})
        if odd:
            raise UnsupportedModelError(
                f"{name}: layer_types {odd} (non-attention layers) are not supported yet",
                hint="gpushare models full and sliding-window attention layers only",
            )


def _uniform(kind: LayerKind, num_layers: int) -> tuple[LayerKind, ...]:
    return (kind,) * num_layers


def _alternating(sliding: list[bool]) -> tuple[LayerKind, ...]:
    return tuple("sliding" if s else "full" for s in sliding)


def _layer_kinds(
    cfg: Mapping[str, Any], model_type: str, num_layers: int, is_mla: bool, name: str
) -> tuple[tuple[LayerKind, ...], int | None]:
    """Per-layer attention kind, following how vLLM's model files decide sliding layers."""
    if is_mla:
        return _uniform("mla", num_layers), None
    window = cfg.get("sliding_window")
    if isinstance(window, bool) or (window is not None and not isinstance(window, int)):
        raise ConfigError(
            f"{name}: config.json field 'sliding_window' must be an integer or null, got {window!r}"
        )
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list):
        if len(layer_types) != num_layers:
            raise ConfigError(
                f"{name}: config.json 'layer_types' has {len(layer_types)} entries for {num_layers} layers",
                hint="layer_types needs one entry per hidden layer",
            )
        kinds: tuple[LayerKind, ...] = tuple(
            "sliding" if t == "sliding_attention" and window else "full" for t in layer_types
        )
        return kinds, window if "sliding" in kinds else None
    if not window:
        return _uniform("full", num_layers), None
    if model_type in ("gemma2", "cohere2"):
        # Gemma-2: even layers slide, odd layers attend fully (transformers Gemma2Config).
        return _alternating([i % 2 == 0 for i in range(num_layers)]), window
    if model_type in ("gemma3", "gemma3_text"):
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        return _alternating([(i + 1) % pattern != 0 for i in range(num_layers)]), window
    # the Qwen-VL wrappers run Qwen2ForCausalLM on their text config (qwen2_5_vl.py:1367-1372)
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen2_vl", "qwen2_5_vl"):
        if not cfg.get("use_sliding_window"):
            return _uniform("full", num_layers), None
        first_sliding = int(cfg.get("max_window_layers") or 0)
        return _alternating([i >= first_sliding for i in range(num_layers)]), window
    max_pos = cfg.get("max_position_embeddings")
    if isinstance(max_pos, int) and window >= max_pos:
        return _uniform("full", num_layers), None
    return _uniform("sliding", num_layers), window


def _quantization(cfg: Mapping[str, Any], name: str) -> Quantization | None:
    qc = cfg.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, Mapping):
        raise ConfigError(f"{name}: config.json 'quantization_config' must be an object")
    method = str(qc.get("quant_method") or "").lower().replace("_", "-")
    if method == "gptq":
        bits = int(qc.get("bits", 4))
        return Quantization(
            method="gptq",
            bits=bits,
            group_size=int(qc.get("group_size", 128)),
            zero_point=not bool(qc.get("sym", True)),
            desc_act=bool(qc.get("desc_act", False)),
            modules_not_converted=tuple(qc.get("modules_to_not_convert") or ()),
        )
    if method == "awq":
        return Quantization(
            method="awq",
            bits=int(_first(qc, ("bits", "w_bit"), 4)),
            group_size=int(_first(qc, ("group_size", "q_group_size"), 128)),
            zero_point=bool(qc.get("zero_point", True)),
            modules_not_converted=tuple(qc.get("modules_to_not_convert") or ()),
        )
    if method == "fp8":
        block = qc.get("weight_block_size")
        return Quantization(
            method="fp8",
            bits=8,
            group_size=-1,
            zero_point=False,
            weight_kind="float",
            modules_not_converted=tuple(_first(qc, ("modules_to_not_convert", "ignored_layers"), ()) or ()),
            block_size=(int(block[0]), int(block[1])) if block else None,
        )
    if method == "compressed-tensors":
        return _compressed_tensors(qc, name)
    if method == "mxfp4":
        return _mxfp4(cfg, name)
    raise ConfigError(
        f"{name}: quantization_config.quant_method {qc.get('quant_method')!r} is not modelled",
        hint=f"gpushare models {', '.join(SUPPORTED_QUANT_METHODS)}; use one of those checkpoints",
    )


def _compressed_tensors(qc: Mapping[str, Any], name: str) -> Quantization:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, Mapping) or not groups:
        raise ConfigError(f"{name}: compressed-tensors quantization_config has no config_groups")
    group = next(iter(groups.values()))
    weights = group.get("weights") if isinstance(group, Mapping) else None
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{name}: compressed-tensors config_groups entry has no 'weights' scheme")
    bits = int(weights.get("num_bits", 8))
    kind: Literal["int", "float"] = "float" if weights.get("type") == "float" else "int"
    strategy = weights.get("strategy", "tensor")
    group_size = int(weights.get("group_size") or -1) if strategy == "group" else -1
    block = weights.get("block_structure")
    return Quantization(
        method="compressed-tensors",
        bits=bits,
        group_size=group_size,
        zero_point=not bool(weights.get("symmetric", True)),
        weight_kind=kind,
        modules_not_converted=tuple(qc.get("ignore") or ()),
        block_size=(int(block[0]), int(block[1])) if block else None,
    )


def _mxfp4(cfg: Mapping[str, Any], name: str) -> Quantization:
    """MXFP4 (e2m1 weights, one e8m0 scale per 32): vLLM 0.26.0 serves it for gpt-oss only, as
    `gpt_oss_mxfp4` (models/config.py:342-380), where only the MoE experts are MXFP4 and every
    linear layer stays in the model dtype (quantization/mxfp4.py:71-95; the checkpoint's
    modules_to_not_convert is not read). Other MXFP4 checkpoints take other paths: refused."""
    if "GptOssForCausalLM" not in (cfg.get("architectures") or ()):
        archs = ", ".join(str(a) for a in cfg.get("architectures") or ()) or "this architecture"
        raise ConfigError(
            f"{name}: quantization_config.quant_method 'mxfp4' is modelled for gpt-oss only, not {archs}",
            hint="gpushare sizes MXFP4 as vLLM holds gpt-oss's experts; use a gpt-oss checkpoint",
        )
    return Quantization(method="mxfp4", bits=4, group_size=32, zero_point=False, weight_kind="float")


def _moe(cfg: Mapping[str, Any], r: _Reader, intermediate: int) -> MoeDims | None:
    experts = _first(cfg, ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts"))
    if not experts or int(experts) <= 1:
        return None
    moe_intermediate = r.int_(("moe_intermediate_size", "expert_intermediate_size"), default=intermediate)
    return MoeDims(
        num_experts=int(experts),
        experts_per_token=r.int_(("num_experts_per_tok", "num_experts_per_token", "moe_topk"), default=2),
        moe_intermediate_size=moe_intermediate,
        shared_experts=int(cfg.get("n_shared_experts") or 0),
        shared_expert_intermediate_size=int(cfg.get("shared_expert_intermediate_size") or 0),
        first_dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        moe_layer_freq=int(cfg.get("moe_layer_freq") or 1),
    )


def _mla(cfg: Mapping[str, Any], r: _Reader) -> MlaDims | None:
    if cfg.get("kv_lora_rank") is None:
        return None
    return MlaDims(
        kv_lora_rank=r.int_(("kv_lora_rank",)),
        qk_rope_head_dim=r.int_(("qk_rope_head_dim",)),
        qk_nope_head_dim=r.int_(("qk_nope_head_dim",)),
        v_head_dim=r.int_(("v_head_dim",)),
        q_lora_rank=r.opt_int(("q_lora_rank",)),
    )


def parse_config(raw: Mapping[str, Any], name: str) -> ModelArch:
    """Normalise a config.json dict. `name` is the model reference, used in every error."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: config.json must hold a JSON object")
    cfg = _text_config(raw)
    model_type = str(cfg.get("model_type") or raw.get("model_type") or "")
    _check_supported(cfg, model_type, name)
    r = _Reader(cfg, name)

    hidden = r.int_(("hidden_size", "n_embd", "d_model", "dim"))
    num_layers = r.int_(("num_hidden_layers", "num_layers", "n_layer", "n_layers"))
    heads = r.int_(("num_attention_heads", "n_head", "n_heads", "num_heads"))
    # vLLM ModelConfig.get_total_num_kv_heads: Falcon's multi_query means one KV head.
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
        kv_heads = 1
    else:
        kv_heads = r.int_(
            (
                "n_head_kv",
                "num_kv_heads",
                "num_key_value_heads",
                "multi_query_group_num",
                "num_attention_groups",
            ),
            default=heads,
        )
    if heads % kv_heads:
        raise ConfigError(
            f"{name}: num_attention_heads ({heads}) is not a multiple of the KV head count ({kv_heads})",
            hint="check num_key_value_heads in config.json",
        )
    explicit_head_dim = _first(cfg, ("head_dim", "kv_channels", "attention_head_dim"))
    if isinstance(explicit_head_dim, int) and explicit_head_dim > 0:
        head_dim = explicit_head_dim
    else:
        if hidden % heads:
            raise ConfigError(
                f"{name}: hidden_size ({hidden}) is not divisible by num_attention_heads ({heads})",
                hint="set head_dim in config.json",
            )
        head_dim = hidden // heads

    # ChatGLM's ffn_hidden_size, Falcon's 4x default, GPT-style n_inner.
    intermediate = r.int_(("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim"), default=4 * hidden)
    vocab = r.int_(("padded_vocab_size", "vocab_size", "n_vocab"))
    max_pos = r.int_(
        ("max_position_embeddings", "seq_length", "max_sequence_length", "n_positions", "model_max_length"),
        default=2048,
    )
    mla = _mla(cfg, r)
    moe = _moe(cfg, r, intermediate)
    kinds, window = _layer_kinds(cfg, model_type, num_layers, mla is not None, name)

    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        # Absent: the model class's default in transformers, False for most decoder families
        # (LlamaConfig, Qwen2Config, DeepseekV2Config, ...), True for these.
        tie = model_type in _TIED_BY_DEFAULT
    gated = model_type not in ("falcon", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi", "starcoder2")
    qkv_bias = bool(
        _first(
            cfg, ("attention_bias", "add_qkv_bias", "qkv_bias", "bias"), model_type in ("qwen2", "qwen2_moe")
        )
    )
    norms = 4 if model_type in ("gemma2", "gemma3", "gemma3_text") else 2
    dtype = str(_first(cfg, ("torch_dtype", "dtype"), "bfloat16")).replace("torch.", "")
    return ModelArch(
        name=name,
        model_type=model_type,
        architectures=tuple(str(a) for a in cfg.get("architectures") or ()),
        hidden_size=hidden,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        v_head_dim=mla.v_head_dim if mla else head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(tie),
        torch_dtype=dtype,
        layer_kinds=kinds,
        sliding_window=window,
        gated_mlp=gated,
        qkv_bias=qkv_bias,
        norms_per_layer=norms,
        mla=mla,
        moe=moe,
        quantization=_quantization(cfg, name),
        vision=parse_vision_tower(raw, hidden, name),
        mrope=uses_mrope(cfg),
        rope_cache_rows=rope_cache_rows(cfg, model_type, max_pos),
    )
