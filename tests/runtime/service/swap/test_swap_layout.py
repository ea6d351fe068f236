"""The swap layout: read from a real on-demand plan, and the choice of what to put to sleep."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import Plan, SwapSettings
from gpushare.profile import parse_profile_text
from gpushare.runtime.service.swap.layout import AwakeNow, SwapGpu, SwapLayout, make_room
from gpushare.units import MiB

ROOT = Path(__file__).resolve().parents[4]
LOAD = plan_loader({})


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def plan_of(text: str) -> Plan:
    profile = parse_profile_text(textwrap.dedent(text).lstrip("\n"), "test.yaml")
    return build_plan(profile, profile.described_gpus() or [], load=LOAD)


THREE = """
gpus: H200
host_memory: 256GiB
defaults: {mps: "off", kv_sizing: %s}
models:
  - {name: small, model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192, concurrency: 8}
  - {name: llama, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 8192, concurrency: 48,
     residency: on-demand, on_demand: {idle_s: 600}}
  - {name: qwen, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 96,
     residency: on-demand}
  - {name: mistral, model: mistralai/Mistral-7B-Instruct-v0.3, max_model_len: 8192, concurrency: 48,
     residency: on-demand, on_demand: {sleep_level: 2, queue: 3}}
"""


@pytest.mark.parametrize("sizing", ["fixed", "measured"])
def test_from_plan_matches_the_planners_awake_sets(sizing: str) -> None:
    """Every awake set the planner lists fits the room with the layout's awake parts, and adding
    any other member to it does not: the two read the same rule."""
    plan = plan_of(THREE % sizing)
    assert plan.feasible, plan.problems
    layout = SwapLayout.from_plan(plan)
    (gpu,) = layout.gpus
    room = plan.gpus[0].awake
    assert room is not None
    assert (gpu.index, gpu.room_bytes, gpu.awake_max) == (0, room.room_bytes, room.awake_max)
    assert set(gpu.members) == {"llama", "qwen", "mistral"}
    part = {m.name: m.awake_bytes for m in layout.members}
    assert room.sets and not room.more_sets
    for names in room.sets:
        used = sum(part[n] for n in names)
        assert used <= gpu.room_bytes
        for other in set(gpu.members) - set(names):
            assert used + part[other] > gpu.room_bytes
    assert max(sum(part[n] for n in names) for names in room.sets) == room.largest_bytes
    settings = {m.name: m.settings for m in layout.members}
    assert settings["llama"].idle_s == 600
    assert settings["mistral"].sleep_level == 2 and settings["mistral"].queue == 3
    by_name = {i.name: i for i in plan.instances}
    for m in layout.members:
        beyond = m.awake_bytes - (by_name[m.name].planned_bytes - by_name[m.name].asleep_bytes)
        # the utilization slack: none with the KV size in bytes, total / 10^4 otherwise
        # (14.3 MiB on an H200)
        assert beyond == 0 if sizing == "fixed" else 0 < beyond < 15 * MiB


def test_the_on_demand_profile_reads_back_from_json() -> None:
    text = (ROOT / "profiles" / "on-demand.yaml").read_text()
    profile = parse_profile_text(text, "profiles/on-demand.yaml")
    plan = build_plan(profile, profile.described_gpus() or [], load=LOAD)
    layout = SwapLayout.from_plan(plan)
    assert {m.name for m in layout.members} == {"llama", "qwen", "mistral", "qwen-32b"}
    assert SwapLayout.from_json(layout.to_json()) == layout


def test_a_plan_without_on_demand_models_has_no_layout() -> None:
    plan = plan_of(
        """
        gpus: H200
        models:
          - {name: small, model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192, concurrency: 8}
        """
    )
    assert SwapLayout.from_plan(plan) == SwapLayout((), ())


@pytest.mark.parametrize(
    ("case", "field", "value", "message"),
    [
        ("level-3", "sleep_level", 3, "members: on_demand.sleep_level: expected 1 or 2, got 3"),
        ("no-queue", "queue", None, "members: int() argument"),
    ],
)
def test_from_json_names_the_bad_field(case: str, field: str, value: object, message: str) -> None:
    layout = SwapLayout.from_plan(plan_of(THREE % "fixed"))
    data = layout.to_json()
    data["members"][0]["on_demand"][field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        SwapLayout.from_json(data)


G = 1 << 30


def gpu(room: int, awake_max: int | None = None) -> SwapGpu:
    return SwapGpu(0, room * G, awake_max, ("a", "b", "c", "d", "t"))


def now(*items: tuple[str, int, float]) -> list[AwakeNow]:
    return [AwakeNow(name, size * G, used) for name, size, used in items]


@pytest.mark.parametrize(
    ("case", "room", "awake_max", "awake", "target", "expected"),
    [
        ("fits-already", 100, None, [("a", 40, 1.0)], 50, ()),
        ("lru-first", 100, None, [("a", 40, 2.0), ("b", 40, 1.0)], 50, ("b",)),
        ("two-needed", 100, None, [("a", 40, 2.0), ("b", 40, 1.0)], 90, ("b", "a")),
        ("awake-max", 100, 1, [("a", 10, 1.0)], 10, ("a",)),
        ("awake-max-2", 100, 2, [("a", 10, 1.0), ("b", 10, 2.0)], 10, ("a",)),
        # the LRU small one went first, but the bigger one's sleep alone makes room: keep the small
        ("keep-small", 100, None, [("a", 10, 1.0), ("b", 60, 2.0), ("c", 20, 3.0)], 60, ("b",)),
        ("empty-gpu", 100, None, [], 100, ()),
    ],
)
def test_make_room(
    case: str,
    room: int,
    awake_max: int | None,
    awake: list[tuple[str, int, float]],
    target: int,
    expected: tuple[str, ...],
) -> None:
    choice = make_room(gpu(room, awake_max), now(*awake), target * G)
    assert choice.short is None
    assert choice.to_sleep == expected


def test_make_room_says_why_it_cannot() -> None:
    too_big = make_room(gpu(100), [], 101 * G)
    assert too_big.short is not None and "room is" in too_big.short
    stuck = [AwakeNow("a", 60 * G, 1.0, movable=False)]
    blocked = make_room(gpu(100), stuck, 50 * G)
    assert blocked.to_sleep == ()
    assert blocked.short is not None and "a cannot be put to sleep now" in blocked.short


def test_settings_survive_json() -> None:
    layout = SwapLayout.from_plan(plan_of(THREE % "measured"))
    back = SwapLayout.from_json(layout.to_json())
    assert [m.settings for m in back.members] == [m.settings for m in layout.members]
    assert all(isinstance(m.settings, SwapSettings) for m in back.members)


@pytest.mark.parametrize(
    ("case", "level", "extra", "refused"),
    [
        ("level-2-dummy", 2, "[--load-format, dummy]", True),
        ("level-2-dummy-equals", 2, "[--load-format=dummy]", True),
        ("level-2-real", 2, "[]", False),
        ("level-1-dummy", 1, "[--load-format, dummy]", False),
    ],
)
def test_level_2_with_dummy_weights_is_refused(
    tmp_path: Path, case: str, level: int, extra: str, refused: bool
) -> None:
    from gpushare.planning.build import build_plan
    from gpushare.profile import load_profile
    from gpushare.runtime.service.swap.layout import level_2_problems

    path = tmp_path / "p.yaml"
    path.write_text(
        'gpus: H200\nhost_memory: 1TiB\ndefaults: {mps: "off"}\nmodels:\n'
        "  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    max_model_len: 8192\n"
        f"    residency: on-demand\n    on_demand: {{sleep_level: {level}}}\n    extra_args: {extra}\n"
    )
    profile = load_profile(path)
    problems = level_2_problems(build_plan(profile, profile.described_gpus() or []))
    assert bool(problems) == refused
    if refused:
        assert "a: sleep_level 2 with --load-format dummy cannot wake" in problems[0]
