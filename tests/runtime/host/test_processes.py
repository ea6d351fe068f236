"""SubprocessRunner's psutil edge: every psutil error means "no process we can vouch for"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gpushare.runtime.host.processes import SubprocessRunner, process_start_time


def test_start_time_of_a_live_and_of_a_missing_process() -> None:
    started = process_start_time(os.getpid())
    assert started is not None and started <= time.time()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert process_start_time(int(done.stdout)) is None  # exited and reaped


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # another's child: this runner cannot reap it
    started = process_start_time(child.pid)
    assert started is not None
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie now
    assert process_start_time(child.pid) is not None  # a zombie still has its start time
    assert not SubprocessRunner().is_running(child.pid, started)
    child.wait()


def test_a_stopped_session_reads_stopped_and_its_listener_is_found(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    code = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
        " print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    log = tmp_path / "server.log"
    leader = runner.spawn([sys.executable, "-c", code], {}, log)
    try:
        deadline = time.monotonic() + 20
        while not log.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(log.read_text().split()[0])
        assert runner.session_states(leader.pid, leader.start_time) == {leader.pid: "running"}
        assert runner.listens_on(leader.pid, leader.start_time, port)
        with socket.socket() as other:  # a port someone else listens on is not the session's
            other.bind(("127.0.0.1", 0))
            other.listen()
            assert not runner.listens_on(leader.pid, leader.start_time, other.getsockname()[1])
        runner.signal([leader.pid], signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while runner.session_states(leader.pid, leader.start_time) != {leader.pid: "stopped"}:
            assert time.monotonic() < deadline, "SIGSTOP did not show as stopped"
            time.sleep(0.02)
    finally:
        runner.signal([leader.pid], signal.SIGKILL)
        runner.exit_code(leader.pid)
