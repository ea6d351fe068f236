"""`/metrics` for the swaps: a collector the gateway's registry registers next to the others
(runtime/service/metrics.py), read at scrape time from the manager's `SwapStats` and snapshot.

    gpushare_swaps_total{instance,gpu}                 wakes done by a swap (counter)
    gpushare_swap_duration_seconds{gpu}                lock taken to target confirmed awake (histogram)
    gpushare_wake_wait_seconds{instance}               a held request's wait for its wake (histogram)
    gpushare_swap_sleeps_total{instance,reason}        make_room, idle, manual, restart (counter)
    gpushare_swap_refused_total{instance,reason}       503s the manager gave (counter)
    gpushare_swap_aborted_requests_total{instance}     in flight when a drain ran out (counter)
    gpushare_swap_failed_wakes_total{instance}         (counter)
    gpushare_instance_awake{instance,gpu}              1 awake, 0 otherwise (gauge)
    gpushare_swap_held_requests{instance}              requests waiting for a wake now (gauge)
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gpushare.runtime.service.swap.manager import SwapManager
from gpushare.runtime.service.swap.stats import Histogram


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else repr(bound), float(n)) for bound, n in h.cumulative()]


class SwapCollector(Collector):
    def __init__(self, manager: SwapManager) -> None:
        self._manager = manager

    def collect(self) -> Iterable[Metric]:
        stats = self._manager.stats
        states = self._manager.snapshot()
        gpu_of = {s.name: str(s.gpu) for s in states}

        swaps = Metric("gpushare_swaps", "Wakes of on-demand instances done by a swap.", "counter")
        for s in states:
            swaps.add_sample(
                "gpushare_swaps_total",
                {"instance": s.name, "gpu": gpu_of[s.name]},
                float(stats.wakes[s.name]),
            )
        duration = HistogramMetricFamily(
            "gpushare_swap_duration_seconds",
            "One swap: the GPU's swap lock taken to the target confirmed awake (drains, sleeps, wake).",
            labels=["gpu"],
        )
        for gpu, h in sorted(stats.swap_seconds.items()):
            duration.add_metric([str(gpu)], _buckets(h), h.total)
        wait = HistogramMetricFamily(
            "gpushare_wake_wait_seconds",
            "How long a request held for a sleeping model waited until it could be forwarded.",
            labels=["instance"],
        )
        for name, h in sorted(stats.wake_wait_seconds.items()):
            wait.add_metric([name], _buckets(h), h.total)
        sleeps = Metric("gpushare_swap_sleeps", "On-demand instances put to sleep, by reason.", "counter")
        for (name, reason), n in sorted(stats.sleeps.items()):
            sleeps.add_sample("gpushare_swap_sleeps_total", {"instance": name, "reason": reason}, float(n))
        refused = Metric(
            "gpushare_swap_refused", "Requests the swap manager answered 503, by reason.", "counter"
        )
        for (name, why), n in sorted(stats.refused.items()):
            refused.add_sample("gpushare_swap_refused_total", {"instance": name, "reason": why}, float(n))
        aborted = Metric(
            "gpushare_swap_aborted_requests",
            "Requests still in flight when a drain ran out (vLLM's /sleep aborted them).",
            "counter",
        )
        failed = Metric("gpushare_swap_failed_wakes", "Wakes that failed.", "counter")
        awake = GaugeMetricFamily(
            "gpushare_instance_awake", "1 while the on-demand instance is awake.", labels=["instance", "gpu"]
        )
        held = GaugeMetricFamily(
            "gpushare_swap_held_requests", "Requests held now, waiting for the wake.", labels=["instance"]
        )
        for s in states:
            aborted.add_sample(
                "gpushare_swap_aborted_requests_total",
                {"instance": s.name},
                float(stats.aborted_by_sleep[s.name]),
            )
            failed.add_sample(
                "gpushare_swap_failed_wakes_total", {"instance": s.name}, float(stats.failed_wakes[s.name])
            )
            awake.add_metric([s.name, gpu_of[s.name]], 1.0 if s.awake else 0.0)
            held.add_metric([s.name], float(s.held))
        yield from (swaps, duration, wait, sleeps, refused, aborted, failed, awake, held)
