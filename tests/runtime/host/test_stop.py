"""The stop ladder (SIGTERM, wait, SIGKILL, wait) on the fake runner and clock."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from gpushare.runtime.host.clock import FakeClock, SystemClock
from gpushare.runtime.host.processes import FakeRunner, SessionLeader, SubprocessRunner
from gpushare.runtime.host.stop import KILL_WAIT_S, StopLadder, StopStep, stop_sessions

GRACE_S = 10.0


def spawn(runner: FakeRunner, tmp_path: Path, name: str, behaviour: str) -> SessionLeader:
    spawned = runner.spawn(["/bin/server"], {}, tmp_path / f"{name}.log")
    proc = runner.processes[spawned.pid]
    if behaviour == "ignores SIGTERM":
        proc.ignore_sigterm = True
    elif behaviour == "D state":
        proc.uninterruptible = True
    elif behaviour == "recycled":
        runner.recycle(spawned.pid)
    elif behaviour == "exited":
        runner.exit(spawned.pid, 0)
    return spawned


@pytest.mark.parametrize(
    ("case", "behaviours", "signals", "stopped", "stuck", "seconds"),
    [
        ("obeys SIGTERM", ["obeys"], [[signal.SIGTERM]], ("a",), (), 0.2),
        ("ignores SIGTERM", ["ignores SIGTERM"], [[signal.SIGTERM, signal.SIGKILL]], ("a",), (), GRACE_S),
        ("D state", ["D state"], [[signal.SIGTERM, signal.SIGKILL]], ("a",), ("a",), GRACE_S + KILL_WAIT_S),
        ("recycled pid is never signalled", ["recycled"], [[]], (), (), 0.0),
        ("already exited", ["exited"], [[]], (), (), 0.0),
        (
            "two at once, one stubborn",
            ["obeys", "ignores SIGTERM"],
            [[signal.SIGTERM], [signal.SIGTERM, signal.SIGKILL]],
            ("a", "b"),
            (),
            GRACE_S,
        ),
    ],
)
def test_stop_sessions(
    case: str,
    behaviours: list[str],
    signals: list[list[int]],
    stopped: tuple[str, ...],
    stuck: tuple[str, ...],
    seconds: float,
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    sessions = {name: spawn(runner, tmp_path, name, b) for name, b in zip("ab", behaviours, strict=False)}
    before = clock.monotonic()
    outcome = stop_sessions(sessions, runner, clock, GRACE_S)
    assert outcome.stopped == stopped
    assert outcome.stuck == stuck
    assert [runner.processes[s.pid].signals for s in sessions.values()] == signals
    assert clock.monotonic() - before == pytest.approx(seconds, abs=0.5)


def test_ladder_steps_one_at_a_time(tmp_path: Path) -> None:
    """The supervisor's use: one `advance` per tick, SIGKILL exactly once, after the grace."""
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    session = spawn(runner, tmp_path, "a", "ignores SIGTERM")
    ladder = StopLadder(runner, {"a": session}, grace_s=3.0)
    assert ladder.begin(0.0) == ("a",)
    steps: list[StopStep] = [ladder.advance(t) for t in (1.0, 2.0, 3.0, 4.0)]
    assert steps == ["waiting", "waiting", "killed", "gone"]
    assert runner.processes[session.pid].signals == [signal.SIGTERM, signal.SIGKILL]
    assert ladder.left == ()


def test_ladder_reports_stuck_only_after_the_kill_wait(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    session = spawn(runner, tmp_path, "a", "D state")
    ladder = StopLadder(runner, {"a": session}, grace_s=1.0, kill_wait_s=2.0)
    ladder.begin(0.0)
    steps = [ladder.advance(t) for t in (0.5, 1.0, 2.0, 3.0)]
    assert steps == ["waiting", "killed", "waiting", "stuck"]
    assert runner.processes[session.pid].signals == [signal.SIGTERM, signal.SIGKILL]
    assert ladder.left == ("a",)


@pytest.mark.parametrize(
    ("case", "grace_s", "stop_first", "signals"),
    [
        ("stopped (T state): SIGKILL at once", GRACE_S, True, [signal.SIGSTOP, signal.SIGKILL]),
        ("no grace: SIGKILL at once", 0.0, False, [signal.SIGKILL]),
    ],
)
def test_no_sigterm_grace_where_it_cannot_help(
    case: str, grace_s: float, stop_first: bool, signals: list[int], tmp_path: Path
) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    session = spawn(runner, tmp_path, "a", "obeys")
    if stop_first:
        runner.signal([session.pid], signal.SIGSTOP)
    before = clock.monotonic()
    outcome = stop_sessions({"a": session}, runner, clock, grace_s)
    assert outcome.stopped == ("a",) and outcome.stuck == ()
    assert runner.processes[session.pid].signals == signals
    assert clock.monotonic() - before < 1.0


def test_a_session_stopped_during_its_grace_is_killed_at_the_next_step(tmp_path: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner(clock.time)
    session = spawn(runner, tmp_path, "a", "ignores SIGTERM")
    ladder = StopLadder(runner, {"a": session}, grace_s=30.0)
    ladder.begin(0.0)
    assert ladder.advance(1.0) == "waiting"
    runner.signal([session.pid], signal.SIGSTOP)
    assert ladder.advance(2.0) == "killed"
    assert ladder.killed_why["a"].startswith("stopped (T state)")
    assert ladder.advance(3.0) == "gone"


def test_a_real_stopped_process_is_killed_without_the_grace(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    leader = runner.spawn([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "a.log")
    runner.signal([leader.pid], signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while "stopped" not in runner.session_states(leader.pid, leader.start_time).values():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    outcome = stop_sessions({"a": leader}, runner, SystemClock(), grace_s=30.0)
    assert outcome.stopped == ("a",) and outcome.stuck == ()
    assert time.monotonic() - started < 5  # not the 30 s grace
    assert runner.exit_code(leader.pid) == -signal.SIGKILL
