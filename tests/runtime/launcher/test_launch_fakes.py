"""Start order, MPS, NVML and recycled pids through the fakes (no process, no GPU, no waiting)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest
from launch_helpers import instance, numbered, plan_of

from gpushare.cli.render_launch import status_rows
from gpushare.devices.base import Gpu, GpuProcess
from gpushare.devices.static import StaticInventory
from gpushare.errors import DoesNotFitError, EnvironmentProblem, LaunchError
from gpushare.planning.plan import PlannedInstance
from gpushare.planning.start import next_to_start, start_groups
from gpushare.runtime.host.clock import FakeClock
from gpushare.runtime.host.mps import FakeMpsControl
from gpushare.runtime.host.probe import FakeProber
from gpushare.runtime.host.processes import FakeProcess, FakeRunner
from gpushare.runtime.launcher.down import down
from gpushare.runtime.launcher.edges import Edges
from gpushare.runtime.launcher.status import StatusReport, collect_status
from gpushare.runtime.launcher.up import InstanceFailedError, UpOptions, UpResult, up
from gpushare.runtime.phase import InstancePhase
from gpushare.runtime.store.service import ServiceInfo, write_info
from gpushare.runtime.store.state import load_state, profile_paths, save_state
from gpushare.units import GiB

VLLM = ["vllm", "serve"]


def _inst(
    name: str, gpus: tuple[int, ...], order: int, kv_fixed: bool, port: int, planned: int = 0
) -> PlannedInstance:
    argv = [*VLLM, "/models/m", "--port", str(port)]
    return instance(name, argv, port, gpus=gpus, start_order=order, kv_fixed=kv_fixed, planned_bytes=planned)


@pytest.mark.parametrize(
    ("case", "instances", "states", "expected"),
    [
        ("measured: first only", [("a", (0,), 0, False), ("b", (0,), 1, False)], {}, ["a"]),
        ("measured: waits", [("a", (0,), 0, False), ("b", (0,), 1, False)], {"a": "starting"}, []),
        ("measured: next", [("a", (0,), 0, False), ("b", (0,), 1, False)], {"a": "ready"}, ["b"]),
        ("measured: after failure", [("a", (0,), 0, False), ("b", (0,), 1, False)], {"a": "failed"}, ["b"]),
        ("order not list order", [("a", (0,), 1, False), ("b", (0,), 0, False)], {}, ["b"]),
        ("fixed: together", [("a", (0,), 0, True), ("b", (0,), 1, True)], {}, ["a", "b"]),
        ("one measured: sequential", [("a", (0,), 0, True), ("b", (0,), 1, False)], {}, ["a"]),
        ("two gpus in parallel", [("a", (0,), 0, False), ("b", (1,), 0, False)], {}, ["a", "b"]),
        (
            "tp instance joins gpus",
            [("a", (0,), 0, False), ("t", (0, 1), 1, False), ("b", (1,), 0, False)],
            {},
            ["a"],
        ),
        ("cpu group", [("a", (), 0, False), ("b", (), 1, False)], {}, ["a"]),
    ],
)
def test_start_order(
    case: str,
    instances: list[tuple[str, tuple[int, ...], int, bool]],
    states: dict[str, InstancePhase],
    expected: list[str],
) -> None:
    planned = numbered([_inst(n, g, o, k, 8000 + i) for i, (n, g, o, k) in enumerate(instances)])
    all_states: dict[str, InstancePhase] = {i.name: "pending" for i in planned}
    all_states.update(states)
    waiting = {n for n, s in all_states.items() if s == "pending"}
    settled = {n for n, s in all_states.items() if s in ("ready", "failed")}
    assert next_to_start(start_groups(planned), waiting, settled) == expected


def test_tp_instance_groups_its_gpus() -> None:
    planned = [_inst("a", (0,), 0, False, 1), _inst("t", (0, 1), 1, False, 2), _inst("b", (1,), 2, False, 3)]
    assert [[i.name for i in g] for g in start_groups(numbered(planned))] == [["a", "t", "b"]]


class World:
    """Fakes wired together: a spawned fake server becomes healthy `serve_after` sleeps later."""

    def __init__(
        self, tmp: Path, inventory: StaticInventory | None = None, mps: FakeMpsControl | None = None
    ):
        self.clock = FakeClock()
        self.runner = FakeRunner(self.clock.time, programs={"vllm": "/usr/bin/vllm"})
        self.prober = FakeProber()
        self.mps = mps or FakeMpsControl(installed=False)
        self.spawn_order: list[str] = []
        self.serve_after: dict[int, int] = {}
        self.countdown: dict[int, int] = {}
        self.runner.behaviours["vllm"] = self._spawned
        self.clock.on_sleep.append(self._tick)
        self.edges = Edges(
            runner=self.runner,
            prober=self.prober,
            clock=self.clock,
            mps=self.mps,
            inventory=inventory,
            port_free=lambda port: True,
            base_env={},
        )
        models = tmp / "models" / "m"
        models.mkdir(parents=True)
        (models / "config.json").write_text("{}")
        self.model_dir = models

    def _spawned(self, runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        port = int(proc.argv[proc.argv.index("--port") + 1])
        self.spawn_order.append(f"{port}@{self.clock.monotonic():.1f}")
        runner.write_log(pid, "INFO Starting to load model\n")
        self.countdown[port] = self.serve_after.get(port, 3)

    def _tick(self) -> None:
        for port in list(self.countdown):
            self.countdown[port] -= 1
            if self.countdown[port] <= 0:
                self.prober.healthy.add(port)
                del self.countdown[port]

    def inst(self, name: str, port: int, **kw: object) -> PlannedInstance:
        argv = ["vllm", "serve", str(self.model_dir), "--port", str(port)]
        return instance(name, argv, port, **kw)  # type: ignore[arg-type]


def test_measured_instances_on_one_gpu_start_one_after_another(tmp_path: Path) -> None:
    gpu = Gpu(0, "H100", 80 * GiB, used_bytes=1 * GiB, free_bytes=79 * GiB)
    world = World(tmp_path, inventory=StaticInventory([gpu]))
    plan = plan_of(
        world.inst("a", 8001, gpus=(0,), start_order=0, kv_fixed=False, planned_bytes=30 * GiB),
        world.inst("b", 8002, gpus=(0,), start_order=1, kv_fixed=False, planned_bytes=30 * GiB),
    )
    result = up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    assert result.ready == ("a", "b")
    # b spawned only once a answered its completion (3 ticks later)
    assert world.spawn_order == ["8001@0.0", "8002@3.0"]
    assert [p for p, _ in world.prober.completions] == [8001, 8002]


@pytest.mark.parametrize(
    ("case", "groups", "spawns"),
    [
        ("one group over two GPUs: one at a time", (0, 0), ["8001@0.0", "8002@3.0"]),
        ("a group each: together", (0, 1), ["8001@0.0", "8002@0.0"]),
    ],
)
def test_up_follows_the_plans_start_groups(
    tmp_path: Path, case: str, groups: tuple[int, int], spawns: list[str]
) -> None:
    # The plan's start_group decides, not the launcher's own reading of the GPUs: here both
    # instances have a GPU of their own.
    world = World(tmp_path)
    a, b = (
        dataclasses.replace(world.inst(n, port, gpus=(gpu,), start_order=0, kv_fixed=False), start_group=g)
        for n, port, gpu, g in (("a", 8001, 0, groups[0]), ("b", 8002, 1, groups[1]))
    )
    plan = dataclasses.replace(plan_of(), instances=(a, dataclasses.replace(b, start_order=1)))
    up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    assert world.spawn_order == spawns


def test_fixed_kv_instances_start_together(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan = plan_of(world.inst("a", 8001, kv_fixed=True), world.inst("b", 8002, kv_fixed=True))
    up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    assert world.spawn_order == ["8001@0.0", "8002@0.0"]


def test_preflight_gpu_memory_short_starts_nothing(tmp_path: Path) -> None:
    busy = Gpu(
        0, "H100", 80 * GiB, used_bytes=60 * GiB, free_bytes=20 * GiB, processes=(GpuProcess(77, 60 * GiB),)
    )
    world = World(tmp_path, inventory=StaticInventory([busy]))
    plan = plan_of(world.inst("a", 8001, gpus=(0,), planned_bytes=30 * GiB))
    with pytest.raises(
        EnvironmentProblem, match=r"GPU 0 \(H100\): the plan needs 30.00 GiB, only 20.00 GiB is free"
    ):
        up(plan, profile_paths("lab", tmp_path / "state"), world.edges)
    assert world.runner.processes == {}


def test_preflight_gpu_not_present(tmp_path: Path) -> None:
    world = World(tmp_path, inventory=StaticInventory([Gpu(0, "H100", 80 * GiB)]))
    plan = plan_of(world.inst("a", 8001, gpus=(3,), planned_bytes=GiB))
    with pytest.raises(EnvironmentProblem, match="GPU 3 is in the plan but not on this machine"):
        up(plan, profile_paths("lab", tmp_path / "state"), world.edges)


def test_nvml_actual_memory_recorded_per_gpu_from_the_session_pids(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan = plan_of(world.inst("a", 8001, gpus=(0,), planned_bytes=10 * GiB))
    # The fake runner numbers the first spawn 40001 and its child 400011 (vLLM's EngineCore holds the memory).
    gpu = Gpu(0, "H100", 80 * GiB, used_bytes=12 * GiB, free_bytes=68 * GiB)
    world.edges = Edges(**{**world.edges.__dict__, "inventory": StaticInventory([gpu])})
    holding = Gpu(0, "H100", 80 * GiB, used_bytes=12 * GiB, free_bytes=68 * GiB,
                  processes=(GpuProcess(400011, 11 * GiB), GpuProcess(999, GiB)))  # fmt: skip

    class Inventory:
        calls = 0

        def gpus(self) -> list[Gpu]:
            Inventory.calls += 1
            return [gpu if Inventory.calls == 1 else holding]  # empty at pre-flight, held once ready

        def mps_daemon_running(self) -> bool:
            return False

    world.edges = Edges(**{**world.edges.__dict__, "inventory": Inventory()})
    result = up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    assert result.state.instances[0].actual["process_bytes"] == {"0": 11 * GiB}
    report = collect_status(tmp_path / "state", world.edges)
    assert report.instances[0].actual_bytes == 11 * GiB
    assert [(g.index, g.free_bytes) for g in report.gpus] == [(0, 68 * GiB)]


def test_a_tp_instance_is_measured_per_gpu_and_per_worker(tmp_path: Path) -> None:
    """vLLM at --tensor-parallel-size 2: its engine core holds nothing, each worker holds its GPU's
    share. `up` records each GPU and each process; `status` reads each GPU against the per-GPU
    plan, never their sum."""
    world = World(tmp_path)
    spawned = world._spawned

    def with_workers(runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        spawned(runner, pid, proc)
        proc.add_member(pid, "VLLM::Worker_TP0")
        proc.add_member(pid, "VLLM::Worker_TP1")

    world.runner.behaviours["vllm"] = with_workers
    # the first spawn is 40001: its engine core 400011, workers 400012 and 400013
    held = [
        Gpu(0, "H200", 140 * GiB, used_bytes=46 * GiB, free_bytes=94 * GiB,
            processes=(GpuProcess(400012, 45 * GiB), GpuProcess(999, GiB))),
        Gpu(1, "H200", 140 * GiB, used_bytes=44 * GiB, free_bytes=96 * GiB,
            processes=(GpuProcess(400013, 44 * GiB),)),
    ]  # fmt: skip
    idle = [dataclasses.replace(g, used_bytes=0, free_bytes=140 * GiB, processes=()) for g in held]

    class Inventory:
        calls = 0

        def gpus(self) -> list[Gpu]:
            Inventory.calls += 1
            return idle if Inventory.calls == 1 else held  # empty at pre-flight, held once ready

        def mps_daemon_running(self) -> bool:
            return False

    world.edges = Edges(**{**world.edges.__dict__, "inventory": Inventory()})
    plan = plan_of(world.inst("t", 8001, gpus=(0, 1), planned_bytes=45 * GiB))
    result = up(plan, profile_paths("lab", tmp_path / "state"), world.edges, UpOptions(poll_s=1.0))
    actual = result.state.instances[0].actual
    assert actual["process_bytes"] == {"0": 45 * GiB, "1": 44 * GiB}
    assert actual["gpu_processes"] == [
        {"gpu": 0, "pid": 400012, "title": "VLLM::Worker_TP0", "bytes": 45 * GiB},
        {"gpu": 1, "pid": 400013, "title": "VLLM::Worker_TP1", "bytes": 44 * GiB},
    ]
    (status,) = collect_status(tmp_path / "state", world.edges).instances
    assert status.actual_bytes_per_gpu == {0: 45 * GiB, 1: 44 * GiB}
    assert status.actual_bytes == 45 * GiB  # against planned 45 GiB per GPU, not 89 summed
    row = status_rows(StatusReport((status,), (), ("lab",)))[0]
    assert row[7:9] == ("45.00 GiB each", "45.00 GiB / 44.00 GiB")


def test_mps_started_for_gpu_instances_and_stopped_at_down(tmp_path: Path) -> None:
    mps = FakeMpsControl(installed=True)
    world = World(tmp_path, mps=mps)
    plan = plan_of(
        world.inst("a", 8001, gpus=(0,), env={"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50"}), mps="auto"
    )
    paths = profile_paths("lab", tmp_path / "state")
    result = up(plan, paths, world.edges, UpOptions(poll_s=1.0))
    proc = next(iter(world.runner.processes.values()))
    assert proc.env == {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
        "CUDA_MPS_PIPE_DIRECTORY": str(paths.mps_pipe_dir),
        "CUDA_MPS_LOG_DIRECTORY": str(paths.mps_log_dir),
    }
    assert result.state.mps is not None and result.state.mps.started_by_us
    assert any("started an MPS daemon" in note for note in result.notes)
    assert down(paths, world.edges).mps_stopped
    assert mps.daemons == set()


def test_mps_daemon_we_did_not_start_is_left_running(tmp_path: Path) -> None:
    world = World(tmp_path, mps=FakeMpsControl(installed=True))
    paths = profile_paths("lab", tmp_path / "state")
    world.mps.daemons.add(str(paths.mps_pipe_dir))
    plan = plan_of(world.inst("a", 8001, gpus=(0,)), mps="on")
    result = up(plan, paths, world.edges, UpOptions(poll_s=1.0))
    assert result.state.mps is not None and not result.state.mps.started_by_us
    assert not down(paths, world.edges).mps_stopped
    assert world.mps.daemons == {str(paths.mps_pipe_dir)}


@pytest.mark.parametrize(
    ("case", "mode", "expect_error", "expect_note"),
    [
        ("on without mps", "on", "mps: on, but nvidia-cuda-mps-control is not installed", None),
        ("auto without mps", "auto", None, "instances time-share the GPU without MPS"),
    ],
)
def test_mps_missing(
    case: str, mode: str, expect_error: str | None, expect_note: str | None, tmp_path: Path
) -> None:
    world = World(tmp_path, mps=FakeMpsControl(installed=False))
    plan = plan_of(world.inst("a", 8001, gpus=(0,)), mps=mode)
    paths = profile_paths("lab", tmp_path / "state")
    if expect_error:
        with pytest.raises(EnvironmentProblem, match=expect_error):
            up(plan, paths, world.edges)
        return
    result = up(plan, paths, world.edges, UpOptions(poll_s=1.0))
    assert any(expect_note in n for n in result.notes if expect_note)
    assert world.mps.calls == []


def test_mps_start_failure_starts_no_instance(tmp_path: Path) -> None:
    world = World(tmp_path, mps=FakeMpsControl(installed=True, fail_start="exclusive mode required"))
    plan = plan_of(world.inst("a", 8001, gpus=(0,)), mps="on")
    with pytest.raises(EnvironmentProblem, match="exclusive mode required"):
        up(plan, profile_paths("lab", tmp_path / "state"), world.edges)
    assert world.runner.processes == {}


def test_down_never_signals_a_recycled_pid(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    (pid,) = world.runner.processes
    world.runner.recycle(pid)
    result = down(paths, world.edges)
    assert result.gone == ("a",)
    assert world.runner.processes[pid].signals == []


def test_down_sigterm_then_sigkill_on_fake_clock(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    (pid,) = world.runner.processes
    world.runner.processes[pid].ignore_sigterm = True
    before = world.clock.monotonic()
    down(paths, world.edges, timeout_s=10)
    assert world.runner.processes[pid].signals == [signal.SIGTERM, signal.SIGKILL]
    assert world.clock.monotonic() - before == pytest.approx(10, abs=0.5)


def test_down_names_what_even_sigkill_left(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    (pid,) = world.runner.processes
    world.runner.processes[pid].uninterruptible = True
    with pytest.raises(LaunchError, match="could not stop a even with SIGKILL") as info:
        down(paths, world.edges, timeout_s=1)
    assert "D state" in (info.value.hint or "")
    assert world.runner.processes[pid].signals == [signal.SIGTERM, signal.SIGKILL]


def test_spawn_failure_is_a_failed_instance(tmp_path: Path) -> None:
    world = World(tmp_path)

    def vanish(runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        runner.exit(pid, 127, log="exec: vllm: not found\n")

    world.runner.behaviours["vllm"] = vanish
    with pytest.raises(
        InstanceFailedError, match="a exited with code 127 before it served: exec: vllm: not found"
    ):
        up(plan_of(world.inst("a", 8001)), profile_paths("lab", tmp_path / "state"), world.edges)


def test_infeasible_plan_is_refused_before_anything(tmp_path: Path) -> None:
    world = World(tmp_path)
    plan = plan_of(world.inst("a", 8001))
    plan = type(plan)(**{**plan.__dict__, "feasible": False})
    with pytest.raises(DoesNotFitError):
        up(plan, profile_paths("lab", tmp_path / "state"), world.edges)
    assert load_state(profile_paths("lab", tmp_path / "state")) is None


def test_up_when_another_plan_of_the_profile_runs(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    other = world.inst("a", 8001)
    other = dataclasses.replace(other, argv=(*other.argv, "--max-model-len", "4096"))
    with pytest.raises(EnvironmentProblem, match=r"already runs a \(another command"):
        up(plan_of(other, world.inst("b", 8002)), paths, world.edges)
    assert len(world.runner.processes) == 1


def test_up_again_on_a_running_profile_adopts_and_starts_only_what_is_missing(tmp_path: Path) -> None:
    """issue 12: `up` on a fully ready profile exited 3 although the README called it a no-op."""
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    first = up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    assert first.adopted == () and not first.already_running
    again = up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    assert again.already_running and again.adopted == ("a",) and again.ready == ("a",)
    assert len(world.runner.processes) == 1  # nothing started
    state = load_state(paths)
    assert state is not None and state.instances[0].ready_at == first.state.instances[0].ready_at
    grown = up(
        plan_of(world.inst("a", 8001), world.inst("b", 8002)), paths, world.edges, UpOptions(poll_s=1.0)
    )
    assert grown.adopted == ("a",) and grown.ready == ("a", "b") and not grown.already_running
    assert len(world.runner.processes) == 2  # only b


def test_up_after_a_killed_up_adopts_the_orphans_and_waits_for_them(tmp_path: Path) -> None:
    """The instances a killed `up` left starting are waited for, not started twice nor refused."""
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    plan = plan_of(world.inst("a", 8001), world.inst("b", 8002))
    up(plan, paths, world.edges, UpOptions(poll_s=1.0))
    state = load_state(paths)
    assert state is not None
    # As a killed `up` leaves it: b still "starting" in the state file, and not answering yet.
    b = dataclasses.replace(state.instances[1], state="starting", ready_at=None)
    save_state(paths, dataclasses.replace(state.with_instance(b), up_pid=999999))
    world.prober.healthy.discard(8002)
    world.countdown[8002] = 2
    result = up(plan, paths, world.edges, UpOptions(poll_s=1.0))
    assert result.adopted == ("a", "b") and result.ready == ("a", "b")
    assert len(world.runner.processes) == 2
    after = load_state(paths)
    assert after is not None and [r.state for r in after.instances] == ["ready", "ready"]
    assert after.up_pid is None


def test_a_failure_beside_adopted_instances_stops_only_what_this_up_started(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))

    def crash(runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
        runner.exit(pid, 1, log="ValueError: boom\n")

    world.runner.behaviours["vllm"] = crash
    with pytest.raises(InstanceFailedError, match="b exited with code 1"):
        up(plan_of(world.inst("a", 8001), world.inst("b", 8002)), paths, world.edges, UpOptions(poll_s=1.0))
    a_pid = min(world.runner.processes)
    assert world.runner.processes[a_pid].alive and world.runner.processes[a_pid].signals == []


def test_a_busy_gateway_port_fails_the_preflight_before_anything_starts(tmp_path: Path) -> None:
    """issue 12: `up` started every instance, then the gateway could not listen."""
    world = World(tmp_path)
    world.edges = dataclasses.replace(world.edges, port_free=lambda port: port != 8000)
    paths = profile_paths("lab", tmp_path / "state")
    with pytest.raises(EnvironmentProblem, match="gateway: port 8000 is already in use"):
        up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(gateway_port=8000))
    assert world.runner.processes == {}
    # the profile's own gateway/supervisor on that port is no problem (up again, to re-adopt)
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))
    gateway = world.runner.spawn(["/usr/bin/python3"], {}, tmp_path / "gw.log")
    write_info(paths, ServiceInfo(gateway.pid, gateway.start_time, "127.0.0.1", 8000))
    again = up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(gateway_port=8000))
    assert again.already_running


def test_after_ready_failing_stops_what_this_up_started(tmp_path: Path) -> None:
    world = World(tmp_path)
    paths = profile_paths("lab", tmp_path / "state")
    up(plan_of(world.inst("a", 8001)), paths, world.edges, UpOptions(poll_s=1.0))

    def gateway_fails(result: UpResult) -> None:
        raise LaunchError("the gateway/supervisor exited at start (exit 3): address in use", hint="see log")

    plan = plan_of(world.inst("a", 8001), world.inst("b", 8002))
    with pytest.raises(LaunchError) as caught:
        up(plan, paths, world.edges, UpOptions(poll_s=1.0), after_ready=gateway_fails)
    assert caught.value.message == (
        "the gateway/supervisor exited at start (exit 3): address in use; stopped what this up started: b"
    )
    a, b = sorted(world.runner.processes)
    assert world.runner.processes[a].alive and not world.runner.processes[b].alive
    state = load_state(paths)
    assert state is not None and [r.state for r in state.instances] == ["ready", "stopped"]


@pytest.mark.parametrize(
    ("case", "where", "reason"),
    [
        (
            "taken-after-preflight",
            "foreign_ports",
            "port 8001 answers, but not from this instance's processes: another program holds it "
            "(`ss -ltnp 'sport = :8001'` names it)",
        ),
        (
            "shared-with-reuseport",
            "shared_ports",
            "another program listens on port 8001 beside this instance and may answer for it "
            "(`ss -ltnp 'sport = :8001'` names it)",
        ),
    ],
)
def test_a_foreign_listener_is_not_taken_for_the_instance(
    tmp_path: Path, case: str, where: str, reason: str
) -> None:
    """issue 10's finisher and issue 12's port hijack: between the pre-flight port check and the
    start another program could take the port, or listen beside the instance, and answer /health;
    `up` counted it as ours."""
    world = World(tmp_path)
    getattr(world.runner, where).add(8001)
    with pytest.raises(InstanceFailedError) as caught:
        up(plan_of(world.inst("a", 8001)), profile_paths("lab", tmp_path / "state"), world.edges)
    assert caught.value.failures[0].reason == reason


def test_a_stopped_instance_fails_up_at_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.runner.behaviours["vllm"] = lambda runner, pid, proc: setattr(proc, "stopped", True)
    with pytest.raises(InstanceFailedError, match=r"a is stopped \(T state"):
        up(plan_of(world.inst("a", 8001)), profile_paths("lab", tmp_path / "state"), world.edges)
    assert world.clock.slept < 1.0  # at once, and no SIGTERM grace for the stop either
