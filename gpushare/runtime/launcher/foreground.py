"""`up --foreground`: a plan's instances and their gateway + supervisor as ONE process, the way a
container's main process must be (the gpu-pod mode of `export k8s` runs this in each pod).

1. `up` starts every instance in the plan's order (MPS daemon first where the plan wants it) and
   returns once each serves; the gateway opens only then, so a probe on its /health says "all up".
2. The gateway + supervisor (`service/process.py::serve`) run in this process: one endpoint,
   /metrics, restarts of instances that crash.
3. SIGTERM or SIGINT (the kubelet stopping the pod, Ctrl-C) ends it: the gateway stops, then
   `down` stops every instance (SIGTERM, SIGKILL after the stop timeout) and the MPS daemon this
   profile started; the exit code is 0. A signal during the start stops what was started already.
   When the supervisor gives up on an instance (crash loop), everything is stopped the same way
   and the exit code is 1, so the kubelet restarts the whole pod instead of leaving it half up.

Signals are handled by one small state machine (`_Signals`) installed for the whole run, so no
moment between the phases falls back to the default action (which would orphan the instances).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Literal

from gpushare.devices.base import TelemetrySource
from gpushare.planning.plan import Plan
from gpushare.runtime.launcher.down import DownResult, down
from gpushare.runtime.launcher.edges import Edges
from gpushare.runtime.launcher.up import UpOptions, UpResult, up
from gpushare.runtime.service.gateway import GatewayConfig
from gpushare.runtime.service.metrics import UtilizationSource
from gpushare.runtime.service.policy import SupervisorPolicy
from gpushare.runtime.service.process import run_event_loop, serve
from gpushare.runtime.store.state import ProfilePaths, load_state

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Phase = Literal["starting", "serving", "stopping"]


@dataclass(frozen=True)
class ForegroundOptions:
    up: UpOptions = field(default_factory=UpOptions)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    policy: SupervisorPolicy = field(default_factory=SupervisorPolicy)
    alert_command: str | None = None
    failed_check_s: float = 2.0
    """How often the state file is read for an instance the supervisor gave up on."""


@dataclass(frozen=True)
class ForegroundResult:
    started: UpResult
    stopped: DownResult
    exit_code: int
    """0: stopped by a signal; 1: an instance failed for good (`failed` names it)."""
    failed: tuple[str, ...] = ()
    signal_name: str | None = None


class _Signals:
    """What a stop signal does in each phase: interrupt the start (up stops what it started),
    wake the serving loop, or nothing once everything is being stopped anyway."""

    def __init__(self) -> None:
        self.phase: Phase = "starting"
        self.received: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.phase == "starting":
            raise KeyboardInterrupt(f"signal {signum}")
        if self.phase == "serving" and self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)


@contextmanager
def _installed(signals: _Signals) -> Iterator[None]:
    previous = {sig: signal.signal(sig, signals.handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_in_foreground(
    plan: Plan,
    paths: ProfilePaths,
    edges: Edges,
    options: ForegroundOptions | None = None,
    *,
    utilization: UtilizationSource | None = None,
    telemetry: TelemetrySource | None = None,
    on_serving: Callable[[UpResult], None] | None = None,
) -> ForegroundResult:
    """Start `plan`, serve it until a stop signal (or a failed instance), then stop everything.

    Raises what `up` raises (an infeasible plan, a failed pre-flight, an instance that does not
    start); KeyboardInterrupt when a signal came during the start (what had started is stopped)."""
    opts = options or ForegroundOptions()
    signals = _Signals()
    with _installed(signals):
        try:
            started = up(plan, paths, edges, opts.up)
            if on_serving is not None:
                on_serving(started)
            failed = run_event_loop(_serve(paths, edges, opts, signals, utilization, telemetry))
        finally:
            signals.phase = "stopping"
            stopped = down(paths, edges, timeout_s=opts.up.stop_timeout_s)
    name = signal.Signals(signals.received).name if signals.received is not None else None
    return ForegroundResult(started, stopped, 1 if failed else 0, failed, name)


async def _serve(
    paths: ProfilePaths,
    edges: Edges,
    opts: ForegroundOptions,
    signals: _Signals,
    utilization: UtilizationSource | None,
    telemetry: TelemetrySource | None,
) -> tuple[str, ...]:
    """The gateway + supervisor until a stop signal; the names of instances that failed for good
    when that is what ended it."""
    stop = asyncio.Event()
    signals.loop, signals.stop = asyncio.get_running_loop(), stop
    signals.phase = "serving"
    if signals.received is not None:  # a signal came between the start and this loop
        stop.set()
    failed: list[str] = []

    async def watch_for_failed() -> None:
        while not stop.is_set():
            state = load_state(paths)
            gone = [rec.name for rec in state.instances if rec.state == "failed"] if state else []
            if gone:
                log.error("the supervisor gave up on %s: stopping everything", ", ".join(gone))
                failed.extend(gone)
                stop.set()
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), opts.failed_check_s)

    watcher = asyncio.create_task(watch_for_failed())
    try:
        await serve(
            paths,
            opts.gateway,
            opts.policy,
            stop,
            runner=edges.runner,
            clock=edges.clock,
            inventory=edges.inventory,
            utilization=utilization,
            alert_command=opts.alert_command,
            telemetry=telemetry,
        )
    finally:
        stop.set()
        await watcher
    return tuple(failed)
