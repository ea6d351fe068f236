"""The supervisor on fakes: restarts with backoff, crash loops, health, memory alerts, re-adoption.

Fakes: the launcher's FakeClock/FakeRunner/FakeProber, an in-memory state file, a recording alert
sink. Each `tick` is one pass of the real loop; the clock only moves when the test moves it.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from gpushare.devices.base import Gpu, GpuProcess
from gpushare.runtime.host.clock import FakeClock
from gpushare.runtime.host.probe import FakeProber
from gpushare.runtime.host.processes import FakeMember, FakeProcess, FakeRunner
from gpushare.runtime.service.policy import SupervisorPolicy, backoff_delay
from gpushare.runtime.service.routes import RouteTable
from gpushare.runtime.service.supervisor import PORT_CHECK_S, Supervisor, base_url
from gpushare.runtime.service.supervisor_edges import MemoryStateStore, RecordingAlertSink
from gpushare.runtime.store.state import InstanceRecord, ProfileState
from gpushare.units import GiB
from gpushare.vllm.processes import is_vllm_process

VLLM = "/opt/vllm/bin/python"


@dataclass
class MutableInventory:
    gpu_list: list[Gpu] = field(default_factory=list)

    def gpus(self) -> list[Gpu]:
        return list(self.gpu_list)

    def mps_daemon_running(self) -> bool:
        return False


@dataclass
class Rig:
    sup: Supervisor
    clock: FakeClock
    runner: FakeRunner
    prober: FakeProber
    store: MemoryStateStore
    alerts: RecordingAlertSink
    routes: RouteTable
    inventory: MutableInventory

    def tick(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        asyncio.run(self.sup.tick())

    def rec(self, name: str) -> InstanceRecord:
        assert self.store.state is not None
        found = self.store.state.instance(name)
        assert found is not None
        return found

    def kill(self, name: str) -> None:
        self.runner.signal([self.rec(name).pid or 0], signal.SIGKILL)

    def spawns(self) -> int:
        return len(self.runner.processes)


def make_rig(
    tmp_path: Path, names: tuple[str, ...] = ("a", "b"), running: bool = True, **policy: object
) -> Rig:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    prober = FakeProber()
    records = []
    for i, name in enumerate(names):
        rec = InstanceRecord(
            name=name,
            model=f"org/{name}",
            port=8100 + i,
            argv=(VLLM, "-m", "vllm.entrypoints.openai.api_server", "--served-model-name", f"model-{name}"),
            env={},
            log_path=str(tmp_path / f"{name}.log"),
            planned_bytes=10 * GiB,
        )
        if running:
            spawned = runner.spawn(rec.argv, rec.env, Path(rec.log_path))
            rec = replace(rec, pid=spawned.pid, pid_start_time=spawned.start_time, state="ready")
            prober.healthy.add(rec.port)
        records.append(rec)
    store = MemoryStateStore(ProfileState("lab", tuple(records)))
    alerts = RecordingAlertSink()
    routes = RouteTable()
    inventory = MutableInventory()
    defaults: dict[str, object] = {"health_interval_s": 1.0, "memory_check_interval_s": 1.0}
    sup = Supervisor(
        store,
        runner,
        prober,
        clock,
        alerts,
        inventory=inventory,
        policy=SupervisorPolicy(**{**defaults, **policy}),
        routes=routes,
    )  # type: ignore[arg-type]
    return Rig(sup, clock, runner, prober, store, alerts, routes, inventory)


@pytest.mark.parametrize(
    ("case", "failures", "delay"),
    [("first", 1, 2.0), ("second", 2, 4.0), ("fifth", 5, 32.0), ("capped", 20, 300.0)],
)
def test_backoff_delay(case: str, failures: int, delay: float) -> None:
    assert backoff_delay(SupervisorPolicy(), failures) == delay


def test_adopts_running_instances_without_restarting(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    assert rig.spawns() == 2
    assert rig.sup.phase("a") == rig.sup.phase("b") == "ready"
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and upstream.available and upstream.base_url == "http://127.0.0.1:8100"


def test_exited_instance_restarts_with_exponential_backoff(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    delays = []
    for attempt in range(1, 4):
        rig.kill("a")
        rig.tick()
        assert rig.sup.phase("a") == "backoff"
        assert rig.sup.phase("b") == "ready"
        upstream = rig.routes.lookup("model-a")
        assert upstream is not None and not upstream.available
        assert upstream.retry_after_s >= 2
        assert rig.rec("a").state == "backoff"
        waited = 0.0
        spawns = rig.spawns()
        while rig.spawns() == spawns:
            rig.tick(0.5)
            waited += 0.5
        delays.append(waited)
        assert rig.sup.phase("a") == "starting"
        assert rig.rec("a").restarts == attempt
        rig.tick(1.0)  # health + completion ok -> ready
        assert rig.sup.phase("a") == "ready"
        assert rig.rec("a").state == "ready"
    assert delays == [2.0, 4.0, 8.0]
    assert rig.alerts.kinds() == ["restarted"] * 3


def test_crash_loop_gives_up_and_alerts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, crash_loop_restarts=3, crash_loop_window_s=600.0, backoff_initial_s=1.0)
    rig.runner.behaviours[VLLM] = lambda runner, pid, proc: runner.exit(pid, 1, log="boom\n")
    rig.tick()
    rig.kill("a")
    for _ in range(200):
        rig.tick(1.0)
        if rig.sup.phase("a") == "failed":
            break
    assert rig.sup.phase("a") == "failed"
    assert rig.rec("a").restarts == 3
    assert rig.rec("a").state == "failed"
    assert "crash loop" in (rig.rec("a").error or "")
    assert rig.alerts.kinds().count("crash_loop") == 1
    spawns = rig.spawns()
    rig.tick(1000.0)
    assert rig.spawns() == spawns  # given up for good
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and not upstream.available and upstream.state == "failed"


def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, stable_after_s=60.0)
    rig.tick()
    for _ in range(3):
        rig.kill("a")
        rig.tick()
        rig.tick(10.0)
        rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"
    rig.tick(61.0)
    rig.kill("a")
    rig.tick()
    spawns = rig.spawns()
    rig.tick(2.0)
    assert rig.spawns() == spawns + 1  # back to the first delay


def test_failed_health_checks_stop_then_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, unhealthy_after=3, stop_grace_s=10.0)
    rig.tick()
    pid = rig.rec("a").pid or 0
    rig.runner.processes[pid].ignore_sigterm = True
    rig.prober.healthy.discard(8100)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "unhealthy"
    upstream = rig.routes.lookup("model-a")
    # Not routed to while unhealthy (issue 12: requests hung on it); retry at the next check.
    assert upstream is not None and not upstream.available and upstream.retry_after_s == 1
    rig.tick(1.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "stopping"
    assert rig.runner.processes[pid].signals == [signal.SIGTERM]
    rig.tick(5.0)
    assert rig.sup.phase("a") == "stopping"
    rig.tick(6.0)
    assert signal.SIGKILL in rig.runner.processes[pid].signals
    rig.tick()
    assert rig.sup.phase("a") == "backoff"
    rig.prober.healthy.add(8100)
    rig.tick(2.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"
    assert rig.rec("a").pid != pid


def test_start_timeout_restarts(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, start_timeout_s=30.0)
    rig.tick()
    rig.kill("a")
    rig.prober.healthy.discard(8100)
    rig.tick()
    rig.tick(2.0)
    assert rig.sup.phase("a") == "starting"
    rig.tick(31.0)
    assert rig.sup.phase("a") == "stopping"


def test_health_ok_but_completion_failing_is_not_ready(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    rig.kill("a")
    rig.prober.completion_errors[8100] = "HTTP 500: EngineCore encountered an issue"
    rig.tick()
    rig.tick(2.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "starting"
    del rig.prober.completion_errors[8100]
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"


@pytest.mark.parametrize(("case", "restart_on_memory"), [("alert-only", False), ("restart", True)])
def test_memory_over_plan_alerts_once(tmp_path: Path, case: str, restart_on_memory: bool) -> None:
    rig = make_rig(tmp_path, memory_tolerance=0.1, restart_on_memory=restart_on_memory)
    rig.tick()
    pid = rig.rec("a").pid or 0
    engine = pid * 10 + 1  # FakeRunner's EngineCore child of the session
    procs = (GpuProcess(pid, 1 * GiB), GpuProcess(engine, 10 * GiB))
    rig.inventory.gpu_list = [Gpu(0, "H100", 80 * GiB, processes=procs)]
    rig.tick(1.0)  # 11 GiB <= 10 GiB * 1.1
    assert rig.sup.supervised_instances()[0].actual_bytes == {0: 11 * GiB}
    assert rig.alerts.kinds() == []
    procs = (GpuProcess(pid, 1 * GiB), GpuProcess(engine, 12 * GiB))
    rig.inventory.gpu_list = [Gpu(0, "H100", 80 * GiB, processes=procs)]
    rig.tick(1.0)
    rig.tick(1.0)
    assert rig.alerts.kinds() == ["memory_over_plan"]
    status = rig.sup.supervised_instances()[0]
    assert status.memory_over_plan and status.alerts == {"memory_over_plan": 1}
    assert rig.alerts.alerts[0].details["gpu"] == "0"
    assert rig.sup.phase("a") in (("stopping", "backoff") if restart_on_memory else ("ready",))


def test_readopts_after_supervisor_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.kill("b")  # b died while no supervisor ran
    fresh = Supervisor(
        rig.store, rig.runner, rig.prober, rig.clock, rig.alerts, policy=SupervisorPolicy(), routes=rig.routes
    )
    asyncio.run(fresh.tick())
    assert fresh.phase("a") == "ready"
    assert fresh.phase("b") == "starting"
    assert rig.spawns() == 3  # only b was started again
    assert rig.rec("b").restarts == 1


def test_busy_profile_postpones_restart(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    rig.kill("a")
    rig.tick()
    rig.store.busy = True
    rig.tick(5.0)
    assert rig.sup.phase("a") == "backoff"
    rig.store.busy = False
    rig.tick(1.0)
    assert rig.sup.phase("a") == "starting"


def test_instance_stopped_by_down_is_not_restarted(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    assert rig.store.state is not None
    rig.kill("a")
    rig.store.state = rig.store.state.with_instance(replace(rig.rec("a"), state="stopped"))
    rig.tick(10.0)
    assert rig.sup.phase("a") == "stopped"
    assert rig.spawns() == 2
    rig.store.state = rig.store.state.without_instances({"a"})
    rig.tick()
    assert rig.routes.lookup("model-a") is None
    assert [s.instance for s in rig.sup.supervised_instances()] == ["b"]


def test_restart_disabled_watches_only(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, restart=False)
    rig.tick()
    rig.kill("a")
    rig.tick(100.0)
    assert rig.sup.phase("a") == "failed"
    assert rig.spawns() == 2


@pytest.mark.parametrize(
    ("case", "argv", "url"),
    [
        ("default", (), "http://127.0.0.1:9000"),
        ("loopback", ("--host", "127.0.0.1"), "http://127.0.0.1:9000"),
        ("wildcard", ("--host", "0.0.0.0"), "http://127.0.0.1:9000"),
        ("specific", ("--host=10.0.0.5",), "http://10.0.0.5:9000"),
        ("localhost: vLLM's IPv4 socket, never ::1", ("--host", "localhost"), "http://127.0.0.1:9000"),
        ("ipv6", ("--host", "::1"), "http://[::1]:9000"),
        ("ipv6 wildcard", ("--host", "::"), "http://127.0.0.1:9000"),
        ("empty", ("--host", ""), "http://127.0.0.1:9000"),
        ("no value", ("--host",), "http://127.0.0.1:9000"),
        ("repeated: the last", ("--host", "10.0.0.5", "--host", "10.0.0.6"), "http://10.0.0.6:9000"),
        # vLLM's parser keeps the last --host: it listens everywhere, so loopback reaches it (the
        # old reader skipped the wildcard and asked 10.0.0.5, which reaches it too)
        ("a wildcard after a host", ("--host", "10.0.0.5", "--host", "0.0.0.0"), "http://127.0.0.1:9000"),
    ],
)
def test_base_url(case: str, argv: tuple[str, ...], url: str) -> None:
    rec = InstanceRecord(
        name="x", model="m", port=9000, argv=("vllm", "serve", "m", *argv), env={}, log_path="x"
    )
    assert base_url(rec) == url


def test_unhealthy_then_healthy_again_is_routed_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, unhealthy_after=3)
    rig.tick()
    rig.prober.healthy.discard(8100)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "unhealthy"
    rig.prober.healthy.add(8100)
    rig.tick(1.0)
    upstream = rig.routes.lookup("model-a")
    assert rig.sup.phase("a") == "ready" and upstream is not None and upstream.available


def test_a_stopped_process_is_unrouted_at_once_then_killed_without_grace(tmp_path: Path) -> None:
    """issue 12: `kill -STOP` of an instance hung clients ~40 s (detection, then a 30 s SIGTERM grace
    that a stopped process cannot act on)."""
    rig = make_rig(tmp_path, stopped_for_s=3.0, stop_grace_s=30.0, health_interval_s=5.0)
    rig.tick()
    pid = rig.rec("a").pid or 0
    rig.runner.signal([pid], signal.SIGSTOP)
    rig.tick(1.0)  # the next tick sees it stopped: no more requests for it
    assert rig.sup.phase("a") == "unhealthy"
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and not upstream.available
    rig.tick(1.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "unhealthy"
    rig.tick(1.0)  # stopped for 3 s: SIGKILL at once, no SIGTERM it would only hold
    assert rig.runner.processes[pid].signals == [signal.SIGSTOP, signal.SIGKILL]
    rig.tick()
    assert rig.sup.phase("a") == "backoff"
    assert rig.sup.phase("b") == "ready"


def test_a_process_continued_in_time_serves_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, stopped_for_s=3.0, health_interval_s=5.0)
    rig.tick()
    pid = rig.rec("a").pid or 0
    rig.runner.signal([pid], signal.SIGSTOP)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "unhealthy"
    rig.runner.signal([pid], signal.SIGCONT)
    rig.tick(1.0)  # probed at once, not at the next health interval
    assert rig.sup.phase("a") == "ready"
    assert rig.runner.processes[pid].signals == [signal.SIGSTOP, signal.SIGCONT]


@pytest.mark.parametrize(
    ("case", "silent", "signals"),
    [
        # no answer at all: its event loop does not run, it could not act on SIGTERM
        ("silent: SIGKILL at once", True, [signal.SIGKILL]),
        ("refused: SIGTERM first", False, [signal.SIGTERM]),
    ],
)
def test_grace_depends_on_whether_the_probes_got_an_answer(
    case: str, silent: bool, signals: list[int], tmp_path: Path
) -> None:
    rig = make_rig(tmp_path, unhealthy_after=3, stop_grace_s=30.0)
    rig.tick()
    pid = rig.rec("a").pid or 0
    rig.runner.processes[pid].ignore_sigterm = True
    rig.prober.healthy.discard(8100)
    if silent:
        rig.prober.silent.add(8100)
    for _ in range(3):
        rig.tick(1.0)
    assert rig.sup.phase("a") == "stopping"
    assert rig.runner.processes[pid].signals == signals


def test_retry_after_counts_down_a_start_from_its_last_measured_length(tmp_path: Path) -> None:
    """issue 12: Retry-After said 60 while ~19 s of a start were left."""
    rig = make_rig(tmp_path, expected_start_s=60.0, backoff_initial_s=2.0)
    assert rig.store.state is not None
    rig.store.state = rig.store.state.with_instance(replace(rig.rec("a"), last_start_s=20.0))
    rig.tick()
    rig.prober.healthy.discard(8100)
    rig.kill("a")
    rig.tick()
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and upstream.state == "backoff" and upstream.retry_after_s == 22
    rig.tick(2.0)  # restarted
    assert rig.sup.phase("a") == "starting"
    assert rig.routes.lookup("model-a").retry_after_s == 20  # type: ignore[union-attr]
    rig.tick(1.0)
    rig.tick(1.0)
    assert rig.routes.lookup("model-a").retry_after_s == 18  # type: ignore[union-attr]
    rig.prober.healthy.add(8100)
    rig.tick(10.0)
    assert rig.sup.phase("a") == "ready"
    assert rig.rec("a").last_start_s == 12.0  # measured: the next restart's Retry-After uses it
    # One without a measured start falls back on the policy's guess.
    rig.kill("b")
    rig.tick()
    assert rig.routes.lookup("model-b").retry_after_s == 62  # type: ignore[union-attr]


def test_a_foreign_listener_on_the_port_does_not_make_a_restart_ready(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.tick()
    rig.kill("a")
    rig.runner.foreign_ports.add(8100)  # another program took the port; it answers /health
    rig.tick()
    rig.tick(2.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "starting"
    rig.runner.foreign_ports.clear()
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"


def test_a_second_listener_on_a_serving_port_unroutes_it_without_a_restart(tmp_path: Path) -> None:
    """The port hijack on a ready instance: another program listens beside it (SO_REUSEPORT) and
    may answer for it. The gateway sends it nothing until the port is its own again; no restart."""
    rig = make_rig(tmp_path)
    rig.tick()
    assert rig.sup.phase("a") == "ready"
    spawns = rig.spawns()
    rig.runner.shared_ports.add(8100)
    rig.tick(PORT_CHECK_S)
    assert rig.sup.phase("a") == "unhealthy"
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and not upstream.available
    assert rig.alerts.kinds() == ["port_taken"]
    assert "another program listens on port 8100 beside this instance" in rig.alerts.alerts[0].message
    for _ in range(5):  # checked at every probe while taken: still one alert, never a restart
        rig.tick(1.0)
    assert rig.sup.phase("a") == "unhealthy" and rig.spawns() == spawns
    assert rig.alerts.kinds() == ["port_taken"]
    assert rig.sup.phase("b") == "ready"
    rig.runner.shared_ports.clear()
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"
    assert rig.routes.lookup("model-a").available  # type: ignore[union-attr]


def test_a_ready_record_adopted_on_a_port_it_does_not_own_is_never_routed(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.runner.foreign_ports.add(8101)  # b's process runs, but another program holds its port
    rig.tick()
    assert rig.sup.phase("b") == "unhealthy" and rig.sup.phase("a") == "ready"
    upstream = rig.routes.lookup("model-b")
    assert upstream is not None and not upstream.available
    assert rig.alerts.kinds() == ["port_taken"]
    assert rig.alerts.alerts[0].message.startswith(
        "port 8101 answers, but not from this instance's processes"
    )


# --- a tensor-parallel instance is one unit ------------------------------------------------------


def tp_workers(runner: FakeRunner, pid: int, proc: FakeProcess) -> None:
    """vLLM with --tensor-parallel-size 2: the engine core (every fake has it) and two workers, plus
    multiprocessing's resource tracker, which vLLM does not name."""
    proc.add_member(pid, "VLLM::Worker_TP0")
    proc.add_member(pid, "VLLM::Worker_TP1")
    proc.add_member(pid, "/usr/bin/python3 -B -c from multiprocessing.resource_tracker import main;main(32)")


