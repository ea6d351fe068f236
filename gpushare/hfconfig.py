"""Normalise a Hugging Face config.json once into a frozen `ModelArch`.

Everything downstream reads `ModelArch`, never the raw dict. Renamed keys are handled with alias
lists in the spirit of vLLM's `getattr_iter` (vllm/transformers_utils/config.py and
vllm/config/model.py::get_num_kv_heads / get_head_size), so the numbers follow vLLM's reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.architectures import ROWS, TABLE, Architecture, lookup
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

# Encoder-only/embedding families that vLLM serves without a KV cache (pooling runner). Those with a
# row in gpushare/architectures.py are sized with the encoder layout; the others are refused.
_ENCODER_ONLY_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "xlm_roberta", "nomic_bert", "modernbert"})

_QK_NORM_TYPES = frozenset(
    {"qwen3", "qwen3_moe", "qwen3_vl_text", "qwen3_vl_moe_text", "gemma3", "gemma3_text"}
)

_QWEN2_QKV_BIAS = frozenset(
    {"qwen", "qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl", "qwen2_vl_text", "qwen2_5_vl_text"}
)
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
class EncoderDims:
    """What a BERT/RoBERTa encoder holds besides its layers (vLLM models/bert.py, roberta.py)."""

    type_vocab_size: int
    position_rows: int  # rows of the position embedding (config max_position_embeddings)
    position_offset: int  # RoBERTa counts positions from pad_token_id + 1, BERT from 0
    classifier_labels: int  # outputs of a sequence-classification head; 0 without one


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
    architecture: str | None = None
    """The row of gpushare's architecture table this model is sized by (gpushare/architectures.py);
    None when the config names no architecture the table has (sized only from exact weights)."""
    encoder: EncoderDims | None = None
    """Set for encoder-only models (no KV cache): their embeddings and classifier head."""
    qk_norm: bool = False
    """RMSNorm of q and k per head (head_dim weights each) in every layer: Qwen3 (vLLM
    models/qwen3.py q_norm/k_norm), Gemma-3 (models/gemma3.py)."""
    num_labels: int = 2
    """Outputs of a classification head (`--convert classify`): config num_labels or id2label,
    transformers' default 2."""

    @property
    def row(self) -> Architecture | None:
        return TABLE.get(self.architecture) if self.architecture else None

    @property
    def encoder_only(self) -> bool:
        """Bidirectional attention with no KV cache (vLLM EncoderOnlyAttention): bge-m3, BERT."""
        return self.encoder is not None

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


# The keys each field is read from, first present wins (vLLM's getattr_iter). The per-model_type
# defaults below fill a field only when none of its keys is present.
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_LAYERS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
_HEADS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
_KV_HEADS = (
    "n_head_kv",
    "num_kv_heads",
    "num_key_value_heads",
    "multi_query_group_num",
    "num_attention_groups",
)
_HEAD_DIM = ("head_dim", "kv_channels", "attention_head_dim")
# ChatGLM's ffn_hidden_size, Falcon's 4x default, GPT-style n_inner.
_INTERMEDIATE = ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim")
_VOCAB = ("padded_vocab_size", "vocab_size", "n_vocab")
_MAX_POS = ("max_position_embeddings", "seq_length", "max_sequence_length", "n_positions", "model_max_length")
_ALIAS_GROUPS = (_HIDDEN, _LAYERS, _HEADS, _KV_HEADS, _HEAD_DIM, _INTERMEDIATE, _VOCAB, _MAX_POS)


# ---------------------------------------------------------------------------------------------
# Per-model_type defaults, applied before validation, as transformers applies them: a config.json
# that leaves a field out gets the config class's default. vLLM 0.26.0 requires transformers
# >= 4.56, < 5 (requirements/common.txt), so these are transformers 4.57.6's
# (models/<type>/configuration_<type>.py), or the remote code / vLLM config class the model uses.
# Only fields gpushare reads are listed.

