"""Bin-pack vLLM instances onto GPUs: an exact MILP (scipy's HiGHS) for up to 64 instances, a greedy beyond.

Pure: values in, frozen dataclasses out. Bytes are ints; the caller has already taken the safety
reserve, memory held by processes that are not ours and each instance's outside-the-budget
overhead into `Bin.capacity_bytes` and `Item.need_bytes`.

Objectives, in strict order (`solve`):

1. Place as many instances as possible, by priority level: one instance of a higher priority
   outweighs any number of lower ones; within a level, the count is maximised. An instance that
   cannot be placed is listed in `Placement.unplaced`, never an exception.
2. `pack`: fewest GPUs used. Ties go to the smallest GPUs (then the lowest indices), so the
   largest GPUs stay whole for what comes next.
   `spread`: largest smallest headroom, where a GPU's headroom is its free fraction
   `(capacity - load) / capacity` (an unused GPU has 1.0). Then, with that minimum held, the sum
   over GPUs of a convex piecewise-linear approximation of load_fraction**2 (8 pieces) is
   minimised, which balances the GPUs that are not the tightest one.

The MILP is solved in stages (one per priority level that the greedy could not place in full,
then one or two for the strategy), each stage keeping what the earlier ones achieved, all within
one `time_limit_s`. Memory is counted in whole units of `max capacity / 2**19` (256 KiB for an
80 GiB GPU), needs rounded up and capacities down, so every MILP answer is feasible in exact
bytes. The greedy answer is always computed too, and returned when it is better, so `solve` is
never worse than first-fit / worst-fit decreasing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array

Strategy = Literal["pack", "spread"]
Method = Literal["milp", "heuristic"]

MILP_MAX_ITEMS = 64
"""Above this many items `solve` uses the greedy (and reports the LP bound) instead of the MILP."""

# The MILP counts memory in units small enough that capacities stay below ~5e5 units, so HiGHS's
# 1e-6 tolerances cannot add up to a whole unit.
_UNIT_STEPS = 1 << 19
_PWL_PIECES = 8
# The greedy replaces a spread MILP answer only when better by more than unit rounding.
_SPREAD_TOLERANCE = 1e-4
# Shares of the time limit: placing as many items as possible matters most.
_STAGE_WEIGHT = {"count": 4.0, "pack": 2.0, "spread_min": 2.0, "spread_balance": 1.0}


@dataclass(frozen=True)
class Item:
    """One vLLM instance to place.

    `need_bytes` is what it needs on each GPU it spans to meet its capacity target. A
    tensor-parallel item (`tp` > 1) takes exactly `tp` distinct GPUs, `need_bytes` on each. `pin`
    lists the GPU indices it may use (for tp > 1 it chooses `tp` of them). A higher `priority` is
    placed first when not everything fits.
    """

    name: str
    need_bytes: int
    tp: int = 1
    pin: tuple[int, ...] | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if self.need_bytes < 0:
            raise ValueError(f"item {self.name!r}: need_bytes must be >= 0, got {self.need_bytes}")
        if self.tp < 1:
            raise ValueError(f"item {self.name!r}: tp must be >= 1, got {self.tp}")


@dataclass(frozen=True)
class Bin:
    """One GPU. `capacity_bytes` is usable memory: total minus the safety reserve minus memory held
    by processes that are not ours. A negative value (foreign processes hold more) counts as 0."""

    index: int
    capacity_bytes: int

    @property
    def usable_bytes(self) -> int:
        return max(self.capacity_bytes, 0)


@dataclass(frozen=True)
class Placement:
    """The answer of `solve`.

    `assignment` maps each placed item to its GPU indices (sorted; tp of them). `objective` is
    the strategy's measure of the assignment in exact bytes: GPUs used (`pack`, lower is better)
    or the smallest headroom fraction (`spread`, higher is better). `bound` is the LP-relaxation
    bound on it for the placed items: a lower bound on GPUs used (rounded up, counts are whole)
    or an upper bound on the smallest headroom; None when the LP could not be solved.
    `optimal` is true when the answer is proven optimal: by the MILP, or because `objective`
    meets `bound` with nothing unplaced.
    """

    assignment: dict[str, tuple[int, ...]]
    unplaced: tuple[str, ...]
    optimal: bool
    method: Method
    bound: float | None
    objective: float

    @property
    def gpus_used(self) -> tuple[int, ...]:
        return tuple(sorted({g for gpus in self.assignment.values() for g in gpus}))


@dataclass(frozen=True)
class Closest:
    """Where an unplaced item came closest (`best_gpu_for`).

    `gpus`: the GPU(s) with the most free memory it may use (tp of them; empty when its pin
    allows fewer than tp GPUs). `short_by_bytes`: need minus free memory on the tightest of them,
    given what is placed (0: it would fit now). `short_when_empty_bytes`: the same on the largest
    allowed GPUs if they held nothing of ours; above 0 no rearrangement can make it fit.
    """

    gpus: tuple[int, ...]
    short_by_bytes: int
    short_when_empty_bytes: int


@dataclass(frozen=True)
class LeftoverShares:
    """The result of `share_leftover`.

    `extra_bytes[name]`: extra memory the item gets on each GPU it spans. `idle_bytes[gpu]`: what
    no item could take; non-zero only on a GPU whose items are all tensor-parallel and were held to
    a smaller share on another of their GPUs.
    """

    extra_bytes: dict[str, int]
    idle_bytes: dict[int, int]


# ---------------------------------------------------------------------------------------------
# public entry points


def solve(
    items: Sequence[Item],
    bins: Sequence[Bin],
    strategy: Strategy = "pack",
    time_limit_s: float = 2.0,
) -> Placement:
    """Place `items` on `bins` (see the module docstring for the objectives).

    Up to `MILP_MAX_ITEMS` items: the MILP, `optimal` false if `time_limit_s` ran out first.
    Beyond: first-fit decreasing (`pack`) or worst-fit decreasing (`spread`); when that leaves
    items out, also smallest-first, keeping whichever places more.
    """
    _check_inputs(items, bins)
    started = time.monotonic()
    greedy = _greedy_placement(items, bins, strategy)
    quick = _finish(items, bins, strategy, greedy, "heuristic", optimal=False)
    if len(items) > MILP_MAX_ITEMS or quick.optimal:
        return quick
    # Keep a tenth of the budget for building the model, decoding and the LP bound afterwards.
    deadline = started + 0.9 * time_limit_s
    found = _Milp(items, bins).solve(greedy, quick.objective, strategy, deadline)
    if found is None or _better(items, bins, strategy, greedy, found[0]):
        return quick
    assignment, proven = found
    return _finish(items, bins, strategy, assignment, "milp", optimal=proven)


def first_fit_decreasing(items: Sequence[Item], bins: Sequence[Bin]) -> Placement:
    """Baseline for `pack`: items by (priority, need) descending, each on the first GPU(s) with room,
    GPUs tried largest first; then each used GPU's load moves to a smaller unused GPU if it fits
    there (same GPU count, larger GPUs kept whole). `bound` is not computed (None)."""
    _check_inputs(items, bins)
    return _make_placement(items, bins, _ffd(items, bins), "pack", "heuristic", False, None)


def worst_fit_decreasing(items: Sequence[Item], bins: Sequence[Bin]) -> Placement:
    """Baseline for `spread`: items by (priority, need) descending, each on the GPU(s) left with the
    largest free fraction after it. `bound` is not computed (None)."""
    _check_inputs(items, bins)
    return _make_placement(items, bins, _wfd(items, bins), "spread", "heuristic", False, None)


def lp_bound(items: Sequence[Item], bins: Sequence[Bin], strategy: Strategy) -> float | None:
    """LP relaxation (fractional assignment, every item placed) of the strategy's objective.

    `pack`: a lower bound on GPUs used, rounded up. `spread`: an upper bound on the smallest
    headroom fraction; it is also capped by the headroom each item would leave on the best GPUs
    it may use if it were alone there. None when even the relaxation is infeasible.

    Single-GPU items that may use the same GPUs are pooled into one flow of memory (the same LP
    value, far fewer columns: 1000 items on 64 GPUs solve in milliseconds).
    """
    if not items:
        return 0.0 if strategy == "pack" else 1.0
    allowed = {
        item.name: tuple(
            k for k, b in enumerate(bins) if _allows(item, b) and item.need_bytes <= b.usable_bytes
        )
        for item in items
    }
    if any(len(allowed[item.name]) < item.tp for item in items):
        return None
    pools: dict[tuple[int, ...], float] = {}
    for item in items:
        if item.tp == 1:
            pools[allowed[item.name]] = pools.get(allowed[item.name], 0.0) + item.need_bytes / 2**30
    tensor_parallel = [item for item in items if item.tp > 1]
    # columns: pool flows (GiB), then x for each TP item and allowed GPU (share of one GPU slot)
    columns = [(n, k, 2**30) for n, ks in enumerate(pools) for k in ks]  # (row, gpu, GiB per unit)
    columns += [
        (len(pools) + n, k, item.need_bytes)
        for n, item in enumerate(tensor_parallel)
        for k in allowed[item.name]
    ]
    supply = [*pools.values(), *(float(item.tp) for item in tensor_parallel)]
    upper = [np.inf] * sum(len(ks) for ks in pools) + [1.0] * (len(columns) - sum(len(ks) for ks in pools))
    nx, nb = len(columns), len(bins)
    caps = [b.usable_bytes / 2**30 for b in bins]
    eq, load = _Rows(), _Rows()
    for col, (row, k, bytes_per_unit) in enumerate(columns):
        eq.add(row, col, 1.0)
        load.add(k, col, bytes_per_unit / 2**30)
    c = np.zeros(nx + (nb if strategy == "pack" else 1))
    if strategy == "pack":  # load - cap * y <= 0, minimise the sum of y
        for k in range(nb):
            load.add(k, nx + k, -caps[k])
        c[nx:] = 1.0
        b_ub = np.zeros(nb)
        upper += [1.0] * nb
    else:  # load + cap * t <= cap, maximise t
        for k in range(nb):
            load.add(k, nx, caps[k])
        c[nx] = -1.0
        b_ub = np.array(caps)
        upper.append(_alone_headroom(items, bins, allowed))
    res = linprog(
        c,
        A_ub=load.matrix(nb, len(c)),
        b_ub=b_ub,
        A_eq=eq.matrix(len(supply), len(c)),
        b_eq=np.array(supply),
        bounds=list(zip([0.0] * len(c), upper, strict=True)),
        method="highs",
    )
    if res.status != 0:
        return None
    return float(math.ceil(res.fun - 1e-6)) if strategy == "pack" else float(-res.fun)


def _alone_headroom(
    items: Sequence[Item], bins: Sequence[Bin], allowed: Mapping[str, tuple[int, ...]]
) -> float:
    """Smallest, over items, of the headroom on the tp-th best GPU it may use if it were alone there."""
    limit = 1.0
    for item in items:
        alone = sorted(
            (
                1.0 - item.need_bytes / bins[k].usable_bytes if bins[k].usable_bytes else 1.0
                for k in allowed[item.name]
            ),
            reverse=True,
        )
        limit = min(limit, alone[item.tp - 1])
    return limit


def share_leftover(
    items: Sequence[Item], bins: Sequence[Bin], assignment: Mapping[str, tuple[int, ...]]
) -> LeftoverShares:
    """Divide each GPU's memory left after every placed item's need among the items on it, in
    proportion to their `need_bytes` (largest-remainder rounding: the shares sum to the leftover
    exactly). A tensor-parallel item gets the same extra on each of its GPUs, the smallest of its
    proportional shares; what that frees on a GPU goes to its single-GPU items.

    Raises ValueError if the assignment overfills a GPU or names an unknown item or GPU.
    """
    by_name = {item.name: item for item in items}
    on_gpu: dict[int, list[Item]] = {b.index: [] for b in bins}
    for name, gpus in assignment.items():
        if name not in by_name:
            raise ValueError(f"assignment names unknown item {name!r}")
        for g in gpus:
            if g not in on_gpu:
                raise ValueError(f"item {name!r} is assigned to unknown GPU {g}")
            on_gpu[g].append(by_name[name])
    leftover: dict[int, int] = {}
    for b in bins:
        leftover[b.index] = b.usable_bytes - sum(item.need_bytes for item in on_gpu[b.index])
        if leftover[b.index] < 0:
            raise ValueError(f"GPU {b.index} is over capacity by {-leftover[b.index]} bytes")

    proportional = {g: _split(leftover[g], on_gpu[g]) for g in on_gpu}
    extra: dict[str, int] = {}
    for name, gpus in assignment.items():
        if len(gpus) > 1:
            extra[name] = min(proportional[g][name] for g in gpus)
    idle: dict[int, int] = {}
    for g, members in on_gpu.items():
        singles = [item for item in members if len(assignment[item.name]) == 1]
        remaining = leftover[g] - sum(extra[item.name] for item in members if item.name in extra)
        extra.update(_split(remaining, singles))
        idle[g] = 0 if singles else remaining
    return LeftoverShares(extra_bytes={name: extra[name] for name in assignment}, idle_bytes=idle)


def best_gpu_for(
    item: Item, items: Sequence[Item], bins: Sequence[Bin], assignment: Mapping[str, tuple[int, ...]]
) -> Closest:
    """Which GPU(s) an item came closest to fitting on, and by how many bytes it is short.

    `items` and `assignment` describe what is placed (the item itself is left out if present)."""
    loads = _loads(items, {n: g for n, g in assignment.items() if n != item.name})
    allowed = [b for b in bins if _allows(item, b)]
    if len(allowed) < item.tp:
        return Closest(gpus=(), short_by_bytes=item.need_bytes, short_when_empty_bytes=item.need_bytes)
    by_free = sorted(allowed, key=lambda b: (-(b.usable_bytes - loads.get(b.index, 0)), b.index))[: item.tp]
    tightest_free = min(b.usable_bytes - loads.get(b.index, 0) for b in by_free)
    largest = sorted(allowed, key=lambda b: (-b.usable_bytes, b.index))[: item.tp]
    return Closest(
        gpus=tuple(sorted(b.index for b in by_free)),
        short_by_bytes=max(0, item.need_bytes - tightest_free),
        short_when_empty_bytes=max(0, item.need_bytes - min(b.usable_bytes for b in largest)),
    )


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_inputs(items: Sequence[Item], bins: Sequence[Bin]) -> None:
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"item names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
    indices = [b.index for b in bins]
    if len(set(indices)) != len(indices):
        raise ValueError(f"GPU indices must be unique: {indices}")


def _allows(item: Item, b: Bin) -> bool:
    return item.pin is None or b.index in item.pin


def _loads(items: Sequence[Item], assignment: Mapping[str, tuple[int, ...]]) -> dict[int, int]:
    need = {item.name: item.need_bytes for item in items}
    loads: dict[int, int] = {}
    for name, gpus in assignment.items():
        for g in gpus:
            loads[g] = loads.get(g, 0) + need[name]
    return loads


def _objective(
    items: Sequence[Item], bins: Sequence[Bin], assignment: Mapping[str, tuple[int, ...]], strategy: Strategy
) -> float:
    if strategy == "pack":
        return float(len({g for gpus in assignment.values() for g in gpus}))
    loads = _loads(items, assignment)
    fractions = [
        (b.usable_bytes - loads.get(b.index, 0)) / b.usable_bytes for b in bins if b.usable_bytes > 0
    ]
    return min(fractions, default=1.0)


def _level_counts(items: Sequence[Item], assignment: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Placed items per priority level, highest level first: compared lexicographically."""
    levels = sorted({item.priority for item in items}, reverse=True)
    return tuple(sum(1 for i in items if i.priority == lv and i.name in assignment) for lv in levels)


