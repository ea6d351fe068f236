"""`up` onto MIG slices, through the fake runner and a fake NVML: each instance gets its slice's MIG
UUID and a fixed KV size in its argv, slices still to create are bound to the devices there (same
profile, same start first), and a GPU whose devices differ from the plan starts nothing."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpushare.cli.launch as launch_cli
from gpushare.cli import app
from gpushare.devices.base import Gpu, GpuInventory
from gpushare.devices.nvml import NvmlInventory
from gpushare.devices.static import StaticInventory
from gpushare.errors import EnvironmentProblem
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import Plan
from gpushare.profile import parse_profile_text
from gpushare.runtime.host.clock import FakeClock
from gpushare.runtime.host.mps import FakeMpsControl
from gpushare.runtime.host.probe import FakeProber
from gpushare.runtime.host.processes import FakeProcess, FakeRunner
from gpushare.runtime.launcher.edges import Edges
from gpushare.runtime.launcher.up import UpOptions, up
from gpushare.runtime.store.state import profile_paths
from gpushare.units import GiB
from gpushare.vllm.command import VllmCommand

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "devices"))
from fake_pynvml import FakePynvml, h200_mig, mig_uuid  # noqa: E402

LOAD = plan_loader({})
MODELS = """\
models:
  - {name: chat, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192}
  - {name: small, model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192}
  - {name: tiny, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 4096}
