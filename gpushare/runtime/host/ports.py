"""Whether a TCP port is free on this machine (the pre-flight check before anything starts)."""

from __future__ import annotations

import socket


def port_is_free(port: int) -> bool:
    """Nothing listens on `port` (vLLM binds 0.0.0.0 by default, so check that)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
