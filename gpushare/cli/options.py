"""Options that several commands share, declared once (their modules stay lazily imported)."""

from __future__ import annotations

from typing import Annotated

import typer

GatewayPortOption = typer.Option(min=0, max=65535, help="Gateway port (0: any free port).")
GatewayPort = Annotated[int, GatewayPortOption]
"""The port a gateway listens on: 0 (the kernel picks a free one) to 65535."""

DEFAULT_GATEWAY_HOST = "127.0.0.1"
"""Where `up`, `supervise` and `gateway` listen unless told otherwise: loopback."""
DEFAULT_GATEWAY_PORT = 8000
