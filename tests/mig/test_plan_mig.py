"""build_plan with MIG: onto existing MIG devices, a pinned geometry, and `mig: auto`; what each
instance gets (its slice's UUID, a fixed KV size, batching limits), what does not fit and why,
and the commands and mig-parted config of a geometry to create. GPUs are described (no NVML)."""

from __future__ import annotations

import json
import math
import shlex
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mig_parted_spec import spec_problems as mig_parted_problems
from typer.testing import CliRunner

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.catalog.mig import lookup_mig_table
from gpushare.cli import app
from gpushare.devices.base import Gpu, GpuProcess, MigDevice
from gpushare.devices.static import StaticInventory
from gpushare.estimate_job import ModelFacts
from gpushare.mig.emit import cgi_command
from gpushare.mig.geometry import geometry_problems, parse_geometry
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.profile import Profile, ProfileValidationError, parse_profile_text
from gpushare.units import GiB, MiB
from gpushare.vllm.command import VllmCommand

ROOT = Path(__file__).resolve().parents[2]
MIG_FIXTURE = ROOT / "tests" / "fixtures" / "gpus" / "nvidia_H200_mig_3g_2g_1g_1g.json"
H200 = lookup_mig_table("H200")
FACTS: dict[str, ModelFacts] = {}
LOAD = plan_loader(FACTS)
SMALL = "Qwen/Qwen2.5-1.5B-Instruct"
TINY = "Qwen/Qwen2.5-0.5B-Instruct"
SEVEN = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def profile_of(text: str) -> Profile:
    return parse_profile_text("name: lab\n" + textwrap.dedent(text).lstrip("\n"), "lab.yaml")


def plan_of(text: str, gpus: str | list[Gpu] | None = None, **options: Any) -> Plan:
    profile = profile_of(text)
    if isinstance(gpus, str):
        listed = parse_gpu_spec(gpus)
    elif gpus is None:
        listed = profile.described_gpus() or []
    else:
        listed = gpus
    return build_plan(profile, listed, load=LOAD, **options)


def mig_gpus() -> list[Gpu]:
    return StaticInventory.from_json_file(MIG_FIXTURE).gpus()


def models(*entries: tuple[str, str, int]) -> str:
    """`models:` YAML for (name, model, max_model_len) entries."""
    lines = [f"  - {{name: {n}, model: {m}, max_model_len: {length}}}" for n, m, length in entries]
    return "models:\n" + "\n".join(lines) + "\n"


THREE = models(("chat", SEVEN, 8192), ("small", SMALL, 8192), ("tiny", TINY, 4096))


def by_name(plan: Plan) -> dict[str, PlannedInstance]:
    return {i.name: i for i in plan.instances}


def command(inst: PlannedInstance) -> VllmCommand:
    return VllmCommand.from_argv(inst.argv)


# --- onto the MIG devices a GPU has -----------------------------------------------------------


def test_existing_devices_each_instance_on_its_own_slice() -> None:
    gpus = mig_gpus()
    plan = plan_of(THREE, gpus)
    assert plan.feasible, plan.unplaced
    devices = {d.uuid: d for d in gpus[0].mig_devices}
    [gpu] = plan.gpus
    assert gpu.mig == "devices"
    assert [s.label for s in gpu.mig_slices] == ["2g.35gb@0", "1g.18gb@2", "1g.18gb@3", "3g.71gb@4"]
    seen: set[str] = set()
    for inst in plan.instances:
        s = inst.mig_slice
        assert s is not None and s.uuid is not None
        device = devices[s.uuid]
        assert inst.env["CUDA_VISIBLE_DEVICES"] == s.uuid  # the MIG UUID, nothing else
        assert "CUDA_DEVICE_ORDER" not in inst.env
        assert inst.gpus == (0,)
        assert s.uuid not in seen  # one instance per slice
        seen.add(s.uuid)
        cmd = command(inst)
        assert cmd.kv_cache_memory_bytes == inst.kv_cache_memory_bytes and inst.kv_fixed
        # batching written out: vLLM's defaults for the slice's memory (< 70 GiB: 2048 and 256)
        assert (cmd.max_num_batched_tokens, cmd.max_num_seqs) == (2048, 256)
        # the slice is the bin: its own NVML memory less the 10% reserve, no driver reservation
        usable = math.floor(device.total_bytes * 0.9)
        assert inst.planned_bytes <= usable
        assert inst.planned_bytes > usable - 64 * MiB  # what is left goes to its KV cache
        # vLLM's start check on the slice: utilization × the slice's memory fits in it
        assert math.ceil(inst.gpu_memory_utilization * device.total_bytes) <= device.total_bytes
    assert by_name(plan)["chat"].mig_slice.label == "3g.71gb@4"  # type: ignore[union-attr]
    idle = [s for s in gpu.mig_slices if not s.instances]
    assert len(idle) == 1 and idle[0].profile == "1g.18gb"
    assert plan.mig_setup is None  # nothing to create
    assert plan.mps == "off"  # slices are not shared


