"""Time as an interface: the launcher waits and measures through a Clock so tests can skip ahead;
code on an event loop (the gateway's swaps) through an AsyncClock."""

from __future__ import annotations

import asyncio
import heapq
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


class AsyncClock(Protocol):
    """Time for code on an event loop (the gateway's swaps): waiting must not block the loop."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeAsyncClock:
    """Starts at `start`; only `advance` moves it. A `sleep` returns once the clock has been advanced
    past its deadline; sleepers wake in deadline order, and the loop runs what they set going before
    the clock moves on, so a test steps through timeouts without waiting for them."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._count, waiter))
        await waiter

    @property
    def sleeping(self) -> int:
        """How many sleeps are waiting for the clock."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, waiter = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not waiter.done():
                waiter.set_result(None)
                await settle()
        self.now = target
        await settle()


async def settle(rounds: int = 50) -> None:
    """Let every task that can run, run (a fixed number of loop turns: enough for tasks that only
    await each other and in-memory fakes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
