"""Prometheus metrics for the gateway's `/metrics`: one scrape for everything.

Four sources, one registry:
- the gateway's own counters (per model: requests, errors, latency, in flight),
- per instance: state, restarts, planned against actual GPU memory (`SupervisedInstances`, which the
  supervisor implements),
- per GPU: memory and utilisation (`GpuInventory`, plus an optional `UtilizationSource`), and
  temperature, power and SM utilization (an optional `TelemetrySource`: devices/nvml.py `NvmlTelemetry`),
- each instance's own `vllm:*` metrics, scraped from its `/metrics` and relabelled with `instance`
  and `model` (`VllmMetricsCollector`).

Instance and GPU figures are read at scrape time by custom collectors, so nothing polls in between.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from gpushare.devices.base import GpuInventory, TelemetrySource
from gpushare.runtime.phase import SUPERVISOR_PHASES, InstancePhase

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# LLM requests run from milliseconds (a cached /v1/models) to minutes (a long generation).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    math.inf,
)


class GatewayMetrics:
    """The gateway's own per-model series. Label children are cached: the proxy's hot path pays a
    dict lookup, not prometheus_client's label resolution."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "gpushare_gateway_requests",
            "Requests answered by the gateway, by model, route and status.",
            ["model", "route", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "gpushare_gateway_errors",
            "Requests that failed, by model and kind (unknown_model, unavailable, upstream_5xx, "
            "upstream_disconnect, upstream_timeout, bad_request, unauthorized, too_large).",
            ["model", "kind"],
            registry=registry,
        )
        self.duration = Histogram(
            "gpushare_gateway_request_duration_seconds",
            "Time from the request's arrival to the last byte of the answer.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "gpushare_gateway_time_to_first_byte_seconds",
            "Time from the request's arrival to the upstream's response headers (for a stream, "
            "close to time to first token).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "gpushare_gateway_requests_in_flight",
            "Requests the gateway is proxying now.",
            ["model"],
            registry=registry,
        )
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._per_model: dict[str, tuple[Gauge, Histogram, Histogram]] = {}

    def model(self, model: str) -> tuple[Gauge, Histogram, Histogram]:
        """(in-flight gauge, duration histogram, first-byte histogram) for one model."""
        children = self._per_model.get(model)
        if children is None:
            children = (
                self.in_flight.labels(model=model),
                self.duration.labels(model=model),
                self.first_byte.labels(model=model),
            )
            self._per_model[model] = children
        return children

    def count(self, model: str, route: str, code: int) -> None:
        key = (model, route, code)
        child = self._requests.get(key)
        if child is None:
            child = self.requests.labels(model=model, route=route, code=str(code))
            self._requests[key] = child
        child.inc()

    def error(self, model: str, kind: str) -> None:
        self.errors.labels(model=model, kind=kind).inc()


@dataclass(frozen=True)
class SupervisedInstance:
    """One instance as the supervisor sees it at scrape time.

    `planned_bytes` is per GPU (the plan's `planned_bytes`); `actual_bytes` maps a GPU index to what
    NVML shows for the instance's processes on it (absent where NVML lists no processes, e.g. in a
    container without the host's pid namespace).
    """

    instance: str
    model: str
    state: InstancePhase
    restarts: int = 0
    planned_bytes: int = 0
    actual_bytes: Mapping[int, int] = field(default_factory=dict)
    memory_over_plan: bool = False
    alerts: Mapping[str, int] = field(default_factory=dict)


class SupervisedInstances(Protocol):
    def supervised_instances(self) -> Sequence[SupervisedInstance]: ...


