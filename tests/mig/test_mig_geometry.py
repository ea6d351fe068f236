"""MIG geometry rules: the enumeration against an independent brute force over NVIDIA's placement
table, NVIDIA's documented example geometries, and the validator's messages."""

from __future__ import annotations

from itertools import combinations

import pytest

from gpushare.catalog.mig import COMPUTE_SLICES, MigProfile, MigTable, lookup_mig_table
from gpushare.errors import InputError
from gpushare.mig.geometry import (
    Geometry,
    Slice,
    geometries,
    geometry_problems,
    is_maximal,
    iter_shapes,
    legal_slices,
    maximal_geometries,
    parse_geometry,
    place,
    validate_geometry,
)

# `nvidia-smi mig -lgipp` as NVIDIA's MIG user guide prints it (A100) and the lent H200 printed it:
# profile id -> (starts, memory units). The enumeration below is checked against this table alone.
LGIPP = {19: ((0, 1, 2, 3, 4, 5, 6), 1), 15: ((0, 2, 4, 6), 2), 14: ((0, 2, 4), 2), 9: ((0, 4), 4),
         5: ((0,), 4), 0: ((0,), 8)}  # fmt: skip
SLICES_OF = {19: 1, 15: 1, 14: 2, 9: 3, 5: 4, 0: 7}  # the `Ng` of each profile's name
MAX_OF = {19: 7, 15: 4, 14: 3, 9: 2, 5: 1, 0: 1}  # the -lgip Instances column


def brute_force_maximal(ids: tuple[int, ...]) -> set[frozenset[tuple[int, int]]]:
    """Every maximal set of (profile id, start) from LGIPP: all subsets of the legal placements,
    kept when no two share a memory unit, counts and compute slices are within the limits, and
    no further placement can be added."""
    placements = [(pid, start) for pid in ids for start in LGIPP[pid][0]]

    def units(p: tuple[int, int]) -> set[int]:
        return set(range(p[1], p[1] + LGIPP[p[0]][1]))

    def legal(chosen: tuple[tuple[int, int], ...]) -> bool:
        taken: set[int] = set()
        for p in chosen:
            if taken & units(p):
                return False
            taken |= units(p)
        counts = {pid: sum(1 for p in chosen if p[0] == pid) for pid in ids}
        compute = sum(SLICES_OF[p[0]] for p in chosen)
        return compute <= COMPUTE_SLICES and all(counts[pid] <= MAX_OF[pid] for pid in ids)

    found = set()
    for size in range(1, 8):  # at most 7 instances
        for chosen in combinations(placements, size):
            if legal(chosen) and not any(p not in chosen and legal((*chosen, p)) for p in placements):
                found.add(frozenset(chosen))
    return found


def as_pairs(g: Geometry) -> frozenset[tuple[int, int]]:
    return frozenset((s.profile.profile_id, s.start) for s in g.slices)


@pytest.mark.parametrize("gpu", ["h200", "h100-sxm-80gb", "a100-sxm-40gb", "h100-nvl-94gb"])
def test_maximal_geometries_match_a_brute_force_over_nvidias_placements(gpu: str) -> None:
    table = lookup_mig_table(gpu)
    found = maximal_geometries(table)
    assert {as_pairs(g) for g in found} == brute_force_maximal((19, 15, 14, 9, 5, 0))
    # The counts: 78 maximal placements; 38 distinct shapes (profile multisets), the number
    # K8S-MIG.md gives. Two layouts share a shape when only starts differ (3g@0 + 2g@4 + 1g@6
    # and 2g@0 + 1g@2 + 1g@3 + 3g@4 are both maximal, with shapes 3+2+1 and 3+2+1+1).
    assert len(found) == 78
    assert len(set(iter_shapes(found))) == 38


def test_without_the_two_unit_1g_profile_the_original_a100_set_is_left() -> None:
    # The five profiles of the first A100 drivers: 19 maximal layouts, 14 shapes. NVIDIA's
    # guide also notes that before R510 the 4g + 3g pair was refused, which would leave 18.
    table = lookup_mig_table("a100-sxm-40gb")
    five = [p for p in table.profiles if p.profile_id in (19, 14, 9, 5, 0)]
    found = maximal_geometries(table, five)
    assert {as_pairs(g) for g in found} == brute_force_maximal((19, 14, 9, 5, 0))
    assert (len(found), len(set(iter_shapes(found)))) == (19, 14)


