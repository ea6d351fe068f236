"""`gpushare supervise` (gateway + supervisor for a profile) and `gpushare gateway` (routing only)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.cli.options import (
    DEFAULT_GATEWAY_HOST,
    DEFAULT_GATEWAY_PORT,
    GatewayPort,
    ReadTimeout,
    read_timeout_args,
    read_timeouts,
)
from gpushare.errors import InputError
from gpushare.planning.exposure import GATEWAY_API_KEY_ENV, gateway_warning
from gpushare.runtime.host.clock import SystemClock
from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.service.gateway import Gateway, GatewayConfig
from gpushare.runtime.service.policy import SupervisorPolicy
from gpushare.runtime.service.process import (
    detect_gpus,
    detect_telemetry,
    loop_name,
    run_event_loop,
    run_foreground,
    start_background,
    stop_background,
)
from gpushare.runtime.service.routes import DuplicateModelName, RouteTable, Upstream, routes_from_document
from gpushare.runtime.store.state import load_state, profile_paths
from gpushare.units import parse_bytes

API_KEY_ENV = GATEWAY_API_KEY_ENV

Host = Annotated[str, typer.Option(help="Address to listen on. Loopback unless you mean otherwise.")]
KeyFile = Annotated[
    Path | None,
    typer.Option(help=f"File holding the API key clients must send (else ${API_KEY_ENV}; else no key)."),
]
MaxBody = Annotated[str, typer.Option(help="Largest request body, e.g. 32MiB.")]
ConnectTimeout = Annotated[float, typer.Option(help="Seconds to connect to an instance before a 503.")]


def _api_key(key_file: Path | None) -> str | None:
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise InputError(f"--api-key-file {key_file}: {exc.strerror}") from exc
        if not key:
            raise InputError(f"--api-key-file {key_file}: the file is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def gateway_config(
    host: str,
    port: int,
    key_file: Path | None,
    max_body: str,
    connect_timeout: float,
    read_timeout: list[str] | None = None,
) -> GatewayConfig:
    every, per_route = read_timeouts(read_timeout)
    config = GatewayConfig(
        host=host,
        port=port,
        api_key=_api_key(key_file),
        max_body_bytes=parse_bytes(max_body, "--max-body"),
        connect_timeout_s=connect_timeout,
        read_timeout_s=every,
        read_timeouts=per_route,
    )
    warning = gateway_warning(host, config.api_key is not None)
    if warning is not None:
        term.console(stderr=True).print(Text.assemble(("warning:", "yellow"), f" {warning}"))
    return config


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@app.command()
def supervise(
    profile: Annotated[str, typer.Argument(help="The profile whose instances `up` started.")],
    foreground: Annotated[
        bool, typer.Option(help="Run here (systemd, containers) instead of in the background.")
    ] = False,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the profile's background gateway/supervisor.")
    ] = False,
    host: Host = DEFAULT_GATEWAY_HOST,
    port: GatewayPort = DEFAULT_GATEWAY_PORT,
    api_key_file: KeyFile = None,
    max_body: MaxBody = "32MiB",
    connect_timeout: ConnectTimeout = 3.0,
    read_timeout: ReadTimeout = None,
    restart: Annotated[bool, typer.Option(help="Restart instances that exit or fail health checks.")] = True,
    restart_on_memory: Annotated[
        bool, typer.Option(help="Also restart an instance over its memory plan.")
    ] = False,
    memory_tolerance: Annotated[float, typer.Option(min=0.0, help="Alert past planned x (1 + this).")] = 0.10,
    alert_command: Annotated[
        str | None,
        typer.Option(help="Shell command run on each alert (GPUSHARE_ALERT_KIND, ... in its env)."),
    ] = None,
    crash_loop_restarts: Annotated[int, typer.Option(min=0, help="Restarts allowed in 10 minutes.")] = 5,
    health_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between /health probes.")] = 5.0,
) -> None:
    """Run the gateway (one OpenAI endpoint, /metrics) and keep the profile's instances serving."""
    paths = profile_paths(profile)
    runner, clock = SubprocessRunner(), SystemClock()
    console = term.console()
    if stop:
        stopped = stop_background(paths, runner=runner, clock=clock)
        console.print("stopped" if stopped else "not running")
        return
    read_timeouts(read_timeout)  # bad values: one line, whatever else is wrong
    if load_state(paths) is None:
        raise InputError(f"profile {profile!r} has no instances to supervise", hint=f"gpushare up {profile}")
    policy = SupervisorPolicy(
        restart=restart,
        restart_on_memory=restart_on_memory,
        memory_tolerance=memory_tolerance,
        crash_loop_restarts=crash_loop_restarts,
        health_interval_s=health_interval,
    )
    config = gateway_config(host, port, api_key_file, max_body, connect_timeout, read_timeout)
    if foreground:
        configure_logging()
        inventory, utilization = detect_gpus()
        telemetry = detect_telemetry(inventory)
        try:
            run_foreground(
                paths,
                config,
                policy,
                inventory=inventory,
                utilization=utilization,
                alert_command=alert_command,
                telemetry=telemetry,
            )
        finally:
            if telemetry is not None:
                telemetry.close()
        return
    args = [
        "--host",
        host,
        "--port",
        str(port),
        "--max-body",
        max_body,
        "--connect-timeout",
        str(connect_timeout),
        "--memory-tolerance",
        str(memory_tolerance),
        "--crash-loop-restarts",
        str(crash_loop_restarts),
        "--health-interval",
        str(health_interval),
    ]
    args += read_timeout_args(read_timeout)
    args += ["--restart" if restart else "--no-restart"]
    args += ["--restart-on-memory" if restart_on_memory else "--no-restart-on-memory"]
    if api_key_file is not None:
        args += ["--api-key-file", str(api_key_file)]
    if alert_command is not None:
        args += ["--alert-command", alert_command]
    info = start_background(paths, args, runner=runner, clock=clock)
    console.print(f"gateway {info.url}/v1 (pid {info.pid}); log {paths.logs_dir / 'supervisor.log'}")


