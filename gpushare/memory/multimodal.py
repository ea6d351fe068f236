"""The multimodal part of vLLM 0.26.0's memory profile, and what it leaves for serve time.

- Dense multimodal models run on the V2 model runner, whose profile run does not run the vision
  encoder at all (v1/worker/gpu/model_runner.py:672-691; v1/worker/gpu/mm/encoder_cache.py:26-31,
  "TODO: Implement MM budget for encoder dummy run"). Their KV budget leaves out the encoder's
  activations and the encoder cache: vLLM allocates those when an image arrives, beyond what it
  reserved. What the V2 runner does allocate for them is `EncoderRunner.inputs_embeds`
  (max_num_batched_tokens × text hidden, v1/worker/gpu/mm/encoder_runner.py:35-37), made after the
  model is loaded and before the profile: outside the budget.
- MoE multimodal models run on the V1 runner, whose profile run embeds `max_items_per_batch` dummy
  items of the modality with the most tokens per item through the tower and holds their outputs
  while the language model's dummy run follows (v1/worker/gpu_model_runner.py:6364-6438); the
  items come from the encoder budget (multimodal/encoder_budget.py:44-189).

Pure: no I/O.
"""

from __future__ import annotations

from gpushare.hfconfig import ModelArch
from gpushare.hfvision import VisionTower
from gpushare.memory.settings import ServeSettings, modality_limit
from gpushare.memory.vision import tower_is_built
from gpushare.units import GiB

# Tokens (embeddings) of the largest item of each modality with the published processors
# (vLLM's get_mm_max_tokens_per_item / the dummy item's placeholders): Qwen2/2.5-VL's image
# processor max_pixels 12,845,056 at 28 px per token side → a 3584 px square, 16,384 tokens
# (qwen2_vl.py:948-999); Qwen3-VL's 16,777,216 at 32 px → 16,384, and its 2-frame video at the
# video processor's 25,165,824 / 2 pixels → 12,288 (qwen3_vl.py:848-971); Gemma-3 256 per image
# without pan-and-scan (gemma3_mm.py:195-230); LLaVA the CLIP patches less the CLS token.
_QWEN_MAX_TOKENS = {"image": 16_384}
_QWEN3_MAX_TOKENS = {"image": 16_384, "video": 12_288}


def max_tokens_per_item(tower: VisionTower) -> dict[str, int]:
    """The most embeddings one item of each modality becomes, with the published processors."""
    if tower.family == "qwen3_vl":
        return dict(_QWEN3_MAX_TOKENS)
    if tower.family in ("qwen2_vl", "qwen2_5_vl"):
        return dict(_QWEN_MAX_TOKENS)
    return {"image": tower.tokens_per_image}


def encoder_inputs_bytes(arch: ModelArch, settings: ServeSettings, batched: int, dtype_bytes: int) -> int:
    """The V2 runner's `EncoderRunner.inputs_embeds` buffer, outside vLLM's budget; 0 when vLLM
    takes no multimodal input (v1/worker/gpu/model_states/interface.py:59-62)."""
    tower = arch.vision
    if tower is None or not tower_is_built(arch, settings):
        return 0
    return batched * tower.text_hidden_size * dtype_bytes


def v1_encoder_profile(
    arch: ModelArch, settings: ServeSettings, dtype_bytes: int, batched: int, num_seqs: int, max_len: int
) -> tuple[int, int, str] | None:
    """(encoder outputs held during the language model's dummy run, the tower's own forward peak,
    what was profiled) of the V1 runner's profile for a multimodal model, or None when vLLM takes no
    multimodal input. The outputs follow vLLM's budget exactly; the tower's peak is vLLM's
    measurement and here only the tensors of one encoder layer live at once over every patch
    (residual, normed input, qkv, attention output, MLP hidden)."""
    tower = arch.vision
    if tower is None or not tower_is_built(arch, settings):
        return None
    tokens = {m: n for m, n in max_tokens_per_item(tower).items() if modality_limit(settings, m) > 0}
    if not tokens:
        return None
    # the modality with most tokens per item; ties go to the larger name (encoder_budget.py:182-186)
    modality = max(tokens, key=lambda m: (tokens[m], m))
    per_item = tokens[modality]
    budget = max(batched, per_item)  # encoder_budget.py:188-189
    per_prompt = max(1, min(modality_limit(settings, modality), max_len // per_item))
    items = max(1, min(budget // per_item, num_seqs * per_prompt))  # encoder_budget.py:140-180
    levels = 1 + tower.deepstack_levels  # Qwen3-VL returns the deepstack features with the embeds
    outputs = items * per_item * tower.text_hidden_size * dtype_bytes * levels
    patches = items * per_item * tower.spatial_merge_size**2
    h = tower.hidden_size
    tower_peak = patches * (6 * h + tower.intermediate_size) * dtype_bytes
    return outputs, tower_peak, f"{items} {modality} item(s) of {per_item:,} tokens"


def serve_time_note(
    arch: ModelArch, settings: ServeSettings, v1_runner: bool, num_seqs: int, max_len: int
) -> str | None:
    """What vLLM spends on images beyond its profile, said once per estimate."""
    tower = arch.vision
    if tower is None:
        return None
    if not tower_is_built(arch, settings):
        return (
            "text only: every modality of the vision tower is off, so vLLM builds no tower "
            "(model_executor/models/interfaces.py:256-298); images are refused"
        )
    largest = max(max_tokens_per_item(tower).values())
    if v1_runner:
        note = (
            "multimodal MoE model on vLLM's V1 runner: its profile runs the vision encoder on the "
            "largest dummy items; the encoder outputs follow vLLM's encoder budget, the tower's own "
            "activation peak is a structural estimate not measured on a GPU (`gpushare calibrate` "
            "measures it)"
        )
    else:
        note = (
            "vLLM 0.26.0 does not run the vision encoder in its memory profile (V2 model runner): "
            f"the encoder's activations on an image (up to {largest:,} tokens with the published "
            "processor) and the encoder cache are allocated when images arrive, beyond this estimate "
            "(checked on an H200 after one 256-px image request: within 0.4%); keep headroom for "
            "large images, or limit them (a profile's `modalities`, --limit-mm-per-prompt)"
        )
    if arch.mrope and not v1_runner:
        host = mrope_host_bytes(num_seqs, max_len)
        note += (
            f"; M-RoPE prefill positions take {host / GiB:.2f} GiB of pinned host memory "
            "(max_num_seqs × 3 × max_model_len × 4 B, v1/worker/gpu/mm/rope.py:47-53)"
        )
    return note


def mrope_host_bytes(num_seqs: int, max_len: int) -> int:
    """Pinned host memory the V2 runner keeps for M-RoPE prefill positions: max_num_seqs × 3 ×
    max_model_len int32 (v1/worker/gpu/mm/rope.py:47-53), held while the instance lives."""
    return num_seqs * 3 * max_len * 4
