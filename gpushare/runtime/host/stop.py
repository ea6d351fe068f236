"""The one way gpushare stops a process session: SIGTERM, wait, SIGKILL, wait a little more (no
wait where SIGTERM cannot help: a stopped process, or no grace asked for).

Three callers share it: `down` and a failed `up` stop instances (`stop_sessions`, blocking), the
supervisor stops an instance it will restart (`StopLadder.advance` once per tick, never blocking its
event loop), and `down` / `supervise --stop` stop the background gateway/supervisor.

A session is named by its leader (`processes.SessionLeader`: pid and start time); every live process
of it is signalled (vLLM's EngineCore and workers too, even when the leader already died), and a
recycled pid never is. Callers give the sessions as a mapping from a name for messages (an
instance's name, "gateway/supervisor") to the leader.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gpushare.runtime.host.clock import Clock
from gpushare.runtime.host.processes import ProcessRunner, ProcessState, SessionLeader

KILL_WAIT_S = 5.0
"""After SIGKILL, how long to wait for the kernel to take the processes away."""
POLL_S = 0.2

StopStep = Literal["waiting", "killed", "gone", "stuck"]
"""waiting: SIGTERM sent, grace not over; killed: SIGKILL sent at this step; gone: nothing of any
session is left; stuck: still there `KILL_WAIT_S` after SIGKILL (uninterruptible sleep, D state)."""


class StopLadder:
    """Stops a set of sessions together: `begin` sends SIGTERM, each `advance` checks what is left
    and sends SIGKILL once `grace_s` has passed.

    No grace where SIGTERM cannot help: a session with a stopped process (`T` state: it acts on
    no signal but SIGKILL until continued, and a SIGTERM would wait for that) gets SIGKILL at
    once, at `begin` or at the `advance` that finds it stopped; so does every session when
    `grace_s` is 0 (the supervisor's choice for a process that answers nothing at all).
    `killed_why` says, per session killed, why.
    """

    def __init__(
        self,
        runner: ProcessRunner,
        sessions: Mapping[str, SessionLeader],
        grace_s: float,
        kill_wait_s: float = KILL_WAIT_S,
    ) -> None:
        self._runner = runner
        self._sessions = dict(sessions)
        self._grace_s = grace_s
        self._kill_wait_s = kill_wait_s
        self._pending: list[str] = []
        self._term_deadline = 0.0
        self._kill_deadlines: dict[str, float] = {}
        self.had_processes: tuple[str, ...] = ()
        """Names of the sessions that had a live process when `begin` ran."""
        self.killed_why: dict[str, str] = {}
        """Session name -> why it got SIGKILL: stopped, no grace, or SIGTERM ignored."""

    def _states(self, name: str) -> dict[int, ProcessState]:
        leader = self._sessions[name]
        return self._runner.session_states(leader.pid, leader.start_time)

    def _kill(self, name: str, pids: list[int], why: str, now: float) -> None:
        self._runner.signal(pids, signal.SIGKILL)
        self._kill_deadlines[name] = now + self._kill_wait_s
        self.killed_why[name] = why

    def _kill_now(self, states: Mapping[int, ProcessState]) -> str | None:
        if "stopped" in states.values():
            return "stopped (T state): SIGTERM would wait until it is continued"
        if self._grace_s <= 0:
            return "no grace"
        return None

    def begin(self, now: float) -> tuple[str, ...]:
        """SIGTERM every live session (SIGKILL where there is no grace); returns the names that had
        processes."""
        pending = []
        for name in self._sessions:
            states = self._states(name)
            if not states:
                continue
            pending.append(name)
            why = self._kill_now(states)
            if why is not None:
                self._kill(name, list(states), why, now)
            else:
                self._runner.signal(list(states), signal.SIGTERM)
        self._pending = pending
        self._term_deadline = now + self._grace_s
        self.had_processes = tuple(pending)
        return self.had_processes

    def advance(self, now: float) -> StopStep:
        left = {name: self._states(name) for name in self._pending}
        self._pending = [name for name, states in left.items() if states]
        if not self._pending:
            return "gone"
        killed = False
        for name in self._pending:
            if name in self._kill_deadlines:
                continue
            states = left[name]
            why = self._kill_now(states)
            if why is None and now >= self._term_deadline:
                why = f"ignored SIGTERM for {self._grace_s:.0f} s"
            if why is not None:
                self._kill(name, list(states), why, now)
                killed = True
        if killed:
            return "killed"
        if any(name not in self._kill_deadlines for name in self._pending):
            return "waiting"  # still in its grace
        last = max(self._kill_deadlines[name] for name in self._pending)
        return "stuck" if now >= last else "waiting"

    @property
    def left(self) -> tuple[str, ...]:
        """Names of the sessions that still had processes at the last `advance`."""
        return tuple(self._pending)


@dataclass(frozen=True)
class StopOutcome:
    stopped: tuple[str, ...]
    """Sessions that had processes, in the order given."""
    stuck: tuple[str, ...]
    """Sessions with processes left even after SIGKILL."""


def stop_sessions(
    sessions: Mapping[str, SessionLeader],
    runner: ProcessRunner,
    clock: Clock,
    grace_s: float,
    poll_s: float = POLL_S,
) -> StopOutcome:
    """Run the ladder to its end, sleeping on `clock`; then reap the leaders this runner spawned."""
    ladder = StopLadder(runner, sessions, grace_s)
    had = ladder.begin(clock.monotonic())
    step: StopStep = "waiting"
    while had and step not in ("gone", "stuck"):
        clock.sleep(poll_s)
        step = ladder.advance(clock.monotonic())
    for leader in sessions.values():
        runner.exit_code(leader.pid)  # reap our own children, so none lingers as a zombie
    return StopOutcome(had, ladder.left if had else ())