def test_slice_need_uses_the_slices_batching_not_the_whole_h200s() -> None:
    whole = plan_of(models(("small", SMALL, 8192)), "H200")
    sliced = plan_of(models(("small", SMALL, 8192)), mig_gpus())
    assert command(whole.instances[0]).max_num_seqs is None  # left to vLLM: 1024 on a whole H200
    assert whole.instances[0].estimate is not None and sliced.instances[0].estimate is not None
    assert whole.instances[0].estimate.max_num_seqs == 1024
    assert sliced.instances[0].estimate.max_num_seqs == 256


def test_a_foreign_process_on_a_slice_takes_its_memory() -> None:
    [gpu] = mig_gpus()
    busy = [
        replace(d, used_bytes=30 * GiB, processes=(GpuProcess(4242, 30 * GiB, "python3"),))
        if d.profile == "3g.71gb"
        else d
        for d in gpu.mig_devices
    ]
    plan = plan_of(THREE, [replace(gpu, mig_devices=tuple(busy))])
    three_g = next(s for s in plan.gpus[0].mig_slices if s.profile == "3g.71gb")
    assert three_g.usable_bytes == math.floor(71424 * MiB * 0.9) - 30 * GiB
    assert three_g.other_processes_bytes == 30 * GiB
    for inst in plan.instances:
        assert inst.mig_slice is not None
        if inst.mig_slice.profile == "3g.71gb":
            assert inst.planned_bytes <= three_g.usable_bytes


def test_more_models_than_slices_one_is_left_out_and_says_why() -> None:
    five = models(*[(f"m{i}", TINY, 2048) for i in range(5)])
    plan = plan_of(five, mig_gpus())
    assert not plan.feasible
    [left] = plan.unplaced
    assert "every MIG slice that holds it runs another model (one instance per slice)" in left.reason
    assert any("higher priority" in s for s in left.suggestions)


def test_a_pin_to_a_mig_gpu_pins_to_its_slices() -> None:
    spec = parse_gpu_spec("H100")[0]
    gpus = [replace(spec, index=0), replace(mig_gpus()[0], index=1)]
    text = f"models:\n  - {{name: a, model: {TINY}, max_model_len: 4096, gpus: [1]}}\n"
    plan = plan_of(text, gpus)
    [inst] = plan.instances
    assert inst.gpus == (1,) and inst.mig_slice is not None and inst.mig_slice.gpu == 1


def test_unknown_starts_are_planned_and_reported_as_unknown() -> None:
    [gpu] = mig_gpus()
    hidden = tuple(replace(d, start=None, gpu_instance_id=None) for d in gpu.mig_devices)
    plan = plan_of(THREE, [replace(gpu, mig_devices=hidden)])
    assert plan.feasible
    assert all(s.start is None for s in plan.gpus[0].mig_slices)
    data = plan.to_json()
    assert all(s["start"] is None for s in data["gpus"][0]["mig_slices"])


def test_mig_on_without_devices_and_mig_off_on_a_mig_gpu_are_notes_not_silent_gpus() -> None:
    [gpu] = mig_gpus()
    empty = plan_of(THREE, [replace(gpu, mig_devices=())])
    assert not empty.feasible and any("no MIG devices" in n for n in empty.notes)
    off = plan_of(THREE, [gpu], mig="off")
    assert not off.feasible
    assert "cannot run there until an admin turns MIG off" in off.unplaced[0].reason


def test_compute_instance_sharing_a_gpu_instance_is_left_out() -> None:
    [gpu] = mig_gpus()
    first = gpu.mig_devices[0]
    twin = MigDevice(
        "MIG-twin", first.profile, first.start, first.total_bytes, gpu_instance_id=first.gpu_instance_id
    )
    plan = plan_of(models(("a", TINY, 2048)), [replace(gpu, mig_devices=(*gpu.mig_devices, twin))])
    assert any("shares GPU instance" in n for n in plan.notes)
    assert len(plan.gpus[0].mig_slices) == 4


# --- a pinned geometry -------------------------------------------------------------------------


