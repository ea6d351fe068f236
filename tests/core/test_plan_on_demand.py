"""Plans with on-demand models: awake and asleep footprints, the room for the awake ones, which can
be awake together, start order and start checks with the others asleep, host RAM, and the JSON."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from gpushare.estimate_job import ModelFacts
from gpushare.memory import SleepFootprint
from gpushare.memory.asleep import VLLM_PROCESS_HOST_BYTES
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.ondemand import Sleeper, maximal_sets, room_need
from gpushare.planning.plan import Plan, PlannedGpu, PlannedInstance
from gpushare.planning.start import start_groups, starts_together
from gpushare.profile import parse_profile_text
from gpushare.units import GiB

FACTS: dict[str, ModelFacts] = {}
LOAD = plan_loader(FACTS)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def plan_of(text: str, host_memory_bytes: int | None = None) -> Plan:
    profile = parse_profile_text(textwrap.dedent(text).lstrip("\n"), "test.yaml")
    gpus = profile.described_gpus() or []
    return build_plan(profile, gpus, load=LOAD, host_memory_bytes=host_memory_bytes)


def by_name(plan: Plan) -> dict[str, PlannedInstance]:
    return {i.name: i for i in plan.instances}


# Three 7-8B models at 48 × 8192 tokens (about 60 GiB each awake) and a small resident: together
# awake more than an H200 holds.
THREE = """
gpus: H200
host_memory: 256GiB
defaults: {mps: "off", kv_sizing: %(sizing)s}
%(extra)s
models:
  - {name: small, model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192, concurrency: 8}
  - {name: llama, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 8192, concurrency: 48,
     residency: on-demand}
  - {name: qwen, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 96,
     residency: on-demand}
  - {name: mistral, model: mistralai/Mistral-7B-Instruct-v0.3, max_model_len: 8192, concurrency: 48,
     residency: on-demand, on_demand: {sleep_level: 2}}
