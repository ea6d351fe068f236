"""MIG in a plan: which GPUs run whole and which as slices, the slices as bins of their own, the
choice of a geometry, and what creates it. Pure: GPUs and settings in, values out.

Per GPU (`layout`), from `--mig auto|off`, else the profile's `gpus[i].mig`, else what it is:
- whole: no MIG (a GPU without MIG, MIG off, or `mig: off`);
- devices: MIG is on and the GPU has MIG devices: the models go on those, each a bin of its own
  NVML memory (no reservation beyond what NVML reports) less the safety reserve and foreign
  processes on it;
- pinned: the profile's geometry (`mig: "3g.71gb:4,4g.71gb:0"`), slices of the catalog's memory;
- auto: any legal geometry, or the whole GPU, whichever the search prefers;
- unusable: MIG is on without devices, or `mig: off` on a GPU whose MIG is on (it cannot run a
  whole-GPU process until an admin turns MIG off); a note says so.

A slice gets a private GPU index (`SLICE_BASE` and up) so the planner's per-GPU tables (needs,
usable bytes, start checks) hold slices as they hold GPUs; `Spot` maps it back.

One model per slice: MIG is chosen for isolation, and several processes on one slice would share
it without MPS, or need an MPS control daemon per MIG device (the MIG user guide's "CUDA MPS"
section), which gpushare does not start. No tensor parallelism across slices (no NCCL between
them). `7g` profiles are never proposed: a slice of the whole GPU isolates nothing and gives up
tensor parallelism; such a GPU runs whole instead.

The search (`choose`): for w = 0..(auto GPUs), the w largest auto GPUs run whole (with the GPUs
that are whole anyway) and the rest are MIG bins; models go to slices first (`mig.fit`) and the
rest to whole GPUs (`placement.solve`), or to whole GPUs first and the rest to slices; the best
answer places the most models by priority, then uses the fewest GPUs, then leaves the fewest
compute slices idle on the MIG GPUs it uses, then puts more models on slices (the isolation a
`mig: auto` asks for), then keeps more GPUs whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gpushare.catalog.gpus import compute_capability_of
from gpushare.catalog.mig import COMPUTE_SLICES, MigTable, find_mig_table
from gpushare.devices.base import Gpu, MigDevice
from gpushare.errors import GpushareError, InputError
from gpushare.memory import GpuTarget
from gpushare.mig.emit import cgi_command, mig_parted_config
from gpushare.mig.fit import MigBin, MigPlacement, place_on_mig
from gpushare.mig.geometry import Geometry, Slice, parse_geometry, place
from gpushare.placement import Bin, Item, Placement, Strategy, solve
from gpushare.placement.model import level_counts
from gpushare.planning.needs import Entry, Needs
from gpushare.planning.plan import MigSetup, MigSlice, Unplaced
from gpushare.planning.suggest import Suggester
from gpushare.units import format_bytes

SLICE_BASE = 1 << 16
"""Private GPU indices of MIG slices start here (real indices are far below)."""

MigOverride = Literal["auto", "off"]
Mode = Literal["whole", "devices", "pinned", "auto", "unusable"]


@dataclass(frozen=True)
class Spot:
    """A slice the plan may use, under its private index."""

    index: int
    gpu: int
    slice: Slice
    """Profile and start; for a device whose start the driver did not give, a legal start
    chosen to stand in (`start_known` false)."""
    memory_bytes: int
    device: MigDevice | None = None
    start_known: bool = True

    @property
    def start(self) -> int | None:
        return self.slice.start if self.start_known else None

    @property
    def label(self) -> str:
        return f"{self.slice.profile.name}@{self.start if self.start is not None else '?'}"

    @property
    def cuda_device(self) -> str:
        """What CUDA_VISIBLE_DEVICES gets: the device's UUID, or a stand-in `up` replaces."""
        if self.device is not None and self.device.uuid:
            return self.device.uuid
        return placeholder(self.gpu, self.label)


def placeholder(gpu: int, label: str) -> str:
    """A CUDA_VISIBLE_DEVICES value for a slice not created yet: never a valid device (CUDA
    then sees none and vLLM stops at once), replaced by `up` with the MIG device's UUID."""
    return f"MIG-<gpu{gpu}:{label}>"


