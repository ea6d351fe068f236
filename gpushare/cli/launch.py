"""`gpushare up | down | status | logs`: run a profile's plan as vLLM servers and look after them.

The work is the launcher's (runtime/launcher/: `up`, `down`, `status`) and the state store's
(runtime/store/: state file, logs); this module parses options and draws (cli/render_launch.py).
`up` then starts the profile's background gateway/supervisor (unless `--no-gateway`), and `down`
stops it before the instances, so nothing restarts what it stops (runtime/service/process.py).

Module attributes `plan_factory`, `inventory_factory` and `edges_factory` are where the outside
world comes in; tests replace them (as `gpushare gpus` and `plan` do with their inventory).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from gpushare.cli.app import app
from gpushare.cli.options import (
    DEFAULT_GATEWAY_HOST,
    DEFAULT_GATEWAY_PORT,
    GatewayPortOption,
    ReadTimeout,
    read_timeout_args,
    read_timeouts,
)
from gpushare.cli.render_launch import (
    console,
    progress_table,
    render_down,
    render_failures,
    render_up,
    status_lines,
)
from gpushare.cli.render_plan import render_warnings
from gpushare.cli.saved_plan import read_plan_file
from gpushare.cli.term import output_width
from gpushare.devices.base import GpuInventory
from gpushare.errors import GpushareError, InputError
from gpushare.planning.exposure import GATEWAY_API_KEY_ENV, gateway_warning, instance_warnings
from gpushare.planning.plan import Plan
from gpushare.profile.load import read_profile_file
from gpushare.runtime.host.clock import SystemClock
from gpushare.runtime.launcher.down import DownResult, down
from gpushare.runtime.launcher.edges import DEFAULT_STOP_TIMEOUT_S, Edges, real_edges
from gpushare.runtime.launcher.status import collect_status
from gpushare.runtime.launcher.up import (
    DEFAULT_READY_TIMEOUT_S,
    InstanceFailedError,
    InstanceProgress,
    UpOptions,
    UpResult,
    up,
)
from gpushare.runtime.store.logs import find_log, follow, lines_without_own_polls, tail_lines
from gpushare.runtime.store.service import ServiceInfo
from gpushare.runtime.store.state import list_profiles, profile_paths, state_root


def _nvml_inventory() -> GpuInventory:
    from gpushare.devices.nvml import NvmlInventory

    return NvmlInventory()


def build_plan_from_profile(profile_path: Path, inventory: GpuInventory) -> Plan:
    """Load the profile and plan it against the inventory (gpushare/profile.py + plan.build_plan)."""
    from gpushare.calibration import stored_lookup
    from gpushare.planning.build import build_plan
    from gpushare.profile import load_profile

    return build_plan(load_profile(profile_path), inventory, calibration=stored_lookup())


def _usable_inventory(inventory: GpuInventory) -> GpuInventory | None:
    """The inventory when NVML works here, else None (the CPU backend, a machine without driver)."""
    try:
        inventory.gpus()
    except GpushareError:
        return None
    return inventory


inventory_factory: Callable[[], GpuInventory] = _nvml_inventory
plan_factory: Callable[[Path, GpuInventory], Plan] = build_plan_from_profile
edges_factory: Callable[[GpuInventory | None], Edges] = real_edges


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP to `gpushare up` clean up like Ctrl-C: stop what it started, then exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@app.command("up")
def up_command(
    profile: Annotated[Path | None, typer.Argument(help="The profile YAML to plan and start.")] = None,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Leave the instances that started running when one fails.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds each instance may take to serve.")
    ] = DEFAULT_READY_TIMEOUT_S,
    gateway: Annotated[
        bool,
        typer.Option(help="Also start the gateway + supervisor (one endpoint, /metrics, restarts)."),
    ] = True,
    gateway_host: Annotated[
        str, typer.Option(help="Gateway address (loopback by default).")
    ] = DEFAULT_GATEWAY_HOST,
    gateway_port: Annotated[int, GatewayPortOption] = DEFAULT_GATEWAY_PORT,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan-file",
            dir_okay=False,
            help="Start this plan (what `gpushare plan --json` writes) instead of planning PROFILE.",
        ),
    ] = None,
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground",
            help="Then run the gateway + supervisor in this process until SIGTERM, and stop everything "
            "(a container's main process).",
        ),
    ] = False,
    read_timeout: ReadTimeout = None,
) -> None:
    """Plan PROFILE, check the machine, start every instance and wait until each one serves.

    Then start the profile's gateway and supervisor in the background (`--no-gateway` to skip):
    one OpenAI-compatible endpoint routing by model name, Prometheus /metrics, and restarts of
    instances that crash. `gpushare down` stops both.
    """
    if (profile is None) == (plan_file is None):
        raise InputError("give a profile YAML or --plan-file FILE (one of them)", hint="gpushare up PROFILE")
    if profile is not None:
        read_profile_file(profile)  # no such file, a directory: one line before NVML is asked
    read_timeouts(read_timeout)  # bad values: one line before anything starts
    if foreground:
        if keep_going or not gateway:
            raise InputError("--foreground runs the gateway and stops everything when one instance fails")
        _up_foreground(profile, plan_file, timeout, gateway_host, gateway_port, read_timeout)
        return
    inventory = inventory_factory()
    plan = _plan_for_up(profile, plan_file, inventory)
    edges = edges_factory(_usable_inventory(inventory))
    paths = profile_paths(plan.profile_name, state_root())
    out = console()
    options = UpOptions(
        ready_timeout_s=timeout, keep_going=keep_going, gateway_port=gateway_port if gateway else None
    )
    live = Live(console=out, auto_refresh=False, transient=False) if out.is_terminal else None
    started: list[ServiceInfo] = []

    def start_gateway(result: UpResult) -> None:
        """Once every instance serves, under the profile lock: a failure here stops what this
        `up` started (runtime/launcher/up.py), and says why."""
        if not gateway or result.failed:
            return
        from gpushare.runtime.service.process import start_background

        args = ["--host", gateway_host, "--port", str(gateway_port), *read_timeout_args(read_timeout)]
        started.append(start_background(paths, args, runner=edges.runner, clock=edges.clock))

    def on_progress(items: Sequence[InstanceProgress]) -> None:
        if live is not None:
            live.update(progress_table(items), refresh=True)

    count = len(plan.instances)
    warnings = _exposure_warnings(plan, gateway_host if gateway else None)
    sleepers = [i.name for i in plan.instances if i.on_demand]
    if sleepers and not gateway:
        warnings.append(
            f"{', '.join(sleepers)}: on-demand, put to sleep once they serve; without the gateway "
            f"nothing wakes them (start it with `gpushare supervise {plan.profile_name}`)"
        )
    render_warnings(out, warnings)
    out.print(f"starting {count} instance(s) of {plan.profile_name!r}; logs in {paths.logs_dir}")
    try:
        with _terminate_as_interrupt():
            if live is not None:
                with live:
                    result = up(plan, paths, edges, options, on_progress, after_ready=start_gateway)
            else:
                result = up(plan, paths, edges, options, after_ready=start_gateway)
    except InstanceFailedError as exc:
        render_failures(console(stderr=True), exc.failures)
        if exc.stopped:
            console(stderr=True).print(f"stopped what this up started: {', '.join(exc.stopped)}")
        raise
    except KeyboardInterrupt:
        console(stderr=True).print("interrupted: stopped the instances this up had started")
        raise typer.Exit(130) from None
    render_up(out, result)
    if result.failed:
        raise typer.Exit(1)
    for info in started:
        if info.port != gateway_port and gateway_port:
            out.print(f"note: this profile's gateway/supervisor runs already, on port {info.port}")
        out.print(f"gateway {info.url}/v1 (pid {info.pid}), supervising; metrics at {info.url}/metrics")


def _exposure_warnings(plan: Plan, gateway_host: str | None) -> list[str]:
    """planning/exposure.py's warnings: each instance, and the gateway when one starts."""
    warnings = instance_warnings(plan.instances, os.environ)
    if gateway_host is not None:
        key_set = bool(os.environ.get(GATEWAY_API_KEY_ENV))
        warnings += filter(None, [gateway_warning(gateway_host, key_set)])
    return warnings