def tp_rig(tmp_path: Path, **policy: object) -> Rig:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    runner.behaviours[VLLM] = tp_workers
    rig = make_rig(tmp_path, **policy)
    # the rig spawned a and b with the default runner: start them again on this one
    rig.runner, rig.sup.runner, rig.clock, rig.sup.clock = runner, runner, clock, clock
    assert rig.store.state is not None
    for rec in rig.store.state.instances:
        spawned = runner.spawn(rec.argv, rec.env, Path(rec.log_path))
        rig.store.state = rig.store.state.with_instance(
            replace(rec, pid=spawned.pid, pid_start_time=spawned.start_time)
        )
    return rig


def member_titled(rig: Rig, name: str, title: str) -> FakeMember:
    proc = rig.runner.processes[rig.rec(name).pid or 0]
    (member,) = [m for m in proc.members if m.title == title]
    return member


def test_a_dead_worker_stops_the_whole_session_and_restarts_it(tmp_path: Path) -> None:
    rig = tp_rig(tmp_path)
    rig.tick()
    assert rig.sup.phase("a") == rig.sup.phase("b") == "ready"
    leader = rig.rec("a").pid or 0
    proc = rig.runner.processes[leader]
    worker1 = member_titled(rig, "a", "VLLM::Worker_TP1")
    rig.runner.signal([worker1.pid], signal.SIGKILL)  # kill -9 of one TP worker; the rest runs on
    assert proc.alive
    rig.tick(1.0)
    assert rig.sup.phase("a") == "stopping"
    assert proc.signals == [signal.SIGTERM]
    assert all(m.signals == [signal.SIGTERM] for m in proc.members if m is not worker1)
    upstream = rig.routes.lookup("model-a")
    assert upstream is not None and not upstream.available and upstream.retry_after_s >= 1
    b = rig.runner.processes[rig.rec("b").pid or 0]
    assert b.alive and b.signals == [] and rig.sup.phase("b") == "ready"
    rig.tick(1.0)  # every process of the session is gone
    assert rig.sup.phase("a") == "backoff"
    assert rig.rec("a").error == f"its process VLLM::Worker_TP1 (pid {worker1.pid}) exited"
    rig.tick(2.0)
    assert rig.sup.phase("a") == "starting" and rig.rec("a").restarts == 1
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready"
    fresh = rig.runner.processes[rig.rec("a").pid or 0]
    assert fresh is not proc and len(fresh.members) == 4
    # the new incarnation's workers are the ones watched now
    rig.runner.signal([member_titled(rig, "a", "VLLM::Worker_TP0").pid], signal.SIGKILL)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "stopping"
    assert rig.rec("b").restarts == 0


