"""Normalise a multimodal config.json's vision tower once into a frozen `VisionTower`.

The numbers a tower's memory depends on, read the way transformers builds the sub-config (its own
class defaults for every key the file leaves out: ../notes hf-defaults.md sections 2, 4-6, 11) and
the way vLLM 0.26.0 builds the modules (model_executor/models/qwen2_vl.py, qwen2_5_vl.py,
qwen3_vl.py, siglip.py + gemma3_mm.py, clip.py + llava.py). `memory/vision.py` turns it into
tensors and bytes. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.errors import ConfigError, UnsupportedModelError

VisionFamily = Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "llava"]
Modality = Literal["image", "video", "audio"]
MODALITIES: tuple[Modality, ...] = ("image", "video", "audio")

# The vLLM class of each architecture whose tower gpushare models (registry.py _MULTIMODAL_MODELS).
_FAMILY_OF_ARCHITECTURE: dict[str, VisionFamily] = {
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl",
    "Gemma3ForConditionalGeneration": "gemma3",
    "LlavaForConditionalGeneration": "llava",
}
# The modalities each tower serves, as the model passes them to `_mark_tower_model`
# (qwen2_vl.py:1281, qwen2_5_vl.py:1359, qwen3_vl.py:1747: {"image", "video"}; gemma3_mm.py:520,
# llava.py:560: "image"). With every one of them at limit 0 vLLM builds none of the tower.
_TOWER_MODALITIES: dict[VisionFamily, tuple[Modality, ...]] = {
    "qwen2_vl": ("image", "video"),
    "qwen2_5_vl": ("image", "video"),
    "qwen3_vl": ("image", "video"),
    "gemma3": ("image",),
    "llava": ("image",),
}
# Models whose tower honours `--mm-encoder-tp-mode data` (`supports_encoder_tp_data = True`:
# qwen2_vl.py:1183, qwen2_5_vl.py:1256, qwen3_vl.py:1702); the others fall back to `weights`
# (config/model.py:701-710).
_ENCODER_TP_DATA: frozenset[VisionFamily] = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl"})


@dataclass(frozen=True)
class VisionTower:
    """A multimodal model's vision encoder and projector, as vLLM builds them.

    `num_layers` is the number of encoder layers vLLM builds (LLaVA: up to the deepest
    `vision_feature_layer`); `text_hidden_size` is what the projector writes into.
    """

    family: VisionFamily
    architecture: str
    modalities: tuple[Modality, ...]
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    in_channels: int
    patch_size: int
    temporal_patch_size: int  # 1 for a 2-D patch embedding (SigLIP, CLIP)
    spatial_merge_size: int  # patches merged into one token side (Qwen); 1 where none
    text_hidden_size: int
    image_size: int = 0  # SigLIP/CLIP: square input the position table is built for; Qwen: 0
    num_position_embeddings: int = 0  # Qwen3-VL's learned position table
    deepstack_levels: int = 0  # Qwen3-VL deepstack mergers (and buffers)
    projector_bias: bool = True  # LLaVA multimodal_projector_bias
    post_layernorm: bool = True  # SigLIP/CLIP final norm (LLaVA builds none)
    tokens_per_image: int = 0  # Gemma-3 mm_tokens_per_image, LLaVA patches per image

    @property
    def supports_encoder_tp_data(self) -> bool:
        return self.family in _ENCODER_TP_DATA


class _Vision:
    """Typed reads from one vision_config dict, with transformers' default when a key is absent."""

    def __init__(self, cfg: Mapping[str, Any], name: str) -> None:
        self.cfg = cfg
        self.name = name

    def int_(self, key: str, default: int, *aliases: str) -> int:
        value: Any = None
        for k in (key, *aliases):
            if self.cfg.get(k) is not None:
                value = self.cfg[k]
                break
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{self.name}: config.json vision_config.{key} must be a positive integer, got {value!r}",
                hint="fix the value in config.json",
            )
        return value


def vision_family(raw: Mapping[str, Any]) -> VisionFamily | None:
    """The tower family of a config's architecture, or None when it names none we model."""
    for arch in raw.get("architectures") or ():
        family = _FAMILY_OF_ARCHITECTURE.get(str(arch))
        if family is not None:
            return family
    return None