class InstanceCollector(Collector):
    """`gpushare_instance_*`: state, restarts, planned and actual memory, alerts."""

    def __init__(self, source: SupervisedInstances) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        labels = ["instance", "model"]
        state = GaugeMetricFamily(
            "gpushare_instance_state",
            "1 for the instance's current state, 0 for the others.",
            labels=[*labels, "state"],
        )
        up = GaugeMetricFamily("gpushare_instance_up", "1 when the instance serves.", labels=labels)
        restarts = Metric("gpushare_instance_restarts", "Restarts by the supervisor.", "counter")
        planned = GaugeMetricFamily(
            "gpushare_instance_planned_memory_bytes",
            "GPU memory the plan gives the instance, per GPU.",
            labels=labels,
        )
        actual = GaugeMetricFamily(
            "gpushare_instance_gpu_memory_bytes",
            "GPU memory the instance's processes hold (NVML), per GPU.",
            labels=[*labels, "gpu"],
        )
        over = GaugeMetricFamily(
            "gpushare_instance_memory_over_plan",
            "1 while the instance holds more GPU memory than planned plus the tolerance.",
            labels=labels,
        )
        alerts = Metric("gpushare_instance_alerts", "Alerts raised by the supervisor, by kind.", "counter")
        for status in self._source.supervised_instances():
            values = [status.instance, status.model]
            for name in SUPERVISOR_PHASES:
                state.add_metric([*values, name], 1.0 if status.state == name else 0.0)
            up.add_metric(values, 1.0 if status.state == "ready" else 0.0)
            restarts.add_sample(
                "gpushare_instance_restarts_total",
                {"instance": status.instance, "model": status.model},
                float(status.restarts),
            )
            planned.add_metric(values, float(status.planned_bytes))
            for gpu, used in sorted(status.actual_bytes.items()):
                actual.add_metric([*values, str(gpu)], float(used))
            over.add_metric(values, 1.0 if status.memory_over_plan else 0.0)
            for kind, count in sorted(status.alerts.items()):
                alerts.add_sample(
                    "gpushare_instance_alerts_total",
                    {"instance": status.instance, "model": status.model, "kind": kind},
                    float(count),
                )
        yield from (state, up, restarts, planned, actual, over, alerts)


class UtilizationSource(Protocol):
    """GPU busy fraction (0..1) by index; NVML's utilization.gpu over its last sample period."""

    def utilization(self) -> Mapping[int, float]: ...


