"""What the swap manager counts, as plain data: `swap/metrics.py` exports it on /metrics, `status`
and the control endpoint show it. Pure.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

SWAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, math.inf)
"""Seconds: a level-1 swap was 0.9 s on an H200 (sleep 0.36 + wake 0.55), a drain adds up to
drain_s, a level-2 wake reloads the weights from disk."""

SleepReason = Literal["make_room", "idle", "manual", "restart"]
"""Why an instance was put to sleep: another needed its room, its idle timeout, `gpushare sleep`,
or it was (re)started and put to sleep once it served."""

RefusalReason = Literal["queue_full", "wait_timeout", "wake_failed", "no_room", "down"]
"""Why a request for an on-demand model got 503 from the swap manager."""


@dataclass
class Histogram:
    """Cumulative-bucket counts, as Prometheus keeps them."""

    buckets: tuple[float, ...] = SWAP_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it) per bucket, the last one +Inf."""
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.total, 6)}


RECENT_SWAPS = 256
"""How many swaps `SwapStats.recent` keeps (the control endpoint lists them)."""


@dataclass(frozen=True)
class SwapRecord:
    """One swap: which instance woke on which GPU, which were put to sleep for it, and how long
    the parts took (`sleep_s`: drains and sleeps; `wake_s`: /wake_up and its check)."""

    gpu: int
    instance: str
    put_to_sleep: tuple[str, ...]
    seconds: float
    sleep_s: float
    wake_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "instance": self.instance,
            "put_to_sleep": list(self.put_to_sleep),
            "seconds": round(self.seconds, 4),
            "sleep_s": round(self.sleep_s, 4),
            "wake_s": round(self.wake_s, 4),
        }


@dataclass
class SwapStats:
    """Per instance: wakes done by a swap, sleeps by reason, requests refused by reason, requests
    still in flight when a drain ran out (vLLM aborted them); per GPU: how long each swap took (the
    GPU's lock taken to the target confirmed awake: drains, sleeps and the wake); per instance: how
    long each held request waited for the wake."""

    wakes: Counter[str] = field(default_factory=Counter)
    sleeps: Counter[tuple[str, SleepReason]] = field(default_factory=Counter)
    refused: Counter[tuple[str, RefusalReason]] = field(default_factory=Counter)
    aborted_by_sleep: Counter[str] = field(default_factory=Counter)
    failed_wakes: Counter[str] = field(default_factory=Counter)
    swap_seconds: dict[int, Histogram] = field(default_factory=dict)
    wake_wait_seconds: dict[str, Histogram] = field(default_factory=dict)
    recent: deque[SwapRecord] = field(default_factory=lambda: deque(maxlen=RECENT_SWAPS))

    def swapped(
        self,
        gpu: int,
        instance: str,
        seconds: float,
        *,
        put_to_sleep: tuple[str, ...] = (),
        sleep_s: float = 0.0,
        wake_s: float | None = None,
    ) -> None:
        self.wakes[instance] += 1
        self.swap_seconds.setdefault(gpu, Histogram()).observe(seconds)
        wake = seconds - sleep_s if wake_s is None else wake_s
        self.recent.append(SwapRecord(gpu, instance, put_to_sleep, seconds, sleep_s, wake))

    def waited(self, instance: str, seconds: float) -> None:
        self.wake_wait_seconds.setdefault(instance, Histogram()).observe(seconds)

    @property
    def swaps_total(self) -> int:
        return sum(self.wakes.values())
