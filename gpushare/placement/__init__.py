"""Bin-pack vLLM instances onto GPUs: an exact MILP (HiGHS) for up to 64 instances, a greedy beyond.

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

import time
from collections.abc import Mapping, Sequence

from gpushare.placement.greedy import (
    best_gpu_for,
    first_fit_decreasing,
    greedy_placement,
    share_leftover,
    worst_fit_decreasing,
)
from gpushare.placement.lp import lp_bound
from gpushare.placement.milp import Milp
from gpushare.placement.model import (
    MILP_MAX_ITEMS,
    Bin,
    Closest,
    Item,
    LeftoverShares,
    Method,
    Placement,
    Strategy,
    better,
    check_inputs,
    make_placement,
    objective,
)

__all__ = [
    "MILP_MAX_ITEMS",
    "Bin",
    "Closest",
    "Item",
    "LeftoverShares",
    "Placement",
    "Strategy",
    "best_gpu_for",
    "first_fit_decreasing",
    "lp_bound",
    "share_leftover",
    "solve",
    "worst_fit_decreasing",
]


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
    check_inputs(items, bins)
    started = time.monotonic()
    greedy = greedy_placement(items, bins, strategy)
    quick = _finish(items, bins, strategy, greedy, "heuristic", optimal=False)
    if len(items) > MILP_MAX_ITEMS or quick.optimal:
        return quick
    # Keep a tenth of the budget for building the model, decoding and the LP bound afterwards.
    deadline = started + 0.9 * time_limit_s
    found = Milp(items, bins).solve(greedy, quick.objective, strategy, deadline)
    if found is None or better(items, bins, strategy, greedy, found[0]):
        return quick
    assignment, proven = found
    return _finish(items, bins, strategy, assignment, "milp", optimal=proven)


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
    value = objective(items, bins, assignment, strategy)
    bound = lp_bound(placed, bins, strategy, reached=value)
    if bound is not None and len(placed) == len(items):
        meets = value <= bound if strategy == "pack" else value >= bound - 1e-9
        optimal = optimal or meets
    return make_placement(items, bins, assignment, strategy, method, optimal, bound)