def _plan_for_up(profile: Path | None, plan_file: Path | None, inventory: GpuInventory) -> Plan:
    """The plan `up` starts: read from --plan-file, or made for PROFILE on this machine's GPUs."""
    if plan_file is not None:
        return read_plan_file(plan_file)
    assert profile is not None
    return plan_factory(profile, inventory)


def _up_foreground(
    profile: Path | None,
    plan_file: Path | None,
    timeout: float,
    host: str,
    port: int,
    read_timeout: list[str] | None,
) -> None:
    """`up --foreground`: runtime/launcher/foreground.py, with NVML where there is a driver."""
    from gpushare.cli.serve import configure_logging, gateway_config
    from gpushare.devices.nvml import NvmlInventory
    from gpushare.runtime.launcher.foreground import ForegroundOptions, run_in_foreground
    from gpushare.runtime.service.process import detect_telemetry

    inventory = inventory_factory()
    plan = _plan_for_up(profile, plan_file, inventory)
    usable = _usable_inventory(inventory)
    edges = edges_factory(usable)
    paths = profile_paths(plan.profile_name, state_root())
    out = console()
    options = ForegroundOptions(
        up=UpOptions(ready_timeout_s=timeout, gateway_port=port),
        gateway=gateway_config(host, port, None, "32MiB", 3.0, read_timeout),
    )
    nvml = usable if isinstance(usable, NvmlInventory) else None
    telemetry = detect_telemetry(nvml)
    configure_logging()  # the gateway's and supervisor's lines go to the container's log
    render_warnings(out, _exposure_warnings(plan, None))  # gateway_config warned of the gateway
    out.print(
        f"starting {len(plan.instances)} instance(s) of {plan.profile_name!r} in the foreground; "
        f"logs in {paths.logs_dir}"
    )

    def serving(result: UpResult) -> None:
        render_up(out, result)
        out.print(f"all serving; the gateway opens on {host}:{port} (SIGTERM stops everything)")

    try:
        done = run_in_foreground(
            plan, paths, edges, options, utilization=nvml, telemetry=telemetry, on_serving=serving
        )
    except InstanceFailedError as exc:
        render_failures(console(stderr=True), exc.failures)
        raise
    except KeyboardInterrupt:
        console(stderr=True).print("stopped during the start: stopped what had started")
        raise typer.Exit(130) from None
    finally:
        if telemetry is not None:
            telemetry.close()
    render_down(out, [done.stopped])
    if done.failed:
        console(stderr=True).print(f"the supervisor gave up on {', '.join(done.failed)}: stopped everything")
    raise typer.Exit(done.exit_code)


