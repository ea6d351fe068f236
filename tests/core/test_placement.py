"""gpushare.placement: exact small cases, then seeded random instances checked for invariants."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from gpushare.placement import (
    MILP_MAX_ITEMS,
    Bin,
    Item,
    Placement,
    Strategy,
    best_gpu_for,
    first_fit_decreasing,
    lp_bound,
    share_leftover,
    solve,
    worst_fit_decreasing,
)

GiB = 1 << 30
A100_80GB_USABLE = int(85_899_345_920 * 0.9)  # NVML total of an A100 80GB, 10% safety reserve


def gpus(*sizes_gib: int) -> list[Bin]:
    return [Bin(index, size * GiB) for index, size in enumerate(sizes_gib)]


# ---------------------------------------------------------------------------------------------
# exact cases

SOLVE_CASES = [
    pytest.param(
        [Item("qwen2.5-7b", 24 * GiB), Item("chatglm3-6b", 20 * GiB), Item("llama-3.1-8b", 26 * GiB)],
        [Bin(0, A100_80GB_USABLE)],
        "pack",
        {"qwen2.5-7b": (0,), "chatglm3-6b": (0,), "llama-3.1-8b": (0,)},
        (),
        id="three-models-one-a100-80gb",
    ),
    pytest.param(
        [Item("big", 30 * GiB, tp=2), Item("small", 10 * GiB)],
        gpus(48, 48, 48, 48),
        "pack",
        {"big": (0, 1), "small": (0,)},
        (),
        id="tp2-over-4-gpus-pack",
    ),
    pytest.param(
        [Item("big", 30 * GiB, tp=2), Item("small", 10 * GiB)],
        gpus(48, 48, 48, 48),
        "spread",
        {"big": (0, 1), "small": (2,)},
        (),
        id="tp2-over-4-gpus-spread",
    ),
    pytest.param(
        [Item("a", 10 * GiB), Item("b", 10 * GiB, pin=(3,))],
        gpus(80, 80, 80, 80),
        "pack",
        {"a": (3,), "b": (3,)},
        (),
        id="pin-pulls-pack-onto-pinned-gpu",
    ),
    pytest.param(
        [Item("t", 20 * GiB, tp=2, pin=(2, 3)), Item("u", 70 * GiB)],
        gpus(80, 80, 80, 80),
        "pack",
        {"t": (2, 3), "u": (0,)},
        (),
        id="tp-pin-set",
    ),
    pytest.param(
        [Item("t", 20 * GiB, tp=3, pin=(0, 1))],
        gpus(80, 80, 80),
        "pack",
        {},
        ("t",),
        id="tp-larger-than-pin-set-unplaced",
    ),
    pytest.param(
        [Item("huge", 90 * GiB), Item("ok", 10 * GiB)],
        gpus(80),
        "pack",
        {"ok": (0,)},
        ("huge",),
        id="too-big-for-any-gpu",
    ),
    pytest.param(
        [Item("low", 30 * GiB, priority=0), Item("high", 30 * GiB, priority=1)],
        gpus(40),
        "pack",
        {"high": (0,)},
        ("low",),
        id="priority-decides",
    ),
    pytest.param(
        [Item("high", 30 * GiB, priority=5), Item("low1", 15 * GiB), Item("low2", 15 * GiB)],
        gpus(40),
        "pack",
        {"high": (0,)},
        ("low1", "low2"),
        id="priority-is-strict-one-high-beats-two-low",
    ),
    pytest.param(
        [Item("a", 40 * GiB), Item("b", 20 * GiB), Item("c", 25 * GiB)],
        gpus(50),
        "pack",
        {"b": (0,), "c": (0,)},
        ("a",),
        id="count-beats-bytes-ffd-would-take-the-biggest",
    ),
    pytest.param(
        [Item("a", 10 * GiB), Item("b", 10 * GiB)],
        gpus(80, 80),
        "pack",
        {"a": (0,), "b": (0,)},
        (),
        id="pack-shares-one-gpu",
    ),
    pytest.param(
        [Item("a", 10 * GiB), Item("b", 10 * GiB)],
        gpus(80, 80),
        "spread",
        {"a": (0,), "b": (1,)},
        (),
        id="spread-uses-both",
    ),
    pytest.param(
        [Item("a", 10 * GiB)],
        [Bin(0, 80 * GiB), Bin(1, 24 * GiB)],
        "pack",
        {"a": (1,)},
        (),
        id="pack-keeps-the-big-gpu-whole",
    ),
    pytest.param(
        [Item("a", 10 * GiB)],
        [Bin(0, -5 * GiB), Bin(1, 24 * GiB)],
        "pack",
        {"a": (1,)},
        (),
        id="foreign-processes-hold-more-than-usable",
    ),
    pytest.param(
        [Item("a", 30), Item("b", 30), Item("c", 40)],
        [Bin(0, 100)],
        "pack",
        {"a": (0,), "b": (0,), "c": (0,)},
        (),
        id="exact-fill-in-bytes",
    ),
    pytest.param(
        [Item(f"m{i}", GiB + i) for i in range(3)],
        [Bin(0, 3 * GiB + 3)],
        "pack",
        {"m0": (0,), "m1": (0,), "m2": (0,)},
        (),
        id="exact-fill-finer-than-milp-unit",
    ),
    pytest.param([], gpus(80), "pack", {}, (), id="nothing-to-place"),
    pytest.param([Item("a", GiB)], [], "spread", {}, ("a",), id="no-gpus"),
]


@pytest.mark.parametrize(("items", "bins", "strategy", "assignment", "unplaced"), SOLVE_CASES)
def test_solve_exact(
    items: list[Item],
    bins: list[Bin],
    strategy: Strategy,
    assignment: dict[str, tuple[int, ...]],
    unplaced: tuple[str, ...],
) -> None:
    placement = solve(items, bins, strategy)
    assert placement.assignment == assignment
    assert placement.unplaced == unplaced
    assert placement.optimal


@pytest.mark.parametrize(
    ("strategy", "objective"),
    [
        pytest.param("pack", 1.0, id="pack-counts-gpus"),
        pytest.param("spread", 0.875, id="spread-min-free-fraction"),
    ],
)
def test_objective_values(strategy: Strategy, objective: float) -> None:
    placement = solve([Item("a", 10 * GiB), Item("b", 10 * GiB)], gpus(80, 80), strategy)
    assert placement.objective == pytest.approx(objective)
    assert placement.bound == pytest.approx(objective)


def test_more_than_milp_max_items_uses_heuristic_with_bound() -> None:
    items = [Item(f"m{i}", GiB) for i in range(MILP_MAX_ITEMS + 1)]
    placement = solve(items, gpus(48, 48))
    assert placement.method == "heuristic"
    assert placement.unplaced == ()
    assert placement.objective == 2.0
    assert placement.bound == 2.0
    assert placement.optimal  # meets the LP bound


def test_heuristic_tries_smallest_first_when_oversubscribed() -> None:
    items = [Item("big", 40 * GiB)] + [Item(f"s{i}", GiB) for i in range(MILP_MAX_ITEMS + 5)]
    bins = gpus(48)
    assert len(first_fit_decreasing(items, bins).assignment) == 9
    placement = solve(items, bins)
    assert placement.method == "heuristic"
    assert len(placement.assignment) == 48
    assert "big" in placement.unplaced


def test_milp_beats_first_fit_decreasing() -> None:
    # FFD puts 25+25 on the first GPU and 20+20 on the second: c and d find no room on the third.
    items = [Item(n, s * GiB) for n, s in [("a", 25), ("b", 25), ("c", 20), ("d", 20), ("e", 20), ("f", 20)]]
    bins = gpus(65, 65)
    assert len(first_fit_decreasing(items, bins).unplaced) == 1
    placement = solve(items, bins)
    assert placement.method == "milp"
    assert placement.unplaced == ()


@pytest.mark.parametrize(
    ("items", "bins", "message"),
    [
        pytest.param([Item("a", 1), Item("a", 2)], gpus(1), "names must be unique", id="duplicate-names"),
        pytest.param([Item("a", 1)], [Bin(0, 1), Bin(0, 2)], "indices must be unique", id="duplicate-gpus"),
    ],
)
def test_solve_rejects_bad_input(items: list[Item], bins: list[Bin], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve(items, bins)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"need_bytes": -1}, "need_bytes", id="negative-need"),
        pytest.param({"need_bytes": 1, "tp": 0}, "tp", id="tp-zero"),
    ],
)
def test_item_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Item("x", **kwargs)


# ---------------------------------------------------------------------------------------------
# leftover shares

LEFTOVER_CASES = [
    pytest.param(
        [Item("a", 1), Item("b", 2)],
        [Bin(0, 100)],
        {"a": (0,), "b": (0,)},
        {"a": 32, "b": 65},
        {0: 0},
        id="largest-remainder-sums-exactly",
    ),
    pytest.param(
        [Item("a", 10), Item("b", 10), Item("c", 10)],
        [Bin(0, 40)],
        {"a": (0,), "b": (0,), "c": (0,)},
        {"a": 4, "b": 3, "c": 3},
        {0: 0},
        id="ties-broken-by-name",
    ),
    pytest.param(
        [Item("t", 10, tp=2), Item("s", 10)],
        [Bin(0, 40), Bin(1, 100)],
        {"t": (0, 1), "s": (0,)},
        {"t": 10, "s": 10},
        {0: 0, 1: 80},
        id="tp-takes-min-share-freed-part-goes-to-single",
    ),
    pytest.param(
        [Item("t", 10, tp=2), Item("s", 30)],
        [Bin(0, 100), Bin(1, 100)],
        {"t": (0, 1), "s": (1,)},
        {"t": 15, "s": 45},
        {0: 75, 1: 0},
        id="tp-capped-by-its-busier-gpu",
    ),
    pytest.param(
        [Item("z", 0), Item("y", 0)],
        [Bin(0, 5)],
        {"z": (0,), "y": (0,)},
        {"y": 3, "z": 2},
        {0: 0},
        id="zero-needs-split-equally",
    ),
    pytest.param([], [Bin(0, 5)], {}, {}, {0: 5}, id="empty-gpu-is-idle"),
]


@pytest.mark.parametrize(("items", "bins", "assignment", "extra", "idle"), LEFTOVER_CASES)
def test_share_leftover(
    items: list[Item],
    bins: list[Bin],
    assignment: dict[str, tuple[int, ...]],
    extra: dict[str, int],
    idle: dict[int, int],
) -> None:
    shares = share_leftover(items, bins, assignment)
    assert shares.extra_bytes == extra
    assert shares.idle_bytes == idle


def test_share_leftover_rejects_overfull_gpu() -> None:
    with pytest.raises(ValueError, match="over capacity by 5 bytes"):
        share_leftover([Item("a", 15)], [Bin(0, 10)], {"a": (0,)})


# ---------------------------------------------------------------------------------------------
# best_gpu_for

CLOSEST_CASES = [
    pytest.param(
        Item("new", 30 * GiB),
        [Item("a", 60 * GiB), Item("b", 70 * GiB)],
        gpus(80, 80),
        {"a": (0,), "b": (1,)},
        (0,),
        10 * GiB,
        0,
        id="full-gpus-short-by-ten",
    ),
    pytest.param(
        Item("huge", 90 * GiB),
        [],
        gpus(24, 80),
        {},
        (1,),
        10 * GiB,
        10 * GiB,
        id="too-big-even-alone",
    ),
    pytest.param(
        Item("t", 30 * GiB, tp=2),
        [Item("a", 40 * GiB)],
        gpus(48, 48, 48),
        {"a": (1,)},
        (0, 2),
        0,
        0,
        id="tp-fits-now",
    ),
    pytest.param(
        Item("p", 10 * GiB, pin=(0,)),
        [Item("a", 75 * GiB)],
        gpus(80, 80),
        {"a": (0,)},
        (0,),
        5 * GiB,
        0,
        id="pin-limits-choice",
    ),
    pytest.param(
        Item("t", GiB, tp=2, pin=(5,)), [], gpus(80, 80), {}, (), GiB, GiB, id="pin-allows-too-few-gpus"
    ),
]


@pytest.mark.parametrize(
    ("item", "placed", "bins", "assignment", "gpu_ids", "short", "short_empty"), CLOSEST_CASES
)
def test_best_gpu_for(
    item: Item,
    placed: list[Item],
    bins: list[Bin],
    assignment: dict[str, tuple[int, ...]],
    gpu_ids: tuple[int, ...],
    short: int,
    short_empty: int,
) -> None:
    closest = best_gpu_for(item, placed, bins, assignment)
    assert (closest.gpus, closest.short_by_bytes, closest.short_when_empty_bytes) == (
        gpu_ids,
        short,
        short_empty,
    )


# ---------------------------------------------------------------------------------------------
# seeded random instances


def random_instance(seed: int) -> tuple[list[Item], list[Bin]]:
    rng = random.Random(seed)
    n_gpus = rng.randint(1, 4)
    bins = [Bin(g, rng.choice([24, 48, 80]) * GiB - rng.randint(0, GiB)) for g in range(n_gpus)]
    items = []
    for i in range(rng.randint(1, 12)):
        tp = rng.choice([1, 1, 1, 2]) if n_gpus > 1 else 1
        pin = (
            tuple(sorted(rng.sample(range(n_gpus), k=rng.randint(tp, n_gpus))))
            if rng.random() < 0.2
            else None
        )
        items.append(
            Item(f"m{i}", rng.randint(GiB, 40 * GiB), tp=tp, pin=pin, priority=rng.choice([0, 0, 1]))
        )
    return items, bins


def level_counts(items: list[Item], assignment: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    levels = sorted({item.priority for item in items}, reverse=True)
    return tuple(sum(1 for i in items if i.priority == lv and i.name in assignment) for lv in levels)


def check_valid(items: list[Item], bins: list[Bin], placement: Placement) -> None:
    by_name = {item.name: item for item in items}
    assert set(placement.assignment) | set(placement.unplaced) == set(by_name)
    assert not set(placement.assignment) & set(placement.unplaced)
    capacity = {b.index: b.usable_bytes for b in bins}
    loads = dict.fromkeys(capacity, 0)
    for name, gpu_ids in placement.assignment.items():
        item = by_name[name]
        assert len(gpu_ids) == len(set(gpu_ids)) == item.tp, name
        assert item.pin is None or set(gpu_ids) <= set(item.pin), name
        for g in gpu_ids:
            loads[g] += item.need_bytes
    assert all(loads[g] <= capacity[g] for g in capacity), (loads, capacity)


SEEDS = [
    pytest.param(seed, strategy, id=f"seed{seed}-{strategy}")
    for seed in range(40)
    for strategy in ("pack", "spread")
]


@pytest.mark.parametrize(("seed", "strategy"), SEEDS)
def test_random_instances(seed: int, strategy: Strategy) -> None:
    items, bins = random_instance(seed)
    placement = solve(items, bins, strategy)
    check_valid(items, bins, placement)

    greedy = first_fit_decreasing(items, bins) if strategy == "pack" else worst_fit_decreasing(items, bins)
    check_valid(items, bins, greedy)
    assert level_counts(items, placement.assignment) >= level_counts(items, greedy.assignment)
    if level_counts(items, placement.assignment) == level_counts(items, greedy.assignment):
        if strategy == "pack":
            assert placement.objective <= greedy.objective
        else:
            assert placement.objective >= greedy.objective - 1e-4

    placed = [item for item in items if item.name in placement.assignment]
    bound = lp_bound(placed, bins, strategy)
    assert bound is not None and bound == placement.bound
    if strategy == "pack":
        assert placement.objective >= bound
    else:
        assert placement.objective <= bound + 1e-9

    by_name = {item.name: item for item in items}
    shares = share_leftover(items, bins, placement.assignment)
    for b in bins:
        on_gpu = [name for name, gpu_ids in placement.assignment.items() if b.index in gpu_ids]
        used = sum(by_name[name].need_bytes + shares.extra_bytes[name] for name in on_gpu)
        assert used + shares.idle_bytes[b.index] == b.usable_bytes

    if placement.optimal:  # an item that fits in what is left would have been placed
        for name in placement.unplaced:
            assert best_gpu_for(by_name[name], items, bins, placement.assignment).short_by_bytes > 0, name


@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"seed{seed}") for seed in range(5)])
def test_random_heuristic_beyond_milp_limit(seed: int) -> None:
    rng = random.Random(seed)
    bins = [Bin(g, rng.choice([24, 48, 80]) * GiB) for g in range(8)]
    items = [Item(f"m{i}", rng.randint(GiB, 8 * GiB), tp=rng.choice([1, 1, 2])) for i in range(100)]
    for strategy in ("pack", "spread"):
        placement = solve(items, bins, strategy)
        assert placement.method == "heuristic"
        check_valid(items, bins, placement)
        assert placement.bound is not None


@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"seed{seed}") for seed in range(40)])
@pytest.mark.parametrize("strategy", ["pack", "spread"])
def test_one_pool_closed_form_is_the_lp_highs_solves(seed: int, strategy: Strategy) -> None:
    # The closed form (no solver import) for single-GPU items that may all use the same GPUs must
    # be the LP's optimum: compare with HiGHS on the same pooled LP.
    from gpushare.placement.lp import _alone_headroom, _solved_bound, one_pool_bound

    rng = random.Random(seed)
    bins = [Bin(g, rng.choice([24, 48, 80]) * GiB) for g in range(rng.randint(1, 8))]
    smallest = min(b.usable_bytes for b in bins)
    count = rng.randint(1, 30)
    items = [
        Item(f"m{i}", rng.randint(GiB // 4, smallest), priority=rng.choice([0, 1])) for i in range(count)
    ]
    allowed = {item.name: tuple(range(len(bins))) for item in items}
    supply = sum(item.need_bytes / 2**30 for item in items)
    pools = {tuple(range(len(bins))): supply}
    alone = _alone_headroom(items, bins, allowed)
    closed = one_pool_bound(tuple(range(len(bins))), supply, bins, strategy, alone)
    solved = _solved_bound(items, bins, strategy, allowed, pools, [])
    assert (closed is None) == (solved is None), (closed, solved)
    if closed is not None and solved is not None:
        assert closed == pytest.approx(solved, abs=1e-9)
        assert lp_bound(items, bins, strategy) == closed


@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"seed{seed}") for seed in range(40)])
@pytest.mark.parametrize("strategy", ["pack", "spread"])
def test_a_known_assignment_skips_the_solver_only_when_the_lp_is_met(seed: int, strategy: Strategy) -> None:
    # With tensor-parallel items and pins the LP needs HiGHS, unless a coarser closed form
    # already meets a known assignment's objective: then both bounds must agree.
    from gpushare.placement.model import objective

    rng = random.Random(1000 + seed)
    bins = [Bin(g, rng.choice([24, 48, 80]) * GiB) for g in range(rng.randint(2, 6))]
    items = []
    for i in range(rng.randint(1, 12)):
        tp = rng.choice([1, 1, 2])
        pin = tuple(sorted(rng.sample(range(len(bins)), tp))) if rng.random() < 0.3 else None
        items.append(Item(f"m{i}", rng.randint(GiB, 30 * GiB), tp=tp, pin=pin))
    fit = first_fit_decreasing if strategy == "pack" else worst_fit_decreasing
    assignment = fit(items, bins).assignment
    placed = [item for item in items if item.name in assignment]
    if not placed:
        return
    reached = objective(placed, bins, assignment, strategy)
    quick, solved = lp_bound(placed, bins, strategy, reached=reached), lp_bound(placed, bins, strategy)
    assert (quick is None) == (solved is None)
    if quick is not None and solved is not None:
        assert quick == pytest.approx(solved, abs=1e-9), (quick, solved, reached)