def test_a_worker_that_ignores_sigterm_gets_sigkill_before_the_restart(tmp_path: Path) -> None:
    """A unit that lost a process gets the short grace (broken_stop_grace_s), not stop_grace_s:
    it cannot finish the requests it holds."""
    rig = tp_rig(tmp_path, stop_grace_s=30.0, broken_stop_grace_s=5.0)
    rig.tick()
    rig.runner.processes[rig.rec("a").pid or 0].orphans_outlive = True  # they outlive the API server
    member_titled(rig, "a", "VLLM::EngineCore").ignore_sigterm = True
    worker0 = member_titled(rig, "a", "VLLM::Worker_TP0")
    worker0.ignore_sigterm = True
    spawns = rig.spawns()
    rig.runner.signal([member_titled(rig, "a", "VLLM::Worker_TP1").pid], signal.SIGKILL)
    rig.tick(1.0)
    rig.tick(4.0)
    assert rig.sup.phase("a") == "stopping" and worker0.alive
    rig.tick(1.5)  # past the short grace: SIGKILL
    assert worker0.signals == [signal.SIGTERM, signal.SIGKILL] and not worker0.alive
    rig.tick(0.5)
    assert rig.sup.phase("a") == "backoff"
    rig.tick(2.0)
    assert rig.spawns() == spawns + 1  # started again only once nothing of the old one was left