PINNED = """\
gpus:
  - {gpu: H200, mig: "3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3"}
"""


def test_pinned_geometry_plans_onto_its_slices_and_prints_what_creates_them() -> None:
    plan = plan_of(PINNED + THREE)
    assert plan.feasible
    [gpu] = plan.gpus
    assert gpu.mig == "pinned"
    assert [s.label for s in gpu.mig_slices] == ["2g.35gb@0", "1g.18gb@2", "1g.18gb@3", "3g.71gb@4"]
    assert all(s.uuid is None for s in gpu.mig_slices)  # to create
    for inst in plan.instances:
        assert inst.mig_slice is not None
        assert inst.env["CUDA_VISIBLE_DEVICES"] == f"MIG-<gpu0:{inst.mig_slice.label}>"
    # a catalog slice holds the smallest memory seen for its profile
    three = next(s for s in gpu.mig_slices if s.profile == "3g.71gb")
    assert three.memory_bytes == H200.profile("3g.71gb").memory_bytes
    setup = plan.mig_setup
    assert setup is not None
    geometry = parse_geometry(H200, "3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    assert setup.commands == ("nvidia-smi -i 0 -mig 1", cgi_command(0, geometry))
    assert setup.commands[1] == "nvidia-smi mig -i 0 -cgi 9:4,14:0,19:2,19:3 -C"
    assert setup.mig_parted == {
        "version": "v1",
        "mig-configs": {
            "gpushare-lab": [
                {
                    "devices": [0],
                    "mig-enabled": True,
                    "mig-devices": {"3g.71gb": 1, "2g.35gb": 1, "1g.18gb": 2},
                }
            ]
        },
    }
    assert mig_parted_problems(setup.mig_parted) == []


def test_pinned_geometry_that_cannot_hold_a_model_says_which_profile_would() -> None:
    text = 'gpus:\n  - {gpu: H200, mig: "1g.18gb:0,1g.18gb:1"}\n' + models(("chat", SEVEN, 32768))
    plan = plan_of(text)
    assert not plan.feasible
    [left] = plan.unplaced
    assert left.reason.startswith("needs ")
    assert (
        "the largest MIG slice it may use, GPU 0's 1g.18gb@0, has 14.40 GiB usable; short by" in left.reason
    )
    assert left.short_by_bytes == left.need_bytes - math.floor(16 * GiB * 0.9)
    assert left.suggestions[0].startswith("a 2g.35gb slice") or left.suggestions[0].startswith(
        "a 1g.35gb slice"
    )
    assert "pin a geometry with one" in left.suggestions[0]


def test_no_slice_holds_it_says_whole_gpu() -> None:
    text = 'gpus:\n  - {gpu: H200, mig: "4g.71gb:0,3g.71gb:4"}\n' + models(
        ("huge", "Qwen/Qwen2.5-72B-Instruct", 4096)
    )
    [left] = plan_of(text).unplaced
    assert left.suggestions[0] == "no MIG slice of h200-141gb holds it: run it on a whole GPU (`mig: off`)"


def test_tensor_parallel_goes_to_whole_gpus_never_across_slices() -> None:
    text = (
        'gpus:\n  - {gpu: H200, mig: "4g.71gb:0,3g.71gb:4"}\n  - 2xH100\n'
        + models(("tiny", TINY, 2048))
        + f"  - {{name: tp, model: {SEVEN}, max_model_len: 4096, tensor_parallel_size: 2}}\n"
    )
    plan = plan_of(text)
    assert plan.feasible, plan.unplaced
    tp = by_name(plan)["tp"]
    assert tp.gpus == (1, 2) and tp.mig_slice is None
    assert "tiny" in by_name(plan)  # on an H100 beside it: fewer GPUs than on a slice
    only_mig = 'gpus:\n  - {gpu: 2xH200, mig: "4g.71gb:0,3g.71gb:4"}\n' + (
        f"models:\n  - {{name: tp, model: {SEVEN}, max_model_len: 4096, tensor_parallel_size: 2}}\n"
    )
    [left] = plan_of(only_mig).unplaced
    assert "no NCCL across slices" in left.reason
    assert left.suggestions == ("set `mig: off` on 2 GPUs for it, or lower tensor_parallel_size to 1",)


# --- mig: auto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "text", "geometry"),
    [
        # leftover compute slices come after GPUs used: two models get 4g + 3g, not two 1g
        ("two", models(("a", SMALL, 8192), ("b", TINY, 4096)), "4g.71gb@0 + 3g.71gb@4"),
        ("three", THREE, "2g.35gb@0 + 2g.35gb@2 + 3g.71gb@4"),
        (
            "seven",
            models(*[(f"m{i}", TINY, 2048) for i in range(7)]),
            " + ".join(f"1g.18gb@{i}" for i in range(6)) + " + 1g.35gb@6",
        ),
    ],
)
def test_auto_chooses_a_legal_geometry(case_id: str, text: str, geometry: str) -> None:
    plan = plan_of("gpus:\n  - {gpu: H200, mig: auto}\n" + text)
    assert plan.feasible, plan.unplaced
    [gpu] = plan.gpus
    assert gpu.mig == "auto"
    assert " + ".join(s.label for s in gpu.mig_slices) == geometry
    slices = [parse_geometry(H200, f"{s.profile}:{s.start}").slices[0] for s in gpu.mig_slices]
    assert geometry_problems(H200, slices) == []
    assert all(len(s.instances) == 1 for s in gpu.mig_slices)
    assert plan.mig_setup is not None and mig_parted_problems(plan.mig_setup.mig_parted) == []