def test_media_extension_profiles_multiply_layouts_not_memory() -> None:
    table = lookup_mig_table("h200")
    with_me = maximal_geometries(table, table.profiles)
    # any one plain 1g of a layout may be the +me one instead
    assert len(with_me) > len(maximal_geometries(table))
    assert all(sum(s.profile.media_extensions for s in g.slices) <= 1 for g in with_me)


def test_every_geometry_is_legal_once_and_sub_geometries_are_included() -> None:
    table = lookup_mig_table("h200")
    every = geometries(table)
    assert len({as_pairs(g) for g in every}) == len(every)
    assert all(not geometry_problems(table, g.slices) for g in every)
    pairs = {as_pairs(g) for g in every}
    for g in maximal_geometries(table):
        for drop in g.slices:
            rest = frozenset(p for p in as_pairs(g) if p != (drop.profile.profile_id, drop.start))
            assert not rest or rest in pairs


def layout(table: MigTable, *items: tuple[str, int]) -> list[Slice]:
    return [Slice(table.profile(name), start) for name, start in items]


@pytest.mark.parametrize(
    ("case_id", "items", "maximal"),
    [
        # MIG user guide, "Getting Started" example 2 (A100 40GB, `-cgi 9,19,14,19`, then `-lgi`)
        ("guide-3-2-1-1", (("1g.5gb", 0), ("1g.5gb", 1), ("2g.10gb", 2), ("3g.20gb", 4)), True),
        # example 3, `-cgi 14,19,19,19,19,19`
        (
            "guide-2-1-1-1-1-1",
            (("2g.10gb", 4), ("1g.5gb", 0), ("1g.5gb", 1), ("1g.5gb", 2), ("1g.5gb", 3), ("1g.5gb", 6)),
            True,
        ),
        # example 1, two 3g.20gb at 0:4 and 4:4
        ("guide-3-3", (("3g.20gb", 0), ("3g.20gb", 4)), True),
        ("seven-1g", tuple(("1g.5gb", s) for s in range(7)), True),
        ("four-two-unit-1g", tuple(("1g.10gb", s) for s in (0, 2, 4, 6)), True),
        ("4-3", (("4g.20gb", 0), ("3g.20gb", 4)), True),
        # NVIDIA/DCGM issue #138 (an A100 80GB node's `-lgi`, same layout on 40GB names)
        ("dcgm-138", (("1g.5gb", 2), ("1g.5gb", 3), ("2g.10gb", 0), ("3g.20gb", 4)), True),
        # kubernetes-sigs/dra-driver-nvidia-gpu issue #933: what is left after removals
        ("dra-933-fragmented", (("1g.5gb", 0), ("1g.5gb", 1), ("1g.5gb", 5)), False),
        ("3g-alone", (("3g.20gb", 4),), False),
    ],
)
def test_documented_geometries(case_id: str, items: tuple[tuple[str, int], ...], maximal: bool) -> None:
    table = lookup_mig_table("a100-sxm-40gb")
    g = validate_geometry(table, layout(table, *items))
    assert is_maximal(table, g) is maximal


@pytest.mark.parametrize(
    ("case_id", "items", "problem"),
    [
        ("bad-start", (("2g.35gb", 6),), "2g.35gb@6: 2g.35gb may start only at 0, 2, 4"),
        ("overlap", (("4g.71gb", 0), ("3g.71gb", 0)), "4g.71gb@0 overlaps 3g.71gb@0 on memory unit 0"),
        (
            "two-unit-overlap",
            (("1g.35gb", 2), ("1g.18gb", 3)),
            "1g.18gb@3 overlaps 1g.35gb@2 on memory unit 3",
        ),
        ("two-me", (("1g.18gb+me", 0), ("1g.18gb+me", 1)), "2 x 1g.18gb+me: at most 1 fit on one GPU"),
        ("compute", (("7g.141gb", 0), ("1g.18gb", 6)), "8 compute slices: a GPU has 7"),
    ],
)
def test_illegal_geometries_say_why(case_id: str, items: tuple[tuple[str, int], ...], problem: str) -> None:
    table = lookup_mig_table("h200")
    slices = layout(table, *items)
    assert problem in geometry_problems(table, slices)
    with pytest.raises(InputError, match="not legal") as exc:
        validate_geometry(table, slices)
    assert problem in exc.value.message
    assert exc.value.hint is not None and "gpushare mig profiles h200-141gb" in exc.value.hint