@dataclass(frozen=True)
class GpuMig:
    """One GPU's MIG mode in a plan."""

    gpu: Gpu
    mode: Mode
    table: MigTable | None = None
    fixed: Geometry | None = None
    """devices and pinned: the slices it has or must have."""
    spots: tuple[Spot, ...] = ()

    @property
    def index(self) -> int:
        return self.gpu.index


@dataclass(frozen=True)
class MigLayout:
    gpus: dict[int, GpuMig]
    notes: tuple[str, ...] = ()

    @property
    def plain(self) -> bool:
        """No MIG anywhere: the plan is what it was before MIG existed, byte for byte."""
        return all(g.mode == "whole" for g in self.gpus.values()) and not self.notes

    @property
    def spots(self) -> dict[int, Spot]:
        return {s.index: s for g in self.gpus.values() for s in g.spots}

    def parent(self, index: int) -> int:
        """The real GPU index of a private slice index (a real index maps to itself)."""
        spot = self.spots.get(index)
        return spot.gpu if spot is not None else index

    def slice_gpus(self) -> list[Gpu]:
        """Each spot as a GPU description: its memory, what is on it."""
        return [slice_gpu(self.gpus[s.gpu].gpu, s) for s in self.spots.values()]

    def slice_targets(self) -> dict[int, GpuTarget]:
        return {s.index: slice_target(self.gpus[s.gpu].gpu, s) for s in self.spots.values()}


def slice_name(parent: Gpu, profile: str) -> str:
    """What NVML calls the MIG device: `NVIDIA H200 MIG 3g.71gb`."""
    return f"{parent.name} MIG {profile}"


def slice_gpu(parent: Gpu, spot: Spot) -> Gpu:
    d = spot.device
    return Gpu(
        index=spot.index,
        name=slice_name(parent, spot.slice.profile.name),
        total_bytes=spot.memory_bytes,
        used_bytes=d.used_bytes if d is not None else 0,
        free_bytes=d.free_bytes if d is not None else spot.memory_bytes,
        uuid=d.uuid if d is not None else None,
        processes=d.processes if d is not None else (),
    )


def slice_target(parent: Gpu, spot: Spot) -> GpuTarget:
    """The memory model's view of a slice: its own memory (what CUDA's mem_get_info shows in a
    MIG device: its GPU instance's memory; not measured on hardware here) and the parent's
    compute capability."""
    return GpuTarget(
        name=slice_name(parent, spot.slice.profile.name),
        cuda_total_bytes=spot.memory_bytes,
        nvml_total_bytes=spot.memory_bytes,
        is_a100="a100" in parent.name.lower(),
        compute_capability=compute_capability_of(parent.name),
    )


# --- which GPUs run how ------------------------------------------------------------------------


def layout(
    gpus: Sequence[Gpu], settings: Mapping[int, str], override: MigOverride | None = None
) -> MigLayout:
    """Each GPU's mode (module docstring). `settings`: the profile's `gpus[i].mig` by index;
    `override` (`--mig`) replaces them on every GPU (`auto` on MIG-capable ones only)."""
    notes: list[str] = []
    out: dict[int, GpuMig] = {}
    next_index = SLICE_BASE
    for gpu in sorted(gpus, key=lambda g: g.index):
        table = find_mig_table(gpu.name)
        setting = override if override is not None else settings.get(gpu.index)
        if setting == "auto" and table is None:
            setting = None  # --mig auto leaves GPUs without MIG as they are
        mig = _gpu_mig(gpu, table, setting, next_index, notes)
        next_index += 64
        out[gpu.index] = mig
    return MigLayout(out, tuple(notes))


def _gpu_mig(gpu: Gpu, table: MigTable | None, setting: str | None, first: int, notes: list[str]) -> GpuMig:
    i = gpu.index
    if setting == "off" or (setting is None and not gpu.mig_enabled):
        if gpu.mig_enabled:
            notes.append(
                f"GPU {i} has MIG mode on: a whole-GPU instance cannot run there until an admin "
                f"turns MIG off (nvidia-smi -i {i} -mig 0, on an idle GPU); planned without it"
            )
            return GpuMig(gpu, "unusable", table)
        return GpuMig(gpu, "whole", table)
    if table is None:
        notes.append(
            f"GPU {i} ({gpu.name}) has MIG on but gpushare has no MIG table for it "
            "(gpushare mig profiles lists the GPUs it knows); planned without it"
        )
        return GpuMig(gpu, "unusable")
    if setting == "auto":
        if gpu.mig_devices:
            notes.append(
                f"GPU {i}: its MIG devices ({', '.join(d.label for d in gpu.mig_devices)}) are not "
                "planned on: `mig: auto` proposes a geometry of its own (unset it to use them)"
            )
        return GpuMig(gpu, "auto", table, None, _auto_spots(gpu, table, first))
    if setting is not None:
        try:
            geometry = parse_geometry(table, setting, f"gpus[{i}].mig")
        except GpushareError as exc:
            raise InputError(f"GPU {i} ({gpu.name}): {exc.message}", hint=exc.hint) from None
        spots = tuple(
            Spot(first + n, i, s, s.profile.memory_bytes or 0) for n, s in enumerate(geometry.slices)
        )
        return GpuMig(gpu, "pinned", table, geometry, spots)
    return _devices(gpu, table, first, notes)


