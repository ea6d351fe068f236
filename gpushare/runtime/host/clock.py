"""Time as an interface: the launcher waits and measures through a Clock so tests can skip ahead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (comparable with process start times)."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """Starts at `start`; only `sleep` (and `advance`) move it. `on_sleep` runs after each sleep, so
    a test can script what happens while the launcher waits."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._mono = 0.0
        self.slept = 0.0
        self.on_sleep: list[Callable[[], None]] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        self.slept += seconds
        for hook in list(self.on_sleep):
            hook()
