"""A plan: which instance goes on which GPU(s), with its exact vLLM argv and environment.

Pure data: these classes import nothing above the memory model. `planning.build.build_plan`
(profile + GPUs → Plan) fills them; the launcher, `calibrate` and the renderers read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpushare.memory.estimate import Estimate
from gpushare.vllm.sleep import Residency, SleepLevel


@dataclass(frozen=True)
class SwapSettings:
    """An on-demand instance's swap settings, resolved from the profile (profile/on_demand.py
    documents each): the gateway holds at most `queue` requests for it, each for `wait_s`; a
    model making room is drained for `drain_s`; `idle_s` (None: never) puts it back to sleep."""

    sleep_level: SleepLevel
    queue: int
    wait_s: float
    drain_s: float
    idle_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "sleep_level": self.sleep_level,
            "queue": self.queue,
            "wait_s": self.wait_s,
            "drain_s": self.drain_s,
            "idle_s": self.idle_s,
        }


@dataclass(frozen=True)
class PlannedInstance:
    """One `vllm serve` process to start.

    `start_order` is 0-based within each GPU group (`start_group`: instances linked by sharing a
    GPU, directly or through a tensor-parallel instance; planning/start.py); a group whose members
    all have `kv_fixed` may start together, otherwise one at a time in start_order.
    `planned_bytes` is the per-GPU process footprint the memory model predicts (what NVML will show).
    `gpu_memory_utilization` passes vLLM's start-up check (free ≥ utilization × total) in that
    order, and with `kv_fixed` in any order; on the CPU backend it is 0.0 and not passed.
    `kv_target_bytes` is the KV cache the capacity target needs; `kv_cache_memory_bytes` adds the
    instance's share of what was left on its GPU(s).
    `estimate` is the memory model's answer for it on its first GPU (None for an instance that was
    not planned, e.g. built by hand in a test).
    MPS: `env` has no CUDA_MPS_PIPE_DIRECTORY; the launcher adds its own pipe directory when
    `Plan.mps` is not "off".
    On-demand (`residency`): `planned_bytes` is its footprint awake, `asleep_bytes` what stays on
    its GPU asleep (memory/asleep.py), `host_bytes` the pinned host RAM its weights take from its
    first sleep on (0 at sleep level 2), `swap` the gateway's settings; it starts after the
    resident instances of its group, one at a time, and is put to sleep once it serves
    (planning/start.py).
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
    estimate: Estimate | None = None
    aliases: tuple[str, ...] = ()
    priority: int = 0
    start_group: int = 0
    kv_target_bytes: int = 0
    target: str = ""
    residency: Residency = "always"
    asleep_bytes: int = 0
    host_bytes: int = 0
    swap: SwapSettings | None = None

    @property
    def on_demand(self) -> bool:
        return self.residency == "on-demand"

    def parts(self) -> tuple[int, int, int]:
        """(weights, KV, everything else) bytes on one of its GPUs; they sum to `planned_bytes`."""
        weights = self.estimate.weights_bytes if self.estimate is not None else 0
        kv = self.estimate.kv_cache_bytes if self.estimate is not None else 0
        return weights, kv, max(self.planned_bytes - weights - kv, 0)


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
    """The most the GPU holds: every resident instance awake, every on-demand one asleep, plus
    the largest set of on-demand instances that may be awake together."""
    awake: AwakeRoom | None = None
    """The on-demand instances here and which of them may be awake together (None: none here)."""