def _auto_spots(gpu: Gpu, table: MigTable, first: int) -> tuple[Spot, ...]:
    """Every legal slice of the profiles a proposal may use: memory sourced, no `+me` twin, not
    the whole GPU (7g)."""
    usable = [
        p for p in table.profiles if p.plannable and not p.media_extensions and p.slices < COMPUTE_SLICES
    ]
    slices = [Slice(p, start) for p in usable for start in p.starts]
    return tuple(Spot(first + n, gpu.index, s, s.profile.memory_bytes or 0) for n, s in enumerate(slices))


def _devices(gpu: Gpu, table: MigTable, first: int, notes: list[str]) -> GpuMig:
    """The MIG devices a GPU has, as spots; unusable (with a note) where they cannot be read."""
    i = gpu.index
    if not gpu.mig_devices:
        notes.append(
            f"GPU {i} has MIG on but no MIG devices: create some (`gpushare plan --mig auto` prints "
            "the commands) or turn MIG off; planned without it"
        )
        return GpuMig(gpu, "unusable", table)
    kept: list[MigDevice] = []
    instances: set[int] = set()
    for d in gpu.mig_devices:
        if d.gpu_instance_id is not None and d.gpu_instance_id in instances:
            notes.append(
                f"GPU {i}: MIG device {d.uuid} shares GPU instance {d.gpu_instance_id} (and its "
                "memory) with another compute instance: gpushare plans one instance per GPU "
                "instance and leaves it out"
            )
            continue
        if d.gpu_instance_id is not None:
            instances.add(d.gpu_instance_id)
        kept.append(d)
    try:
        profiles = [table.profile(d.profile) for d in kept]
    except GpushareError as exc:
        notes.append(
            f"GPU {i}: a MIG device has a profile gpushare cannot plan on ({exc.message}); planned without it"
        )
        return GpuMig(gpu, "unusable", table)
    known = [Slice(p, d.start) for p, d in zip(profiles, kept, strict=True) if d.start is not None]
    unknown = [p for p, d in zip(profiles, kept, strict=True) if d.start is None]
    stand_ins = place(table, unknown, around=known)
    if stand_ins is None:
        notes.append(f"GPU {i}: its MIG devices do not form a legal geometry; planned without it")
        return GpuMig(gpu, "unusable", table)
    free = list(stand_ins.slices)
    spots: list[Spot] = []
    for n, (p, d) in enumerate(zip(profiles, kept, strict=True)):
        if d.start is not None:
            s, known_start = Slice(p, d.start), True
        else:
            s = next(x for x in free if x.profile == p)
            free.remove(s)
            known_start = False
        spots.append(Spot(first + n, i, s, d.total_bytes, d, known_start))
    geometry = Geometry.of(s.slice for s in spots)
    return GpuMig(gpu, "devices", table, geometry, tuple(spots))


# --- choosing ----------------------------------------------------------------------------------


@dataclass
class Choice:
    """The search's answer: where each placed entry goes (private slice indices for slices)."""

    assignment: dict[str, tuple[int, ...]]
    items: dict[str, Item]
    """The item each placed entry was placed as (its booked need)."""
    whole: tuple[int, ...]
    """Real GPUs that run whole in this answer."""
    mig_bins: tuple[int, ...]
    """GPUs that run as slices in this answer."""
    geometries: dict[int, Geometry]
    """auto GPUs that got slices: the geometry chosen."""
    whole_items: list[Item]
    whole_placement: Placement | None
    mig_placement: MigPlacement | None
    mig_items: dict[str, Item] = field(default_factory=dict)

    def score(self, entries: Sequence[Entry]) -> tuple[object, ...]:
        everyone = [Item(m.name, 0, priority=m.entry.priority) for m in entries]
        used = {g for gpus in self.assignment.values() for g in gpus if g < SLICE_BASE}
        used |= set(self.mig_placement.fits) if self.mig_placement is not None else set()
        leftover = self.mig_placement.leftover_slices if self.mig_placement is not None else 0
        on_slices = sum(1 for gpus in self.assignment.values() if gpus and gpus[0] >= SLICE_BASE)
        return (level_counts(everyone, self.assignment), -len(used), -leftover, on_slices, len(self.whole))


