"""What `up`, `down`, `status` and `calibrate` touch outside the process, bundled as `Edges`, and
the two things they ask of it about a recorded instance: does it still run, and stop it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gpushare.devices.base import GpuInventory
from gpushare.errors import LaunchError
from gpushare.runtime.host.clock import Clock, SystemClock
from gpushare.runtime.host.mps import MpsControl, NvidiaMpsControl
from gpushare.runtime.host.ports import port_is_free
from gpushare.runtime.host.probe import HttpProber, Prober
from gpushare.runtime.host.processes import ProcessRunner, SessionLeader, SubprocessRunner
from gpushare.runtime.host.stop import stop_sessions
from gpushare.runtime.store.state import InstanceRecord

DEFAULT_STOP_TIMEOUT_S = 30.0
"""Seconds between SIGTERM and SIGKILL when `down` (or a failed `up`) stops instances."""


@dataclass(frozen=True)
class Edges:
    """Everything `up`, `down` and `status` touch outside the process: real in the CLI
    (`real_edges`), fakes in the tests."""

    runner: ProcessRunner
    prober: Prober
    clock: Clock
    mps: MpsControl
    inventory: GpuInventory | None
    """None where there is no GPU (or NVML is missing): GPU checks and NVML readings are skipped."""
    port_free: Callable[[int], bool] = port_is_free
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def real_edges(inventory: GpuInventory | None) -> Edges:
    return Edges(
        runner=SubprocessRunner(),
        prober=HttpProber(),
        clock=SystemClock(),
        mps=NvidiaMpsControl(),
        inventory=inventory,
    )


def record_alive(rec: InstanceRecord, runner: ProcessRunner) -> bool:
    """Some process of the instance's session still runs (leader or orphaned children)."""
    if rec.pid is None or rec.pid_start_time is None:
        return False
    return bool(runner.session_pids(rec.pid, rec.pid_start_time))


def stop_records(
    records: Iterable[InstanceRecord], runner: ProcessRunner, clock: Clock, timeout_s: float
) -> list[str]:
    """Stop the instances' sessions (`host/stop.py`: SIGTERM, SIGKILL after `timeout_s`). Returns
    the names that had something to stop; raises LaunchError when even SIGKILL left a process."""
    sessions = {
        r.name: SessionLeader(r.pid, r.pid_start_time)
        for r in records
        if r.pid is not None and r.pid_start_time is not None
    }
    outcome = stop_sessions(sessions, runner, clock, timeout_s)
    if outcome.stuck:
        raise LaunchError(
            f"could not stop {', '.join(outcome.stuck)} even with SIGKILL",
            hint="check `ps -s PID`; a process in uninterruptible sleep (D state) waits on the kernel",
        )
    return list(outcome.stopped)
