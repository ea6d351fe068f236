"""A multimodal model's vision tower as vLLM 0.26.0 holds it: its tensors, its bytes on one rank,
whether vLLM builds it at all, and the buffers that come with it.

vLLM builds the tower (and its projector, and Qwen3-VL's deepstack buffers) inside
`_mark_tower_model` (model_executor/models/interfaces.py:256-298): when every modality the tower
serves has a limit of 0 (`--language-model-only`, or `--limit-mm-per-prompt` 0 for each) the
modules are made on the meta device and replaced by `StageMissingLayer` (models/utils.py:687-778):
no GPU memory, no weights loaded. Otherwise every linear is a vLLM parallel linear (bias on unless
shown), sharded over tensor-parallel ranks like the language model's, or whole on every rank with
`--mm-encoder-tp-mode data` where the model supports it (models/vision.py:142-157).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from gpushare.hfconfig import ModelArch, Quantization
from gpushare.hfvision import VisionTower
from gpushare.memory.settings import ServeSettings, modality_limit
from gpushare.weights import (
    WeightTensor,
    _allocator_tail,
    _quant_of,
    _shard,
    quantized_linear_bytes,
)

# Every Qwen tower builds a rotary cache of its own: get_rope(head_size, max_position=8192,
# partial_rotary_factor=0.5) (qwen2_vl.py:568-573, qwen2_5_vl.py:664-669, qwen3_vl.py:581-586).
QWEN_TOWER_ROPE_POSITIONS = 8192


def _lin(name: str, n_out: int, k_in: int, parallel: str, bias: bool = True) -> Iterator[WeightTensor]:
    yield WeightTensor(name, n_out, k_in, parallel, True)  # type: ignore[arg-type]
    if bias:
        yield WeightTensor(
            f"{name}.bias", n_out, 1, "column" if parallel == "column" else "replicated", False
        )


def _vec(name: str, size: int) -> WeightTensor:
    return WeightTensor(name, size, 1, "replicated", False)


def _layer_norm(name: str, size: int) -> Iterator[WeightTensor]:
    yield _vec(f"{name}.weight", size)
    yield _vec(f"{name}.bias", size)


def _qwen(t: VisionTower) -> Iterator[WeightTensor]:
    """Qwen2-VL (qwen2_vl.py:242-600), Qwen2.5-VL (qwen2_5_vl.py:307-700), Qwen3-VL
    (qwen3_vl.py:347-630)."""
    h, i, p = t.hidden_size, t.intermediate_size, "visual"
    kernel = t.in_channels * t.temporal_patch_size * t.patch_size**2
    yield WeightTensor(f"{p}.patch_embed.proj", h, kernel, "replicated", False)  # Conv3d
    if t.family == "qwen3_vl":
        yield _vec(f"{p}.patch_embed.proj.bias", h)  # qwen3_vl.py:361-366: bias=True
        yield WeightTensor(f"{p}.pos_embed", t.num_position_embeddings, h, "replicated", False)
    rms = t.family == "qwen2_5_vl"  # Qwen2.5-VL's norms are RMSNorm (weight only)
    for n in range(t.num_layers):
        b = f"{p}.blocks.{n}"
        for norm in ("norm1", "norm2"):
            yield from [_vec(f"{b}.{norm}.weight", h)] if rms else _layer_norm(f"{b}.{norm}", h)
        yield from _lin(f"{b}.attn.qkv", 3 * h, h, "column")
        yield from _lin(f"{b}.attn.proj", h, h, "row")
        if t.family == "qwen2_5_vl":  # gated: gate_up (2I) and down (qwen2_5_vl.py:307-340)
            yield from _lin(f"{b}.mlp.gate_up_proj", 2 * i, h, "column")
            yield from _lin(f"{b}.mlp.down_proj", h, i, "row")
        else:
            yield from _lin(f"{b}.mlp.fc1", i, h, "column")
            yield from _lin(f"{b}.mlp.fc2", h, i, "row")
    merged = h * t.spatial_merge_size**2
    mergers = [(f"{p}.merger", h)]
    # Qwen3-VL's deepstack mergers norm after the shuffle: LayerNorm(4H) (qwen3_vl.py:467-516)
    mergers += [(f"{p}.deepstack_merger_list.{n}", merged) for n in range(t.deepstack_levels)]
    for m, norm_width in mergers:
        if rms:
            yield _vec(f"{m}.ln_q.weight", norm_width)
        else:
            yield from _layer_norm(f"{m}.norm", norm_width)
        yield from _lin(f"{m}.mlp.0", merged, merged, "column")
        yield from _lin(f"{m}.mlp.2", t.text_hidden_size, merged, "row")


def _encoder_layers(t: VisionTower, p: str) -> Iterator[WeightTensor]:
    """SigLIP (siglip.py:354-520) and CLIP (clip.py:353-498) encoder layers."""
    h, i = t.hidden_size, t.intermediate_size
    # siglip.py:440-470: MLP linears take the checkpoint's quantization only when H and I are
    # multiples of 64 (Gemma-3's I = 4304 is not).
    mlp_quantizable = t.family != "gemma3" or (h % 64 == 0 and i % 64 == 0)
    for n in range(t.num_layers):
        b = f"{p}.encoder.layers.{n}"
        yield from _layer_norm(f"{b}.layer_norm1", h)
        yield from _lin(f"{b}.self_attn.qkv_proj", 3 * h, h, "column")
        yield from _lin(f"{b}.self_attn.out_proj", h, h, "row")
        yield from _layer_norm(f"{b}.layer_norm2", h)
        for t_ in _lin(f"{b}.mlp.fc1", i, h, "column"):
            yield t_ if mlp_quantizable else _unquantizable(t_)
        for t_ in _lin(f"{b}.mlp.fc2", h, i, "row"):
            yield t_ if mlp_quantizable else _unquantizable(t_)


def _unquantizable(t: WeightTensor) -> WeightTensor:
    return WeightTensor(t.name, t.out_features, t.in_features, t.parallel, False, t.count)


def _gemma3(t: VisionTower) -> Iterator[WeightTensor]:
    """SiglipVisionModel(use_head=False) with its post_layernorm (siglip.py:281-840) and
    Gemma3MultiModalProjector (gemma3_mm.py:421-467)."""
    h, p = t.hidden_size, "vision_tower.vision_model"
    kernel = t.in_channels * t.patch_size**2
    yield WeightTensor(f"{p}.embeddings.patch_embedding", h, kernel, "replicated", False)
    yield _vec(f"{p}.embeddings.patch_embedding.bias", h)  # Conv2dLayer default bias
    yield WeightTensor(
        f"{p}.embeddings.position_embedding", (t.image_size // t.patch_size) ** 2, h, "replicated", False
    )
    yield from _encoder_layers(t, p)
    yield from _layer_norm(f"{p}.post_layernorm", h)
    # a raw nn.Parameter (vision hidden × text hidden), neither sharded nor quantized
    yield WeightTensor(
        "multi_modal_projector.mm_input_projection_weight", h, t.text_hidden_size, "replicated", False
    )
    yield _vec("multi_modal_projector.mm_soft_emb_norm.weight", h)


def _llava(t: VisionTower) -> Iterator[WeightTensor]:
    """CLIPVisionModel up to the feature layer, no post_layernorm (llava.py:456-495, clip.py:310-720),
    and LlavaMultiModalProjector (llava.py:126-157)."""
    h, p = t.hidden_size, "vision_tower.vision_model"
    yield _vec(f"{p}.embeddings.class_embedding", h)
    kernel = t.in_channels * t.patch_size**2
    yield WeightTensor(f"{p}.embeddings.patch_embedding", h, kernel, "replicated", False)  # bias=False
    positions = (t.image_size // t.patch_size) ** 2 + 1
    yield WeightTensor(f"{p}.embeddings.position_embedding", positions, h, "replicated", False)
    yield from _layer_norm(f"{p}.pre_layrnorm", h)
    yield from _encoder_layers(t, p)
    pb = t.projector_bias
    yield from _lin("multi_modal_projector.linear_1", t.text_hidden_size, h, "column", bias=pb)
    yield from _lin("multi_modal_projector.linear_2", t.text_hidden_size, t.text_hidden_size, "row", bias=pb)


def tower_tensors(tower: VisionTower) -> list[WeightTensor]:
    """Every weight of the tower and its projector, unsharded (what a checkpoint counts)."""
    if tower.family == "gemma3":
        return list(_gemma3(tower))
    if tower.family == "llava":
        return list(_llava(tower))
    return list(_qwen(tower))


def tower_parameter_count(tower: VisionTower) -> int:
    return sum(t.params for t in tower_tensors(tower))


def tower_is_built(arch: ModelArch, settings: ServeSettings) -> bool:
    """Whether vLLM builds the tower: some modality it serves has a limit above 0
    (interfaces.py:256-298; config/multimodal.py:320-333 for the limits)."""
    tower = arch.vision
    return tower is not None and any(modality_limit(settings, m) > 0 for m in tower.modalities)


def tower_replicated(tower: VisionTower, settings: ServeSettings) -> bool:
    """`--mm-encoder-tp-mode data` keeps the whole tower on every rank, for the models that
    support it (models/vision.py:142-157; the others fall back to `weights`,
    config/model.py:701-710)."""
    if settings.tensor_parallel_size == 1:
        return True
    return settings.mm_encoder_tp_mode == "data" and tower.supports_encoder_tp_data


def _buffers(tower: VisionTower, dtype_bytes: int, batched: int) -> list[int]:
    """Non-weight tensors the tower's modules allocate on the GPU at build time."""
    parts: list[int] = []
    if tower.family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        rotary_dim = tower.hidden_size // tower.num_heads // 2
        parts.append(QWEN_TOWER_ROPE_POSITIONS * rotary_dim * dtype_bytes)
        # qwen3_vl.py:1755-1766: one (max_num_batched_tokens × text hidden) tensor per deepstack
        # level, made in model init, so inside "Model loading took"
        parts += [batched * tower.text_hidden_size * dtype_bytes] * tower.deepstack_levels
    elif tower.family == "gemma3":
        parts.append((tower.image_size // tower.patch_size) ** 2 * 8)  # int64 position_ids
    else:
        parts.append(((tower.image_size // tower.patch_size) ** 2 + 1) * 8)
    return parts


@lru_cache(maxsize=256)
def tower_bytes(
    arch: ModelArch,
    settings: ServeSettings,
    dtype_bytes: int,
    batched: int,
    quant: Quantization | None,
) -> int:
    """Bytes the tower holds on one rank once loaded, the allocator's 2 MiB block tails included
    (memory/weights.py); 0 when vLLM does not build it."""
    tower = arch.vision
    if tower is None or not tower_is_built(arch, settings):
        return 0
    tp = 1 if tower_replicated(tower, settings) else settings.tensor_parallel_size
    total = 0
    for t, size in _tensor_sizes(tower, tp, dtype_bytes, quant):
        total += size + (_allocator_tail(size) if t.in_features > 1 else 0)
    for size in _buffers(tower, dtype_bytes, batched):
        total += size + _allocator_tail(size)
    return total


def tower_tensor_bytes(tower: VisionTower, dtype_bytes: int, quant: Quantization | None) -> int:
    """The tower's and projector's tensors, whole (one GPU), without vLLM's allocator tails and
    buffers: what a checkpoint holds of them at the serving dtype (`gpushare models`)."""
    return sum(size for _, size in _tensor_sizes(tower, 1, dtype_bytes, quant))


def _tensor_sizes(
    tower: VisionTower, tp: int, dtype_bytes: int, quant: Quantization | None
) -> Iterator[tuple[WeightTensor, int]]:
    for t in tower_tensors(tower):
        n_out, k_in = _shard(t, tp, 1)
        q = _quant_of(t, quant)
        yield t, quantized_linear_bytes(n_out, k_in, q, dtype_bytes) if q else n_out * k_in * dtype_bytes


# Where checkpoints keep a tower: Qwen-VL `visual.` (`model.visual.` in newer files), Gemma-3 and
# LLaVA `vision_tower.` and `multi_modal_projector.` (with or without a leading `model.`).
_TOWER_PREFIXES = ("visual.", "vision_tower.", "multi_modal_projector.")


def is_tower_tensor(name: str) -> bool:
    """Whether a checkpoint tensor belongs to the vision tower or its projector."""
    bare = name[len("model.") :] if name.startswith("model.") else name
    return bare.startswith(_TOWER_PREFIXES)
