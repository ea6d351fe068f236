"""gpushare.planning.start: one rule for start groups and start order, for the planner and the launcher."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import PlannedInstance
from gpushare.planning.start import (
    group_numbers,
    next_to_start,
    sleeps_after_start,
    start_groups,
    start_order,
    starts_together,
)
from gpushare.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
LOAD = plan_loader()


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize(
    ("case", "gpu_sets", "groups"),
    [
        ("one GPU each", [(0,), (1,), (2,)], [0, 1, 2]),
        ("sharing a GPU", [(1,), (0,), (1,)], [1, 0, 1]),
        ("linked through a tensor-parallel instance", [(0,), (0, 1), (1,), (2,)], [0, 0, 0, 1]),
        ("numbered by the smallest GPU, whatever the order", [(3,), (2, 3), (0, 3), (1,)], [0, 0, 0, 1]),
        ("a chain of TP pairs", [(2, 3), (1, 2), (0, 1), (5,)], [0, 0, 0, 1]),
        ("CPU instances form one group", [(), (), ()], [0, 0, 0]),
        ("nothing", [], []),
    ],
)
def test_group_numbers(case: str, gpu_sets: list[tuple[int, ...]], groups: list[int]) -> None:
    assert group_numbers(gpu_sets) == groups


def test_start_order_counts_within_each_group() -> None:
    entries = [("a", (0,), 1), ("b", (1,), 5), ("c", (0,), 9), ("d", (0, 1), 0)]
    order = start_order(entries, lambda e: e[1], lambda e: -e[2])
    assert [(e[0], group, position) for e, group, position in order] == [
        ("c", 0, 0),
        ("b", 0, 1),
        ("a", 0, 2),
        ("d", 0, 3),
    ]


def inst(name: str, group: int, order: int, fixed: bool = True) -> PlannedInstance:
    return PlannedInstance(name, "m", (), 8000, order, 0.5, None, 1, ("vllm",), {}, fixed, start_group=group)


def test_on_demand_entries_start_after_every_resident_of_their_group() -> None:
    # (name, gpus, key, on-demand): the key alone would start the on-demand ones first
    entries = [("od1", (0,), 0, True), ("r1", (0,), 5, False), ("od2", (0,), 1, True), ("r2", (0,), 9, False)]
    order = start_order(entries, lambda e: e[1], lambda e: e[2], lambda e: e[3])
    assert [(e[0], position) for e, _, position in order] == [("r1", 0), ("r2", 1), ("od1", 2), ("od2", 3)]


def test_a_group_with_on_demand_members_starts_one_at_a_time_and_each_sleeps() -> None:
    resident = inst("r", 0, 0)
    sleeper = replace(inst("s", 0, 1), residency="on-demand")
    assert starts_together([resident]) and not starts_together([resident, sleeper])
    assert sleeps_after_start(sleeper) and not sleeps_after_start(resident)


def test_start_groups_are_the_plans() -> None:
    plan = [inst("x", 1, 1), inst("y", 0, 0), inst("z", 1, 0), inst("w", 2, 0)]
    groups = start_groups(plan)
    assert [[i.name for i in g] for g in groups] == [["y"], ["z", "x"], ["w"]]
    assert starts_together(groups[1])
    assert not starts_together([inst("a", 0, 0), inst("b", 0, 1, fixed=False)])


@pytest.mark.parametrize(
    ("case", "fixed", "waiting", "settled", "expected"),
    [
        ("measured: the first", False, {"a", "b", "c"}, set(), ["a"]),
        ("measured: wait for the one starting", False, {"b", "c"}, set(), []),
        ("measured: the next once settled", False, {"b", "c"}, {"a"}, ["b"]),
        ("measured: all settled", False, set(), {"a", "b", "c"}, []),
        ("fixed: every waiting one", True, {"b", "c"}, set(), ["b", "c"]),
    ],
)
def test_next_to_start(
    case: str, fixed: bool, waiting: set[str], settled: set[str], expected: list[str]
) -> None:
    group = [inst("a", 0, 0, fixed), inst("b", 0, 1, fixed), inst("c", 0, 2, fixed)]
    assert next_to_start([group], waiting, settled) == expected


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_planner_numbers_groups_by_the_rule(path: Path) -> None:
    profile = load_profile(path, LOAD)
    plan = build_plan(profile, profile.described_gpus() or [], load=LOAD)
    assert [i.start_group for i in plan.instances] == group_numbers([i.gpus for i in plan.instances])
    for group in start_groups(plan.instances):  # what the launcher starts, group by group
        assert [i.start_order for i in group] == list(range(len(group)))
