"""Choosing geometries for models: worked cases, and the exact search against a brute force."""

from __future__ import annotations

import functools
import random
from itertools import permutations, product

import pytest

from gpushare.catalog.mig import COMPUTE_SLICES, MEMORY_UNITS, MigProfile, MigTable, lookup_mig_table
from gpushare.mig.fit import EXACT_MAX_ITEMS, MigBin, fit_one_gpu, place_on_mig
from gpushare.mig.geometry import Geometry, Slice, geometries, geometry_problems, parse_geometry
from gpushare.placement import Item
from gpushare.units import GiB, MiB

H200 = lookup_mig_table("h200")
H100 = lookup_mig_table("h100")


def labels(table: MigTable, needs_gib: list[float]) -> str | None:
    fit = fit_one_gpu([Item(f"m{i}", int(n * GiB)) for i, n in enumerate(needs_gib)], table)
    return None if fit is None else fit.geometry.label


@pytest.mark.parametrize(
    ("case_id", "needs_gib", "label"),
    [
        # leftover slices come first: two small models split the GPU rather than take two 1g
        ("two-small", [15, 15], "4g.71gb@0 + 3g.71gb@4"),
        ("one-small", [10], "7g.141gb@0"),
        ("three", [10, 30, 60], "2g.35gb@0 + 2g.35gb@2 + 3g.71gb@4"),
        # seven 1g; the last one takes the two-unit 1g at 6, since no memory unit is left over then
        ("seven-1g", [15] * 7,
         "1g.18gb@0 + 1g.18gb@1 + 1g.18gb@2 + 1g.18gb@3 + 1g.18gb@4 + 1g.18gb@5 + 1g.35gb@6"),
        ("six-and-one-larger", [15] * 6 + [17],
         "1g.18gb@0 + 1g.18gb@1 + 1g.18gb@2 + 1g.18gb@3 + 1g.18gb@4 + 1g.18gb@5 + 1g.35gb@6"),
        ("five-1g", [15] * 5, "1g.18gb@0 + 1g.18gb@1 + 1g.18gb@2 + 1g.18gb@3 + 3g.71gb@4"),
        ("eight", [1] * 8, None),  # at most 7 instances
        ("too-big", [140], None),
        ("two-over-half", [70, 70], None),  # 3g/4g hold 69.5 GiB
    ],
)  # fmt: skip
def test_worked_cases_on_h200(case_id: str, needs_gib: list[float], label: str | None) -> None:
    assert labels(H200, needs_gib) == label


def test_a_need_equal_to_the_slice_fits_one_byte_more_does_not() -> None:
    one_g = H200.profile("1g.18gb")
    assert one_g.memory_bytes is not None
    exact = fit_one_gpu([Item(f"m{i}", one_g.memory_bytes) for i in range(7)], H200)
    assert exact is not None
    assert sorted(exact.headroom_bytes.values())[:6] == [0] * 6  # six on 1g.18gb with nothing spare
    # one byte more for one model: it takes the two-unit 1g at 6
    one_more = fit_one_gpu([Item(f"m{i}", one_g.memory_bytes + (i == 0)) for i in range(7)], H200)
    assert one_more is not None and one_more.slices["m0"].label == "1g.35gb@6"
    # one byte more for all: only four two-unit slices exist
    assert fit_one_gpu([Item(f"m{i}", one_g.memory_bytes + 1) for i in range(7)], H200) is None


def test_capacity_is_what_the_caller_allows() -> None:
    full = H200.profile("7g.141gb").memory_bytes
    assert full is not None
    item = [Item("m", full)]
    assert fit_one_gpu(item, H200) is not None
    assert fit_one_gpu(item, H200, capacity=lambda s: (s.profile.memory_bytes or 0) - 512 * MiB) is None


def test_unsourced_profiles_are_never_used() -> None:
    b200 = lookup_mig_table("b200")
    fit = fit_one_gpu([Item("m", 30 * GiB)], b200)
    assert fit is not None
    assert all(s.profile.plannable for s in fit.geometry.slices)
    assert fit.geometry.label == "2g.45gb@0"  # 3g/4g/7g would leave fewer slices, but are not sourced
    assert fit_one_gpu([Item("m", 50 * GiB)], b200) is None
    assert fit_one_gpu([Item("m", 1 * GiB)], lookup_mig_table("h20")) is None


# --- the exact search against a brute force ------------------------------------------------


def usable(table: MigTable) -> list[MigProfile]:
    return [p for p in table.profiles if p.plannable and not p.media_extensions]