class Search:
    """`choose`'s state: the layout, the needs, and each entry's items (whole and slice)."""

    def __init__(
        self, lay: MigLayout, needs: Needs, entries: Sequence[Entry], strategy: Strategy, time_limit_s: float
    ) -> None:
        self.layout = lay
        self.needs = needs
        self.entries = entries
        self.strategy = strategy
        self.time_limit_s = time_limit_s
        self.by_spot = {(s.gpu, s.slice): s for s in lay.spots.values()}
        self.mig_items = {m.name: self.mig_item(m) for m in entries}
        self.searches: dict[Hashable, object] = {}  # mig.fit's per-GPU searches, kept across attempts
        self._capacities: dict[Hashable, Callable[[Slice], int]] = {}

    def capacity(self, gpu: int) -> Callable[[Slice], int]:
        """A GPU's usable bytes per slice; GPUs with the same ones share one function (and so
        one search in mig.fit)."""
        room = {s.slice: max(self.needs.usable[s.index], 0) for s in self.layout.gpus[gpu].spots}
        key = tuple(sorted(((s.profile.name, s.start), v) for s, v in room.items()))
        if key not in self._capacities:
            self._capacities[key] = lambda s: room.get(s, 0)
        return self._capacities[key]

    def spots_for(self, m: Entry) -> list[Spot]:
        pin = m.entry.gpus
        return [s for s in self.layout.spots.values() if pin is None or s.gpu in pin]

    def mig_item(self, m: Entry) -> Item:
        """The entry as an item for slices: the largest of its needs on the slices it may use (a
        7g or 80 GiB slice may get other batching defaults than a small one), so it fits any."""
        spots = self.spots_for(m)
        need = max((self.needs.need(m, s.index) for s in spots), default=0)
        pin = tuple(sorted({s.gpu for s in spots})) if m.entry.gpus is not None else None
        return Item(m.name, need, tp=m.entry.tensor_parallel_size, pin=pin, priority=m.entry.priority)

    def mig_bin(self, g: GpuMig) -> MigBin:
        assert g.table is not None
        return MigBin(g.index, g.table, g.fixed, self.capacity(g.index))

    def choose(self) -> Choice:
        gpus = self.layout.gpus.values()
        whole = [g.index for g in gpus if g.mode == "whole"]
        fixed = [g for g in gpus if g.mode in ("devices", "pinned")]
        # The w that stay whole: the largest, and of equal ones the last (lower indices first as slices).
        auto = sorted(
            (g for g in gpus if g.mode == "auto"), key=lambda g: (-g.gpu.cuda_total_bytes, -g.index)
        )
        tries = 2 * (len(auto) + 1)
        best: Choice | None = None
        for w in range(len(auto) + 1):
            whole_set = tuple(sorted(whole + [g.index for g in auto[:w]]))
            bins = [self.mig_bin(g) for g in [*fixed, *auto[w:]]]
            for slices_first in (True, False):
                found = self.attempt(whole_set, bins, slices_first, self.time_limit_s / tries)
                if best is None or found.score(self.entries) > best.score(self.entries):
                    best = found
        assert best is not None
        return best

    def attempt(
        self, whole_set: tuple[int, ...], bins: Sequence[MigBin], slices_first: bool, limit: float
    ) -> Choice:
        whole_bins = [Bin(g, self.needs.usable[g]) for g in whole_set]
        names = [m.name for m in self.entries]

        def on_slices(chosen: Sequence[str]) -> MigPlacement | None:
            if not bins or not chosen:
                return None
            return place_on_mig([self.mig_items[n] for n in chosen], bins, searches=self.searches)

        def on_whole(chosen: Sequence[str]) -> tuple[list[Item], Placement | None]:
            items = [self.needs.item(m, among=whole_set) for m in self.entries if m.name in chosen]
            if not whole_bins or not items:
                return items, None
            return items, solve(items, whole_bins, self.strategy, time_limit_s=max(limit, 0.05))

        if slices_first:
            mig = on_slices(names)
            placed = set(mig.assignment) if mig is not None else set()
            whole_items, wp = on_whole([n for n in names if n not in placed])
        else:
            whole_items, wp = on_whole(names)
            placed = set(wp.assignment) if wp is not None else set()
            mig = on_slices([n for n in names if n not in placed])
        assignment: dict[str, tuple[int, ...]] = dict(wp.assignment) if wp is not None else {}
        items = {it.name: it for it in whole_items if it.name in assignment}
        geometries: dict[int, Geometry] = {}
        if mig is not None:
            for gpu, fit in mig.fits.items():
                for name, s in fit.slices.items():
                    assignment[name] = (self.by_spot[(gpu, s)].index,)
                    items[name] = self.mig_items[name]
                if self.layout.gpus[gpu].mode == "auto":
                    geometries[gpu] = fit.geometry
        return Choice(
            assignment=assignment,
            items=items,
            whole=whole_set,
            mig_bins=tuple(b.index for b in bins),
            geometries=geometries,
            whole_items=whole_items,
            whole_placement=wp,
            mig_placement=mig,
            mig_items=dict(self.mig_items),
        )


