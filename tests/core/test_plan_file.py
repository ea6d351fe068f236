"""A plan as a file and in parts: `Plan.to_json` / `from_json` read back equal, `Plan.subset` keeps
a start group's numbers on renumbered GPUs, `PlannedInstance.command` is the argv typed, and the
budget's start check and device total for a memory limit (memory/budget.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.devices.static import StaticInventory
from gpushare.memory import Budget, requested_bytes
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import PLAN_FORMAT, Plan
from gpushare.profile import load_profile
from gpushare.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "profiles").glob("*.yaml"))
LOAD = plan_loader({})


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def shipped_plan(path: Path, gpus: str | None = None) -> Plan:
    profile = load_profile(path, load=LOAD)
    listed = parse_gpu_spec(gpus) if gpus else profile.described_gpus() or []
    return build_plan(profile, listed, load=LOAD)


@pytest.mark.parametrize(("case", "gpus"), [("own", None), ("h100", "H100"), ("2xh100", "2xH100")])
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_plan_json_round_trip(path: Path, case: str, gpus: str | None) -> None:
    plan = shipped_plan(path, gpus)
    text = json.dumps(plan.to_json())
    back = Plan.from_json(json.loads(text))
    assert back == plan
    assert json.dumps(back.to_json()) == text


MIG_FIXTURE = ROOT / "tests" / "fixtures" / "gpus" / "nvidia_H200_mig_3g_2g_1g_1g.json"


@pytest.mark.parametrize(
    ("case", "path", "gpus"),
    [
        ("auto-h200", ROOT / "profiles" / "classic.yaml", "H200"),
        ("profile-auto", ROOT / "examples" / "mig-lab.yaml", None),
        ("devices", ROOT / "profiles" / "classic.yaml", str(MIG_FIXTURE)),
        ("pinned", ROOT / "examples" / "mig-pinned.yaml", None),
    ],
)
def test_a_mig_plan_round_trips(case: str, path: Path, gpus: str | None) -> None:
    """Issue 14's keys (the plan's `mig` setup, each GPU's `mig`/`mig_slices`, each instance's
    `mig_slice`) are read back too: slices with their UUIDs, profile ids and planned bytes."""
    profile = load_profile(path, load=LOAD)
    if gpus is None:
        listed = profile.described_gpus() or []
    elif gpus.endswith(".json"):
        listed = StaticInventory.from_json_file(Path(gpus)).gpus()
    else:
        listed = parse_gpu_spec(gpus)
    override = "auto" if case == "auto-h200" else None
    settings = {} if gpus is not None else None  # --gpus: the profile's `mig:` is for its own GPUs
    plan = build_plan(profile, listed, load=LOAD, mig=override, mig_settings=settings)
    assert plan.uses_mig
    assert any(i.mig_slice is not None for i in plan.instances) or not plan.feasible
    if case == "devices":
        assert all(s.uuid for g in plan.gpus for s in g.mig_slices)
    if "auto" in case:
        assert plan.mig_setup is not None and plan.mig_setup.commands
    text = json.dumps(plan.to_json())
    back = Plan.from_json(json.loads(text))
    assert back == plan
    assert json.dumps(back.to_json()) == text
    with pytest.raises(ValueError, match="MIG slices has no subset"):
        plan.subset([i.name for i in plan.instances])


def test_subset_of_the_whole_gpu_instances_of_a_mig_plan() -> None:
    """export k8s --mode mig runs a MIG plan's whole-GPU groups as gpu-pod does: their subset is a
    plain plan (no slices, no MIG setup); a subset that takes a slice is refused."""
    from gpushare.profile import parse_profile_text

    text = """name: mixed
gpus:
  - {gpu: H200, mig: auto}
  - {gpu: H200, mig: "off"}
models:
  - {name: big, model: Qwen/Qwen2.5-32B-Instruct, max_model_len: 16384, concurrency: 2, gpus: [1]}
  - {name: chat, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 4, gpus: [0]}
  - {name: tiny, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 8192, concurrency: 4, gpus: [0]}
