"""Starting and stopping the background gateway/supervisor, on the launcher's fake runner."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from gpushare.errors import LaunchError
from gpushare.runtime.host.clock import FakeClock
from gpushare.runtime.host.processes import FakeProcess, FakeRunner
from gpushare.runtime.service.process import ServiceInfo, read_info, start_background, stop_background
from gpushare.runtime.store.state import ProfilePaths, profile_paths

PY = "/usr/bin/python3"


def write_info(paths: ProfilePaths, pid: int, start: float, port: int = 8000) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "pid_start_time": start, "host": "127.0.0.1", "port": port}
    (paths.root / "supervisor.json").write_text(json.dumps(info))


def test_start_waits_for_its_own_info_file() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    paths = profile_paths("lab")

    def listens(r: FakeRunner, pid: int, proc: FakeProcess) -> None:
        write_info(paths, pid, proc.start_time, port=8123)

    runner.behaviours[PY] = listens
    info = start_background(paths, ["--port", "8123"], runner=runner, clock=clock, python=PY)
    assert info == ServiceInfo(info.pid, clock.time(), "127.0.0.1", 8123)
    (proc,) = runner.processes.values()
    assert proc.argv == (PY, "-m", "gpushare", "supervise", "lab", "--foreground", "--port", "8123")
    # Idempotent: a running one is returned, nothing new spawned.
    assert start_background(paths, runner=runner, clock=clock, python=PY) == info
    assert len(runner.processes) == 1


def test_start_reports_an_early_exit_with_the_reason_from_its_log() -> None:
    """issue 12: the reason was only in supervisor.log."""
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    paths = profile_paths("lab")
    paths.ensure()
    (paths.logs_dir / "supervisor.log").write_text("error: an older run's error, not this one's\n")
    said = (
        "2026-01-01 INFO gpushare: starting\n"
        "error: the gateway cannot listen on 127.0.0.1:8000: address already in use\n"
        "hint: another gateway may run there: pick another --port\n"
    )
    runner.behaviours[PY] = lambda r, pid, proc: r.exit(pid, 3, log=said)
    with pytest.raises(LaunchError) as caught:
        start_background(paths, runner=runner, clock=clock, python=PY)
    assert caught.value.message == (
        "the gateway/supervisor exited at start (exit 3): "
        "the gateway cannot listen on 127.0.0.1:8000: address already in use"
    )


@pytest.mark.parametrize(
    ("case", "ignores_sigterm", "signals"),
    [
        ("stops on SIGTERM", False, [signal.SIGTERM]),
        ("ignores SIGTERM: SIGKILL", True, [signal.SIGTERM, signal.SIGKILL]),
    ],
)
def test_start_times_out_and_leaves_nothing(case: str, ignores_sigterm: bool, signals: list[int]) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    runner.behaviours[PY] = lambda r, pid, proc: setattr(proc, "ignore_sigterm", ignores_sigterm)
    with pytest.raises(LaunchError, match="did not start"):
        start_background(profile_paths("lab"), runner=runner, clock=clock, python=PY, ready_timeout_s=2)
    (proc,) = runner.processes.values()
    assert not proc.alive and proc.signals == signals


def test_stop_sigterm_then_sigkill_and_forgets() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    paths = profile_paths("lab")
    spawned = runner.spawn([PY], {}, Path(paths.root / "x.log"))
    runner.processes[spawned.pid].ignore_sigterm = True
    write_info(paths, spawned.pid, spawned.start_time)
    assert stop_background(paths, runner=runner, clock=clock, timeout_s=1.0)
    assert runner.processes[spawned.pid].signals == [signal.SIGTERM, signal.SIGKILL]
    assert read_info(paths) is None
    assert not stop_background(paths, runner=runner, clock=clock)


def test_stop_never_signals_a_recycled_pid() -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    paths = profile_paths("lab")
    spawned = runner.spawn([PY], {}, Path(paths.root / "x.log"))
    write_info(paths, spawned.pid, spawned.start_time)
    runner.recycle(spawned.pid)
    assert not stop_background(paths, runner=runner, clock=clock)
    assert runner.processes[spawned.pid].signals == []
    assert read_info(paths) is None