def test_auto_runs_a_gpu_whole_when_slices_would_not_help() -> None:
    one = plan_of("gpus:\n  - {gpu: H200, mig: auto}\n" + models(("a", SMALL, 8192)))
    assert one.gpus[0].mig == "" and one.instances[0].mig_slice is None
    assert one.mig_setup is None
    assert any("runs whole" in n for n in one.notes)
    # eight models: at most 7 slices fit on a GPU; whole, the GPU holds them all
    eight = plan_of(
        "gpus:\n  - {gpu: H200, mig: auto}\n" + models(*[(f"m{i}", TINY, 2048) for i in range(8)])
    )
    assert eight.feasible and eight.gpus[0].mig == ""


def test_auto_with_two_gpus_uses_one_and_configures_the_other_whole() -> None:
    plan = plan_of("gpus:\n  - {gpu: 2xH200, mig: auto}\n" + THREE)
    assert plan.feasible
    assert [g.mig for g in plan.gpus] == ["auto", ""]
    assert not plan.gpus[1].instances
    assert plan.mig_setup is not None
    entries = plan.mig_setup.mig_parted["mig-configs"]["gpushare-lab"]
    assert entries[0]["devices"] == [0] and entries[0]["mig-enabled"]
    assert entries[1] == {"devices": [1], "mig-enabled": False}


def test_mig_override_auto_applies_to_mig_gpus_and_leaves_others_whole() -> None:
    plan = plan_of(THREE, "H200,L4", mig="auto")
    assert plan.gpus[0].mig == "auto" and plan.gpus[1].mig == ""


def test_auto_ignores_existing_devices_with_a_note() -> None:
    plan = plan_of(THREE, mig_gpus(), mig="auto")
    assert plan.gpus[0].mig == "auto"
    assert any("are not planned on" in n for n in plan.notes)
    assert plan.mig_setup is not None
    assert plan.mig_setup.commands[0].startswith("nvidia-smi mig -i 0 -cgi")  # MIG is on already


def test_measured_kv_sizing_is_fixed_on_slices() -> None:
    text = "defaults: {kv_sizing: measured}\n" + THREE
    plan = plan_of(text, mig_gpus())
    assert all(i.kv_fixed and i.kv_cache_memory_bytes for i in plan.instances)
    assert any("kv_sizing measured does not apply on MIG slices" in n for n in plan.notes)


def test_json_has_mig_keys_only_where_there_is_mig() -> None:
    plain = plan_of(THREE, "H200").to_json()
    assert "mig" not in plain
    assert all("mig_slices" not in g for g in plain["gpus"])
    assert all("mig_slice" not in i for i in plain["instances"])
    data = plan_of("gpus:\n  - {gpu: H200, mig: auto}\n" + THREE).to_json()
    [gpu] = data["gpus"]
    slice_keys = {"profile", "start", "memory_bytes", "uuid", "instances", "profile_id"}
    assert [set(s) for s in gpu["mig_slices"]] == [
        slice_keys | {"usable_bytes", "planned_bytes", "other_processes_bytes"}
    ] * 3
    assert all(set(i["mig_slice"]) == slice_keys for i in data["instances"])
    assert {i["name"]: i["mig_slice"]["profile"] for i in data["instances"]} == {
        "chat": "3g.71gb",
        "small": "2g.35gb",
        "tiny": "2g.35gb",
    }
    assert data["mig"]["commands"] == ["nvidia-smi -i 0 -mig 1", "nvidia-smi mig -i 0 -cgi 9:4,14:0,14:2 -C"]
    assert data["mig"]["mig_parted"]["version"] == "v1"


