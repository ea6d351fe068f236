"""A plan: which instance goes on which GPU(s), with its exact vLLM argv and environment.

Pure data: these classes import nothing above the memory model. `planning.build.build_plan`
(profile + GPUs → Plan) fills them; the launcher, `calibrate` and the renderers read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpushare.memory.estimate import Estimate


@dataclass(frozen=True)
class MigSlice:
    """One MIG slice of a plan: a GPU instance of `profile` at memory unit `start` on GPU `gpu`.

    `uuid` is the MIG device's (`MIG-...`) when the plan was made onto existing devices, None for
    a slice still to create (proposed or pinned), which `up` binds to a device of the same
    profile (and start). `memory_bytes` is the device's NVML memory, or the catalog's for a slice
    to create. `start` is None where the driver did not say."""

    gpu: int
    profile: str
    start: int | None
    memory_bytes: int
    uuid: str | None = None
    profile_id: int | None = None
    instances: tuple[str, ...] = ()
    usable_bytes: int = 0
    """Its memory less the safety reserve and foreign processes on it."""
    planned_bytes: int = 0
    other_processes_bytes: int = 0

    @property
    def label(self) -> str:
        """`3g.71gb@4` (`@?` when the start is not known)."""
        return f"{self.profile}@{'?' if self.start is None else self.start}"

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "start": self.start,
            "memory_bytes": self.memory_bytes,
            "uuid": self.uuid,
            "instances": list(self.instances),
        }


@dataclass(frozen=True)
class MigSetup:
    """What creates the plan's MIG geometries (printed, never run): per GPU the `nvidia-smi`
    commands, and one mig-parted config (`version: v1`) for the NVIDIA GPU Operator."""

    commands: tuple[str, ...]
    mig_parted: dict[str, Any]
    config_name: str

    def to_json(self) -> dict[str, Any]:
        return {"commands": list(self.commands), "mig_parted": self.mig_parted, "config": self.config_name}


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
    mig_slice: MigSlice | None = None
    """The MIG slice it runs on (`gpus` then holds its GPU); None on a whole GPU."""

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
    mig: str = ""
    """How it runs: "" whole (no MIG), or its MIG slices from "devices" (those it has), "pinned"
    (the profile's geometry) or "auto" (a geometry gpushare chose)."""
    mig_slices: tuple[MigSlice, ...] = ()
    """Its MIG slices by start, each with the instances on it (empty ones too)."""


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
    mig_setup: MigSetup | None = None
    """What creates the MIG slices the plan proposes or pins; None when there is nothing to create."""

    @property
    def uses_mig(self) -> bool:
        return any(g.mig for g in self.gpus)

    @property
    def problems(self) -> tuple[str, ...]:
        """`overcommitted` as lines (what `check --format json` lists under "problems")."""
        return tuple(str(p) for p in self.overcommitted)

    def to_json(self) -> dict[str, Any]:
        """The plan as `gpushare plan --json` prints it (sizes in bytes)."""
        # MIG keys appear only where there is MIG, so plans of whole GPUs read as they always did.
        out: dict[str, Any] = {
            "feasible": self.feasible,
            "gpus": [_gpu_json(g) for g in self.gpus],
            "instances": [_instance_json(i) for i in self.instances],
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
        if self.mig_setup is not None:
            out["mig"] = self.mig_setup.to_json()
        return out


def _gpu_json(g: PlannedGpu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": g.index,
        "name": g.name,
        "total_bytes": g.total_bytes,
        "reserved_bytes": g.reserved_bytes,
        "free_bytes": g.free_bytes,
        "instances": list(g.instances),
    }
    if g.mig:
        out["mig"] = g.mig
        out["mig_slices"] = [s.to_json() for s in g.mig_slices]
    return out


def _instance_json(i: PlannedInstance) -> dict[str, Any]:
    out: dict[str, Any] = {
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
    if i.mig_slice is not None:
        s = i.mig_slice
        out["mig_slice"] = {
            "profile": s.profile,
            "start": s.start,
            "uuid": s.uuid,
            "memory_bytes": s.memory_bytes,
        }
    return out