def _resolve_profile(arg: str) -> str:
    """A profile name: a folder of the state directory, or (for a YAML path) the planned profile's
    name. A bare name with no folder is a mistake (a typo, most likely): exit 2 naming the profiles
    there, before anything is written."""
    root = state_root()
    if (root / arg).is_dir():
        return arg
    path = Path(arg)
    if path.is_file():
        from gpushare.profile import load_profile

        return load_profile(path, check_models=False).display_name
    known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    up_now = set(list_profiles(root))
    listed = ", ".join(f"{name} (up)" if name in up_now else name for name in known)
    raise InputError(
        f"no profile {arg!r} in {root}",
        hint=f"profiles there: {listed}"
        if known
        else "no profile has run here yet; gpushare up PROFILE starts one",
    )


def _only_profile(what: str) -> str:
    profiles = list_profiles(state_root())
    if len(profiles) == 1:
        return profiles[0]
    if not profiles:
        raise InputError(f"no profile is up ({what} needs one)", hint="gpushare up PROFILE")
    raise InputError(f"several profiles are up ({', '.join(profiles)})", hint="name one, or pass --all")


@app.command("down")
def down_command(
    profile: Annotated[str | None, typer.Argument(help="Profile name (or its YAML).")] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Only these instances.")] = None,
    all_profiles: Annotated[bool, typer.Option("--all", help="Every profile that is up.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds between SIGTERM and SIGKILL.")
    ] = DEFAULT_STOP_TIMEOUT_S,
) -> None:
    """Stop a profile's instances (SIGTERM, then SIGKILL after --timeout). Safe to repeat."""
    edges = edges_factory(None)
    root = state_root()
    wanted = list(names or [])
    if all_profiles:
        if profile is not None:
            wanted.insert(0, profile)
        targets = list_profiles(root)
    else:
        targets = [_resolve_profile(profile) if profile else _only_profile("down")]
    from gpushare.runtime.service.process import stop_background

    results: list[DownResult] = []
    for name in targets:
        paths = profile_paths(name, root)
        if not paths.root.is_dir():  # a profile file whose profile never ran here: nothing to lock
            results.append(DownResult(name, (), ()))
            continue
        if not wanted:
            # First the supervisor, so nothing restarts what is being stopped.
            stop_background(paths, runner=edges.runner, clock=edges.clock)
        results.append(down(paths, edges, wanted, timeout_s=timeout))
    render_down(console(), results)


