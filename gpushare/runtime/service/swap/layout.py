"""Where the on-demand instances sleep and the room each GPU keeps for them awake, as the swap
manager needs it, and the choice of which awake ones to put to sleep for another one.

Read from the plan (planning/ondemand.py made it): per GPU the room left for on-demand instances
awake (`PlannedGpu.awake.room_bytes` = usable − residents − every on-demand residue) and
`awake_max`; per instance the part of that room it takes awake. That part is the planner's own
rule (planning/build.py `wake_problems` and `awake_room`): its planned footprint, plus the slack a
4-decimal utilization may ask beyond it (memory/budget.py `utilization_slack_bytes`; none with
`kv_sizing: fixed`, whose KV size is given in bytes), less what stays on the GPU asleep. The
plan's `awake.sets` is not used: it lists at most `AWAKE_SETS_LISTED` sets.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gpushare.memory.budget import utilization_slack_bytes
from gpushare.planning.plan import Plan, PlannedGpu, PlannedInstance, SwapSettings
from gpushare.vllm.sleep import SleepLevel

SwapPhase = Literal["asleep", "waking", "awake", "draining", "falling-asleep", "starting", "down", "failed"]
"""An on-demand instance as the swap manager sees it:

asleep          vLLM sleeps (its residue on the GPU); a request for it starts a swap
waking          /wake_up sent, not confirmed yet (takes its room)
awake           requests are forwarded to it
draining        being put to sleep: no new request is forwarded, the ones in flight may finish
falling-asleep  /sleep sent
starting        (re)started by the supervisor with room made for it; put to sleep once it serves
down            its process is gone or not serving (the supervisor restarts it); requests get 503
failed          a wake or sleep failed; requests get 503 until the supervisor restarts it or a
                `gpushare wake` retries
"""

HOLDS_ROOM: frozenset[SwapPhase] = frozenset({"waking", "awake", "draining", "falling-asleep", "starting"})
"""The phases in which an instance takes its awake part of the room (a failed one: see
`SwapManager`, it depends on what the instance answered)."""


@dataclass(frozen=True)
class SwapMember:
    """One on-demand instance: its GPU, the part of that GPU's room it takes awake, its settings."""

    name: str
    gpu: int
    awake_bytes: int
    settings: SwapSettings

    @property
    def sleep_level(self) -> SleepLevel:
        return self.settings.sleep_level


@dataclass(frozen=True)
class SwapGpu:
    """One GPU with on-demand instances: the room they share awake and how many may be awake."""

    index: int
    room_bytes: int
    awake_max: int | None
    members: tuple[str, ...]


def awake_part_bytes(instance: PlannedInstance, gpu: PlannedGpu) -> int:
    """What `instance` takes of `gpu`'s on-demand room awake (the module docstring's rule)."""
    slack = 0 if instance.kv_fixed else utilization_slack_bytes(gpu.cuda_total_bytes)
    return instance.planned_bytes + slack - instance.asleep_bytes