def test_every_process_found_gone_in_one_tick_is_named(tmp_path: Path) -> None:
    rig = tp_rig(tmp_path)
    rig.tick()
    core = member_titled(rig, "a", "VLLM::EngineCore")
    worker1 = member_titled(rig, "a", "VLLM::Worker_TP1")
    rig.runner.signal([worker1.pid, core.pid], signal.SIGKILL)
    rig.tick(1.0)
    rig.tick(1.0)
    expected = f"its processes VLLM::EngineCore (pid {core.pid}), VLLM::Worker_TP1 (pid {worker1.pid}) exited"
    assert rig.rec("a").error == expected


def test_orphans_of_a_dead_leader_go_through_the_ladder(tmp_path: Path) -> None:
    """The API server died but its engine core and workers did not: they hold the GPUs, so the
    restart waits until the ladder has stopped them."""
    rig = tp_rig(tmp_path, broken_stop_grace_s=10.0)
    rig.tick()
    proc = rig.runner.processes[rig.rec("a").pid or 0]
    proc.orphans_outlive = True
    for member in proc.members:
        member.ignore_sigterm = True
    rig.kill("a")
    rig.tick(1.0)
    assert rig.sup.phase("a") == "stopping"
    assert all(m.signals == [signal.SIGTERM] for m in proc.members)
    rig.tick(9.0)
    assert all(m.alive for m in proc.members)
    rig.tick(2.0)
    assert all(not m.alive for m in proc.members)
    rig.tick(0.5)
    assert rig.sup.phase("a") == "backoff" and rig.rec("a").error == "the process exited"