class GpuCollector(Collector):
    """`gpushare_gpu_*`: memory total/used/free and utilisation per GPU; with a telemetry source
    also temperature (and where it slows down), power draw (and its limit) and SM utilization."""

    def __init__(
        self,
        inventory: GpuInventory,
        utilization: UtilizationSource | None = None,
        telemetry: TelemetrySource | None = None,
    ) -> None:
        self._inventory = inventory
        self._utilization = utilization
        self._telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        labels = ["gpu", "name", "uuid"]
        total = GaugeMetricFamily(
            "gpushare_gpu_memory_total_bytes", "GPU memory (NVML total).", labels=labels
        )
        used = GaugeMetricFamily("gpushare_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels)
        free = GaugeMetricFamily("gpushare_gpu_memory_free_bytes", "GPU memory free (NVML).", labels=labels)
        busy = GaugeMetricFamily(
            "gpushare_gpu_utilization_ratio",
            "Fraction of time a kernel ran (NVML utilization.gpu).",
            labels=["gpu"],
        )
        try:
            gpus = self._inventory.gpus()
            ratios = self._utilization.utilization() if self._utilization is not None else {}
        except Exception:  # a driver hiccup must not fail the whole scrape
            log.exception("reading the GPUs for /metrics failed")
            return
        for gpu in gpus:
            values = [str(gpu.index), gpu.name, gpu.uuid or ""]
            total.add_metric(values, float(gpu.total_bytes))
            used.add_metric(values, float(gpu.used_bytes))
            free_bytes = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes - gpu.used_bytes
            free.add_metric(values, float(free_bytes))
            if gpu.index in ratios:
                busy.add_metric([str(gpu.index)], ratios[gpu.index])
        yield from (total, used, free, busy)
        if self._telemetry is not None:
            yield from self._sensor_families()

    def _sensor_families(self) -> Iterable[Metric]:
        try:
            readings = self._telemetry.telemetry() if self._telemetry is not None else {}
        except Exception:  # as above: the memory series are still worth a scrape
            log.exception("reading the GPU sensors for /metrics failed")
            return
        families: list[tuple[GaugeMetricFamily, str]] = [
            (
                GaugeMetricFamily(
                    "gpushare_gpu_temperature_celsius", "GPU temperature (NVML).", labels=["gpu"]
                ),
                "temperature_c",
            ),
            (
                GaugeMetricFamily(
                    "gpushare_gpu_slowdown_temperature_celsius",
                    "Temperature at which the GPU slows its clocks (NVML slowdown threshold).",
                    labels=["gpu"],
                ),
                "slowdown_temperature_c",
            ),
            (
                GaugeMetricFamily("gpushare_gpu_power_watts", "GPU power draw (NVML).", labels=["gpu"]),
                "power_w",
            ),
            (
                GaugeMetricFamily(
                    "gpushare_gpu_power_limit_watts", "The GPU's enforced power limit (NVML).", labels=["gpu"]
                ),
                "power_limit_w",
            ),
            (
                GaugeMetricFamily(
                    "gpushare_gpu_sm_utilization_ratio",
                    "Fraction of SMs busy since the previous scrape (NVML GPM SM_UTIL; Hopper and later).",
                    labels=["gpu"],
                ),
                "sm_utilization",
            ),
        ]
        for index, reading in sorted(readings.items()):
            for family, field_name in families:
                value = getattr(reading, field_name)
                if value is not None:
                    family.add_metric([str(index)], float(value))
        yield from (family for family, _ in families)


class VllmMetricsCollector(Collector):
    """Each instance's own `/metrics`, merged into one exposition with `instance` and `model` labels.

    `ingest` parses an instance's text (prometheus_client's parser) and keeps it until the next
    ingest or `forget`; `collect` merges families of the same name across instances (a name may
    appear only once per exposition). Labels `instance` and `model` are set by us and override any
    the instance sent; vLLM's own `model_name` is kept.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("vllm:",)) -> None:
        self._prefixes = prefixes
        self._families: dict[str, list[Metric]] = {}
        self._scrape_ok: dict[str, tuple[str, bool]] = {}

    def ingest(self, instance: str, model: str, text: str) -> None:
        families: list[Metric] = []
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning("instance %s: cannot parse its /metrics: %s", instance, exc)
            self.failed(instance, model)
            return
        for family in parsed:
            if not family.name.startswith(self._prefixes):
                continue
            relabelled = Metric(family.name, family.documentation, family.type, family.unit)
            relabelled.samples = [
                Sample(
                    s.name,
                    {**s.labels, "instance": instance, "model": model},
                    s.value,
                    s.timestamp,
                    s.exemplar,
                )
                for s in family.samples
            ]
            families.append(relabelled)
        self._families[instance] = families
        self._scrape_ok[instance] = (model, True)

    def failed(self, instance: str, model: str) -> None:
        """The instance did not answer: drop its series (stale numbers would mislead)."""
        self._families.pop(instance, None)
        self._scrape_ok[instance] = (model, False)

    def forget(self, instance: str) -> None:
        self._families.pop(instance, None)
        self._scrape_ok.pop(instance, None)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for families in self._families.values():
            for family in families:
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                if target.type != family.type:  # two vLLM versions disagree: keep the first
                    continue
                target.samples.extend(family.samples)
        yield from merged.values()
        ok = GaugeMetricFamily(
            "gpushare_vllm_scrape_ok",
            "1 when the instance's own /metrics answered at this scrape.",
            labels=["instance", "model"],
        )
        for instance, (model, answered) in sorted(self._scrape_ok.items()):
            ok.add_metric([instance, model], 1.0 if answered else 0.0)
        yield ok


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (Prometheus 0.0.4 format) of everything registered."""
    return generate_latest(registry)