@dataclass(frozen=True)
class SwapLayout:
    gpus: tuple[SwapGpu, ...]
    members: tuple[SwapMember, ...]

    @classmethod
    def from_plan(cls, plan: Plan) -> SwapLayout:
        """The on-demand part of a plan (empty for a plan without on-demand instances). Raises
        ValueError for an on-demand instance the plan gives no room (not a plan the planner made)."""
        by_index = {g.index: g for g in plan.gpus}
        members = []
        for inst in plan.instances:
            if not inst.on_demand:
                continue
            if len(inst.gpus) != 1 or inst.swap is None:
                raise ValueError(f"instance {inst.name}: on-demand needs one GPU and its swap settings")
            gpu = by_index.get(inst.gpus[0])
            if gpu is None or gpu.awake is None:
                raise ValueError(f"instance {inst.name}: GPU {inst.gpus[0]} keeps no on-demand room")
            members.append(SwapMember(inst.name, gpu.index, awake_part_bytes(inst, gpu), inst.swap))
        gpus = tuple(
            SwapGpu(
                g.index,
                g.awake.room_bytes,
                g.awake.awake_max,
                tuple(m.name for m in members if m.gpu == g.index),
            )
            for g in plan.gpus
            if g.awake is not None and any(m.gpu == g.index for m in members)
        )
        return cls(gpus, tuple(members))

    def member(self, name: str) -> SwapMember | None:
        return next((m for m in self.members if m.name == name), None)

    def gpu(self, index: int) -> SwapGpu:
        return next(g for g in self.gpus if g.index == index)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [
                {
                    "index": g.index,
                    "room_bytes": g.room_bytes,
                    "awake_max": g.awake_max,
                    "members": list(g.members),
                }
                for g in self.gpus
            ],
            "members": [
                {
                    "name": m.name,
                    "gpu": m.gpu,
                    "awake_bytes": m.awake_bytes,
                    "on_demand": m.settings.to_json(),
                }
                for m in self.members
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SwapLayout:
        """Read back `to_json`; raises ValueError naming the field that is wrong."""
        where = "swap layout"
        try:
            where = "gpus"
            gpus = tuple(
                SwapGpu(
                    int(g["index"]),
                    int(g["room_bytes"]),
                    None if g["awake_max"] is None else int(g["awake_max"]),
                    tuple(str(n) for n in g["members"]),
                )
                for g in data["gpus"]
            )
            where = "members"
            members = tuple(
                SwapMember(
                    str(m["name"]),
                    int(m["gpu"]),
                    int(m["awake_bytes"]),
                    SwapSettings.from_json(m["on_demand"]),
                )
                for m in data["members"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            missing = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{where}: {missing}") from None
        return cls(gpus, members)


def level_2_problems(plan: Plan) -> list[str]:
    """On-demand instances at sleep level 2 whose weights vLLM cannot load again on wake: level 2
    discards them, and 0.26.0's wake does not bring them back (v1/worker/gpu_worker.py `wake_up`
    restores the buffers only); the swap manager reloads them with `reload_weights`
    (gpu_model_runner.py), which raises NotImplementedError for a loader without
    `get_all_weights`, as `--load-format dummy`'s. Such an instance would wake with garbage."""
    problems = []
    for inst in plan.instances:
        if inst.swap is None or inst.swap.sleep_level != 2:
            continue
        argv = list(inst.argv)
        formats = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--load-format"]
        formats += [a.split("=", 1)[1] for a in argv if a.startswith("--load-format=")]
        if formats and formats[-1] == "dummy":
            problems.append(
                f"{inst.name}: sleep_level 2 with --load-format dummy cannot wake (vLLM reloads "
                "the weights from the checkpoint on a level-2 wake, and the dummy loader has none); "
                "use sleep_level 1"
            )
    return problems


@dataclass(frozen=True)
class AwakeNow:
    """An instance of the GPU that takes room now, and when a request last used it."""

    name: str
    awake_bytes: int
    last_used: float
    movable: bool = True
    """False: it cannot be put to sleep for another (starting, or failed and still holding room)."""


@dataclass(frozen=True)
class RoomChoice:
    """Which instances to put to sleep so the target fits, least recently used first; or why it
    cannot fit (`short`: None when it fits)."""

    to_sleep: tuple[str, ...]
    short: str | None = None


def make_room(gpu: SwapGpu, now_awake: Sequence[AwakeNow], target_bytes: int) -> RoomChoice:
    """Put the least recently used to sleep until the target's awake part fits the room and fewer
    than `awake_max` are awake; then keep awake any of those chosen that still fits (the most
    recently used first), so a small idle model is not slept for nothing."""
    if target_bytes > gpu.room_bytes:
        return RoomChoice((), f"it takes {target_bytes} B awake and the GPU's room is {gpu.room_bytes} B")
    used = sum(a.awake_bytes for a in now_awake)
    count = len(now_awake)

    def fits(used: int, count: int) -> bool:
        return used + target_bytes <= gpu.room_bytes and (gpu.awake_max is None or count < gpu.awake_max)

    chosen: list[AwakeNow] = []
    for a in sorted((a for a in now_awake if a.movable), key=lambda a: (a.last_used, a.name)):
        if fits(used, count):
            break
        chosen.append(a)
        used -= a.awake_bytes
        count -= 1
    if not fits(used, count):
        stuck = sorted(a.name for a in now_awake if not a.movable)
        why = f"; {', '.join(stuck)} cannot be put to sleep now" if stuck else ""
        return RoomChoice((), f"it does not fit beside what stays awake{why}")
    for a in reversed(list(chosen)):
        if fits(used + a.awake_bytes, count + 1):
            chosen.remove(a)
            used += a.awake_bytes
            count += 1
    return RoomChoice(tuple(a.name for a in chosen))
