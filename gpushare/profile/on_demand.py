"""The profile's on-demand settings: how the gateway swaps a model that sleeps while others use
its GPU (`defaults.on_demand`, overridden field by field by `models[].on_demand`).

Every field is optional so a model can override one of them; the planner
(planning/ondemand.py `swap_settings`) fills in the rest from `defaults.on_demand`, then from the
DEFAULT_* values below. Pure.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpushare.vllm.sleep import SleepLevel

DEFAULT_SLEEP_LEVEL: SleepLevel = 1
DEFAULT_QUEUE = 64
DEFAULT_WAIT_S = 60.0
DEFAULT_DRAIN_S = 30.0
DEFAULT_IDLE_S = 0.0  # never: a model sleeps only when another needs its room


class OnDemand(BaseModel):
    """How an on-demand model is put to sleep and woken (the gateway's swap settings)."""

    # strict, as the rest of the profile (profile/schema.py `_Strict`): YAML `true` is not 1
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, strict=True)

    sleep_level: SleepLevel | None = None
    """vLLM's sleep level: 1 moves the weights to pinned host RAM (wake measured at 0.55 s for an
    8B model on an H200) and needs that RAM; 2 discards them and reloads them from disk on wake
    (no host RAM; slower, not measured yet). Unset: 1."""
    queue: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Requests held for this model while it wakes; more get 503 at once. Unset: 64."""
    wait_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    """Longest a held request waits for its model to wake before it gets 503. Unset: 60."""
    drain_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    """When another model needs the room: how long to wait for this model's requests in flight
    before it is put to sleep anyway (vLLM ends what is left with finish_reason "abort").
    Unset: 30."""
    idle_s: Annotated[float, Field(ge=0, le=7 * 86_400)] | None = None
    """Put the model to sleep after this many seconds without a request; 0 never (it sleeps only
    when another model needs the room). Unset: 0."""

    @field_validator("sleep_level", mode="before")
    @classmethod
    def _no_boolean_level(cls, value: Any) -> Any:
        # `true == 1` in Python, so a Literal[1, 2] would take YAML's `true` as level 1
        if isinstance(value, bool):
            raise ValueError(f"{str(value).lower()} is not allowed; use 1 or 2")
        return value
