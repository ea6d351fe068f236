"""Options that several commands share, declared once (their modules stay lazily imported)."""

from __future__ import annotations

import math
from typing import Annotated

import typer

from gpushare.errors import InputError

GatewayPortOption = typer.Option(min=0, max=65535, help="Gateway port (0: any free port).")
GatewayPort = Annotated[int, GatewayPortOption]
"""The port a gateway listens on: 0 (the kernel picks a free one) to 65535."""

DEFAULT_GATEWAY_HOST = "127.0.0.1"
"""Where `up`, `supervise` and `gateway` listen unless told otherwise: loopback."""
DEFAULT_GATEWAY_PORT = 8000

ReadTimeout = Annotated[
    list[str] | None,
    typer.Option(
        "--read-timeout",
        help="Seconds an instance may send nothing (first byte, or between chunks) before a 504: "
        "SECONDS for every route, MODEL=SECONDS for one (served name or alias). Repeatable; "
        "default: no limit.",
    ),
]


def read_timeouts(values: list[str] | None) -> tuple[float | None, dict[str, float]]:
    """`--read-timeout` values: (every route's, {model or alias: its own})."""
    every: float | None = None
    per_route: dict[str, float] = {}
    for text in values or []:
        name, sep, number = text.rpartition("=")
        try:
            seconds = float(number)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < math.inf or (sep and not name):
            raise InputError(
                f"--read-timeout {text!r}: expected SECONDS or MODEL=SECONDS, a number > 0",
                hint="e.g. --read-timeout 120 --read-timeout qwen=600",
            )
        if sep:
            per_route[name] = seconds
        else:
            every = seconds
    return every, per_route


def read_timeout_args(values: list[str] | None) -> list[str]:
    """The same `--read-timeout` values as arguments of a background `supervise`."""
    return [arg for value in values or [] for arg in ("--read-timeout", value)]