"""
PINNED = 'gpus:\n  - {gpu: H200, mig: "3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3"}\n'
AUTO = "gpus:\n  - {gpu: H200, mig: auto}\n"  # chooses 3g.71gb@4 + 2g.35gb@0 + 2g.35gb@2 here


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def nvml(*devices: object) -> NvmlInventory:
    return NvmlInventory(
        FakePynvml(list(devices)), name_of_pid=lambda pid: "python3", process_names=lambda: []
    )  # type: ignore[arg-type]


def plan_for(text: str, gpus: GpuInventory | None = None) -> Plan:
    profile = parse_profile_text("name: lab\n" + textwrap.dedent(text), "lab.yaml")
    return build_plan(profile, gpus if gpus is not None else profile.described_gpus() or [], load=LOAD)


class World:
    """The fake runner (every vllm spawn serves after one tick), fake prober, clock and MPS."""

    def __init__(self, inventory: GpuInventory | None, mps: bool = False) -> None:
        self.clock = FakeClock()
        self.runner = FakeRunner(self.clock.time, programs={"vllm": "/usr/bin/vllm"})
        self.prober = FakeProber()
        self.runner.behaviours["vllm"] = self._spawned
        self.edges = Edges(
            runner=self.runner,
            prober=self.prober,
            clock=self.clock,
            mps=FakeMpsControl(installed=mps),
            inventory=inventory,
            port_free=lambda port: True,
            base_env={"HF_HUB_OFFLINE": "1"},
        )

    def _spawned(self, runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        self.prober.healthy.add(int(proc.argv[proc.argv.index("--port") + 1]))

    def spawned(self) -> dict[str, FakeProcess]:
        return {VllmCommand.from_argv(p.argv).name_served() or "": p for p in self.runner.processes.values()}


@pytest.fixture
def cached_models(monkeypatch: pytest.MonkeyPatch) -> None:
    # pre-flight asks whether each model can be loaded; these tests are about the GPUs
    import gpushare.runtime.launcher.preflight as preflight

    monkeypatch.setattr(preflight, "check_model", lambda ref, env: None)


def start(plan: Plan, world: World, tmp_path: Path) -> None:
    up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))


@pytest.mark.usefixtures("cached_models")
@pytest.mark.parametrize(
    ("case_id", "text", "geometry", "expected"),
    [
        # the devices are where the plan put its slices: bound by profile and start
        (
            "pinned",
            PINNED,
            "3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3",
            {"chat": "3g.71gb@4", "small": "2g.35gb@0", "tiny": "1g.18gb@2"},
        ),
        (
            "auto",
            AUTO,
            "3g.71gb:4,2g.35gb:0,2g.35gb:2",
            {"chat": "3g.71gb@4", "small": "2g.35gb@0", "tiny": "2g.35gb@2"},
        ),
        # a profile the plan needs has no device on the GPU: refused, nothing starts
        ("auto-missing-profile", AUTO, "3g.71gb:0,2g.35gb:4,1g.35gb:6", None),
    ],
)
def test_up_binds_slices_to_devices_and_starts_each_on_its_uuid(
    tmp_path: Path, case_id: str, text: str, geometry: str, expected: dict[str, str] | None
) -> None:
    device = h200_mig(geometry)
    inventory = nvml(device)
    plan = plan_for(text + MODELS)
    assert plan.feasible and all(i.env["CUDA_VISIBLE_DEVICES"].startswith("MIG-<") for i in plan.instances)
    world = World(inventory)
    if expected is None:  # 2g.35gb@2 has no device of its profile: refused
        with pytest.raises(EnvironmentProblem, match=r"GPU 0's MIG devices .* are not the plan's"):
            start(plan, world, tmp_path)
        assert world.runner.processes == {}
        return
    start(plan, world, tmp_path)
    uuid_at = {f"{s.profile}@{s.start}": s.uuid for s in device.mig_slots if s is not None}
    spawned = world.spawned()
    assert set(spawned) == set(expected)
    for name, proc in spawned.items():
        planned = next(i for i in plan.instances if i.name == name)
        assert proc.env["CUDA_VISIBLE_DEVICES"] == uuid_at[expected[name]]
        assert "CUDA_DEVICE_ORDER" not in proc.env
        command = VllmCommand.from_argv(proc.argv)
        assert command.kv_cache_memory_bytes == planned.kv_cache_memory_bytes is not None
        assert command.max_num_seqs == 256 and command.max_num_batched_tokens == 2048


@pytest.mark.usefixtures("cached_models")
def test_same_profile_at_another_start_is_bound_when_the_planned_start_has_none(tmp_path: Path) -> None:
    # mig-parted creates GPU instances without choosing starts: 1g.18gb at 5 and 6 where the
    # plan wanted 4 and 5. The slice at 5 keeps its device; the one at 4 takes the device at 6.
    plan = plan_for('gpus:\n  - {gpu: H200, mig: "4g.71gb:0,1g.18gb:4,1g.18gb:5"}\n' + MODELS)
    planned_at = {i.name: i.mig_slice.label for i in plan.instances if i.mig_slice is not None}
    assert sorted(planned_at.values()) == ["1g.18gb@4", "1g.18gb@5", "4g.71gb@0"]
    device = h200_mig("4g.71gb:0,1g.18gb:5,1g.18gb:6")
    world = World(nvml(device))
    start(plan, world, tmp_path)
    uuid_at = {f"{s.profile}@{s.start}": s.uuid for s in device.mig_slots if s is not None}
    bound = {"4g.71gb@0": "4g.71gb@0", "1g.18gb@5": "1g.18gb@5", "1g.18gb@4": "1g.18gb@6"}
    for name, proc in world.spawned().items():
        assert proc.env["CUDA_VISIBLE_DEVICES"] == uuid_at[bound[planned_at[name]]], name


@pytest.mark.usefixtures("cached_models")
def test_plan_onto_existing_devices_keeps_their_uuids_and_runs_without_mps(tmp_path: Path) -> None:
    inventory = nvml(h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3"))
    profile = parse_profile_text("name: lab\ngpus: auto\ndefaults: {mps: on}\n" + MODELS, "lab.yaml")
    plan = build_plan(profile, inventory, load=LOAD)
    assert plan.gpus[0].mig == "devices"
    world = World(inventory, mps=True)
    start(plan, world, tmp_path)
    for name, proc in world.spawned().items():
        planned = next(i for i in plan.instances if i.name == name)
        assert planned.mig_slice is not None and planned.mig_slice.uuid is not None
        assert proc.env["CUDA_VISIBLE_DEVICES"] == planned.mig_slice.uuid
        assert "CUDA_MPS_PIPE_DIRECTORY" not in proc.env
    assert world.edges.mps.running(profile_paths("lab", tmp_path / "state").mps_pipe_dir) is False


@pytest.mark.usefixtures("cached_models")
@pytest.mark.parametrize(
    ("case_id", "gpus", "message"),
    [
        (
            "mig-off",
            [Gpu(0, "NVIDIA H200", 150_754_820_096)],
            r"GPU 0 \(NVIDIA H200\) has MIG mode off; the plan needs",
        ),
        ("no-gpu", [], "GPU 0 is in the plan .* but not on this machine"),
        (
            "other-geometry",
            None,
            r"GPU 0's MIG devices \(4g.71gb@0, 3g.71gb@4\) are not the plan's .*: nothing for",
        ),
        (
            "busy-slice",
            "busy",
            r"MIG device MIG-\S+ \(3g.71gb@4\): the plan needs .* only .* is free \(held by pid 77",
        ),
    ],
)
def test_up_refuses_before_starting_anything(
    tmp_path: Path, case_id: str, gpus: list[Gpu] | str | None, message: str
) -> None:
    plan = plan_for(PINNED + MODELS)
    if gpus is None:
        inventory: GpuInventory = nvml(h200_mig("4g.71gb:0,3g.71gb:4"))
    elif gpus == "busy":
        device = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
        three = next(s for s in device.mig_slots if s is not None and s.profile == "3g.71gb")
        three.used, three.processes = 40 * GiB, [(77, 40 * GiB)]
        inventory = nvml(device)
    else:
        assert isinstance(gpus, list)
        inventory = StaticInventory(gpus)
    world = World(inventory)
    with pytest.raises(EnvironmentProblem, match=message) as caught:
        start(plan, world, tmp_path)
    assert "\n" not in caught.value.message
    assert world.runner.processes == {}


def test_up_without_nvml_refuses_a_mig_plan(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="NVML cannot be read here"):
        start(plan_for(PINNED + MODELS), World(None), tmp_path)


@pytest.mark.usefixtures("cached_models")
def test_gpushare_up_onto_slices_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a user runs: the profile pins a geometry, the admin created it, `gpushare up` starts.
    device = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    inventory = nvml(device)
    world = World(inventory)
    monkeypatch.setattr(launch_cli, "inventory_factory", lambda: inventory)
    monkeypatch.setattr(launch_cli, "edges_factory", lambda inv: world.edges)
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab\n" + PINNED + MODELS)
    monkeypatch.setattr(
        launch_cli,
        "plan_factory",
        lambda p, inv: build_plan(parse_profile_text(p.read_text(), str(p)), inv, load=LOAD),
    )
    result = CliRunner().invoke(app, ["up", str(path), "--no-gateway", "--timeout", "30"])
    assert result.exit_code == 0, result.output
    envs = {name: p.env["CUDA_VISIBLE_DEVICES"] for name, p in world.spawned().items()}
    assert envs == {"chat": mig_uuid(0, 3), "small": mig_uuid(0, 0), "tiny": mig_uuid(0, 1)}
    assert all("--kv-cache-memory-bytes" in p.argv for p in world.runner.processes.values())


@pytest.mark.usefixtures("cached_models")
def test_up_plan_file_of_a_mig_plan_binds_its_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `gpushare plan --json > plan.json` on a machine, `gpushare up --plan-file plan.json` later:
    # the file keeps each slice (profile, start) and the GPU's geometry, so up binds the same devices.
    device = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    inventory = nvml(device)
    world = World(inventory)
    monkeypatch.setattr(launch_cli, "inventory_factory", lambda: inventory)
    monkeypatch.setattr(launch_cli, "edges_factory", lambda inv: world.edges)
    plan = plan_for(PINNED + MODELS)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_json(), indent=2))
    result = CliRunner().invoke(app, ["up", "--plan-file", str(plan_file), "--no-gateway", "--timeout", "30"])
    assert result.exit_code == 0, result.output
    envs = {name: p.env["CUDA_VISIBLE_DEVICES"] for name, p in world.spawned().items()}
    assert envs == {"chat": mig_uuid(0, 3), "small": mig_uuid(0, 0), "tiny": mig_uuid(0, 1)}
    for name, proc in world.spawned().items():
        planned = next(i for i in plan.instances if i.name == name)
        assert VllmCommand.from_argv(proc.argv) == planned.command


@pytest.mark.usefixtures("cached_models")
def test_a_device_the_plan_was_made_onto_that_is_gone_is_never_replaced(tmp_path: Path) -> None:
    before = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    profile = parse_profile_text("name: lab\ngpus: auto\n" + MODELS, "lab.yaml")
    plan = build_plan(profile, nvml(before), load=LOAD)
    after = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3", index=0)
    for slot in after.mig_slots:
        assert slot is not None
        slot.uuid = slot.uuid.replace("MIG-0", "MIG-9")  # recreated: same geometry, new UUIDs
    with pytest.raises(EnvironmentProblem, match="are not the plan's"):
        start(plan, World(nvml(after)), tmp_path)


@pytest.mark.usefixtures("cached_models")
def test_actual_memory_of_an_instance_on_a_slice_is_read_from_its_mig_device(tmp_path: Path) -> None:
    device = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3")
    plan = plan_for(PINNED + MODELS)
    world = World(nvml(device))

    def serving(runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        world.prober.healthy.add(int(proc.argv[proc.argv.index("--port") + 1]))
        slot = next(
            s for s in device.mig_slots if s is not None and s.uuid == proc.env["CUDA_VISIBLE_DEVICES"]
        )
        slot.processes = [(pid * 10 + 1, 5 * GiB)]  # the fake runner's child pid holds the memory

    world.runner.behaviours["vllm"] = serving
    up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    from gpushare.runtime.store.state import load_state

    state = load_state(profile_paths("lab", tmp_path / "state"))
    assert state is not None
    assert {r.name: r.actual["process_bytes"] for r in state.instances} == {
        name: {"0": 5 * GiB} for name in ("chat", "small", "tiny")
    }
