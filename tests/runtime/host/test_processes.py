"""SubprocessRunner's psutil edge: every psutil error means "no process we can vouch for"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpushare.runtime.host.processes import SubprocessRunner, holder_of, process_start_time
from gpushare.vllm.processes import is_vllm_process


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


FAKE_SERVER = Path(__file__).parents[1] / "fake_vllm_server.py"


def test_session_members_are_titled_as_vllm_titles_them(tmp_path: Path) -> None:
    """A stand-in for vLLM at --tensor-parallel-size 2 (tests/runtime/fake_vllm_server.py): its
    session's members carry vLLM's titles; one worker killed, the rest of the session ends by
    itself a moment later, as vLLM's does."""
    runner = SubprocessRunner()
    port = _free_port()
    argv = [sys.executable, str(FAKE_SERVER), "--port", str(port), "--tensor-parallel-size", "2",
            "--dead-exit-s", "0.5"]  # fmt: skip
    leader = runner.spawn(argv, {}, tmp_path / "fake.log")
    try:
        titles: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while len(titles) < 3 and time.monotonic() < deadline:
            members = runner.session_members(leader.pid, leader.start_time)
            titles = {m.title.split(" ")[0]: m.pid for m in members if is_vllm_process(m.title, {})}
            time.sleep(0.1)
        assert set(titles) == {"VLLM::EngineCore", "VLLM::Worker_TP0", "VLLM::Worker_TP1"}
        assert [m.pid for m in members][0] == leader.pid and not is_vllm_process(members[0].title, {})
        member = next(m for m in members if m.pid == titles["VLLM::Worker_TP1"])
        assert runner.is_running(member.pid, member.start_time)
        runner.signal([member.pid], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while runner.session_pids(leader.pid, leader.start_time) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.session_pids(leader.pid, leader.start_time) == []
        assert runner.exit_code(leader.pid) == 1
        assert "Worker proc VLLM::Worker_TP1 died unexpectedly" in (tmp_path / "fake.log").read_text()
    finally:
        runner.signal(runner.session_pids(leader.pid, leader.start_time), signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn_listener(
    runner: SubprocessRunner, tmp_path: Path, reuse_port: bool = False
) -> tuple[int, int, float]:
    """A session that listens on a free port (with SO_REUSEPORT, as vLLM sets it with
    --api-server-count > 1, when `reuse_port`): (port, leader pid, start time)."""
    reuse = "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1);" if reuse_port else ""
    code = (
        f"import socket, sys, time; s = socket.socket(); {reuse} s.bind(('127.0.0.1', 0)); s.listen();"
        " print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    log = tmp_path / f"server-{reuse_port}.log"
    leader = runner.spawn([sys.executable, "-c", code], {}, log)
    deadline = time.monotonic() + 20
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(log.read_text().split()[0]), leader.pid, leader.start_time


def test_a_stopped_session_reads_stopped_and_its_port_is_its_own(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    port, pid, started = _spawn_listener(runner, tmp_path)
    try:
        assert runner.session_states(pid, started) == {pid: "running"}
        assert runner.port_holder(pid, started, port) == "instance"
        with socket.socket() as other:  # a port someone else listens on is not the session's
            other.bind(("127.0.0.1", 0))
            other.listen()
            assert runner.port_holder(pid, started, other.getsockname()[1]) == "other"
            unused = other.getsockname()[1]
        assert runner.port_holder(pid, started, unused) == "nobody"
        runner.signal([pid], signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while runner.session_states(pid, started) != {pid: "stopped"}:
            assert time.monotonic() < deadline, "SIGSTOP did not show as stopped"
            time.sleep(0.02)
    finally:
        runner.signal([pid], signal.SIGKILL)
        runner.exit_code(pid)


def test_a_second_listener_beside_the_session_is_seen(tmp_path: Path) -> None:
    """The port hijack: with SO_REUSEPORT another program binds the instance's port too, and the
    kernel hands it some of the connections; or it binds the same port on IPv6 loopback."""
    runner = SubprocessRunner()
    port, pid, started = _spawn_listener(runner, tmp_path, reuse_port=True)
    try:
        with socket.socket() as intruder:
            intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            intruder.bind(("127.0.0.1", port))
            intruder.listen()
            assert runner.port_holder(pid, started, port) == "shared"
        assert runner.port_holder(pid, started, port) == "instance"
        if socket.has_ipv6:
            with socket.socket(socket.AF_INET6) as intruder6:
                try:
                    intruder6.bind(("::1", port))
                except OSError:
                    return  # no IPv6 loopback here
                intruder6.listen()
                assert runner.port_holder(pid, started, port) == "shared"
    finally:
        runner.signal([pid], signal.SIGKILL)
        runner.exit_code(pid)


@pytest.mark.parametrize(
    ("case", "listeners", "holder"),
    [
        ("its-own", {10, 11}, "instance"),
        ("nobody", set(), "nobody"),
        ("another-program", {99}, "other"),
        ("another-users-socket", {None}, "other"),
        ("beside-it", {10, 99}, "shared"),
        ("beside-it-unseen", {10, None}, "shared"),
    ],
)
def test_holder_of(case: str, listeners: set[int | None], holder: str) -> None:
    assert holder_of(listeners, {10, 11, 12}) == holder