def _better(
    items: Sequence[Item],
    bins: Sequence[Bin],
    strategy: Strategy,
    a: Mapping[str, tuple[int, ...]],
    b: Mapping[str, tuple[int, ...]],
) -> bool:
    """Whether assignment `a` is strictly better than `b`."""
    counts_a, counts_b = _level_counts(items, a), _level_counts(items, b)
    if counts_a != counts_b:
        return counts_a > counts_b
    if strategy == "pack":
        return _objective(items, bins, a, strategy) < _objective(items, bins, b, strategy)
    return _objective(items, bins, a, strategy) > _objective(items, bins, b, strategy) + _SPREAD_TOLERANCE


def _make_placement(
    items: Sequence[Item],
    bins: Sequence[Bin],
    assignment: Mapping[str, tuple[int, ...]],
    strategy: Strategy,
    method: Method,
    optimal: bool,
    bound: float | None,
) -> Placement:
    return Placement(
        assignment={item.name: assignment[item.name] for item in items if item.name in assignment},
        unplaced=tuple(item.name for item in items if item.name not in assignment),
        optimal=optimal,
        method=method,
        bound=bound,
        objective=_objective(items, bins, assignment, strategy),
    )


def _finish(
    items: Sequence[Item],
    bins: Sequence[Bin],
    strategy: Strategy,
    assignment: Mapping[str, tuple[int, ...]],
    method: Method,
    optimal: bool,
) -> Placement:
    """Attach the LP bound; a greedy answer that meets it with nothing unplaced is proven optimal."""
    placed = [item for item in items if item.name in assignment]
    bound = lp_bound(placed, bins, strategy)
    value = _objective(items, bins, assignment, strategy)
    if bound is not None and len(placed) == len(items):
        meets = value <= bound if strategy == "pack" else value >= bound - 1e-9
        optimal = optimal or meets
    return _make_placement(items, bins, assignment, strategy, method, optimal, bound)


