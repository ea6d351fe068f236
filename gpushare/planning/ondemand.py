"""On-demand instances in a plan: which GPU each one sleeps on, the room its GPU keeps for them
awake, which of them can be awake together, and the host RAM their weights take asleep.

A GPU with on-demand instances is feasible when every resident footprint + every on-demand asleep
footprint (memory/asleep.py) + the largest set of on-demand instances that may be awake together
fit in its usable memory. An on-demand instance is planned at its capacity target exactly (no
leftover share), awake and asleep; "awake" here is the instance's awake footprint minus its
asleep one, the part of the room it takes when woken.

Placement (a greedy of its own; the solver places the rest):
1. On-demand instances are assigned to GPUs first, in order of priority then awake size, each to
   the first allowed GPU, preferring one that already holds on-demand instances (they share its
   room), where the room still fits in the GPU's usable memory.
2. Each such GPU gets one pinned placement item, its *room*: the on-demand residues plus the
   largest `awake_max` awake parts (one, when awake_max is unset). The solver places the resident
   instances around these items; a room that does not fit leaves its instances unplaced.
3. Leftover memory: with awake_max unset, what the residents of the GPU leave beyond their
   targets stays as room (as many awake as fit); with awake_max set, the room keeps that many of
   the largest awake and the rest is shared among the residents as on any GPU.

Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from gpushare.memory import SleepFootprint, sleep_footprint
from gpushare.placement import Bin, Item
from gpushare.planning.needs import Entry, Needs
from gpushare.planning.plan import AWAKE_SETS_LISTED, AwakeRoom, HostMemory, Problem, SwapSettings, Unplaced
from gpushare.planning.suggest import Suggester
from gpushare.profile import Profile
from gpushare.profile.on_demand import (
    DEFAULT_DRAIN_S,
    DEFAULT_IDLE_S,
    DEFAULT_QUEUE,
    DEFAULT_SLEEP_LEVEL,
    DEFAULT_WAIT_S,
)
from gpushare.units import format_bytes

ROOM_PREFIX = "(on-demand room of GPU "
"""Room items' names: no served name can start with '(' (profile NAME_PATTERN)."""


def room_name(gpu: int) -> str:
    return f"{ROOM_PREFIX}{gpu})"


def swap_settings(profile: Profile, m: Entry) -> SwapSettings:
    """The entry's swap settings: its own, else defaults.on_demand's, else gpushare's defaults."""
    own, shared = m.entry.on_demand, profile.defaults.on_demand

    def pick(name: str, fallback: float) -> float:
        mine = getattr(own, name) if own is not None else None
        return (
            mine
            if mine is not None
            else getattr(shared, name)
            if getattr(shared, name) is not None
            else fallback
        )

    level = own.sleep_level if own is not None and own.sleep_level is not None else shared.sleep_level
    idle = pick("idle_s", DEFAULT_IDLE_S)
    return SwapSettings(
        sleep_level=level if level is not None else DEFAULT_SLEEP_LEVEL,
        queue=int(pick("queue", DEFAULT_QUEUE)),
        wait_s=float(pick("wait_s", DEFAULT_WAIT_S)),
        drain_s=float(pick("drain_s", DEFAULT_DRAIN_S)),
        idle_s=float(idle) if idle > 0 else None,
    )


@dataclass(frozen=True)
class Sleeper:
    """An on-demand instance on one GPU: its need awake (with the utilization slack) and asleep."""

    name: str
    gpu: int
    need_bytes: int
    sleep: SleepFootprint
    priority: int = 0

    @property
    def asleep_bytes(self) -> int:
        return self.sleep.asleep_bytes

    @property
    def awake_bytes(self) -> int:
        """What it takes of the room when woken."""
        return self.need_bytes - self.sleep.asleep_bytes


def room_need(sleepers: Sequence[Sleeper], awake_max: int | None) -> int:
    """Residues of all + the awake parts of the `awake_max` largest (of the largest one when
    unset: the least room that lets each of them wake)."""
    largest = sorted((s.awake_bytes for s in sleepers), reverse=True)[: awake_max or 1]
    return sum(s.asleep_bytes for s in sleepers) + sum(largest)


def maximal_sets(
    sleepers: Sequence[Sleeper], room: int, awake_max: int | None, limit: int = AWAKE_SETS_LISTED
) -> tuple[list[tuple[str, ...]], bool]:
    """The sets of sleepers that fit awake together in `room` (at most `awake_max` each) and take
    no other one, largest first; at most `limit` of them, and whether some were left out."""
    ordered = sorted(sleepers, key=lambda s: (-s.awake_bytes, s.name))
    cap = awake_max if awake_max is not None else len(ordered)
    found: list[tuple[str, ...]] = []

    def grow(start: int, chosen: list[Sleeper], used: int) -> Iterator[tuple[str, ...]]:
        extended = False
        for i in range(start, len(ordered)):
            s = ordered[i]
            if len(chosen) < cap and used + s.awake_bytes <= room:
                extended = True
                yield from grow(i + 1, [*chosen, s], used + s.awake_bytes)
        if not extended and chosen and _maximal(chosen, used, room, cap, ordered):
            yield tuple(sorted(c.name for c in chosen))

    more = False
    for names in grow(0, [], 0):
        if names in found:
            continue
        if len(found) == limit:
            more = True
            break
        found.append(names)
    found.sort(key=lambda names: (-len(names), names))
    return found, more


def _maximal(chosen: list[Sleeper], used: int, room: int, cap: int, every: Sequence[Sleeper]) -> bool:
    if len(chosen) >= cap:
        return True
    names = {c.name for c in chosen}
    return all(used + s.awake_bytes > room for s in every if s.name not in names)


@dataclass(frozen=True)
class LeftOut:
    """Why an on-demand entry has no GPU: the reason, the GPU it came closest on and the bytes its
    awake footprint may take there (None: no GPU allowed)."""

    reason: str
    gpu: int | None
    available_bytes: int
    need_bytes: int


@dataclass
class Layout:
    """Where the on-demand entries sleep, and the room items that stand for them in placement."""

    by_gpu: dict[int, list[Sleeper]] = field(default_factory=dict)
    left_out: dict[str, LeftOut] = field(default_factory=dict)
    """Entries with no GPU, and why."""

    def rooms(self, profile: Profile) -> list[Item]:
        return [
            Item(
                room_name(g),
                room_need(sleepers, profile.awake_max_on(g)),
                pin=(g,),
                priority=max(s.priority for s in sleepers),
            )
            for g, sleepers in sorted(self.by_gpu.items())
        ]

    def drop(self, gpu: int, reason: str, available: int) -> None:
        """The room of `gpu` could not be placed: its entries are left out."""
        for s in self.by_gpu.pop(gpu, []):
            self.left_out[s.name] = LeftOut(reason, gpu, available, s.need_bytes)

    def sleeper(self, name: str) -> Sleeper | None:
        return next((s for ss in self.by_gpu.values() for s in ss if s.name == name), None)


def assign(profile: Profile, needs: Needs, entries: Sequence[Entry]) -> Layout:
    """Step 1 of the module docstring."""
    layout = Layout()
    ordered = sorted(
        entries,
        key=lambda m: (-m.entry.priority, -max((needs.need(m, g) for g in needs.gpus), default=0), m.index),
    )
    for m in ordered:
        level = swap_settings(profile, m).sleep_level
        allowed = [g for g in (m.entry.gpus or sorted(needs.gpus)) if g in needs.gpus]
        # GPUs that already hold on-demand instances first: they share one room
        allowed.sort(key=lambda g: (g not in layout.by_gpu, g))
        closest: tuple[int, int, int] | None = None  # (short by, GPU, need)
        for g in allowed:
            asleep = sleep_footprint(m.facts.arch, needs.need_estimate(m, g), m.settings, level)
            s = Sleeper(m.name, g, needs.need(m, g), asleep, m.entry.priority)
            here = [*layout.by_gpu.get(g, []), s]
            short = room_need(here, profile.awake_max_on(g)) - needs.usable[g]
            if short <= 0:
                layout.by_gpu.setdefault(g, []).append(s)
                break
            if closest is None or short < closest[0]:
                closest = (short, g, s.need_bytes)
        else:
            if closest is None:
                layout.left_out[m.name] = LeftOut("no GPU to place it on", None, 0, 0)
            else:
                short, g, need = closest
                others = len(layout.by_gpu.get(g, []))
                beside = f"with {others} other on-demand instance(s) asleep there" if others else "alone"
                layout.left_out[m.name] = LeftOut(
                    f"on-demand: awake on GPU {g} ({needs.gpus[g].name}) {beside}, it needs "
                    f"{format_bytes(short + needs.usable[g])} of the GPU's "
                    f"{format_bytes(max(needs.usable[g], 0))} usable; short by {format_bytes(short)}",
                    g,
                    need - short,
                    need,
                )
    return layout


def sharing_bins(
    profile: Profile, layout: Layout, bins: Sequence[Bin], resident_need: Mapping[int, int]
) -> list[Bin]:
    """The bins the residents share leftover memory in (step 3 of the module docstring)."""
    out = []
    for b in bins:
        sleepers = layout.by_gpu.get(b.index)
        if not sleepers:
            out.append(b)
        elif profile.awake_max_on(b.index) is None:
            out.append(Bin(b.index, resident_need.get(b.index, 0)))
        else:
            out.append(Bin(b.index, b.capacity_bytes - room_need(sleepers, profile.awake_max_on(b.index))))
    return out


def awake_room(profile: Profile, sleepers: Sequence[Sleeper], room: int, gpu: int) -> AwakeRoom:
    awake_max = profile.awake_max_on(gpu)
    sets, more = maximal_sets(sleepers, room, awake_max)
    cap = awake_max if awake_max is not None else len(sleepers)
    largest = max((_set_bytes(sleepers, names) for names in sets), default=0)
    # an allowed set beyond the listed ones may be larger: bound it by the awake_max largest
    if more:
        largest = max(largest, min(room, sum(sorted((s.awake_bytes for s in sleepers), reverse=True)[:cap])))
    return AwakeRoom(
        room_bytes=room, awake_max=awake_max, sets=tuple(sets), largest_bytes=largest, more_sets=more
    )


def _set_bytes(sleepers: Sequence[Sleeper], names: Sequence[str]) -> int:
    return sum(s.awake_bytes for s in sleepers if s.name in names)


def unplaced_entries(needs: Needs, layout: Layout, entries: Mapping[str, Entry]) -> list[Unplaced]:
    """The left-out entries, each with the single changes (checked with the memory model) that
    would let it wake on the GPU it came closest on, as if it were the largest awake there."""
    out = []
    for name, why in layout.left_out.items():
        m = entries[name]
        suggestions: list[str] = []
        if why.gpu is not None:
            s = Suggester(needs, m, (why.gpu,), why.available_bytes)
            for suggest in (s.shorter_context, s.fp8_kv, s.fewer_requests, s.quantized):
                text = suggest()
                if text:
                    suggestions.append(text)
        if not suggestions:
            suggestions.append(
                "no single change makes it wake there; pin it to another GPU (gpus: [N]) or make "
                "some residents on-demand"
            )
        short = why.need_bytes - why.available_bytes
        gpus = (why.gpu,) if why.gpu is not None else ()
        out.append(Unplaced(name, why.reason, max(short, 0), tuple(suggestions), gpus, why.need_bytes))
    return out


def host_memory(profile: Profile, needed: int, reported: int | None) -> tuple[HostMemory, list[Problem]]:
    """The host RAM the sleeping instances need against what the profile or the host says."""
    given = profile.host_memory_bytes
    if given is not None:
        host = HostMemory(needed, given, "profile host_memory")
    else:
        host = HostMemory(
            needed, reported, "reported by the host at plan time" if reported is not None else "unknown"
        )
    problems = []
    if host.available_bytes is not None and needed > host.available_bytes:
        problems.append(
            Problem(
                f"host RAM: the on-demand instances need {format_bytes(needed)} (the pinned copies of "
                f"their weights at sleep level 1 and their vLLM processes), but {host.source} gives "
                f"{format_bytes(host.available_bytes)} "
                f"(short by {format_bytes(needed - host.available_bytes)})",
                hint="set on_demand.sleep_level: 2 for some (no host copy), make some residency: always, "
                "or raise host_memory",
            )
        )
    return host, problems