# --- explaining what does not fit ---------------------------------------------------------------


def explain_on_slices(search: Search, choice: Choice, m: Entry) -> Unplaced:
    """Why `m` got no slice (larger than any slice it may use, every slice taken, tensor
    parallel, pinned away), the bytes it is short by, and what would hold it."""
    needs = search.needs
    need = search.mig_items[m.name].need_bytes
    tp = m.entry.tensor_parallel_size
    allowed = [s for s in search.spots_for(m) if s.gpu in choice.mig_bins]
    if tp > 1:
        text = (
            f"tensor parallel (tp={tp}): MIG slices cannot be joined (no NCCL across slices) and no "
            f"{tp} whole GPUs are left for it"
        )
        fix = f"set `mig: off` on {tp} GPUs for it, or lower tensor_parallel_size to 1"
        return Unplaced(m.name, text, need, (fix,), (), need)
    if not allowed:
        text = f"its pin {m.entry.gpus} allows none of the MIG GPUs, and no whole GPU it may use holds it"
        return Unplaced(m.name, text, need, ("pin it to a GPU that has room",), (), need)
    taken = {g[0] for g in choice.assignment.values() if g and g[0] >= SLICE_BASE}
    largest = max(allowed, key=lambda s: (needs.usable[s.index], -s.index))
    free = [s for s in allowed if s.index not in taken]

    def room_of(s: Spot) -> int:
        return max(needs.usable[s.index], 0)

    lay = search.layout.gpus[largest.gpu]
    if need > room_of(largest):
        short = need - room_of(largest)
        widest = largest
        text = (
            f"needs {format_bytes(need)} for {m.target_text}; the largest MIG slice it may use, GPU "
            f"{largest.gpu}'s {largest.label}, has {format_bytes(room_of(largest))} usable; short by "
            f"{format_bytes(short)}"
        )
        suggestions = [_larger_profile(lay, need, needs.reserve)]
    else:
        fitting = [s for s in free if room_of(s) >= need]
        widest = max(free, key=lambda s: (room_of(s), -s.index)) if free else largest
        short = max(need - room_of(widest), 1) if free else need
        if free and not fitting:
            text = (
                f"needs {format_bytes(need)} for {m.target_text}; the largest free MIG slice, GPU "
                f"{widest.gpu}'s {widest.label}, has {format_bytes(room_of(widest))} usable; short by "
                f"{format_bytes(short)}"
            )
        else:
            text = (
                f"needs {format_bytes(need)} for {m.target_text}; every MIG slice that holds it runs "
                "another model (one instance per slice)"
            )
        suggestions = [
            _larger_profile(lay, need, needs.reserve, spare=True),
            "give it a higher priority to place it before the others",
        ]
    suggestions += Suggester(needs, m, (widest.index,), room_of(widest)).changes(more_gpus=False)
    return Unplaced(m.name, text, short, tuple(suggestions), (widest.gpu,), need)