def test_helpers_that_vllm_does_not_name_may_exit(tmp_path: Path) -> None:
    rig = tp_rig(tmp_path)
    rig.tick()
    tracker = member_titled(rig, "a", rig.runner.processes[rig.rec("a").pid or 0].members[-1].title)
    rig.runner.signal([tracker.pid], signal.SIGKILL)
    rig.tick(1.0)
    rig.tick(1.0)
    assert rig.sup.phase("a") == "ready" and rig.rec("a").restarts == 0


def test_watch_only_leaves_a_broken_instance_to_vllm(tmp_path: Path) -> None:
    rig = tp_rig(tmp_path, restart=False)
    rig.tick()
    worker1 = member_titled(rig, "a", "VLLM::Worker_TP1")
    rig.runner.signal([worker1.pid], signal.SIGKILL)
    rig.tick(1.0)
    proc = rig.runner.processes[rig.rec("a").pid or 0]
    assert rig.sup.phase("a") == "ready" and proc.signals == []
    proc.die(1)  # vLLM shuts itself down a few seconds later
    rig.tick(1.0)
    assert rig.sup.phase("a") == "failed" and rig.spawns() == 2


@pytest.mark.parametrize(
    ("case", "title", "env", "named"),
    [
        ("engine core", "VLLM::EngineCore", {}, True),
        ("worker", "VLLM::Worker_TP1", {}, True),
        ("another prefix", "LAB::Worker_TP1", {"VLLM_PROCESS_NAME_PREFIX": "LAB"}, True),
        ("the default prefix under another", "VLLM::Worker_TP1", {"VLLM_PROCESS_NAME_PREFIX": "LAB"}, False),
        ("resource tracker", "python -B -c from multiprocessing.resource_tracker import main", {}, False),
        ("no setproctitle", "python -m vllm.entrypoints.openai.api_server", {}, False),
    ],
)
def test_which_processes_are_vllms_own(case: str, title: str, env: dict[str, str], named: bool) -> None:
    assert is_vllm_process(title, env) is named
