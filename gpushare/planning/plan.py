"""A plan: which instance goes on which GPU(s), with its exact vLLM argv and environment.

Pure data: these classes import nothing above the memory model. `planning.build.build_plan`
(profile + GPUs → Plan) fills them; the launcher, `calibrate` and the renderers read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpushare.memory.estimate import Estimate
from gpushare.vllm.command import VllmCommand
from gpushare.vllm.sleep import Residency, SleepLevel

PLAN_FORMAT = 1
"""`format` of `Plan.to_json`; `Plan.from_json` reads this one only."""


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
            "profile_id": self.profile_id,
            "usable_bytes": self.usable_bytes,
            "planned_bytes": self.planned_bytes,
            "other_processes_bytes": self.other_processes_bytes,
        }

    @classmethod
    def from_json(cls, gpu: int, data: dict[str, Any]) -> MigSlice:
        """A slice `to_json` wrote (or an instance's shorter `mig_slice`) on GPU `gpu`."""
        start, uuid, profile_id = data["start"], data["uuid"], data.get("profile_id")
        return cls(
            gpu=gpu,
            profile=str(data["profile"]),
            start=None if start is None else int(start),
            memory_bytes=int(data["memory_bytes"]),
            uuid=None if uuid is None else str(uuid),
            profile_id=None if profile_id is None else int(profile_id),
            instances=tuple(str(n) for n in data.get("instances", ())),
            usable_bytes=int(data.get("usable_bytes", 0)),
            planned_bytes=int(data.get("planned_bytes", 0)),
            other_processes_bytes=int(data.get("other_processes_bytes", 0)),
        )


@dataclass(frozen=True)
class MigSetup:
    """What creates the plan's MIG geometries (printed, never run): per GPU the `nvidia-smi`
    commands, and one mig-parted config (`version: v1`) for the NVIDIA GPU Operator."""

    commands: tuple[str, ...]
    mig_parted: dict[str, Any]
    config_name: str

    def to_json(self) -> dict[str, Any]:
        return {"commands": list(self.commands), "mig_parted": self.mig_parted, "config": self.config_name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MigSetup:
        parted = data["mig_parted"]
        if not isinstance(parted, dict):
            raise TypeError("mig.mig_parted must be an object")
        return cls(
            commands=tuple(str(c) for c in data["commands"]),
            mig_parted=parted,
            config_name=str(data["config"]),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SwapSettings:
        level, idle = int(data["sleep_level"]), data["idle_s"]
        if level not in (1, 2):
            raise ValueError(f"on_demand.sleep_level: expected 1 or 2, got {level}")
        return cls(
            sleep_level=1 if level == 1 else 2,
            queue=int(data["queue"]),
            wait_s=float(data["wait_s"]),
            drain_s=float(data["drain_s"]),
            idle_s=None if idle is None else float(idle),
        )


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
    its GPU asleep (memory/asleep.py), `host_bytes` the host RAM it holds from its first sleep on,
    awake or asleep: the pinned copy of its weights in power-of-two blocks (none at sleep level 2)
    plus its vLLM processes' own (`VLLM_PROCESS_HOST_BYTES`, measured), `swap` the gateway's
    settings; it starts after the resident instances of its group, one at a time, and is put to
    sleep once it serves (planning/start.py).
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
    residency: Residency = "always"
    asleep_bytes: int = 0
    host_bytes: int = 0
    swap: SwapSettings | None = None

    @property
    def command(self) -> VllmCommand:
        """The argv as a typed command (vllm/command.py reads back what it wrote exactly)."""
        return VllmCommand.from_argv(self.argv)

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
    mig: str = ""
    """How it runs: "" whole (no MIG), or its MIG slices from "devices" (those it has), "pinned"
    (the profile's geometry) or "auto" (a geometry gpushare chose)."""
    mig_slices: tuple[MigSlice, ...] = ()
    """Its MIG slices by start, each with the instances on it (empty ones too)."""
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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AwakeRoom:
        limit = data["awake_max"]
        return cls(
            room_bytes=int(data["room_bytes"]),
            awake_max=None if limit is None else int(limit),
            sets=tuple(tuple(str(n) for n in names) for names in data["awake_sets"]),
            largest_bytes=int(data["largest_awake_bytes"]),
            more_sets=not bool(data["awake_sets_complete"]),
        )


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostMemory:
        available = data["available_bytes"]
        return cls(
            needed_bytes=int(data["needed_bytes"]),
            available_bytes=None if available is None else int(available),
            source=str(data["source"]),
        )


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

    host: HostMemory | None = None
    """Set when the profile has on-demand models (their JSON keys appear only then)."""

    @property
    def problems(self) -> tuple[str, ...]:
        """`overcommitted` as lines (what `check --format json` lists under "problems")."""
        return tuple(str(p) for p in self.overcommitted)

    def to_json(self) -> dict[str, Any]:
        """The plan as `gpushare plan --json` prints it (sizes in bytes): everything it holds, so
        `Plan.from_json` reads it back equal (a plan file for `gpushare up --plan-file`)."""
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
                    "gpus": list(u.gpus),
                    "need_bytes": u.need_bytes,
                }
                for u in self.unplaced
            ],
            "format": PLAN_FORMAT,
            "profile": self.profile_name,
            "mps": self.mps,
            "notes": list(self.notes),
            "strategy": self.strategy,
            "method": self.method,
            "optimal": self.optimal,
            "lp_bound": self.lp_bound,
            "overcommitted": [
                {"message": p.message, "instance": p.instance, "gpu": p.gpu, "hint": p.hint}
                for p in self.overcommitted
            ],
        }
        if self.mig_setup is not None:
            out["mig"] = self.mig_setup.to_json()
        # On-demand keys appear only for a profile with on-demand models (`host` is set then).
        if self.host is not None:
            out["host"] = self.host.to_json()
            for gpu, data in zip(self.gpus, out["gpus"], strict=True):
                data["awake"] = gpu.awake.to_json() if gpu.awake is not None else None
            for inst, data in zip(self.instances, out["instances"], strict=True):
                data["residency"] = inst.residency
                data["asleep_bytes"] = inst.asleep_bytes
                data["host_bytes"] = inst.host_bytes
                data["on_demand"] = inst.swap.to_json() if inst.swap is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """Read back what `to_json` wrote: `Plan.from_json(plan.to_json()) == plan`.

        Raises ValueError naming the first field that is missing or of the wrong type (the caller
        adds the file's name)."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(
                f"format: expected {PLAN_FORMAT} (a plan written by `gpushare plan --json`), got {found!r}"
            )
        where = "plan"
        try:
            where = "gpus"
            gpus = tuple(_gpu_from_json(g) for g in data["gpus"])
            where = "instances"
            instances = tuple(_instance_from_json(i) for i in data["instances"])
            where = "unplaced"
            unplaced = tuple(
                Unplaced(
                    name=str(u["name"]),
                    reason=str(u["reason"]),
                    short_by_bytes=int(u["short_by_bytes"]),
                    suggestions=tuple(str(s) for s in u["suggestions"]),
                    gpus=tuple(int(g) for g in u["gpus"]),
                    need_bytes=int(u["need_bytes"]),
                )
                for u in data["unplaced"]
            )
            where = "overcommitted"
            problems = tuple(
                Problem(
                    message=str(p["message"]),
                    instance=p["instance"],
                    gpu=None if p["gpu"] is None else int(p["gpu"]),
                    hint=p["hint"],
                )
                for p in data["overcommitted"]
            )
            where = "mig"
            mig = data.get("mig")
            mig_setup = None if mig is None else MigSetup.from_json(mig)
            where = "host"
            host = data.get("host")
            host_memory = None if host is None else HostMemory.from_json(host)
            where = "plan"
            bound = data["lp_bound"]
            return cls(
                profile_name=str(data["profile"]),
                feasible=bool(data["feasible"]),
                gpus=gpus,
                instances=instances,
                unplaced=unplaced,
                mps=str(data["mps"]),
                notes=tuple(str(n) for n in data["notes"]),
                strategy=str(data["strategy"]),
                method=str(data["method"]),
                optimal=bool(data["optimal"]),
                lp_bound=None if bound is None else float(bound),
                overcommitted=problems,
                mig_setup=mig_setup,
                host=host_memory,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            missing = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{where}: {missing}") from None

    def subset(self, names: Sequence[str]) -> Plan:
        """The plan of these instances alone, on their GPUs renumbered 0..n-1 in index order: what
        a machine (a Kubernetes pod) that sees only those GPUs runs.

        The instances must hold their GPUs to themselves (a whole start group: nothing outside
        `names` on any of their GPUs), so every number stays the plan's. `CUDA_VISIBLE_DEVICES`
        follows the new numbers; unplaced models and placement notes stay with the whole plan.
        Instances on MIG slices have no subset (their slices and the MIG setup name the machine's
        GPUs); whole-GPU instances of a plan that also has slices do, without the MIG setup."""
        wanted = set(names)
        chosen = [i for i in self.instances if i.name in wanted]
        missing = sorted(wanted - {i.name for i in chosen})
        if missing:
            raise ValueError(f"the plan has no instance {', '.join(missing)}")
        used = sorted({g for i in chosen for g in i.gpus})
        sliced = [g.index for g in self.gpus if g.index in used and g.mig]
        if sliced or any(i.mig_slice is not None for i in chosen):
            raise ValueError("a plan on MIG slices has no subset: its slices name the machine's GPUs")
        number = {old: new for new, old in enumerate(used)}
        gpus = []
        for gpu in self.gpus:
            if gpu.index not in number:
                continue
            others = [n for n in gpu.instances if n not in wanted]
            if others:
                raise ValueError(
                    f"GPU {gpu.index} also holds {', '.join(others)}: a subset keeps whole start groups"
                )
            gpus.append(replace(gpu, index=number[gpu.index]))
        renumbered = []
        for inst in chosen:
            new_gpus = tuple(number[g] for g in inst.gpus)
            env = dict(inst.env)
            if "CUDA_VISIBLE_DEVICES" in env:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in new_gpus)
            renumbered.append(replace(inst, gpus=new_gpus, env=env, start_group=0))
        return replace(
            self,
            gpus=tuple(gpus),
            instances=tuple(renumbered),
            unplaced=(),
            mig_setup=None,
            overcommitted=tuple(replace(p, gpu=number[p.gpu]) for p in self.overcommitted if p.gpu in number),
        )


def _gpu_json(g: PlannedGpu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": g.index,
        "name": g.name,
        "total_bytes": g.total_bytes,
        "reserved_bytes": g.reserved_bytes,
        "free_bytes": g.free_bytes,
        "instances": list(g.instances),
        "cuda_total_bytes": g.cuda_total_bytes,
        "driver_reserved_bytes": g.driver_reserved_bytes,
        "other_processes_bytes": g.other_processes_bytes,
        "usable_bytes": g.usable_bytes,
        "planned_bytes": g.planned_bytes,
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
        "planned_bytes": i.planned_bytes,
        "kv_fixed": i.kv_fixed,
        "aliases": list(i.aliases),
        "priority": i.priority,
        "start_group": i.start_group,
        "kv_target_bytes": i.kv_target_bytes,
        "target": i.target,
    }
    if i.mig_slice is not None:
        s = i.mig_slice
        out["mig_slice"] = {
            "profile": s.profile,
            "start": s.start,
            "uuid": s.uuid,
            "memory_bytes": s.memory_bytes,
            "profile_id": s.profile_id,
            "instances": list(s.instances),
        }
    return out


def _gpu_from_json(g: dict[str, Any]) -> PlannedGpu:
    return PlannedGpu(
        index=int(g["index"]),
        name=str(g["name"]),
        total_bytes=int(g["total_bytes"]),
        reserved_bytes=int(g["reserved_bytes"]),
        free_bytes=int(g["free_bytes"]),
        instances=tuple(str(n) for n in g["instances"]),
        cuda_total_bytes=int(g["cuda_total_bytes"]),
        driver_reserved_bytes=int(g["driver_reserved_bytes"]),
        other_processes_bytes=int(g["other_processes_bytes"]),
        usable_bytes=int(g["usable_bytes"]),
        planned_bytes=int(g["planned_bytes"]),
        mig=str(g.get("mig", "")),
        mig_slices=tuple(MigSlice.from_json(int(g["index"]), s) for s in g.get("mig_slices", ())),
        awake=None if g.get("awake") is None else AwakeRoom.from_json(g["awake"]),
    )


def _instance_from_json(i: dict[str, Any]) -> PlannedInstance:
    kv = i["kv_cache_memory_bytes"]
    env = i["env"]
    if not isinstance(env, dict):
        raise TypeError(f"{i.get('name')}: env must be an object")
    gpus = tuple(int(g) for g in i["gpus"])
    on_slice = i.get("mig_slice")
    return PlannedInstance(
        name=str(i["name"]),
        model=str(i["model"]),
        gpus=gpus,
        port=int(i["port"]),
        start_order=int(i["start_order"]),
        gpu_memory_utilization=float(i["gpu_memory_utilization"]),
        kv_cache_memory_bytes=None if kv is None else int(kv),
        planned_bytes=int(i["planned_bytes"]),
        argv=tuple(str(a) for a in i["argv"]),
        env={str(k): str(v) for k, v in env.items()},
        kv_fixed=bool(i["kv_fixed"]),
        estimate=Estimate.from_json(i["estimate"]) if i["estimate"] else None,
        aliases=tuple(str(a) for a in i["aliases"]),
        priority=int(i["priority"]),
        start_group=int(i["start_group"]),
        kv_target_bytes=int(i["kv_target_bytes"]),
        target=str(i["target"]),
        mig_slice=None if on_slice is None else MigSlice.from_json(gpus[0], on_slice),
        residency=_residency(i.get("residency", "always")),
        asleep_bytes=int(i.get("asleep_bytes", 0)),
        host_bytes=int(i.get("host_bytes", 0)),
        swap=None if i.get("on_demand") is None else SwapSettings.from_json(i["on_demand"]),
    )


def _residency(text: object) -> Residency:
    if text == "always" or text == "on-demand":
        return text
    raise ValueError(f"residency: expected always or on-demand, got {text!r}")