def _split(total: int, members: Sequence[Item]) -> dict[str, int]:
    """`total` bytes in proportion to need (equally when all needs are 0), summing exactly."""
    if not members:
        return {}
    weights = {item.name: item.need_bytes for item in members}
    if sum(weights.values()) == 0:
        weights = dict.fromkeys(weights, 1)
    weight_sum = sum(weights.values())
    shares = {name: total * w // weight_sum for name, w in weights.items()}
    short = total - sum(shares.values())
    by_remainder = sorted(weights, key=lambda name: (-(total * weights[name] % weight_sum), name))
    for name in by_remainder[:short]:
        shares[name] += 1
    return shares


# ---------------------------------------------------------------------------------------------
# greedy


def _decreasing(item: Item) -> tuple[int, int, int, str]:
    return (-item.priority, -item.need_bytes, -item.tp, item.name)


def _increasing(item: Item) -> tuple[int, int, int, str]:
    return (-item.priority, item.need_bytes, item.tp, item.name)


Pick = Callable[[Item, list[Bin], dict[int, int]], list[Bin]]


def _greedy(
    items: Sequence[Item],
    ordered_bins: Sequence[Bin],
    pick: Pick,
    order: Callable[[Item], tuple[int, int, int, str]] = _decreasing,
) -> dict[str, tuple[int, ...]]:
    free = {b.index: b.usable_bytes for b in ordered_bins}
    assignment: dict[str, tuple[int, ...]] = {}
    for item in sorted(items, key=order):
        fits = [b for b in ordered_bins if _allows(item, b) and free[b.index] >= item.need_bytes]
        if len(fits) < item.tp:
            continue
        chosen = pick(item, fits, free)
        for b in chosen:
            free[b.index] -= item.need_bytes
        assignment[item.name] = tuple(sorted(b.index for b in chosen))
    return assignment


def _first_fit(item: Item, fits: list[Bin], free: dict[int, int]) -> list[Bin]:
    return fits[: item.tp]


def _worst_fit(item: Item, fits: list[Bin], free: dict[int, int]) -> list[Bin]:
    def headroom_after(b: Bin) -> float:
        return (free[b.index] - item.need_bytes) / b.usable_bytes if b.usable_bytes else 0.0

    return sorted(fits, key=lambda b: (-headroom_after(b), b.index))[: item.tp]


def _ffd(
    items: Sequence[Item],
    bins: Sequence[Bin],
    order: Callable[[Item], tuple[int, int, int, str]] = _decreasing,
) -> dict[str, tuple[int, ...]]:
    largest_first = sorted(bins, key=lambda b: (-b.usable_bytes, b.index))
    return _compact(items, bins, _greedy(items, largest_first, _first_fit, order))


def _wfd(
    items: Sequence[Item],
    bins: Sequence[Bin],
    order: Callable[[Item], tuple[int, int, int, str]] = _decreasing,
) -> dict[str, tuple[int, ...]]:
    return _greedy(items, sorted(bins, key=lambda b: b.index), _worst_fit, order)


def _greedy_placement(
    items: Sequence[Item], bins: Sequence[Bin], strategy: Strategy
) -> dict[str, tuple[int, ...]]:
    """FFD / WFD; when that leaves items out, the same smallest-first as well, which places more
    of them (biggest-first fills GPUs with few large items), and the better of the two."""
    fit = _ffd if strategy == "pack" else _wfd
    decreasing = fit(items, bins, _decreasing)
    if len(decreasing) == len(items):
        return decreasing
    increasing = fit(items, bins, _increasing)
    return increasing if _better(items, bins, strategy, increasing, decreasing) else decreasing


def _compact(
    items: Sequence[Item], bins: Sequence[Bin], assignment: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Move each used GPU's whole load to the smallest unused GPU that holds it and is smaller."""
    by_name = {item.name: item for item in items}
    moved = dict(assignment)
    loads = _loads(items, moved)
    for src in sorted(bins, key=lambda b: (-b.usable_bytes, b.index)):
        members = [name for name, gpus in moved.items() if src.index in gpus]
        if not members:
            continue
        for dst in sorted(bins, key=lambda b: (b.usable_bytes, b.index)):
            if dst.usable_bytes >= src.usable_bytes:
                break
            if dst.index in loads or loads[src.index] > dst.usable_bytes:
                continue
            if all(_allows(by_name[name], dst) for name in members):
                for name in members:
                    moved[name] = tuple(sorted(dst.index if g == src.index else g for g in moved[name]))
                loads[dst.index] = loads.pop(src.index)
                break
    return moved


# ---------------------------------------------------------------------------------------------
# MILP


class _Rows:
    """Sparse rows collected as triplets."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []

    def add(self, row: int, col: int, val: float) -> None:
        self.rows.append(row)
        self.cols.append(col)
        self.vals.append(val)

    def matrix(self, n_rows: int, n_cols: int) -> Any:
        return coo_array((self.vals, (self.rows, self.cols)), shape=(n_rows, n_cols)).tocsr()


@dataclass(frozen=True)
class _Stage:
    assignment: dict[str, tuple[int, ...]]
    optimal: bool


class _Milp:
    """Variables: x[pair] (item on GPU), p[item] (item placed), then y[gpu] (pack: GPU used),
    t (spread: smallest headroom) or z[gpu] (spread: load penalty).

    GPUs that are interchangeable (same capacity, allowed for the same items) beyond what the items
    could ever use are dropped, and the rest are ordered (y or load non-increasing) to cut symmetry.
    """

    def __init__(self, items: Sequence[Item], bins: Sequence[Bin]) -> None:
        top = max((b.usable_bytes for b in bins), default=0)
        unit = 1 << max(0, math.ceil(math.log2(top / _UNIT_STEPS))) if top > _UNIT_STEPS else 1
        cap = [b.usable_bytes // unit for b in bins]
        need = {item.name: -(-item.need_bytes // unit) for item in items}
        allowed = {
            item.name: [k for k, b in enumerate(bins) if _allows(item, b) and need[item.name] <= cap[k]]
            for item in items
        }
        self.items = [item for item in items if len(allowed[item.name]) >= item.tp]
        kept, self.chains = _reduce_bins(self.items, bins, allowed)
        self.bins = [bins[k] for k in kept]
        self.cap = [cap[k] for k in kept]
        position = {k: j for j, k in enumerate(kept)}
        self.need = [need[item.name] for item in self.items]
        self.pairs = [
            (i, position[k]) for i, item in enumerate(self.items) for k in allowed[item.name] if k in position
        ]
        self.nx = len(self.pairs)
        self.cols_on: list[list[int]] = [[] for _ in self.bins]
        self.item_cols: list[list[int]] = [[] for _ in self.items]
        for col, (i, j) in enumerate(self.pairs):
            self.cols_on[j].append(col)
            self.item_cols[i].append(col)
        self.extra = self.nx + len(self.items)

    def solve(
        self, greedy: Mapping[str, tuple[int, ...]], greedy_value: float, strategy: Strategy, deadline: float
    ) -> tuple[dict[str, tuple[int, ...]], bool] | None:
        """Lexicographic stages; None when no stage produced an answer.

        HiGHS cannot be warm-started through scipy, so when the greedy answer meets the priority
        floors its objective (`greedy_value`) becomes a bound in the strategy stage instead: the
        search looks only at answers at least as good.
        """
        if not self.items:
            return {}, True
        levels = sorted({item.priority for item in self.items}, reverse=True)
        floors: dict[int, int] = {}
        for top in levels:  # levels the greedy placed in full (from the top) need no stage
            members = [item for item in self.items if item.priority == top]
            if not all(item.name in greedy for item in members):
                break
            floors[top] = len(members)
        stages: list[tuple[str, int | None]] = [("count", lv) for lv in levels if lv not in floors]
        stages += [("pack", None)] if strategy == "pack" else [("spread_min", None), ("spread_balance", None)]
        best: _Stage | None = None
        proven = True
        for n, (kind, level) in enumerate(stages):
            # Each stage gets its weight's share of what is left; time a stage leaves unused flows on.
            weight_left = sum(_STAGE_WEIGHT[k] for k, _lv in stages[n:])
            share = _STAGE_WEIGHT[kind] / weight_left
            stage_deadline = time.monotonic() + (deadline - time.monotonic()) * share
            limits = self._spread_limits(best.assignment) if kind == "spread_balance" and best else None
            target = None
            if kind in ("pack", "spread_min") and self._meets_floors(greedy, floors):
                target = greedy_value
            stage = self._stage(kind, floors, stage_deadline, level=level, limits=limits, target=target)
            if stage is None:
                return None if best is None else (best.assignment, False)
            best, proven = stage, proven and stage.optimal
            if level is not None:
                floors[level] = sum(
                    1 for item in self.items if item.priority == level and item.name in stage.assignment
                )
        assert best is not None
        return best.assignment, proven

    def _meets_floors(self, assignment: Mapping[str, tuple[int, ...]], floors: Mapping[int, int]) -> bool:
        return all(
            sum(1 for item in self.items if item.priority == lv and item.name in assignment) >= floor
            for lv, floor in floors.items()
        )

    def _spread_limits(self, assignment: Mapping[str, tuple[int, ...]]) -> list[int]:
        """Per-GPU load limits (units) that keep the smallest headroom `assignment` reached."""
        loads = [0] * len(self.bins)
        index = {b.index: j for j, b in enumerate(self.bins)}
        for i, item in enumerate(self.items):
            for g in assignment.get(item.name, ()):
                loads[index[g]] += self.need[i]
        fractions = [(loads[j], self.cap[j]) for j in range(len(self.bins)) if self.cap[j] > 0]
        if not fractions:
            return list(self.cap)
        top_load, top_cap = max(fractions, key=lambda lc: lc[0] / lc[1])
        return [c * top_load // top_cap for c in self.cap]

    def _stage(
        self,
        kind: str,
        floors: Mapping[int, int],
        deadline: float,
        level: int | None = None,
        limits: Sequence[int] | None = None,
        target: float | None = None,
    ) -> _Stage | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            return None
        nb, nx, e0 = len(self.bins), self.nx, self.extra
        n_extra = {"count": 0, "pack": nb, "spread_min": 1, "spread_balance": nb}[kind]
        n_vars = e0 + n_extra
        c = np.zeros(n_vars)
        lower, upper = np.zeros(n_vars), np.ones(n_vars)
        integrality = np.ones(n_vars)
        rows = _Rows()
        lo: list[float] = []
        hi: list[float] = []

        def row(lb: float, ub: float) -> int:
            lo.append(lb)
            hi.append(ub)
            return len(lo) - 1

        # each placed item takes exactly tp GPUs
        item_rows = [row(0.0, 0.0) for _ in self.items]
        for col, (i, _j) in enumerate(self.pairs):
            rows.add(item_rows[i], col, 1.0)
        for i, item in enumerate(self.items):
            rows.add(item_rows[i], nx + i, -float(item.tp))
        # capacity (and the strategy's link to y / t)
        load_rows = []
        for j in range(nb):
            bound = float(limits[j] if limits is not None else self.cap[j])
            if kind == "pack":
                r = row(-np.inf, 0.0)
                rows.add(r, e0 + j, -float(self.cap[j]))
            elif kind == "spread_min" and self.cap[j] > 0:
                r = row(-np.inf, bound)
                rows.add(r, e0, float(self.cap[j]))
            else:
                r = row(-np.inf, bound)
            load_rows.append(r)
        for col, (i, j) in enumerate(self.pairs):
            rows.add(load_rows[j], col, float(self.need[i]))
        # priority floors
        for lv, floor in floors.items():
            r = row(float(floor), np.inf)
            members = [i for i, item in enumerate(self.items) if item.priority == lv]
            for i in members:
                rows.add(r, nx + i, 1.0)
            if floor == len(members):
                lower[[nx + i for i in members]] = 1.0
        # symmetry among interchangeable GPUs
        for a, b in self.chains:
            r = row(0.0, np.inf)
            if kind == "pack":
                rows.add(r, e0 + a, 1.0)
                rows.add(r, e0 + b, -1.0)
            else:
                for j, sign in ((a, 1.0), (b, -1.0)):
                    for col in self.cols_on[j]:
                        rows.add(r, col, sign * self.need[self.pairs[col][0]])

        if kind == "count":
            for i, item in enumerate(self.items):
                if item.priority == level:
                    c[nx + i] = -1.0
        elif kind == "pack":
            for col, (_i, j) in enumerate(self.pairs):  # x <= y
                r = row(-np.inf, 0.0)
                rows.add(r, col, 1.0)
                rows.add(r, e0 + j, -1.0)
            if target is not None:  # no more GPUs than the greedy used
                r = row(-np.inf, target)
                for j in range(nb):
                    rows.add(r, e0 + j, 1.0)
            rank = sorted(range(nb), key=lambda j: (self.cap[j], self.bins[j].index))
            for position, j in enumerate(rank):
                c[e0 + j] = 1.0 + position / (nb * nb + 1)
        elif kind == "spread_min":
            c[e0] = -1.0
            integrality[e0] = 0
            if target is not None:  # at least the greedy's headroom, less what unit rounding may cost
                lower[e0] = max(0.0, target - 1e-3)
            # t <= the headroom an item's own GPU(s) would have with it alone (averaged over its tp
            # GPUs; void when unplaced): valid, and it makes the LP bound tight when GPUs hold few items.
            for i, item in enumerate(self.items):
                r = row(-np.inf, 1.0)
                rows.add(r, e0, 1.0)
                rows.add(r, nx + i, 1.0)
                for col in self.item_cols[i]:
                    cap = self.cap[self.pairs[col][1]]
                    headroom_alone = 1.0 - self.need[i] / cap if cap else 1.0
                    rows.add(r, col, -headroom_alone / item.tp)
        else:
            integrality[e0:] = 0
            upper[e0:] = np.inf
            c[e0:] = 1.0
            for j in range(nb):
                if self.cap[j] == 0:
                    continue
                for piece in range(_PWL_PIECES):
                    # z >= f**2 on [piece/K, (piece+1)/K]: slope (2p+1)/K, intercept -p(p+1)/K**2
                    r = row(-piece * (piece + 1) / _PWL_PIECES**2, np.inf)
                    rows.add(r, e0 + j, 1.0)
                    slope = (2 * piece + 1) / _PWL_PIECES / self.cap[j]
                    for col in self.cols_on[j]:
                        rows.add(r, col, -slope * self.need[self.pairs[col][0]])

        res = milp(
            c,
            integrality=integrality,
            bounds=Bounds(lower, upper),
            constraints=LinearConstraint(rows.matrix(len(lo), n_vars), np.array(lo), np.array(hi)),
            options={"time_limit": remaining, "presolve": True},
        )
        if res.x is None:
            return None
        return _Stage(assignment=self._decode(res.x), optimal=res.status == 0)

    def _decode(self, x: Any) -> dict[str, tuple[int, ...]]:
        chosen: dict[int, list[int]] = {}
        for col, (i, j) in enumerate(self.pairs):
            if x[col] > 0.5:
                chosen.setdefault(i, []).append(self.bins[j].index)
        return {
            self.items[i].name: tuple(sorted(gpus))
            for i, gpus in chosen.items()
            if x[self.nx + i] > 0.5 and len(gpus) == self.items[i].tp
        }


def _reduce_bins(
    items: Sequence[Item], bins: Sequence[Bin], allowed: Mapping[str, list[int]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Keep, of each class of interchangeable GPUs, only as many as the items could use.

    Returns kept bin positions and the symmetry chain as pairs of positions in the kept list
    (earlier GPU first)."""
    classes: dict[tuple[int, frozenset[str]], list[int]] = {}
    for k, b in enumerate(bins):
        users = frozenset(item.name for item in items if k in allowed[item.name])
        classes.setdefault((b.usable_bytes, users), []).append(k)
    kept: list[int] = []
    for (_cap, users), members in classes.items():
        useful = sum(item.tp for item in items if item.name in users)
        kept.extend(members[:useful])
    kept.sort()
    position = {k: j for j, k in enumerate(kept)}
    chains: list[tuple[int, int]] = []
    for (_cap, users), members in classes.items():
        survivors = [position[k] for k in members if k in position]
        if users:
            chains.extend(zip(survivors, survivors[1:], strict=False))
    return kept, chains
