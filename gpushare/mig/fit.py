"""Choose MIG geometries for models: each model on one slice of its own.

The input is the planner's own `placement.Item` (name, need per GPU, tp, pin, priority), so the
planner can hand the same items to `placement.solve` (whole GPUs) or here (MIG GPUs). A MIG GPU
is a `MigBin`: a GPU index and its profile table, and either any legal geometry (the search
chooses one) or a `fixed` one (MIG devices that exist, or a geometry the profile pins): then the
models go on its slices only, and the slices nobody uses count as leftover. `capacity(slice)`
says how much of a slice a model may use (default: the profile's memory; the planner passes it
less its safety reserve, or a device's own NVML memory less what foreign processes hold there); a
profile whose capacity is 0 is never used.

Objectives, in strict order:
1. place as many models as possible, by priority level (as `placement.solve`);
2. fewest GPUs;
3. fewest leftover compute slices on those GPUs (a slice nobody uses is lost to isolation, so a
   model gets a larger slice when one is free: two 15 GiB models on an H200 get 4g + 3g, not
   1g + 1g);
4. fewest leftover memory units, then the largest smallest headroom, then the geometry's name.

A chosen geometry holds only the slices that get a model: one model per slice (the isolation
MIG is chosen for; several on one slice would need an MPS daemon per MIG device, which gpushare
does not start). Tensor parallelism is refused (no NCCL across MIG slices); profiles whose memory is
not sourced are never used. Up to `EXACT_MAX_ITEMS` models (and `EXACT_MAX_STEPS` steps) the
answer is exact (dynamic programming over subsets of models and GPUs, over every legal geometry of
each GPU, which number in the hundreds); beyond, first-fit decreasing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, NamedTuple

from gpushare.catalog.mig import COMPUTE_SLICES, MEMORY_UNITS, MigTable
from gpushare.mig.geometry import Geometry, Slice, geometries
from gpushare.placement.model import Item
from gpushare.units import format_bytes

EXACT_MAX_ITEMS = 10
"""Above this many placeable models `place_on_mig` uses first-fit decreasing."""
EXACT_MAX_STEPS = 200_000
"""... and above this many steps of the exact search (GPUs × 3^models; about 0.3 s)."""

Capacity = Callable[[Slice], int]


def profile_memory(s: Slice) -> int:
    """The default capacity: the profile's memory (0 where it is not sourced)."""
    return s.profile.memory_bytes or 0


@dataclass(frozen=True)
class MigBin:
    """One MIG-capable GPU."""

    index: int
    table: MigTable
    fixed: Geometry | None = None
    """The geometry it has (or must have); None: the search chooses one."""
    capacity: Capacity | None = None
    """This GPU's capacity per slice; None: the one `place_on_mig` is given."""


@dataclass(frozen=True)
class GpuFit:
    """One GPU's geometry and which model goes on which slice."""

    geometry: Geometry
    slices: dict[str, Slice]
    headroom_bytes: dict[str, int]
    """Capacity of a model's slice less its need."""

    @property
    def leftover_slices(self) -> int:
        return COMPUTE_SLICES - self.geometry.compute_slices

    @property
    def leftover_units(self) -> int:
        return MEMORY_UNITS - self.geometry.memory_units