_MODEL_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    # Gemma3TextConfig.__init__ L169-199; sliding_window_pattern from kwargs, default 6 (L236).
    # google/gemma-3-4b-it and -27b-it publish a text_config without heads, head_dim, vocab or
    # max_position_embeddings: these fill them.
    "gemma3_text": {
        "vocab_size": 262_208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131_072,
        "tie_word_embeddings": True,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
    },
    # Qwen3Config.__init__ L155-179 (KV heads None → heads, L191-192: the reader's fallback).
    "qwen3": {
        "vocab_size": 151_936,
        "hidden_size": 4096,
        "intermediate_size": 22_016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "head_dim": 128,
        "max_position_embeddings": 32_768,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "max_window_layers": 28,
    },
    # XLMRobertaConfig.__init__ L100-121 (its vocab default is BERT's 30522; every XLM-R file sets
    # 250002); tie_word_embeddings: PretrainedConfig's True (configuration_utils.py L220).
    "xlm-roberta": {
        "vocab_size": 30_522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "pad_token_id": 1,
        "tie_word_embeddings": True,
    },
    # BertConfig.__init__ L100-116: as XLM-R, but pad_token_id 0.
    "bert": {
        "vocab_size": 30_522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    },
    # vLLM's own ChatGLMConfig (vllm 0.26.0 transformers_utils/configs/chatglm.py L16-44), which it
    # registers for model_type chatglm: vocab_size := padded_vocab_size, max_position_embeddings
    # := seq_length; no tie_word_embeddings of its own, so PretrainedConfig's True.
    "chatglm": {
        "num_layers": 28,
        "padded_vocab_size": 65_024,
        "hidden_size": 4096,
        "ffn_hidden_size": 13_696,
        "kv_channels": 128,
        "num_attention_heads": 32,
        "seq_length": 2048,
        "add_qkv_bias": False,
        "multi_query_attention": False,
        "multi_query_group_num": 1,
        "tie_word_embeddings": True,
    },
    # The first Qwen's remote code, QWenConfig.__init__ L13-40 (configuration_qwen.py in the model
    # repo; /work/notes/i11/hf-defaults.md section 9): MHA, no kv-head field.
    "qwen": {
        "vocab_size": 151_936,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 8192,
        "kv_channels": 128,
        "intermediate_size": 22_016,
        "tie_word_embeddings": False,
    },
}
# A composite config builds its text_config with this class even when the dict names no model_type
# (Gemma3Config.__init__ L317-321; LlavaConfig L126: `llama`).
_TEXT_CONFIG_TYPES = {"gemma3": "gemma3_text", "llava": "llama"}
# A composite config's text_config class defaults that gpushare applies only there: LLaVA builds
# its text_config as a LlamaConfig (LlavaConfig L126), and llava-hf/llava-1.5-7b-hf's names only
# the context, vocabulary and norm eps. LlamaConfig.__init__ L162-184 (KV heads None → heads,
# L195; head_dim hidden // heads, L209).
_COMPOSITE_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llava": {
        "vocab_size": 32_000,
        "hidden_size": 4096,
        "intermediate_size": 11_008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    },
}


