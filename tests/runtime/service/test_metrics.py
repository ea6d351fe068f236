"""Collectors: instance states and memory, GPUs, and vLLM's own series relabelled per instance."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from upstream_fake import VLLM_METRICS

from gpushare.devices.base import Gpu, GpuTelemetry
from gpushare.devices.static import StaticInventory
from gpushare.runtime.service.metrics import (
    GpuCollector,
    InstanceCollector,
    SupervisedInstance,
    VllmMetricsCollector,
    render,
)
from gpushare.units import GiB


class Statuses:
    def __init__(self, *statuses: SupervisedInstance) -> None:
        self.statuses = list(statuses)

    def supervised_instances(self) -> list[SupervisedInstance]:
        return self.statuses


class Busy:
    def utilization(self) -> Mapping[int, float]:
        return {0: 0.75}


def scrape(registry: CollectorRegistry) -> list[Sample]:
    text = render(registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def find(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]


def test_instance_collector() -> None:
    registry = CollectorRegistry()
    registry.register(
        InstanceCollector(
            Statuses(
                SupervisedInstance(
                    "a",
                    "model-a",
                    "ready",
                    restarts=2,
                    planned_bytes=10 * GiB,
                    actual_bytes={0: 11 * GiB},
                    memory_over_plan=True,
                    alerts={"memory_over_plan": 1},
                ),
                SupervisedInstance("b", "model-b", "backoff"),
            )
        )
    )
    samples = scrape(registry)
    assert find(samples, "gpushare_instance_state", instance="a", state="ready") == [1.0]
    assert find(samples, "gpushare_instance_state", instance="a", state="backoff") == [0.0]
    assert find(samples, "gpushare_instance_up", instance="b") == [0.0]
    assert find(samples, "gpushare_instance_restarts_total", instance="a", model="model-a") == [2.0]
    assert find(samples, "gpushare_instance_planned_memory_bytes", instance="a") == [10 * GiB]
    assert find(samples, "gpushare_instance_gpu_memory_bytes", instance="a", gpu="0") == [11 * GiB]
    assert find(samples, "gpushare_instance_gpu_memory_bytes", instance="b") == []
    assert find(samples, "gpushare_instance_memory_over_plan", instance="a") == [1.0]
    assert find(samples, "gpushare_instance_alerts_total", instance="a", kind="memory_over_plan") == [1.0]


def test_gpu_collector() -> None:
    registry = CollectorRegistry()
    gpu = Gpu(0, "NVIDIA H100 80GB HBM3", 80 * GiB, used_bytes=30 * GiB, free_bytes=50 * GiB, uuid="GPU-1")
    registry.register(GpuCollector(StaticInventory([gpu]), Busy()))
    samples = scrape(registry)
    assert find(samples, "gpushare_gpu_memory_used_bytes", gpu="0", uuid="GPU-1") == [30 * GiB]
    assert find(samples, "gpushare_gpu_memory_free_bytes", gpu="0") == [50 * GiB]
    assert find(samples, "gpushare_gpu_utilization_ratio", gpu="0") == [0.75]


class Sensors:
    def __init__(self, readings: dict[int, GpuTelemetry] | None = None, fail: bool = False) -> None:
        self.readings = readings or {}
        self.fail = fail

    def telemetry(self) -> dict[int, GpuTelemetry]:
        if self.fail:
            raise RuntimeError("NVML hiccup")
        return self.readings

    def close(self) -> None:
        pass


def test_gpu_collector_exports_sensors_it_has_and_skips_the_rest() -> None:
    gpus = [Gpu(0, "NVIDIA H200", 140 * GiB), Gpu(1, "NVIDIA L4", 24 * GiB)]
    sensors = Sensors({0: GpuTelemetry(71.0, 89.0, 512.5, 700.0, 0.42), 1: GpuTelemetry(40.0)})
    registry = CollectorRegistry()
    registry.register(GpuCollector(StaticInventory(gpus), telemetry=sensors))
    samples = scrape(registry)
    assert find(samples, "gpushare_gpu_temperature_celsius", gpu="0") == [71.0]
    assert find(samples, "gpushare_gpu_slowdown_temperature_celsius", gpu="0") == [89.0]
    assert find(samples, "gpushare_gpu_power_watts", gpu="0") == [512.5]
    assert find(samples, "gpushare_gpu_power_limit_watts", gpu="0") == [700.0]
    assert find(samples, "gpushare_gpu_sm_utilization_ratio", gpu="0") == [0.42]
    assert find(samples, "gpushare_gpu_temperature_celsius", gpu="1") == [40.0]
    assert find(samples, "gpushare_gpu_power_watts", gpu="1") == []  # not reported: no series
    # a failing sensor read leaves the memory series in the scrape
    broken = CollectorRegistry()
    broken.register(GpuCollector(StaticInventory(gpus), telemetry=Sensors(fail=True)))
    samples = scrape(broken)
    assert find(samples, "gpushare_gpu_memory_total_bytes", gpu="1") == [24 * GiB]
    assert find(samples, "gpushare_gpu_temperature_celsius") == []


def test_vllm_relabelling_merges_families_across_instances() -> None:
    collector = VllmMetricsCollector()
    collector.ingest("a", "model-a", VLLM_METRICS)
    collector.ingest("b", "model-b", VLLM_METRICS.replace(" 42.0", " 7.0"))
    collector.ingest("c", "model-c", "this is { not prometheus")
    registry = CollectorRegistry()
    registry.register(collector)
    text = render(registry).decode()
    samples = scrape(registry)
    assert text.count("# TYPE vllm:prompt_tokens_total counter") == 1
    assert find(samples, "vllm:prompt_tokens_total", instance="a", model="model-a", model_name="tiny") == [
        42.0
    ]
    assert find(samples, "vllm:prompt_tokens_total", instance="b", model="model-b") == [7.0]
    assert find(samples, "vllm:e2e_request_latency_seconds_bucket", instance="b", le="0.5") == [1.0]
    assert not find(samples, "python_gc_objects_collected_total")
    assert find(samples, "gpushare_vllm_scrape_ok", instance="c") == [0.0]
    collector.failed("a", "model-a")
    collector.forget("b")
    samples = scrape(registry)
    assert not find(samples, "vllm:prompt_tokens_total")
    assert find(samples, "gpushare_vllm_scrape_ok", instance="a") == [0.0]
    assert not find(samples, "gpushare_vllm_scrape_ok", instance="b")