def test_a_profile_of_another_gpu_is_refused() -> None:
    h200, h100 = lookup_mig_table("h200"), lookup_mig_table("h100")
    problems = geometry_problems(h200, [Slice(h100.profile("3g.40gb"), 0)])
    assert problems == ["3g.40gb is not a MIG profile of h200-141gb"]


def test_a_start_past_the_last_unit_is_refused() -> None:
    table = lookup_mig_table("h200")
    odd = MigProfile("2g.35gb", 14, 2, 1, 32, 3, (0, 2, 4, 7), 2)  # a made-up table row
    bad = MigTable("h200-141gb", "NVIDIA H200", (odd,), ())
    assert "2g.35gb@7 ends past memory unit 7" in geometry_problems(bad, [Slice(odd, 7)])
    assert table.profile("2g.35gb") != odd


@pytest.mark.parametrize(
    ("case_id", "text", "label"),
    [
        ("explicit", "9:0,9:4", "3g.71gb@0 + 3g.71gb@4"),
        ("names-and-ids", "3g.71gb,2g.35gb,19,19", "2g.35gb@0 + 1g.18gb@2 + 1g.18gb@3 + 3g.71gb@4"),
        ("mixed", "1g.18gb:6, 4g.71gb", "4g.71gb@0 + 1g.18gb@6"),
        ("mig-prefix", "MIG 7g.141gb", "7g.141gb@0"),
    ],
)
def test_parse_geometry_in_cgi_syntax(case_id: str, text: str, label: str) -> None:
    assert parse_geometry(lookup_mig_table("h200"), text).label == label


@pytest.mark.parametrize(
    ("case_id", "text", "message"),
    [
        ("unknown", "3g.40gb", "has no MIG profile '3g.40gb'"),
        ("bad-start", "2g.35gb:6", "may start only at 0, 2, 4"),
        ("not-a-number", "9:x", "start 'x' of '9:x' is not a number"),
        ("empty-item", "9,,9", "empty item"),
        ("no-room", "7g.141gb,1g.18gb", "no free starts left on h200-141gb for 7g.141gb, 1g.18gb"),
        ("fixed-then-no-room", "4g.71gb:0,4g.71gb", "no free starts left"),
    ],
)
def test_parse_geometry_errors(case_id: str, text: str, message: str) -> None:
    with pytest.raises(InputError, match="MIG geometry") as exc:
        parse_geometry(lookup_mig_table("h200"), text)
    assert message in exc.value.message


def test_place_finds_a_layout_when_the_first_choice_fails() -> None:
    # mig-parted's all-balanced for H200 (2 x 1g.18gb, 2g.35gb, 3g.71gb): the 3g at 0 leaves no
    # place for the 2g and both 1g, so it must go to 4.
    table = lookup_mig_table("h200")
    profiles = [table.profile(n) for n in ("1g.18gb", "1g.18gb", "2g.35gb", "3g.71gb")]
    g = place(table, profiles)
    assert g is not None and g.label == "2g.35gb@0 + 1g.18gb@2 + 1g.18gb@3 + 3g.71gb@4"
    assert is_maximal(table, g)
    assert place(table, [table.profile("4g.71gb")] * 2) is None


def test_legal_slices_are_every_profile_start() -> None:
    table = lookup_mig_table("h200")
    assert len(legal_slices(table)) == sum(len(p.starts) for p in table.profiles) == 7 + 7 + 4 + 3 + 2 + 1 + 1


def test_geometry_counts_and_shape_largest_first() -> None:
    table = lookup_mig_table("h200")
    g = parse_geometry(table, "19:0,19:1,14:2,9:4")
    assert g.counts == {"3g.71gb": 1, "2g.35gb": 1, "1g.18gb": 2}
    assert g.shape == ("3g.71gb", "2g.35gb", "1g.18gb", "1g.18gb")
    assert (g.compute_slices, g.memory_units) == (7, 8)