def parse_vision_tower(raw: Mapping[str, Any], text_hidden_size: int, name: str) -> VisionTower | None:
    """The vision tower of a multimodal config.json (the whole file, not its text_config), or None
    for a text-only model. A config with a `vision_config` whose architecture gpushare does not
    model is refused: sizing it without its tower would be a silent wrong number."""
    vision = raw.get("vision_config")
    family = vision_family(raw)
    if family is None:
        if isinstance(vision, Mapping):
            archs = ", ".join(str(a) for a in raw.get("architectures") or ()) or "(no architectures)"
            raise UnsupportedModelError(
                f"{name}: {archs} has a vision tower gpushare does not model",
                hint="the modelled multimodal architectures: " + ", ".join(sorted(_FAMILY_OF_ARCHITECTURE)),
            )
        return None
    if vision is None:
        vision = {}  # transformers builds the tower from its class defaults
    if not isinstance(vision, Mapping):
        raise ConfigError(f"{name}: config.json 'vision_config' must be an object")
    arch = next(str(a) for a in raw.get("architectures") or () if str(a) in _FAMILY_OF_ARCHITECTURE)
    v = _Vision(vision, name)
    modalities = _TOWER_MODALITIES[family]
    if family == "qwen2_vl":
        # Qwen2VLVisionConfig: embed_dim 1280, mlp_ratio 4, hidden_size 3584 (the merger's output)
        embed = v.int_("embed_dim", 1280)
        ratio = vision.get("mlp_ratio", 4)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            raise ConfigError(f"{name}: config.json vision_config.mlp_ratio must be a positive number")
        return VisionTower(
            family=family,
            architecture=arch,
            modalities=modalities,
            hidden_size=embed,
            intermediate_size=int(embed * ratio),  # qwen2_vl.py:408
            num_layers=v.int_("depth", 32),
            num_heads=v.int_("num_heads", 16, "num_attention_heads"),
            in_channels=v.int_("in_channels", 3),
            patch_size=v.int_("patch_size", 14),
            temporal_patch_size=v.int_("temporal_patch_size", 2),
            spatial_merge_size=v.int_("spatial_merge_size", 2),
            text_hidden_size=v.int_("hidden_size", 3584),
        )
    if family in ("qwen2_5_vl", "qwen3_vl"):
        qwen3 = family == "qwen3_vl"
        deepstack = vision.get("deepstack_visual_indexes", [8, 16, 24] if qwen3 else [])
        if not isinstance(deepstack, list):
            raise ConfigError(f"{name}: config.json vision_config.deepstack_visual_indexes must be a list")
        return VisionTower(
            family=family,
            architecture=arch,
            modalities=modalities,
            hidden_size=v.int_("hidden_size", 1152 if qwen3 else 3584),
            intermediate_size=v.int_("intermediate_size", 4304 if qwen3 else 3420),
            num_layers=v.int_("depth", 27 if qwen3 else 32),
            num_heads=v.int_("num_heads", 16, "num_attention_heads"),
            # the published Qwen2.5-VL files say `in_chans`, a leftover key: the field stays 3
            in_channels=v.int_("in_channels", 3),
            patch_size=v.int_("patch_size", 16 if qwen3 else 14),
            temporal_patch_size=v.int_("temporal_patch_size", 2),
            spatial_merge_size=v.int_("spatial_merge_size", 2),
            text_hidden_size=v.int_("out_hidden_size", 3584),
            num_position_embeddings=v.int_("num_position_embeddings", 2304) if qwen3 else 0,
            deepstack_levels=len(deepstack) if qwen3 else 0,
        )
    if family == "gemma3":
        # SiglipVisionConfig defaults (hidden 768, 12 layers, image 224, patch 16); the Gemma-3
        # files set every sizing key. The projector (gemma3_mm.py:421-467) maps to the text hidden.
        return VisionTower(
            family=family,
            architecture=arch,
            modalities=modalities,
            hidden_size=v.int_("hidden_size", 768),
            intermediate_size=v.int_("intermediate_size", 3072),
            num_layers=v.int_("num_hidden_layers", 12),
            num_heads=v.int_("num_attention_heads", 12),
            in_channels=v.int_("num_channels", 3),
            patch_size=v.int_("patch_size", 16),
            temporal_patch_size=1,
            spatial_merge_size=1,
            text_hidden_size=text_hidden_size,
            image_size=v.int_("image_size", 224),
            post_layernorm=True,  # siglip.py:707-712: all layers built, so the final norm stays
            tokens_per_image=_positive(raw, "mm_tokens_per_image", 256, name),
        )
    return _llava(raw, vision, v, text_hidden_size, name, arch)


def _llava(
    raw: Mapping[str, Any],
    vision: Mapping[str, Any],
    v: _Vision,
    text_hidden_size: int,
    name: str,
    arch: str,
) -> VisionTower:
    kind = vision.get("model_type", "clip_vision_model")
    if kind != "clip_vision_model":
        raise UnsupportedModelError(
            f"{name}: a LLaVA vision tower of model_type {kind!r} is not modelled",
            hint="gpushare models LLaVA with a CLIP vision tower (llava-1.5)",
        )
    layers = v.int_("num_hidden_layers", 12)
    feature = raw.get("vision_feature_layer", -2)
    indexes = feature if isinstance(feature, list) else [feature]
    if not indexes or any(isinstance(i, bool) or not isinstance(i, int) for i in indexes):
        raise ConfigError(f"{name}: config.json vision_feature_layer must be an integer or a list of them")
    # llava.py:436-453 and utils.get_layer_index: a negative index counts from the end (-1 = all)
    built = max(i if i >= 0 else layers + i + 1 for i in indexes)
    if not 0 < built <= layers:
        raise ConfigError(
            f"{name}: config.json vision_feature_layer {feature!r} is outside the tower's layers"
        )
    image, patch = v.int_("image_size", 224), v.int_("patch_size", 32)
    strategy = raw.get("vision_feature_select_strategy", "default")
    patches = (image // patch) ** 2
    return VisionTower(
        family="llava",
        architecture=arch,
        modalities=_TOWER_MODALITIES["llava"],
        hidden_size=v.int_("hidden_size", 768),
        intermediate_size=v.int_("intermediate_size", 3072),
        num_layers=built,
        num_heads=v.int_("num_attention_heads", 12),
        in_channels=v.int_("num_channels", 3),
        patch_size=patch,
        temporal_patch_size=1,
        spatial_merge_size=1,
        text_hidden_size=text_hidden_size,
        image_size=image,
        projector_bias=bool(raw.get("multimodal_projector_bias", True)),
        post_layernorm=False,  # llava.py:560-566 passes require_post_norm=False
        # llava.py:186-214: the CLS token is dropped by the `default` strategy
        tokens_per_image=patches if strategy == "default" else patches + 1,
    )


def _positive(raw: Mapping[str, Any], key: str, default: int, name: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: config.json {key} must be a positive integer, got {value!r}")
    return value