def _larger_profile(lay: GpuMig, need: int, reserve: float, spare: bool = False) -> str:
    """The smallest profile of the GPU whose slice would hold `need` (`spare`: one more of it
    beside those in use), or that none does."""
    assert lay.table is not None
    for p in sorted(
        (p for p in lay.table.profiles if p.plannable and not p.media_extensions),
        key=lambda p: (p.memory_bytes or 0, p.slices),
    ):
        usable = math.floor((p.memory_bytes or 0) * (1 - reserve))
        if usable >= need:
            how = {
                "pinned": "pin a geometry with one",
                "devices": "create one",
                "auto": "room for one: fewer models on these GPUs, or another GPU",
            }.get(lay.mode, "use one")
            what = "another" if spare else "a"
            return (
                f"{what} {p.name} slice ({format_bytes(p.memory_bytes or 0)}, {format_bytes(usable)} "
                f"usable) would hold it: {how}"
            )
    return f"no MIG slice of {lay.table.gpu_key} holds it: run it on a whole GPU (`mig: off`)"


# --- what the plan holds -----------------------------------------------------------------------


def spots_of(lay: GpuMig, geometry: Geometry | None) -> list[Spot]:
    """The GPU's slices in the plan: all of a fixed geometry (empty ones too), or those of the
    geometry chosen for an auto GPU; by start."""
    if lay.fixed is not None:
        spots = list(lay.spots)
    elif geometry is not None:
        wanted = set(geometry.slices)
        spots = [s for s in lay.spots if s.slice in wanted]
    else:
        spots = []
    return sorted(spots, key=lambda s: (s.slice.start, s.index))


def planned_slices(
    lay: GpuMig,
    used: Mapping[int, tuple[str, ...]],
    geometry: Geometry | None,
    needs: Needs,
    planned: Mapping[int, int],
) -> tuple[MigSlice, ...]:
    """`spots_of` as the plan's MigSlices, with their instances and planned bytes."""
    return tuple(
        MigSlice(
            gpu=lay.index,
            profile=s.slice.profile.name,
            start=s.start,
            memory_bytes=s.memory_bytes,
            uuid=s.device.uuid if s.device is not None else None,
            profile_id=s.slice.profile.profile_id,
            instances=used.get(s.index, ()),
            usable_bytes=needs.usable[s.index],
            planned_bytes=planned.get(s.index, 0),
            other_processes_bytes=needs.others[s.index],
        )
        for s in spots_of(lay, geometry)
    )


def spot_slice(spot: Spot, name: str) -> MigSlice:
    """The `mig_slice` of an instance on `spot`."""
    return MigSlice(
        gpu=spot.gpu,
        profile=spot.slice.profile.name,
        start=spot.start,
        memory_bytes=spot.memory_bytes,
        uuid=spot.device.uuid if spot.device is not None else None,
        profile_id=spot.slice.profile.profile_id,
        instances=(name,),
    )


def config_name(profile_name: str) -> str:
    """`gpushare-<profile>` as a Kubernetes label value (the GPU Operator selects it by label)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", f"gpushare-{profile_name}")[:63]
    return name.rstrip("-._") or "gpushare"


def setup(
    lay: MigLayout, geometries: Mapping[int, Geometry], whole: Sequence[int], profile_name: str
) -> MigSetup | None:
    """The commands and the mig-parted config for the GPUs whose slices are to be created
    (pinned, and auto ones that got slices); None when nothing is to be created."""
    create: dict[int, Geometry] = {}
    for g in lay.gpus.values():
        if g.mode == "pinned" and g.fixed is not None:
            create[g.index] = g.fixed
        elif g.mode == "auto" and g.index in geometries:
            create[g.index] = geometries[g.index]
    if not create:
        return None
    commands: list[str] = []
    for index in sorted(create):
        if not lay.gpus[index].gpu.mig_enabled:
            commands.append(f"nvidia-smi -i {index} -mig 1")
        commands.append(cgi_command(index, create[index]))
    config: dict[int, Geometry | None] = {}
    for g in lay.gpus.values():
        if g.table is None:
            continue  # no MIG: mig-parted leaves it alone
        if g.index in create:
            config[g.index] = create[g.index]
        elif g.mode == "devices" and g.fixed is not None:
            config[g.index] = g.fixed
        elif g.mode in ("whole", "auto") or g.index in whole:
            config[g.index] = None
    name = config_name(profile_name)
    return MigSetup(tuple(commands), mig_parted_config(name, config), name)