"""
    profile = parse_profile_text(text, "mixed.yaml")
    plan = build_plan(profile, profile.described_gpus() or [], load=LOAD)
    assert plan.uses_mig and plan.mig_setup is not None
    sub = plan.subset(["big"])
    assert not sub.uses_mig and sub.mig_setup is None
    assert [g.index for g in sub.gpus] == [0] and sub.instances[0].env["CUDA_VISIBLE_DEVICES"] == "0"
    assert sub.instances[0].argv == next(i for i in plan.instances if i.name == "big").argv
    assert Plan.from_json(json.loads(json.dumps(sub.to_json()))) == sub
    with pytest.raises(ValueError, match="MIG slices has no subset"):
        plan.subset(["chat"])


def test_an_unplaced_and_overcommitted_plan_round_trips() -> None:
    plan = shipped_plan(ROOT / "profiles" / "classic.yaml", "L4")
    assert plan.unplaced and not plan.feasible
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        ("no-format", lambda d: d.pop("format"), "format: expected 1"),
        ("future-format", lambda d: d.update(format=PLAN_FORMAT + 1), "format: expected 1"),
        ("no-port", lambda d: d["instances"][0].pop("port"), "instances: no field 'port'"),
        ("bad-gpu-index", lambda d: d["gpus"][0].update(index="zero"), "gpus: invalid literal"),
        ("env-not-object", lambda d: d["instances"][0].update(env=[]), "instances: .*env must be an object"),
    ],
)
def test_from_json_names_what_is_wrong(case: str, change: object, message: str) -> None:
    data = shipped_plan(ROOT / "profiles" / "classic.yaml").to_json()
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        Plan.from_json(data)


def test_commands_read_back_to_the_same_argv() -> None:
    for path in SHIPPED:
        for inst in shipped_plan(path).instances:
            assert inst.command.to_argv() == inst.argv
            assert inst.command.port == inst.port
            assert inst.command.kv_cache_memory_bytes == inst.kv_cache_memory_bytes


def test_subset_renumbers_gpus_and_keeps_every_number() -> None:
    plan = shipped_plan(ROOT / "profiles" / "workstation.yaml")
    on_gpu3 = [i.name for i in plan.instances if i.gpus == (3,)]
    assert sorted(on_gpu3) == ["mistral-7b", "qwen2.5-3b"]
    sub = plan.subset(on_gpu3)
    assert [g.index for g in sub.gpus] == [0]
    assert sub.gpus[0].instances == plan.gpus[3].instances
    assert sub.gpus[0].planned_bytes == plan.gpus[3].planned_bytes
    for inst in sub.instances:
        whole = next(i for i in plan.instances if i.name == inst.name)
        assert inst.gpus == (0,)
        assert inst.env["CUDA_VISIBLE_DEVICES"] == "0"
        assert (inst.argv, inst.planned_bytes, inst.start_order) == (
            whole.argv,
            whole.planned_bytes,
            whole.start_order,
        )
        assert inst.start_group == 0
    tp = plan.subset(["qwen2.5-32b"])
    assert tp.instances[0].gpus == (0, 1)
    assert tp.instances[0].env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert Plan.from_json(json.loads(json.dumps(sub.to_json()))) == sub


def test_subset_refuses_half_a_start_group_and_unknown_names() -> None:
    plan = shipped_plan(ROOT / "profiles" / "workstation.yaml")
    with pytest.raises(ValueError, match="GPU 3 also holds qwen2.5-3b"):
        plan.subset(["mistral-7b"])
    with pytest.raises(ValueError, match="no instance nope"):
        plan.subset(["nope"])


BUDGET = Budget(
    weights_bytes=15 * GiB,
    activation_bytes=GiB,
    non_torch_bytes=256 * MiB,
    cuda_graph_bytes=GiB,
    cuda_graph_in_budget=False,
    context_bytes=700 * MiB,
)


def test_start_deficit_is_the_request_against_what_is_free_after_the_context() -> None:
    util, total = 0.5, 80 * GiB
    free = 41 * GiB
    assert BUDGET.start_deficit_bytes(util, total, free) == requested_bytes(util, total) - (free - 700 * MiB)
    assert BUDGET.start_deficit_bytes(util, total, 40 * GiB + 700 * MiB) == 0


@pytest.mark.parametrize(("case", "kv"), [("small", GiB), ("odd", 3_000_000_017), ("large", 60 * GiB)])
def test_device_total_for_is_the_least_whole_step_that_starts(case: str, kv: int) -> None:
    floor = BUDGET.overhead_bytes + kv + BUDGET.outside_bytes
    total = BUDGET.device_total_for(kv, floor, MiB)
    assert total % MiB == 0 and total >= floor
    util = BUDGET.utilization_for(kv, total)
    assert BUDGET.start_deficit_bytes(util, total, total) <= 0
    assert BUDGET.kv_budget_bytes(util, total) >= kv
    smaller = total - MiB
    if smaller >= floor:
        assert BUDGET.start_deficit_bytes(BUDGET.utilization_for(kv, smaller), smaller, smaller) > 0
    # what a 4-decimal utilization may ask beyond the need is the most it adds
    assert total - math.ceil(floor / MiB) * MiB <= math.ceil(total / 10_000) + MiB
