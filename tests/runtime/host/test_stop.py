"""The stop ladder (SIGTERM, wait, SIGKILL, wait) on the fake runner and clock."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from gpushare.runtime.host.clock import FakeClock
from gpushare.runtime.host.processes import FakeRunner, SessionLeader
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