"""


def three(sizing: str = "fixed", extra: str = "") -> str:
    return THREE % {"sizing": sizing, "extra": extra}


def gpu0(plan: Plan) -> PlannedGpu:
    return plan.gpus[0]


@pytest.mark.parametrize("sizing", ["fixed", "measured"])
def test_more_than_fits_awake_fits_with_the_room(sizing: str) -> None:
    plan = plan_of(three(sizing))
    assert plan.feasible, (plan.unplaced, plan.problems)
    insts = by_name(plan)
    g = gpu0(plan)
    awake_total = sum(i.planned_bytes for i in plan.instances)
    assert awake_total > g.usable_bytes  # all awake would not fit
    sleepers = [i for i in plan.instances if i.on_demand]
    resident = insts["small"].planned_bytes
    residues = sum(i.asleep_bytes for i in sleepers)
    assert g.awake is not None
    assert g.awake.room_bytes == g.usable_bytes - resident - residues
    assert g.planned_bytes == resident + residues + g.awake.largest_bytes <= g.usable_bytes
    assert g.free_bytes == g.cuda_total_bytes - g.other_processes_bytes - g.planned_bytes
    # every listed set fits in the room and takes no other instance
    slack = 0 if sizing == "fixed" else math.ceil(g.cuda_total_bytes / 10_000)

    def awake(name: str) -> int:
        return insts[name].planned_bytes + slack - insts[name].asleep_bytes

    assert g.awake.sets
    for names in g.awake.sets:
        used = sum(awake(n) for n in names)
        assert used <= g.awake.room_bytes
        assert all(used + awake(i.name) > g.awake.room_bytes for i in sleepers if i.name not in names)
    assert g.awake.largest_bytes == max(sum(awake(n) for n in names) for names in g.awake.sets)


def test_each_on_demand_start_check_passes_with_the_others_asleep_only() -> None:
    plan = plan_of(three())
    g = gpu0(plan)
    total = g.cuda_total_bytes
    insts = by_name(plan)
    for inst in plan.instances:
        if not inst.on_demand:
            continue
        assert inst.estimate is not None
        context = inst.estimate.budget.context_bytes
        requested = math.ceil(inst.gpu_memory_utilization * total)
        others = [i for i in plan.instances if i is not inst]
        asleep = sum(i.asleep_bytes if i.on_demand else i.planned_bytes for i in others)
        awake = sum(i.planned_bytes for i in others)
        assert requested <= total - asleep - context, inst.name
        assert requested > total - awake - context, f"{inst.name}: the rule is not needed here"
    # The resident's own check holds with the largest awake set up (a restart while they serve).
    small = insts["small"]
    assert small.estimate is not None and g.awake is not None
    held = g.planned_bytes - small.planned_bytes
    assert (
        math.ceil(small.gpu_memory_utilization * total) <= total - held - small.estimate.budget.context_bytes
    )


def test_start_order_puts_residents_first_and_on_demand_one_at_a_time() -> None:
    plan = plan_of(three())
    (group,) = start_groups(plan.instances)
    assert group[0].name == "small" and not group[0].on_demand
    assert all(i.on_demand for i in group[1:])
    assert [i.start_order for i in group] == [0, 1, 2, 3]
    assert not starts_together(group)


def test_commands_have_sleep_mode_and_dev_mode_for_on_demand_only() -> None:
    insts = by_name(plan_of(three()))
    for name, inst in insts.items():
        on_demand = name != "small"
        assert ("--enable-sleep-mode" in inst.argv) == on_demand, name
        assert (inst.env.get("VLLM_SERVER_DEV_MODE") == "1") == on_demand, name
        assert inst.residency == ("on-demand" if on_demand else "always")


def test_host_bytes_follow_the_sleep_level_and_are_summed() -> None:
    plan = plan_of(three())
    insts = by_name(plan)
    assert insts["mistral"].host_bytes == VLLM_PROCESS_HOST_BYTES  # level 2: its processes only
    assert insts["llama"].host_bytes > insts["llama"].estimate.weights_bytes + VLLM_PROCESS_HOST_BYTES  # type: ignore[union-attr]
    assert insts["small"].host_bytes == 0 and insts["small"].asleep_bytes == 0
    assert plan.host is not None
    assert plan.host.needed_bytes == sum(insts[n].host_bytes for n in ("llama", "qwen", "mistral"))
    assert (plan.host.available_bytes, plan.host.source) == (256 * GiB, "profile host_memory")


def test_host_ram_short_makes_the_plan_infeasible_with_the_numbers() -> None:
    plan = plan_of(three().replace("host_memory: 256GiB", "host_memory: 20GiB"))
    assert not plan.feasible and not plan.unplaced
    (problem,) = plan.problems
    assert "host RAM" in problem
    assert "gives 20.00 GiB" in problem and "short by" in problem and "sleep_level: 2" in problem


def test_host_ram_from_the_host_when_the_profile_gives_none() -> None:
    text = three().replace("host_memory: 256GiB\n", "")
    reported = plan_of(text, host_memory_bytes=10 * GiB)
    assert reported.host is not None and reported.host.source == "reported by the host at plan time"
    assert not reported.feasible
    unknown = plan_of(text)
    assert unknown.feasible and unknown.host is not None and unknown.host.available_bytes is None
    assert any("host RAM not checked" in n for n in unknown.notes)


def test_awake_max_keeps_room_for_that_many_and_shares_the_rest() -> None:
    unlimited = by_name(plan_of(three()))
    one = plan_of(three(extra="awake_max: 1"))
    assert one.feasible
    g = gpu0(one)
    assert g.awake is not None and g.awake.awake_max == 1
    assert all(len(s) == 1 for s in g.awake.sets) and len(g.awake.sets) == 3
    small = by_name(one)["small"]
    # the resident gets what the single largest awake leaves; without awake_max it keeps its target
    assert small.kv_cache_memory_bytes is not None and small.kv_target_bytes > 0
    assert unlimited["small"].kv_cache_memory_bytes == unlimited["small"].kv_target_bytes
    assert small.kv_cache_memory_bytes > small.kv_target_bytes
    assert g.planned_bytes <= g.usable_bytes
    # the on-demand instances keep their targets either way
    assert by_name(one)["llama"].kv_cache_memory_bytes == unlimited["llama"].kv_cache_memory_bytes


def test_an_instance_that_cannot_wake_beside_the_residues_is_unplaced_with_changes() -> None:
    plan = plan_of(
        """
        gpus: H100
        host_memory: 1TiB
        defaults: {mps: "off"}
        models:
          - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 8,
             residency: on-demand}
          - {name: big, model: Qwen/Qwen2.5-32B-Instruct, max_model_len: 32768, concurrency: 2,
             residency: on-demand}
        """
    )
    assert not plan.feasible
    (u,) = plan.unplaced
    assert u.name == "big" and u.gpus == (0,) and u.short_by_bytes > 0
    assert "on-demand" in u.reason and "short by" in u.reason
    assert any("max_model_len" in s for s in u.suggestions)
    assert [i.name for i in plan.instances] == ["a"]


def test_on_demand_instances_share_one_gpu_and_pins_hold() -> None:
    plan = plan_of(
        """
        gpus: 2xH100
        host_memory: 1TiB
        defaults: {mps: "off"}
        models:
          - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, residency: on-demand}
          - {name: b, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, residency: on-demand}
          - {name: c, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, residency: on-demand,
             gpus: [1]}
        """
    )
    assert plan.feasible
    insts = by_name(plan)
    assert insts["a"].gpus == insts["b"].gpus == (0,) and insts["c"].gpus == (1,)
    assert plan.gpus[0].awake is not None and plan.gpus[0].awake.sets == (("a", "b"),)


def test_swap_settings_resolve_model_then_defaults_then_gpushare() -> None:
    plan = plan_of(
        """
        gpus: H200
        host_memory: 1TiB
        defaults: {mps: "off", on_demand: {queue: 8, idle_s: 120}}
        models:
          - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, residency: on-demand,
             on_demand: {queue: 2, idle_s: 0, sleep_level: 2}}
          - {name: b, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, residency: on-demand}
        """
    )
    a, b = by_name(plan)["a"].swap, by_name(plan)["b"].swap
    assert a is not None and b is not None
    assert (a.queue, a.idle_s, a.sleep_level, a.wait_s, a.drain_s) == (2, None, 2, 60.0, 30.0)
    assert (b.queue, b.idle_s, b.sleep_level) == (8, 120.0, 1)


def test_json_adds_the_on_demand_keys_only_for_on_demand_profiles() -> None:
    data = plan_of(three()).to_json()
    assert set(data["host"]) == {"needed_bytes", "available_bytes", "source"}
    awake = data["gpus"][0]["awake"]
    assert {"room_bytes", "awake_max", "awake_sets", "awake_sets_complete", "largest_awake_bytes"} <= set(
        awake
    )
    for inst in data["instances"]:
        assert {"residency", "asleep_bytes", "host_bytes", "on_demand"} <= set(inst)
    plain = plan_of(
        """
        gpus: H200
        models:
          - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192}
        """
    ).to_json()
    assert "host" not in plain and "awake" not in plain["gpus"][0]
    assert "residency" not in plain["instances"][0]


def sleeper(name: str, awake_gib: float, asleep_gib: float = 2.0) -> Sleeper:
    asleep = int(asleep_gib * GiB)
    return Sleeper(name, 0, int(awake_gib * GiB) + asleep, SleepFootprint(1, asleep, 0, 0, 0, 0))


def test_room_need_is_every_residue_and_the_largest_awake() -> None:
    group = [sleeper("a", 50), sleeper("b", 40), sleeper("c", 30)]
    assert room_need(group, None) == 6 * GiB + 50 * GiB
    assert room_need(group, 1) == 6 * GiB + 50 * GiB
    assert room_need(group, 2) == 6 * GiB + 90 * GiB


def test_maximal_sets_lists_each_largest_set_once_and_stops_at_the_limit() -> None:
    group = [sleeper("a", 50), sleeper("b", 40), sleeper("c", 30), sleeper("d", 20)]
    assert maximal_sets(group, 90 * GiB, None) == (
        [("b", "c", "d"), ("a", "b"), ("a", "c"), ("a", "d")],
        False,
    )
    assert maximal_sets(group, 90 * GiB, 1) == ([("a",), ("b",), ("c",), ("d",)], False)
    assert maximal_sets(group, 10 * GiB, None) == ([], False)
    many = [sleeper(f"m{i:02d}", 1) for i in range(20)]
    listed, more = maximal_sets(many, 10 * GiB, None, limit=5)
    assert more and len(listed) == 5 and all(len(names) == 10 for names in listed)


# --- with MIG (issue 14) and plan files (issue 15) ---------------------------------------------


def test_mig_auto_is_not_applied_to_a_profile_with_on_demand_models() -> None:
    """On-demand instances are not planned on slices: `mig: auto` leaves every GPU whole, with a
    note, and the plan is the one without MIG."""
    whole = plan_of(three())
    auto = plan_of(three().replace("gpus: H200", "gpus: [{gpu: H200, mig: auto}]"))
    assert not auto.uses_mig and auto.feasible
    assert any("mig: auto not applied" in n for n in auto.notes)
    assert [(i.name, i.argv) for i in auto.instances] == [(i.name, i.argv) for i in whole.instances]


def test_on_demand_models_are_left_out_of_a_plan_on_mig_slices() -> None:
    pinned = three().replace("gpus: H200", 'gpus: [{gpu: H200, mig: "4g.71gb:0,3g.71gb:4"}]')
    plan = plan_of(pinned)
    assert plan.uses_mig and not plan.feasible
    left_out = {u.name: u for u in plan.unplaced}
    assert set(left_out) == {"llama", "qwen", "mistral"}
    assert all("not planned on MIG" in u.reason for u in left_out.values())
    assert [i.name for i in plan.instances] == ["small"]


def test_an_on_demand_plan_reads_back_from_its_json() -> None:
    import json

    plan = plan_of(three())
    assert plan.host is not None and any(i.swap is not None for i in plan.instances)
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_preflight_free_memory_is_the_gpus_schedule_not_every_instance_awake() -> None:
    """up's pre-flight asks for the GPU's planned peak (residents + residues + the largest awake
    set), which the swap manager keeps to; the sum of every awake footprint is more than the GPU
    (the H200 run of bench/gpu/run_on_demand.sh stopped there: 'needs 209.82 GiB')."""
    from gpushare.devices.base import Gpu
    from gpushare.devices.static import StaticInventory
    from gpushare.runtime.launcher.preflight import check_gpu_memory

    plan = Plan.from_json(plan_of(Path("profiles/on-demand.yaml").read_text()).to_json())
    (gpu,) = plan.gpus
    every_awake = sum(i.planned_bytes for i in plan.instances)
    assert gpu.planned_bytes < gpu.cuda_total_bytes < every_awake
    free = gpu.planned_bytes + GiB
    h200 = Gpu(0, gpu.name, gpu.total_bytes, used_bytes=gpu.total_bytes - free, free_bytes=free)
    assert check_gpu_memory(plan, StaticInventory([h200])) == []
    short = Gpu(0, gpu.name, gpu.total_bytes, used_bytes=gpu.total_bytes - gpu.planned_bytes + GiB,
                free_bytes=gpu.planned_bytes - GiB)  # fmt: skip
    (problem,) = check_gpu_memory(plan, StaticInventory([short]))
    assert problem.startswith(f"GPU 0 ({gpu.name}): the plan needs ")