@dataclass(frozen=True)
class MigPlacement:
    """The answer of `place_on_mig`. `assignment` has `placement.Placement`'s form."""

    fits: dict[int, GpuFit]
    unplaced: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each unplaced model is unplaced."""
    optimal: bool = True

    @property
    def assignment(self) -> dict[str, tuple[int, ...]]:
        return {name: (gpu,) for gpu, fit in self.fits.items() for name in fit.slices}

    @property
    def gpus_used(self) -> tuple[int, ...]:
        return tuple(sorted(self.fits))

    @property
    def leftover_slices(self) -> int:
        return sum(fit.leftover_slices for fit in self.fits.values())


class _Cost(NamedTuple):
    leftover_slices: int
    leftover_units: int
    neg_min_headroom: int
    label: str


class _Candidate(NamedTuple):
    geometry: Geometry
    capacities: tuple[int, ...]  # per slice of `geometry.slices`, largest first
    order: tuple[int, ...]  # slice positions, largest capacity first


def _candidates(table: MigTable, capacity: Capacity, fixed: Geometry | None) -> list[Geometry]:
    """The geometries a GPU may end with: any legal one of its usable profiles, or for a fixed
    geometry the subsets of its slices that hold a model."""
    if fixed is not None:
        usable = [s for s in fixed.slices if capacity(s) > 0]
        return [Geometry.of(chosen) for n in range(1, len(usable) + 1) for chosen in combinations(usable, n)]
    profiles = tuple(
        p
        for p in table.profiles
        if p.plannable and not p.media_extensions and capacity(Slice(p, p.starts[0])) > 0
    )
    return list(geometries(table, profiles)) if profiles else []


class _Gpu:
    """A MIG GPU's possible geometries, grouped by instance count, with the capacity of each slice."""

    def __init__(self, table: MigTable, capacity: Capacity, fixed: Geometry | None = None) -> None:
        found = _candidates(table, capacity, fixed)
        self.largest = max((capacity(s) for g in found for s in g.slices), default=0)
        self.by_count: dict[int, list[_Candidate]] = {}
        for g in found:
            caps = [capacity(s) for s in g.slices]
            order = tuple(sorted(range(len(caps)), key=lambda i: (-caps[i], g.slices[i].start)))
            self.by_count.setdefault(len(caps), []).append(
                _Candidate(g, tuple(caps[i] for i in order), order)
            )
        self._memo: dict[tuple[int, ...], tuple[_Cost, _Candidate] | None] = {}

    def best(self, needs: tuple[int, ...]) -> tuple[_Cost, _Candidate] | None:
        """The cheapest geometry holding `needs` (sorted largest first), one per slice."""
        if needs in self._memo:
            return self._memo[needs]
        found: tuple[_Cost, _Candidate] | None = None
        for cand in self.by_count.get(len(needs), ()):
            if any(need > cap for need, cap in zip(needs, cand.capacities, strict=True)):
                continue
            cost = _Cost(
                COMPUTE_SLICES - cand.geometry.compute_slices,
                MEMORY_UNITS - cand.geometry.memory_units,
                -min(cap - need for need, cap in zip(needs, cand.capacities, strict=True)),
                cand.geometry.label,
            )
            if found is None or cost < found[0]:
                found = (cost, cand)
        self._memo[needs] = found
        return found

    def fit(self, items: Sequence[Item]) -> GpuFit | None:
        ordered = sorted(items, key=lambda it: (-it.need_bytes, it.name))
        best = self.best(tuple(it.need_bytes for it in ordered))
        if best is None:
            return None
        cand = best[1]
        slices = {it.name: cand.geometry.slices[pos] for it, pos in zip(ordered, cand.order, strict=True)}
        headroom = {it.name: cap - it.need_bytes for it, cap in zip(ordered, cand.capacities, strict=True)}
        return GpuFit(cand.geometry, slices, headroom)


def fit_one_gpu(
    items: Sequence[Item], table: MigTable, capacity: Capacity = profile_memory, fixed: Geometry | None = None
) -> GpuFit | None:
    """The best geometry of one GPU (a subset of `fixed` when given) that gives every item a
    slice of its own, or None."""
    return _Gpu(table, capacity, fixed).fit(items)


def _key(b: MigBin, capacity: Capacity) -> Hashable:
    """GPUs with the same table, geometry and capacity share their search (and its memo)."""
    return (b.table.gpu_key, b.fixed, b.capacity or capacity)


def place_on_mig(
    items: Sequence[Item],
    bins: Sequence[MigBin],
    capacity: Capacity = profile_memory,
    searches: MutableMapping[Hashable, object] | None = None,
) -> MigPlacement:
    """Give each item a slice of its own on one of `bins` (objectives in the module docstring).
    `searches`: a dict kept across calls on the same GPUs (a caller that tries several splits
    of its models) so each GPU's geometries are enumerated and costed once."""
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise ValueError(f"item names must be unique: {names}")
    if len({b.index for b in bins}) != len(bins):
        raise ValueError(f"GPU indices must be unique: {[b.index for b in bins]}")
    by_key: MutableMapping[Hashable, Any] = searches if searches is not None else {}
    gpus: dict[int, _Gpu] = {}
    for b in bins:
        key = _key(b, capacity)
        if key not in by_key:
            by_key[key] = _Gpu(b.table, b.capacity or capacity, b.fixed)
        gpus[b.index] = by_key[key]
    reasons: dict[str, str] = {}
    placeable: list[Item] = []
    for it in items:
        allowed = [b for b in bins if it.pin is None or b.index in it.pin]
        largest = max((gpus[b.index].largest for b in allowed), default=0)
        if it.tp > 1:
            reasons[it.name] = (
                f"tensor parallel (tp={it.tp}): MIG slices cannot be joined (no NCCL across "
                "slices); it needs whole GPUs"
            )
        elif not allowed:
            reasons[it.name] = "its pin allows none of the MIG GPUs"
        elif it.need_bytes > largest:
            reasons[it.name] = (
                f"needs {format_bytes(it.need_bytes)}; the largest MIG slice it may use holds "
                f"{format_bytes(largest)}: it needs a whole GPU"
            )
        else:
            placeable.append(it)
    if len(placeable) <= EXACT_MAX_ITEMS and len(bins) * 3 ** len(placeable) <= EXACT_MAX_STEPS:
        fits, optimal = _exact(placeable, bins, gpus), True
    else:
        fits, optimal = _first_fit(placeable, bins, gpus), False
    placed = {name for fit in fits.values() for name in fit.slices}
    for it in placeable:
        if it.name not in placed:
            reasons[it.name] = "no room left on the MIG GPUs it may use"
    unplaced = tuple(it.name for it in items if it.name not in placed)
    return MigPlacement(fits, unplaced, {n: reasons[n] for n in unplaced}, optimal)


