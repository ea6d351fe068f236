"""A plan: which instance goes on which GPU(s), with its exact vLLM argv and environment.

Pure data here; `build_plan` (profile + GPUs -> Plan, in `gpushare/planner.py`) fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedInstance:
    """One `vllm serve` process to start.

    `start_order` is 0-based within each GPU group (`start_group`: instances linked by sharing a
    GPU, directly or through a tensor-parallel instance); a group whose members all have
    `kv_fixed` may start together, otherwise one at a time in start_order.
    `planned_bytes` is the per-GPU process footprint the memory model predicts (what NVML will show).
    `gpu_memory_utilization` passes vLLM's start-up check (free ≥ utilization × total) in that
    order, and with `kv_fixed` in any order; on the CPU backend it is 0.0 and not passed.
    `kv_target_bytes` is the KV cache the capacity target needs; `kv_cache_memory_bytes` adds the
    instance's share of what was left on its GPU(s).
    MPS: `env` has no CUDA_MPS_PIPE_DIRECTORY; the launcher adds its own pipe directory when
    `Plan.mps` is not "off".
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
    start_group: int = 0
    kv_target_bytes: int = 0
    target: str = ""


@dataclass(frozen=True)
class PlannedGpu:
    """One GPU of the plan. `total_bytes` is NVML's total; `reserved_bytes` the safety reserve the
    profile keeps free (of CUDA's total); `free_bytes` what NVML should show free once every
    instance is up (reserve included). `instances` in start order."""

    index: int
    name: str
    total_bytes: int
    reserved_bytes: int
    free_bytes: int
    instances: tuple[str, ...]
    cuda_total_bytes: int = 0
    driver_reserved_bytes: int = 0
    other_processes_bytes: int = 0
    usable_bytes: int = 0
    planned_bytes: int = 0


@dataclass(frozen=True)
class Unplaced:
    """A model that could not be placed: why, on which GPU(s) it came closest, short by how many
    bytes there, and changes that would make it fit (each checked with the memory model)."""

    name: str
    reason: str
    short_by_bytes: int
    suggestions: tuple[str, ...]
    gpus: tuple[int, ...] = ()
    need_bytes: int = 0


@dataclass(frozen=True)
class Plan:
    profile_name: str
    feasible: bool
    gpus: tuple[PlannedGpu, ...]
    instances: tuple[PlannedInstance, ...]
    unplaced: tuple[Unplaced, ...]
    mps: str = "off"
    notes: tuple[str, ...] = ()
    strategy: str = "pack"
    method: str = ""
    optimal: bool = False
    lp_bound: float | None = None
    problems: tuple[str, ...] = ()
    """Overcommitment found after placement (a start-up check that cannot pass); non-empty means
    not feasible."""


def build_plan(profile: Any, gpus: Any, strategy: str | None = None, **options: Any) -> Plan:
    """Plan `profile` on `gpus` (a GpuInventory or a list of Gpu). See `gpushare.planner.build_plan`."""
    from gpushare.planner import build_plan as _build_plan

    return _build_plan(profile, gpus, strategy, **options)  # type: ignore[arg-type]
