"""Placement's vocabulary: the items (instances) and bins (GPUs), the answer, and the measures of
an assignment that every method compares by. Pure data and arithmetic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["pack", "spread"]
Method = Literal["milp", "heuristic"]

MILP_MAX_ITEMS = 64
"""Above this many items `solve` uses the greedy (and reports the LP bound) instead of the MILP."""

# The greedy replaces a spread MILP answer only when better by more than unit rounding.
SPREAD_TOLERANCE = 1e-4


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


def check_inputs(items: Sequence[Item], bins: Sequence[Bin]) -> None:
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"item names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
    indices = [b.index for b in bins]
    if len(set(indices)) != len(indices):
        raise ValueError(f"GPU indices must be unique: {indices}")


def allows(item: Item, b: Bin) -> bool:
    return item.pin is None or b.index in item.pin


def gpu_loads(items: Sequence[Item], assignment: Mapping[str, tuple[int, ...]]) -> dict[int, int]:
    need = {item.name: item.need_bytes for item in items}
    loads: dict[int, int] = {}
    for name, gpus in assignment.items():
        for g in gpus:
            loads[g] = loads.get(g, 0) + need[name]
    return loads


def objective(
    items: Sequence[Item], bins: Sequence[Bin], assignment: Mapping[str, tuple[int, ...]], strategy: Strategy
) -> float:
    if strategy == "pack":
        return float(len({g for gpus in assignment.values() for g in gpus}))
    loads = gpu_loads(items, assignment)
    fractions = [
        (b.usable_bytes - loads.get(b.index, 0)) / b.usable_bytes for b in bins if b.usable_bytes > 0
    ]
    return min(fractions, default=1.0)


def level_counts(items: Sequence[Item], assignment: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Placed items per priority level, highest level first: compared lexicographically."""
    levels = sorted({item.priority for item in items}, reverse=True)
    return tuple(sum(1 for i in items if i.priority == lv and i.name in assignment) for lv in levels)


def better(
    items: Sequence[Item],
    bins: Sequence[Bin],
    strategy: Strategy,
    a: Mapping[str, tuple[int, ...]],
    b: Mapping[str, tuple[int, ...]],
) -> bool:
    """Whether assignment `a` is strictly better than `b`."""
    counts_a, counts_b = level_counts(items, a), level_counts(items, b)
    if counts_a != counts_b:
        return counts_a > counts_b
    if strategy == "pack":
        return objective(items, bins, a, strategy) < objective(items, bins, b, strategy)
    return objective(items, bins, a, strategy) > objective(items, bins, b, strategy) + SPREAD_TOLERANCE


def make_placement(
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
        objective=objective(items, bins, assignment, strategy),
    )
