"""The greedy placements (first-fit / worst-fit decreasing), the leftover shares, and where an
item that does not fit came closest. Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gpushare.placement.model import (
    Bin,
    Closest,
    Item,
    LeftoverShares,
    Placement,
    Strategy,
    allows,
    better,
    check_inputs,
    gpu_loads,
    make_placement,
)


def first_fit_decreasing(items: Sequence[Item], bins: Sequence[Bin]) -> Placement:
    """Baseline for `pack`: items by (priority, need) descending, each on the first GPU(s) with room,
    GPUs tried largest first; then each used GPU's load moves to a smaller unused GPU if it fits
    there (same GPU count, larger GPUs kept whole). `bound` is not computed (None)."""
    check_inputs(items, bins)
    return make_placement(items, bins, _ffd(items, bins), "pack", "heuristic", False, None)


def worst_fit_decreasing(items: Sequence[Item], bins: Sequence[Bin]) -> Placement:
    """Baseline for `spread`: items by (priority, need) descending, each on the GPU(s) left with the
    largest free fraction after it. `bound` is not computed (None)."""
    check_inputs(items, bins)
    return make_placement(items, bins, _wfd(items, bins), "spread", "heuristic", False, None)


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
    loads = gpu_loads(items, {n: g for n, g in assignment.items() if n != item.name})
    allowed = [b for b in bins if allows(item, b)]
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
        fits = [b for b in ordered_bins if allows(item, b) and free[b.index] >= item.need_bytes]
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


def greedy_placement(
    items: Sequence[Item], bins: Sequence[Bin], strategy: Strategy
) -> dict[str, tuple[int, ...]]:
    """FFD / WFD; when that leaves items out, the same smallest-first as well, which places more
    of them (biggest-first fills GPUs with few large items), and the better of the two."""
    fit = _ffd if strategy == "pack" else _wfd
    decreasing = fit(items, bins, _decreasing)
    if len(decreasing) == len(items):
        return decreasing
    increasing = fit(items, bins, _increasing)
    return increasing if better(items, bins, strategy, increasing, decreasing) else decreasing


def _compact(
    items: Sequence[Item], bins: Sequence[Bin], assignment: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Move each used GPU's whole load to the smallest unused GPU that holds it and is smaller."""
    by_name = {item.name: item for item in items}
    moved = dict(assignment)
    loads = gpu_loads(items, moved)
    for src in sorted(bins, key=lambda b: (-b.usable_bytes, b.index)):
        members = [name for name, gpus in moved.items() if src.index in gpus]
        if not members:
            continue
        for dst in sorted(bins, key=lambda b: (b.usable_bytes, b.index)):
            if dst.usable_bytes >= src.usable_bytes:
                break
            if dst.index in loads or loads[src.index] > dst.usable_bytes:
                continue
            if all(allows(by_name[name], dst) for name in members):
                for name in members:
                    moved[name] = tuple(sorted(dst.index if g == src.index else g for g in moved[name]))
                loads[dst.index] = loads.pop(src.index)
                break
    return moved