def _allowed(item: Item, b: MigBin) -> bool:
    return item.pin is None or b.index in item.pin


def _exact(items: Sequence[Item], bins: Sequence[MigBin], gpus: Mapping[int, _Gpu]) -> dict[int, GpuFit]:
    """Dynamic programming over bins from the last: `after[mask]` is the cheapest way to place
    exactly the items in `mask` on the bins after k (GPUs used, summed leftover slices and units,
    smallest headroom), `choice[k][mask]` what bin k takes of `mask` in it (0: nothing)."""
    n = len(items)
    full = 1 << n
    members = [[i for i in range(n) if mask >> i & 1] for mask in range(full)]

    def gpu_cost(k: int, mask: int) -> tuple[_Cost, _Candidate] | None:
        b = bins[k]
        chosen = [items[i] for i in members[mask]]
        if len(chosen) > COMPUTE_SLICES or not all(_allowed(it, b) for it in chosen):
            return None
        needs = tuple(sorted((it.need_bytes for it in chosen), reverse=True))
        return gpus[b.index].best(needs)

    Total = tuple[int, int, int, int]  # GPUs, leftover slices, leftover units, -min headroom
    inf: Total = (len(bins) + 1, 0, 0, 0)
    after: list[Total] = [inf] * full  # best over bins k+1.. (starts as "no bins left")
    after[0] = (0, 0, 0, 0)
    choice: list[list[int]] = []  # per bin (from the last), the mask it takes in the best answer
    for k in reversed(range(len(bins))):
        costs = [None, *(gpu_cost(k, sub) for sub in range(1, full))]
        here = list(after)
        took = [0] * full
        for mask in range(1, full):
            sub = mask
            while sub:
                rest = after[mask ^ sub]
                if rest != inf:
                    found = costs[sub]
                    if found is not None:
                        c = found[0]
                        total = (
                            rest[0] + 1,
                            rest[1] + c.leftover_slices,
                            rest[2] + c.leftover_units,
                            max(rest[3], c.neg_min_headroom) if rest[0] else c.neg_min_headroom,
                        )
                        # on a tie, taking beats skipping: lower-indexed GPUs are used first
                        if total < here[mask] or (total == here[mask] and not took[mask]):
                            here[mask], took[mask] = total, sub
                sub = (sub - 1) & mask
        choice.append(took)
        after = here
    choice.reverse()

    def placed_by_priority(mask: int) -> tuple[int, ...]:
        levels = sorted({it.priority for it in items}, reverse=True)
        return tuple(sum(1 for i in members[mask] if items[i].priority == lv) for lv in levels)

    reachable = [m for m in range(full) if after[m] != inf]
    best_mask = max(reachable, key=lambda m: (placed_by_priority(m), tuple(-x for x in after[m]), -m))
    fits: dict[int, GpuFit] = {}
    mask = best_mask
    for k, b in enumerate(bins):
        sub = choice[k][mask]  # 0: bin k takes nothing of what is left
        if sub:
            fit = gpus[b.index].fit([items[i] for i in members[sub]])
            assert fit is not None
            fits[b.index] = fit
            mask ^= sub
    assert mask == 0
    return fits


def _first_fit(items: Sequence[Item], bins: Sequence[MigBin], gpus: Mapping[int, _Gpu]) -> dict[int, GpuFit]:
    """Items by (priority, need) descending, each onto the first GPU that can still hold it with
    what it has (GPUs in use first), its geometry re-chosen each time."""
    held: dict[int, list[Item]] = {}
    fits: dict[int, GpuFit] = {}
    by_index = {b.index: b for b in bins}
    for it in sorted(items, key=lambda it: (-it.priority, -it.need_bytes, it.name)):
        order = [b.index for b in bins if b.index in held] + [b.index for b in bins if b.index not in held]
        for index in order:
            b = by_index[index]
            if not _allowed(it, b):
                continue
            fit = gpus[b.index].fit([*held.get(index, []), it])
            if fit is not None:
                held.setdefault(index, []).append(it)
                fits[index] = fit
                break
    return fits