@app.command("status")
def status_command(
    profile: Annotated[str | None, typer.Argument(help="Profile name (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, sizes in bytes.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw every --interval seconds.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2)] = 2.0,
) -> None:
    """Per instance: state, memory planned vs actual, KV cache, requests; per GPU: memory."""
    edges = edges_factory(_usable_inventory(inventory_factory()))
    root = state_root()
    profiles = [_resolve_profile(profile)] if profile else None
    if as_json and not watch:
        typer.echo(json.dumps(collect_status(root, edges, profiles).to_json(), indent=2))
        return
    out = console()
    if not watch:
        _print_lines(out, status_lines(collect_status(root, edges, profiles), output_width(out)))
        return
    live_view = not as_json and out.is_terminal
    try:
        with Live(console=out, auto_refresh=False) if live_view else nullcontext() as live:
            while True:
                report = collect_status(root, edges, profiles)
                if as_json:  # one object per line (JSON Lines), on a terminal or not
                    typer.echo(json.dumps(report.to_json()))
                elif live is not None:
                    live.update(Group(*status_lines(report, output_width(out))), refresh=True)
                else:  # off a terminal: each report in turn, a blank line between them
                    _print_lines(out, [Text(time.strftime("%Y-%m-%d %H:%M:%S")), *status_lines(report, None)])
                    out.print()
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _print_lines(out: Console, lines: Sequence[Text]) -> None:
    for line in lines:
        out.print(line)


@app.command("logs")
def logs_command(
    name: Annotated[str, typer.Argument(help="Instance name.")],
    follow_log: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile, when several have NAME.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show first (0: all).")] = 200,
    polls: Annotated[
        bool, typer.Option("--polls", help="Also show gpushare's own /health and /metrics requests.")
    ] = False,
) -> None:
    """Show an instance's vLLM log."""
    path = find_log(state_root(), name, _resolve_profile(profile) if profile else None)
    sys.stdout.write(tail_lines(path, lines, polls=polls))
    sys.stdout.flush()
    if not follow_log:
        return
    chunks = follow(path, SystemClock())
    try:
        for chunk in chunks if polls else lines_without_own_polls(chunks):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