@dataclass(frozen=True)
class AwakeRoom:
    """The room a GPU keeps for its on-demand instances beyond their asleep footprints.

    `room_bytes` = usable − resident footprints − every on-demand residue; an instance awake takes
    `planned_bytes − asleep_bytes` of it. `awake_max` is the profile's limit (None: as many as
    fit); `sets` the largest sets that fit together (each one cannot take another instance),
    at most `AWAKE_SETS_LISTED` of them (`more_sets`: some were left out); `largest_bytes` what
    the largest allowed set takes."""

    room_bytes: int
    awake_max: int | None
    sets: tuple[tuple[str, ...], ...]
    largest_bytes: int
    more_sets: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "room_bytes": self.room_bytes,
            "awake_max": self.awake_max,
            "awake_sets": [list(s) for s in self.sets],
            "awake_sets_complete": not self.more_sets,
            "largest_awake_bytes": self.largest_bytes,
        }


AWAKE_SETS_LISTED = 32


@dataclass(frozen=True)
class HostMemory:
    """Host RAM for the sleeping instances' weights (sleep level 1): what they need and what the
    host has (`available_bytes`; None when unknown), and where that came from (`source`: the
    profile's host_memory, or what the host reported when the plan was made)."""

    needed_bytes: int
    available_bytes: int | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "needed_bytes": self.needed_bytes,
            "available_bytes": self.available_bytes,
            "source": self.source,
        }


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
class Problem:
    """Something found after placement that stops the plan from starting (a start-up check that
    cannot pass, a GPU planned beyond its usable memory): where, what, and what to change."""

    message: str
    instance: str | None = None
    gpu: int | None = None
    hint: str | None = None

    def __str__(self) -> str:
        if self.instance is not None and self.gpu is not None:
            where = f"{self.instance} on GPU {self.gpu}"
        elif self.gpu is not None:
            where = f"GPU {self.gpu}"
        else:
            where = self.instance or ""
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}; {self.hint}" if self.hint else text


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
    overcommitted: tuple[Problem, ...] = ()
    """Problems found after placement; non-empty means not feasible."""
    host: HostMemory | None = None
    """Set when the profile has on-demand models (their JSON keys appear only then)."""

    @property
    def problems(self) -> tuple[str, ...]:
        """`overcommitted` as lines (what `check --format json` lists under "problems")."""
        return tuple(str(p) for p in self.overcommitted)

    def to_json(self) -> dict[str, Any]:
        """The plan as `gpushare plan --json` prints it (sizes in bytes). A profile with on-demand
        models adds `host`, each GPU's `awake` and each instance's `residency`, `asleep_bytes`,
        `host_bytes` and `on_demand`; other plans print exactly as before."""
        data = self._json()
        if self.host is None:
            return data
        data["host"] = self.host.to_json()
        by_index = {g.index: g for g in self.gpus}
        for gpu in data["gpus"]:
            room = by_index[gpu["index"]].awake
            gpu["awake"] = room.to_json() if room is not None else None
        by_name = {i.name: i for i in self.instances}
        for inst in data["instances"]:
            i = by_name[inst["name"]]
            inst["residency"] = i.residency
            inst["asleep_bytes"] = i.asleep_bytes
            inst["host_bytes"] = i.host_bytes
            inst["on_demand"] = i.swap.to_json() if i.swap is not None else None
        return data

    def _json(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "total_bytes": g.total_bytes,
                    "reserved_bytes": g.reserved_bytes,
                    "free_bytes": g.free_bytes,
                    "instances": list(g.instances),
                }
                for g in self.gpus
            ],
            "instances": [
                {
                    "name": i.name,
                    "model": i.model,
                    "gpus": list(i.gpus),
                    "port": i.port,
                    "start_order": i.start_order,
                    "gpu_memory_utilization": i.gpu_memory_utilization,
                    "kv_cache_memory_bytes": i.kv_cache_memory_bytes,
                    "estimate": i.estimate.to_json() if i.estimate is not None else {},
                    "argv": list(i.argv),
                    "env": i.env,
                }
                for i in self.instances
            ],
            "unplaced": [
                {
                    "name": u.name,
                    "reason": u.reason,
                    "short_by_bytes": u.short_by_bytes,
                    "suggestions": list(u.suggestions),
                }
                for u in self.unplaced
            ],
        }
