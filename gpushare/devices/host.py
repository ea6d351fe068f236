"""The host's memory, for the RAM that sleeping on-demand instances take (their weights in pinned
host memory at sleep level 1). Real: psutil (`PsutilHostRam`). Static: a given size
(`StaticHostRam`), for tests and for hosts that describe themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HostRam(Protocol):
    """Where the host's free memory comes from."""

    def available_bytes(self) -> int | None:
        """Memory available to new processes now, or None when the host cannot say."""


class PsutilHostRam:
    """psutil's `virtual_memory().available`: what can be given to processes without swapping."""

    def available_bytes(self) -> int | None:
        # psutil is imported where it is used: a plan without on-demand models never pays for it.
        import psutil

        try:
            return int(psutil.virtual_memory().available)
        except (psutil.Error, OSError):
            return None


@dataclass(frozen=True)
class StaticHostRam:
    """A described host: `size` bytes available (None: unknown)."""

    size: int | None

    def available_bytes(self) -> int | None:
        return self.size
