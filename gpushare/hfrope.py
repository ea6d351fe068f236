"""How many rows of rotary cos/sin cache vLLM builds for a config's language model.

vLLM builds one cache per distinct rotary embedding (get_rope keeps one instance per set of
parameters, layers/rotary_embedding/__init__.py:30-84), of max_position × rotary_dim entries,
more for some scaling types. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _rope(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if isinstance(rope, Mapping):
            return rope
    return {}


def uses_mrope(cfg: Mapping[str, Any]) -> bool:
    """Multimodal rotary embeddings: a `mrope_section` in the rope parameters
    (rotary_embedding/__init__.py:102-111)."""
    return "mrope_section" in _rope(cfg)


def rope_cache_rows(cfg: Mapping[str, Any], model_type: str, max_position: int) -> tuple[int, ...]:
    """Rows of each rotary cache the language model holds (vLLM 0.26.0):
    - M-RoPE: 4 × max_position (rotary_embedding/mrope.py:236-246);
    - linear and dynamic-NTK scaling: max_position × factor (linear_scaling_rope.py:79-110,
      dynamic_ntk_scaling_rope.py);
    - otherwise max_position (llama3 and yarn as the published configs use them: yarn's rows are
      original_max_position × factor, which those files set equal to max_position_embeddings);
    - Gemma-3: its sliding layers take a second, default rope with rope_local_base_freq
      (models/gemma3.py:157-176), so two caches."""
    rope = _rope(cfg)
    kind = str(rope.get("rope_type") or rope.get("type") or "default")
    factor = rope.get("factor")
    if "mrope_section" in rope:
        rows = 4 * max_position
    elif kind in ("linear", "dynamic") and isinstance(factor, int | float) and factor > 0:
        rows = int(max_position * factor)
    else:
        rows = max_position
    if model_type in ("gemma3", "gemma3_text"):
        return (rows, max_position)
    return (rows,)
