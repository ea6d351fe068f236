"""The LP relaxation of placement: a bound on what any assignment can reach.

Solved with HiGHS, except in the common case where every item is single-GPU and may use the same
GPUs: there the LP's optimum has a closed form (one pool of memory filling the largest GPUs
first), and the solver is not even imported (`gpushare plan` of a small profile stays fast).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gpushare.placement.model import Bin, Item, Strategy, allows
from gpushare.units import GiB


def lp_bound(
    items: Sequence[Item], bins: Sequence[Bin], strategy: Strategy, reached: float | None = None
) -> float | None:
    """LP relaxation (fractional assignment, every item placed) of the strategy's objective.

    `pack`: a lower bound on GPUs used, rounded up. `spread`: an upper bound on the smallest
    headroom fraction; it is also capped by the headroom each item would leave on the best GPUs
    it may use if it were alone there. None when even the relaxation is infeasible.

    Single-GPU items that may use the same GPUs are pooled into one flow of memory (the same LP
    value, far fewer columns: 1000 items on 64 GPUs solve in milliseconds).

    `reached`: the objective of an assignment of exactly these items, when one is known. The LP
    lies between it and a coarser relaxation (every item, tensor-parallel ones as tp × need, in one
    pool over all the GPUs any of them may use); when that relaxation already meets `reached`, so
    does the LP, and HiGHS is not asked.
    """
    if not items:
        return 0.0 if strategy == "pack" else 1.0
    allowed = {
        item.name: tuple(
            k for k, b in enumerate(bins) if allows(item, b) and item.need_bytes <= b.usable_bytes
        )
        for item in items
    }
    if any(len(allowed[item.name]) < item.tp for item in items):
        return None
    pools: dict[tuple[int, ...], float] = {}
    for item in items:
        if item.tp == 1:
            pools[allowed[item.name]] = pools.get(allowed[item.name], 0.0) + item.need_bytes / GiB
    tensor_parallel = [item for item in items if item.tp > 1]
    if not tensor_parallel and len(pools) == 1:
        ((pool, supply),) = pools.items()
        return one_pool_bound(pool, supply, bins, strategy, _alone_headroom(items, bins, allowed))
    if reached is not None:
        union = tuple(sorted({k for ks in allowed.values() for k in ks}))
        supply = sum(item.tp * item.need_bytes / GiB for item in items)
        coarse = one_pool_bound(union, supply, bins, strategy, _alone_headroom(items, bins, allowed))
        # pack: coarse ≤ LP ≤ reached, all whole; spread: coarse ≥ LP ≥ reached
        if coarse is not None and (coarse == reached if strategy == "pack" else coarse <= reached + 1e-12):
            return coarse
    return _solved_bound(items, bins, strategy, allowed, pools, tensor_parallel)


def one_pool_bound(
    pool: tuple[int, ...], supply_gib: float, bins: Sequence[Bin], strategy: Strategy, alone: float
) -> float | None:
    """The LP's optimum when one pool of `supply_gib` may use the GPUs `pool`: `pack` fills the
    largest of them first (the fractional GPU count, rounded up); `spread` loads them all to the
    same fraction, capped by `alone` (`_alone_headroom`)."""
    caps = sorted((bins[k].usable_bytes / GiB for k in pool), reverse=True)
    total = sum(caps)
    # HiGHS's feasibility tolerance on the supply row: a pool that just fills its GPUs is feasible.
    if supply_gib > total + 1e-7 * max(1.0, supply_gib):
        return None
    if strategy == "spread":
        return min(1.0 - supply_gib / total, alone) if total else alone
    left, value = supply_gib, 0.0
    for cap in caps:
        if left <= cap:
            value += left / cap if cap else 0.0
            break
        value += 1.0
        left -= cap
    return float(math.ceil(value - 1e-6))


def _solved_bound(
    items: Sequence[Item],
    bins: Sequence[Bin],
    strategy: Strategy,
    allowed: Mapping[str, tuple[int, ...]],
    pools: Mapping[tuple[int, ...], float],
    tensor_parallel: Sequence[Item],
) -> float | None:
    """The LP solved by HiGHS (several pools, or tensor-parallel items)."""
    from gpushare.placement import highs

    # columns: pool flows (GiB), then x for each TP item and allowed GPU (share of one GPU slot)
    columns = [(n, k, GiB) for n, ks in enumerate(pools) for k in ks]  # (row, gpu, GiB per unit)
    columns += [
        (len(pools) + n, k, item.need_bytes)
        for n, item in enumerate(tensor_parallel)
        for k in allowed[item.name]
    ]
    supply = [*pools.values(), *(float(item.tp) for item in tensor_parallel)]
    flows = sum(len(ks) for ks in pools)
    upper = [highs.INF] * flows + [1.0] * (len(columns) - flows)
    nx, nb = len(columns), len(bins)
    caps = [b.usable_bytes / GiB for b in bins]
    # rows 0..nb-1: each GPU's load (≤); then one row per pool / TP item: its supply (=)
    rows = highs.Rows()
    for col, (row, k, bytes_per_unit) in enumerate(columns):
        rows.add(nb + row, col, 1.0)
        rows.add(k, col, bytes_per_unit / GiB)
    c = [0.0] * (nx + (nb if strategy == "pack" else 1))
    if strategy == "pack":  # load - cap * y <= 0, minimise the sum of y
        for k in range(nb):
            rows.add(k, nx + k, -caps[k])
            c[nx + k] = 1.0
        load_upper = [0.0] * nb
        upper += [1.0] * nb
    else:  # load + cap * t <= cap, maximise t
        for k in range(nb):
            rows.add(k, nx, caps[k])
        c[nx] = -1.0
        load_upper = list(caps)
        upper.append(_alone_headroom(items, bins, allowed))
    res = highs.solve(
        c,
        [0.0] * len(c),
        upper,
        rows,
        [-highs.INF] * nb + supply,
        load_upper + supply,
    )
    if res.status != "optimal" or res.objective is None:
        return None
    return float(math.ceil(res.objective - 1e-6)) if strategy == "pack" else -res.objective


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
