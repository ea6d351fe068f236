"""Binding a plan's MIG slices to the MIG devices a machine has, when `up` starts it. Pure.

A plan made onto existing MIG devices carries their UUIDs: binding checks they are still there.
A slice still to create (a pinned geometry, `mig: auto`) is bound to a device of the same
profile on the same GPU: one with the same start first, else any (mig-parted creates GPU
instances without choosing their starts, and two slices of one profile hold the same memory).
Every instance on a slice then gets that device's UUID in CUDA_VISIBLE_DEVICES. When a slice has
no device, or its device is smaller than planned or holds memory the instance needs, `bind_mig`
raises EnvironmentProblem naming the GPU and what is missing, before anything starts.

gpushare never creates slices: the message points at the commands `gpushare plan` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gpushare.devices.base import Gpu, MigDevice
from gpushare.errors import EnvironmentProblem
from gpushare.planning.plan import MigSlice, Plan, PlannedGpu, PlannedInstance
from gpushare.units import format_bytes

_HINT = (
    "`gpushare plan PROFILE` prints the nvidia-smi commands and the mig-parted config that create "
    "the slices it wants; or remove `mig:` from the profile's GPU to plan onto the devices there"
)


def bind_mig(plan: Plan, gpus: Sequence[Gpu]) -> Plan:
    """`plan` with every MIG slice bound to a MIG device of `gpus` (module docstring)."""
    if not plan.uses_mig:
        return plan
    by_index = {g.index: g for g in gpus}
    uuid_of: dict[str, str] = {}  # instance -> the UUID of its slice's device
    new_gpus: list[PlannedGpu] = []
    for pg in plan.gpus:
        if not pg.mig_slices:
            new_gpus.append(pg)
            continue
        gpu = by_index.get(pg.index)
        bound = _bind_gpu(pg, gpu, plan)
        for planned, device in zip(pg.mig_slices, bound, strict=True):
            assert device.uuid is not None
            uuid_of.update({name: device.uuid for name in planned.instances})
        slices = tuple(replace(s, uuid=d.uuid) for s, d in zip(pg.mig_slices, bound, strict=True))
        new_gpus.append(replace(pg, mig_slices=slices))
    instances = tuple(_bound_instance(inst, uuid_of) for inst in plan.instances)
    return replace(plan, gpus=tuple(new_gpus), instances=instances)


def _bind_gpu(pg: PlannedGpu, gpu: Gpu | None, plan: Plan) -> list[MigDevice]:
    want = ", ".join(s.label for s in pg.mig_slices)
    if gpu is None:
        raise EnvironmentProblem(f"GPU {pg.index} is in the plan (MIG slices {want}) but not on this machine")
    if not gpu.mig_enabled:
        raise EnvironmentProblem(
            f"GPU {pg.index} ({gpu.name}) has MIG mode off; the plan needs MIG slices {want}", hint=_HINT
        )
    free = [d for d in gpu.mig_devices if d.uuid]
    has = ", ".join(d.label for d in gpu.mig_devices) or "none"
    chosen: dict[int, MigDevice] = {}
    # UUIDs the plan already names, then the same start, then any device of the profile
    for rule in ("uuid", "start", "profile"):
        for n, s in enumerate(pg.mig_slices):
            if n in chosen:
                continue
            found = next((d for d in free if _matches(s, d, rule)), None)
            if found is not None:
                chosen[n] = found
                free.remove(found)
    missing = [s.label for n, s in enumerate(pg.mig_slices) if n not in chosen]
    if missing:
        raise EnvironmentProblem(
            f"GPU {pg.index}'s MIG devices ({has}) are not the plan's ({want}): nothing for "
            f"{', '.join(missing)}",
            hint=_HINT,
        )
    devices = [chosen[n] for n in range(len(pg.mig_slices))]
    for s, d in zip(pg.mig_slices, devices, strict=True):
        _check_room(pg.index, s, d, plan)
    return devices


def _matches(s: MigSlice, d: MigDevice, rule: str) -> bool:
    if rule == "uuid":
        return s.uuid is not None and s.uuid == d.uuid
    if s.uuid is not None:
        return False  # planned onto a device that is gone: never a stand-in
    if rule == "start":
        return d.profile == s.profile and s.start is not None and d.start == s.start
    return d.profile == s.profile


def _check_room(gpu: int, s: MigSlice, d: MigDevice, plan: Plan) -> None:
    need = sum(i.planned_bytes for i in plan.instances if i.name in s.instances)
    if s.uuid is None and d.total_bytes < s.memory_bytes:
        raise EnvironmentProblem(
            f"GPU {gpu}'s MIG device {d.uuid} ({d.label}) has {format_bytes(d.total_bytes)}, less than "
            f"the {format_bytes(s.memory_bytes)} planned for {s.label}",
            hint="plan onto the devices there: remove `mig:` from the profile's GPU",
        )
    free = d.free_bytes if d.free_bytes is not None else d.total_bytes - d.used_bytes
    if need > free:
        holders = ", ".join(f"pid {p.pid} {format_bytes(p.used_bytes)}" for p in d.processes)
        raise EnvironmentProblem(
            f"GPU {gpu}'s MIG device {d.uuid} ({d.label}): the plan needs {format_bytes(need)}, only "
            f"{format_bytes(free)} is free" + (f" (held by {holders})" if holders else "")
        )


def _bound_instance(inst: PlannedInstance, uuid_of: dict[str, str]) -> PlannedInstance:
    s = inst.mig_slice
    if s is None:
        return inst
    uuid = uuid_of[inst.name]
    env = {**inst.env, "CUDA_VISIBLE_DEVICES": uuid}
    return replace(inst, env=env, mig_slice=replace(s, uuid=uuid))