@app.command()
def gateway(
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL=URL of an OpenAI-compatible server; MODEL,ALIAS,...=URL for aliases. Repeatable."
        ),
    ] = None,
    routes: Annotated[
        Path | None,
        typer.Option(
            "--routes",
            dir_okay=False,
            help="A YAML/JSON file: `routes:` [{model, aliases, url}] (the ConfigMap `export k8s` writes).",
        ),
    ] = None,
    host: Host = DEFAULT_GATEWAY_HOST,
    port: GatewayPort = DEFAULT_GATEWAY_PORT,
    api_key_file: KeyFile = None,
    max_body: MaxBody = "32MiB",
    connect_timeout: ConnectTimeout = 3.0,
    read_timeout: ReadTimeout = None,
) -> None:
    """A gateway only, in the foreground, for servers gpushare did not start (no supervision)."""
    table = RouteTable()
    listed = [_parse_upstream(text) for text in upstream or []]
    if routes is not None:
        listed += _read_routes(routes)
    if not listed:
        raise InputError("no route: give --upstream MODEL=URL (repeatable) or --routes FILE")
    try:
        table.replace(listed)
    except DuplicateModelName as exc:
        raise InputError(f"{'--routes ' + str(routes) if routes else '--upstream'}: {exc}") from exc
    config = gateway_config(host, port, api_key_file, max_body, connect_timeout, read_timeout)
    configure_logging()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gw = Gateway(table, config)
        await gw.start()
        logging.getLogger("gpushare").info("gateway on %s:%d (%s)", host, gw.bound_port, loop_name())
        await stop.wait()
        await gw.stop()

    run_event_loop(main())


def _read_routes(path: Path) -> list[Upstream]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"--routes {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"--routes {path}: not YAML or JSON ({exc})".splitlines()[0]) from exc
    return routes_from_document(data, str(path))


def _parse_upstream(text: str) -> Upstream:
    names, sep, url = text.partition("=")
    if not sep or not names or not url.startswith(("http://", "https://")):
        raise InputError(
            f"--upstream {text!r}: expected MODEL=http://HOST:PORT", hint="e.g. qwen=http://127.0.0.1:8001"
        )
    served, *aliases = [n.strip() for n in names.split(",") if n.strip()]
    return Upstream(instance=served, served_name=served, base_url=url.rstrip("/"), aliases=tuple(aliases))