# --- the profile's mig field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "entry", "message"),
    [
        (
            "illegal-start",
            '{gpu: H200, mig: "3g.71gb:2"}',
            "gpus[0].mig: geometry on h200-141gb is not legal",
        ),
        ("unknown-profile", '{gpu: H200, mig: "3g.40gb"}', "h200-141gb has no MIG profile '3g.40gb'"),
        ("too-many", '{gpu: H200, mig: "4g.71gb,4g.71gb"}', "gpus[0].mig"),
        ("no-mig-gpu", "{gpu: L4, mig: auto}", "gpus[0].mig: l4-24gb (NVIDIA L4) has no MIG"),
        ("typo", "{gpu: H200, mgi: auto}", "gpus[0].mgi: unknown field 'mgi'; did you mean 'mig'?"),
        ("bad-spec", "{gpu: H2000, mig: auto}", "gpus[0].gpu: unknown GPU 'H2000'"),
        ("yaml-true", "{gpu: H200, mig: true}", "gpus[0].mig: write auto, off or a geometry"),
    ],
)
def test_bad_mig_settings_name_the_field(case_id: str, entry: str, message: str) -> None:
    with pytest.raises(ProfileValidationError) as caught:
        profile_of(f"gpus:\n  - {entry}\n" + THREE)
    assert message in str(caught.value)


def test_mig_settings_expand_over_a_counted_spec_and_yaml_off() -> None:
    profile = profile_of("gpus:\n  - H100\n  - {gpu: 2xH200, mig: auto}\n  - {gpu: H200, mig: off}\n" + THREE)
    assert profile.gpu_mig_settings() == {1: "auto", 2: "auto", 3: "off"}
    assert [g.name for g in profile.described_gpus() or []] == ["NVIDIA H100 80GB HBM3"] + ["NVIDIA H200"] * 3


# --- through the CLI ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cli_plan_mig_auto_prints_slices_commands_and_mig_parted(tmp_path: Path) -> None:
    path = write(tmp_path, THREE)
    result = CliRunner().invoke(
        app, ["plan", str(path), "--gpus", "H200", "--mig", "auto"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "a MIG geometry gpushare chose, 3 slice(s)" in out
    assert "slice 3g.71gb@4" in out and "(to create)" in out
    assert "nvidia-smi mig -i 0 -cgi 9:4,14:0,14:2 -C" in out
    assert "version: v1" in out and "gpushare-lab:" in out and "mig-devices: {3g.71gb: 1, 2g.35gb: 2}" in out
    assert "nvidia.com/mig.config=gpushare-lab" in out
    chat = next(line for line in out.splitlines() if "--served-model-name chat" in line)
    words = shlex.split(chat)
    assert words[0] == "CUDA_VISIBLE_DEVICES=MIG-<gpu0:3g.71gb@4>"
    assert "--kv-cache-memory-bytes" in words


def test_cli_check_pinned_geometry_too_small_is_exit_1_and_illegal_is_exit_2(tmp_path: Path) -> None:
    small = write(tmp_path, 'gpus:\n  - {gpu: H200, mig: "1g.18gb:0"}\n' + models(("chat", SEVEN, 32768)))
    result = CliRunner().invoke(app, ["check", str(small)])
    assert result.exit_code == 1, result.output
    assert "does not fit: chat: needs" in result.output and "slice" in result.output
    illegal = write(tmp_path, 'gpus:\n  - {gpu: H200, mig: "3g.71gb:1"}\n' + THREE, "illegal.yaml")
    result = CliRunner().invoke(app, ["check", str(illegal)])
    assert result.exit_code == 2
    assert "gpus[0].mig" in result.output and "may start only at 0, 4" in result.output
    json_result = CliRunner().invoke(app, ["check", str(small), "--format", "json"])
    data = json.loads(json_result.stdout)
    assert data["ok"] is False and data["gpus"][0]["mig"] == "pinned"


def test_cli_gpus_file_ignores_the_profiles_mig_settings(tmp_path: Path) -> None:
    path = write(tmp_path, PINNED + THREE)
    result = CliRunner().invoke(app, ["plan", str(path), "--gpus", str(MIG_FIXTURE), "--json"])
    assert result.exit_code == 0, result.output
    [gpu] = json.loads(result.stdout)["gpus"]
    assert gpu["mig"] == "devices"
