"""A plan: which instance goes on which GPU(s), with its exact vLLM argv and environment.

Pure data here; `build_plan` (profile + GPUs -> Plan) fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedInstance:
    """One `vllm serve` process to start.

    `start_order` is 0-based within each GPU group; instances with the same `start_group` and
    `kv_fixed` true on every member may start together, otherwise one at a time in start_order.
    `planned_bytes` is the per-GPU process footprint the memory model predicts (what NVML will show).
    """

    name: str
    model: str
    gpus: tuple[int, ...]
    port: int
    start_order: int
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None
    planned_bytes: int
    argv: tuple[str, ...]
    env: dict[str, str]
    kv_fixed: bool
    estimate: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    priority: int = 0


@dataclass(frozen=True)
class PlannedGpu:
    index: int
    name: str
    total_bytes: int
    reserved_bytes: int
    free_bytes: int
    instances: tuple[str, ...]


@dataclass(frozen=True)
class Unplaced:
    name: str
    reason: str
    short_by_bytes: int
    suggestions: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    profile_name: str
    feasible: bool
    gpus: tuple[PlannedGpu, ...]
    instances: tuple[PlannedInstance, ...]
    unplaced: tuple[Unplaced, ...]
    mps: str = "off"
    notes: tuple[str, ...] = ()