def with_model_type_defaults(cfg: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """`cfg` with its model_type's defaults filled in where the file leaves a field out (none of
    the field's keys present, or null)."""
    out = dict(cfg)
    for key, value in _MODEL_TYPE_DEFAULTS.get(model_type, {}).items():
        group = next((g for g in _ALIAS_GROUPS if key in g), (key,))
        if all(out.get(k) is None for k in group):
            out[key] = value
    return out


def _text_config(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal wrappers (Gemma-3, Llava, Qwen2-VL...) nest the language model in text_config."""
    for key in ("text_config", "llm_config", "language_config"):
        inner = raw.get(key)
        if isinstance(inner, Mapping):
            inner_type = str(
                inner.get("model_type") or _TEXT_CONFIG_TYPES.get(str(raw.get("model_type")), "")
            )
            inner = with_model_type_defaults(inner, inner_type)
            for key, value in _COMPOSITE_TEXT_DEFAULTS.get(str(raw.get("model_type")), {}).items():
                group = next((g for g in _ALIAS_GROUPS if key in g), (key,))
                if all(inner.get(k) is None for k in group):
                    inner[key] = value
            if inner_type:
                inner["model_type"] = inner_type
        if isinstance(inner, Mapping) and _first(inner, ("num_hidden_layers", "num_layers", "n_layer")):
            merged = dict(inner)
            for inherited in ("quantization_config", "torch_dtype", "dtype", "architectures"):
                if inherited not in merged and inherited in raw:
                    merged[inherited] = raw[inherited]
            merged.setdefault("tie_word_embeddings", raw.get("tie_word_embeddings"))
            return merged
    return raw


def _check_supported(cfg: Mapping[str, Any], model_type: str, name: str, row: Architecture | None) -> None:
    archs = " ".join(str(a) for a in cfg.get("architectures") or ())
    if model_type in _HYBRID_MODEL_TYPES or any(k in cfg for k in _HYBRID_KEYS) or "Mamba" in archs:
        raise UnsupportedModelError(
            f"{name}: {model_type or archs} (recurrent/Mamba hybrid layers) is not supported yet",
            hint="gpushare sizes transformer attention KV caches only; size this model by hand",
        )
    if model_type in _ENCODER_ONLY_TYPES and (row is None or not row.encoder_only):
        sized = ", ".join(r.name for r in ROWS if r.encoder_only)
        raise UnsupportedModelError(
            f"{name}: encoder-only model_type {model_type!r} with architectures [{archs}] is not "
            "supported yet",
            hint=f"gpushare sizes these encoder architectures: {sized}; embedding models with a decoder "
            "architecture (Qwen3-Embedding, e5-mistral) are sized with `--runner pooling`",
        )
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list):
        odd = sorted({str(t) for t in layer_types} - {"full_attention", "sliding_attention", "attention"})
        if odd:
            raise UnsupportedModelError(
                f"{name}: layer_types {odd} (non-attention layers) are not supported yet",
                hint="gpushare sizes full and sliding-window attention layers only",
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
        hint=f"gpushare sizes {', '.join(SUPPORTED_QUANT_METHODS)}; use one of those checkpoints",
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
    model_type = str(raw.get("model_type") or "")
    cfg = _text_config(with_model_type_defaults(raw, model_type))
    model_type = str(cfg.get("model_type") or model_type)
    archs = tuple(str(a) for a in raw.get("architectures") or cfg.get("architectures") or ())
    row = lookup(archs)
    _check_supported(cfg, model_type, name, row)
    r = _Reader(cfg, name)

    hidden = r.int_(_HIDDEN)
    num_layers = r.int_(_LAYERS)
    heads = r.int_(_HEADS)
    kv_heads = _kv_heads(cfg, r, model_type, heads)
    if heads % kv_heads:
        raise ConfigError(
            f"{name}: num_attention_heads ({heads}) is not a multiple of the KV head count ({kv_heads})",
            hint="check num_key_value_heads in config.json",
        )
    explicit_head_dim = _first(cfg, _HEAD_DIM)
    if model_type == "chatglm":
        explicit_head_dim = None  # vLLM's GLMAttention: hidden_size // heads; kv_channels is not read
    if isinstance(explicit_head_dim, int) and explicit_head_dim > 0:
        head_dim = explicit_head_dim
    else:
        if hidden % heads:
            raise ConfigError(
                f"{name}: hidden_size ({hidden}) is not divisible by num_attention_heads ({heads})",
                hint="set head_dim in config.json",
            )
        head_dim = hidden // heads

    intermediate = _mlp_width(model_type, r.int_(_INTERMEDIATE, default=4 * hidden))
    vocab = r.int_(_VOCAB)
    max_pos = r.int_(_MAX_POS, default=2048)
    mla = _mla(cfg, r)
    moe = _moe(cfg, r, intermediate)
    kinds, window = _layer_kinds(cfg, model_type, num_layers, mla is not None, name)
    encoder = _encoder(cfg, model_type, row, max_pos, _num_labels(cfg)) if row and row.encoder_only else None

    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        # Absent: the model class's default in transformers, False for most decoder families
        # (LlamaConfig, Qwen2Config, DeepseekV2Config, ...), True for these.
        tie = model_type in _TIED_BY_DEFAULT
    gated = model_type not in ("falcon", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi", "starcoder2")
    if encoder is not None:
        gated = False  # BERT's MLP: intermediate.dense then output.dense (models/bert.py)
    qkv_bias = bool(
        _first(
            cfg,
            ("attention_bias", "add_qkv_bias", "qkv_bias", "bias"),
            # Qwen2's attention always has QKV bias (models/qwen2.py Qwen2Attention, bias=True), and
            # the Qwen2-VL / Qwen2.5-VL wrappers run Qwen2ForCausalLM on their text config
            model_type in _QWEN2_QKV_BIAS or encoder is not None,
        )
    )
    norms = 4 if model_type in ("gemma2", "gemma3", "gemma3_text") else 2
    dtype = str(_first(cfg, ("torch_dtype", "dtype"), "bfloat16")).replace("torch.", "")
    quantization = _quantization(cfg, name)
    refuse_unserved_quantization(quantization, name)
    return ModelArch(
        name=name,
        model_type=model_type,
        architectures=archs,
        hidden_size=hidden,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        v_head_dim=mla.v_head_dim if mla else head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        # RoBERTa's positions start after the padding index: its usable context is shorter.
        max_position_embeddings=max_pos - encoder.position_offset if encoder else max_pos,
        tie_word_embeddings=bool(tie),
        torch_dtype=dtype,
        layer_kinds=kinds,
        sliding_window=window,
        gated_mlp=gated,
        qkv_bias=qkv_bias,
        norms_per_layer=norms,
        mla=mla,
        moe=moe,
        quantization=quantization,
        architecture=row.name if row else None,
        encoder=encoder,
        num_labels=_num_labels(cfg),
        qk_norm=model_type in _QK_NORM_TYPES,
        vision=parse_vision_tower(raw, hidden, name),
        mrope=uses_mrope(cfg),
        rope_cache_rows=rope_cache_rows(cfg, model_type, max_pos),
    )


# ---------------------------------------------------------------------------------------------
# What particular model types hold differently from what their config says


def _kv_heads(cfg: Mapping[str, Any], r: _Reader, model_type: str, heads: int) -> int:
    # vLLM ModelConfig.get_total_num_kv_heads: Falcon's multi_query means one KV head.
    if cfg.get("multi_query") and not cfg.get("new_decoder_architecture"):
        return 1
    if model_type == "chatglm" and not cfg.get("multi_query_attention"):
        # GLMAttention: multi_query_group_num KV heads only with multi_query_attention, else MHA
        # (vLLM 0.26.0 models/chatglm.py L60-64).
        return heads
    return r.int_(_KV_HEADS, default=heads)


def _mlp_width(model_type: str, intermediate: int) -> int:
    """The MLP width vLLM builds. The first Qwen's config counts both halves of its gated MLP:
    QWenBlock builds QWenMLP(hidden, intermediate_size // 2) (vLLM 0.23.0 models/qwen.py L174-177),
    so Qwen-7B's 22016 is two projections of 11008."""
    return intermediate // 2 if model_type == "qwen" else intermediate


def _num_labels(cfg: Mapping[str, Any]) -> int:
    """transformers' num_labels: len(id2label) when given, else num_labels, else 2
    (configuration_utils.py L304)."""
    id2label = cfg.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    labels = cfg.get("num_labels")
    return labels if isinstance(labels, int) and not isinstance(labels, bool) and labels > 0 else 2


def _encoder(
    cfg: Mapping[str, Any], model_type: str, row: Architecture, max_pos: int, labels: int
) -> EncoderDims:
    """BERT/RoBERTa embeddings (vLLM models/bert.py BertEmbedding, roberta.py RobertaEmbedding):
    position rows = max_position_embeddings; RoBERTa reads position pad_token_id + 1 + i, so a
    request holds at most max_position_embeddings − pad_token_id − 1 tokens (bge-m3: 8194 → 8192,
    what its tokenizer's model_max_length says)."""
    pad = cfg.get("pad_token_id")
    offset = int(pad) + 1 if model_type in ("xlm-roberta", "roberta") and isinstance(pad, int) else 0
    return EncoderDims(
        type_vocab_size=int(cfg.get("type_vocab_size") or 1),
        position_rows=max_pos,
        position_offset=offset,
        classifier_labels=labels if "classify" in row.tasks else 0,
    )


# ---------------------------------------------------------------------------------------------
# Quantized checkpoints vLLM 0.26.0 refuses to load on CUDA (refused here too: gpushare's layouts
# are vLLM's Marlin/Machete ones, which do not exist for these)


def refuse_unserved_quantization(quant: Quantization | None, name: str) -> None:
    if quant is None:
        return
    hint = "use a 4- or 8-bit checkpoint of the model (GPTQ symmetric, AWQ 4-bit, or FP8)"
    if quant.method == "gptq":
        # layers/quantization/auto_gptq.py L101-104, L157-160: TYPE_MAP has only (4, sym) and (8, sym).
        if quant.bits not in (4, 8) or quant.zero_point:
            kind = "asymmetric (sym: false)" if quant.zero_point else f"{quant.bits}-bit"
            raise UnsupportedModelError(
                f"{name}: GPTQ {kind} is refused by vLLM 0.26.0, which serves GPTQ only 4- or 8-bit "
                f"symmetric ('Unsupported quantization config: bits={quant.bits}, "
                f"sym={not quant.zero_point}')",
                hint=hint,
            )
        # utils/marlin_utils.py: MARLIN_SUPPORTED_GROUP_SIZES (auto_gptq.py L320-323).
        if quant.group_size not in (-1, 32, 64, 128):
            raise UnsupportedModelError(
                f"{name}: GPTQ group_size {quant.group_size} is refused by vLLM 0.26.0 (Marlin takes "
                "-1, 32, 64 or 128)",
                hint=hint,
            )
    if quant.method == "awq" and quant.bits != 4:
        # layers/quantization/auto_awq.py L179-210: TYPE_MAP = {4: uint4}.
        raise UnsupportedModelError(
            f"{name}: AWQ {quant.bits}-bit is refused by vLLM 0.26.0, which serves AWQ only 4-bit "
            f"('Unsupported num_bits = {quant.bits}. Supported: 4')",
            hint=hint,
        )
    if quant.method == "compressed-tensors":
        if quant.weight_kind == "int" and quant.bits not in (4, 8):
            # schemes/compressed_tensors_wNa16.py accepts 2-8 bits, but the CUDA kernels vLLM ships
            # (Marlin, Machete, Exllama, Triton W4A16) take uint4b8/uint8b128 (+ uint4/uint8 with
            # zero points) only; the others need the optional Humming package.
            raise UnsupportedModelError(
                f"{name}: compressed-tensors {quant.bits}-bit integer weights need kernels vLLM 0.26.0 "
                "does not ship (Marlin/Machete take 4 and 8 bits; others need the optional Humming "
                "package), and gpushare does not size them",
                hint=hint,
            )
        if quant.weight_kind == "float" and quant.bits != 8:
            raise UnsupportedModelError(
                f"{name}: compressed-tensors {quant.bits}-bit float weights (NVFP4/MXFP4) are not modelled",
                hint="use an FP8 or a 4-bit integer checkpoint",
            )