@functools.cache
def all_geometries(table: MigTable) -> tuple[Geometry, ...]:
    return geometries(table, usable(table))


@functools.cache
def _brute_one_gpu(table: MigTable, needs: tuple[int, ...]) -> tuple[int, int, int] | None:
    best = None
    for g in all_geometries(table):
        if len(g.slices) != len(needs):
            continue
        assert not geometry_problems(table, g.slices)
        for order in set(permutations(needs)):
            caps = [s.profile.memory_bytes or 0 for s in g.slices]
            if all(n <= c for n, c in zip(order, caps, strict=True)):
                cost = (
                    COMPUTE_SLICES - g.compute_slices,
                    MEMORY_UNITS - g.memory_units,
                    -min(c - n for n, c in zip(order, caps, strict=True)),
                )
                best = cost if best is None or cost < best else best
    return best


def brute_one_gpu(table: MigTable, needs: list[int]) -> tuple[int, int, int] | None:
    """(leftover slices, leftover units, -smallest headroom) of the best geometry and assignment,
    trying every geometry with one slice per model and every order of models over its slices."""
    return _brute_one_gpu(table, tuple(sorted(needs)))


def random_needs(rng: random.Random, count: int, table: MigTable) -> list[int]:
    sizes = sorted({p.memory_bytes or 0 for p in usable(table)})
    # needs near the slice sizes, so that a byte decides
    return [max(1, rng.choice(sizes) - rng.choice((0, 1, 2 * GiB, 10 * GiB))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(6))
def test_one_gpu_is_optimal(seed: int) -> None:
    rng = random.Random(seed)
    for table in (H200, H100, lookup_mig_table("a100-sxm-40gb")):
        for count in (1, 2, 3, 4):
            needs = random_needs(rng, count, table)
            fit = fit_one_gpu([Item(f"m{i}", n) for i, n in enumerate(needs)], table)
            expected = brute_one_gpu(table, needs)
            if expected is None:
                assert fit is None, (table.gpu_key, needs)
                continue
            assert fit is not None, (table.gpu_key, needs)
            got = (fit.leftover_slices, fit.leftover_units, -min(fit.headroom_bytes.values()))
            assert got == expected, (table.gpu_key, needs)
            for i, n in enumerate(needs):
                assert n <= (fit.slices[f"m{i}"].profile.memory_bytes or 0)
            assert not geometry_problems(table, fit.geometry.slices)


def brute_many(items: list[Item], bins: list[MigBin]) -> tuple[tuple[int, ...], int, int, int, int]:
    """(placed per priority level, -GPUs used, -leftover slices, -leftover units, smallest
    headroom) of the best of every way to send each item to a GPU or nowhere."""
    levels = sorted({it.priority for it in items}, reverse=True)
    best = None
    for choice in product(range(len(bins) + 1), repeat=len(items)):
        groups: dict[int, list[Item]] = {}
        for it, k in zip(items, choice, strict=True):
            if k < len(bins):
                if it.pin is not None and bins[k].index not in it.pin:
                    break
                groups.setdefault(k, []).append(it)
        else:
            costs = [brute_one_gpu(bins[k].table, [it.need_bytes for it in g]) for k, g in groups.items()]
            if any(c is None for c in costs):
                continue
            found = [c for c in costs if c is not None]
            placed = [it for it, k in zip(items, choice, strict=True) if k < len(bins)]
            score = (
                tuple(sum(1 for it in placed if it.priority == lv) for lv in levels),
                -len(groups),
                -sum(c[0] for c in found),
                -sum(c[1] for c in found),
                min((-c[2] for c in found), default=0),
            )
            best = score if best is None or score > best else best
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(8))
def test_many_gpus_are_optimal(seed: int) -> None:
    rng = random.Random(100 + seed)
    bins = [MigBin(0, H100), MigBin(1, H200)]
    items = [
        Item(
            f"m{i}",
            rng.choice((1, 8, 9, 15, 19, 30, 33, 40, 70)) * GiB,
            pin=rng.choice((None, None, None, (0,), (1,))),
            priority=rng.choice((0, 0, 1)),
        )
        for i in range(rng.choice((3, 4, 5)))
    ]
    result = place_on_mig(items, bins)
    assert result.optimal
    levels = sorted({it.priority for it in items}, reverse=True)
    placed = [it for it in items if it.name not in result.unplaced]
    fits = result.fits.values()
    got = (
        tuple(sum(1 for it in placed if it.priority == lv) for lv in levels),
        -len(result.gpus_used),
        -result.leftover_slices,
        -sum(f.leftover_units for f in fits),
        min((min(f.headroom_bytes.values()) for f in fits), default=0),
    )
    assert got == brute_many(items, bins)
    tables = {b.index: b.table for b in bins}
    for gpu, fit in result.fits.items():
        assert not geometry_problems(tables[gpu], fit.geometry.slices)
        for name, s in fit.slices.items():
            item = next(it for it in items if it.name == name)
            assert item.pin is None or gpu in item.pin
            assert item.need_bytes <= (s.profile.memory_bytes or 0)


def test_unplaceable_items_say_why() -> None:
    items = [
        Item("big", 200 * GiB),
        Item("tp", 10 * GiB, tp=2),
        Item("pinned-away", 10 * GiB, pin=(5,)),
        Item("ok", 10 * GiB),
    ]
    result = place_on_mig(items, [MigBin(0, H200)])
    assert result.assignment == {"ok": (0,)}
    assert result.unplaced == ("big", "tp", "pinned-away")
    assert "largest MIG slice it may use holds 139.75 GiB: it needs a whole GPU" in result.reasons["big"]
    assert "no NCCL across slices" in result.reasons["tp"]
    assert result.reasons["pinned-away"] == "its pin allows none of the MIG GPUs"


def test_priority_decides_who_gets_the_last_slice() -> None:
    items = [Item(f"low{i}", 1 * GiB) for i in range(7)] + [Item("high", 1 * GiB, priority=1)]
    result = place_on_mig(items, [MigBin(0, H200)])
    assert "high" in result.assignment
    assert (
        len(result.unplaced) == 1
        and result.reasons[result.unplaced[0]] == "no room left on the MIG GPUs it may use"
    )


def test_lower_indexed_gpus_first_and_fewest_gpus() -> None:
    items = [Item(f"m{i}", (5 + 3 * i) * GiB) for i in range(10)]
    result = place_on_mig(items, [MigBin(i, H200) for i in range(3)])
    assert result.gpus_used == (0, 1)
    assert result.unplaced == ()
    assert result.leftover_slices == 0


def test_beyond_the_exact_limit_first_fit_places_everything_it_can() -> None:
    items = [Item(f"m{i}", 15 * GiB) for i in range(EXACT_MAX_ITEMS + 4)]
    result = place_on_mig(items, [MigBin(i, H200) for i in range(3)])
    assert not result.optimal
    assert result.unplaced == ()
    assert result.gpus_used == (0, 1)  # 14 slices of 1g.18gb
    for fit in result.fits.values():
        assert not geometry_problems(H200, fit.geometry.slices)


def test_duplicate_names_and_gpus_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        place_on_mig([Item("a", 1), Item("a", 1)], [MigBin(0, H200)])
    with pytest.raises(ValueError, match="unique"):
        place_on_mig([Item("a", 1)], [MigBin(0, H200), MigBin(0, H100)])


# --- a fixed geometry (MIG devices that exist, or a pinned one) ------------------------------


def test_a_fixed_geometry_uses_only_its_slices_and_prefers_the_larger_ones() -> None:
    fixed = parse_geometry(H200, "3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    fit = fit_one_gpu([Item("a", 10 * GiB), Item("b", 10 * GiB)], H200, fixed=fixed)
    assert fit is not None
    # leftover compute slices are counted against the whole GPU: the 3g and the 2g get them
    assert sorted(s.label for s in fit.slices.values()) == ["2g.35gb@0", "3g.71gb@4"]
    assert set(fit.geometry.slices) <= set(fixed.slices)
    assert fit_one_gpu([Item("big", 70 * GiB)], H200, fixed=fixed) is None  # no slice that large
    assert fit_one_gpu([Item(f"m{i}", GiB) for i in range(5)], H200, fixed=fixed) is None  # 4 slices


def test_a_fixed_geometry_with_a_capacity_per_slice() -> None:
    fixed = parse_geometry(H200, "1g.18gb:0,1g.18gb:1")
    busy = Slice(H200.profile("1g.18gb"), 0)
    room = {busy: 2 * GiB}

    def capacity(s: Slice) -> int:
        return room.get(s, s.profile.memory_bytes or 0)

    result = place_on_mig([Item("a", 8 * GiB)], [MigBin(0, H200, fixed, capacity)])
    assert [s.label for s in result.fits[0].slices.values()] == ["1g.18gb@1"]
    result = place_on_mig([Item("a", 8 * GiB), Item("b", 8 * GiB)], [MigBin(0, H200, fixed, capacity)])
    assert len(result.unplaced) == 1
