"""Monitoring objects: they validate against the vendored CRDs, every metric an alert uses exists
under that exact name, promtool accepts the rules and each alert fires on the series it is for
(and not on a neighbour's), and examples/prometheus-rules.yml is what the code generates."""

from __future__ import annotations

import importlib.util
import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import k8s_samples
import k8s_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gpushare.devices.base import Gpu, GpuTelemetry
from gpushare.devices.static import StaticInventory
from gpushare.errors import InputError
from gpushare.export.k8s import monitoring, render
from gpushare.export.k8s.monitoring import EXAMPLE_RULES_PATH, example_rules_text
from gpushare.runtime.service.metrics import (
    GatewayMetrics,
    GpuCollector,
    InstanceCollector,
    SupervisedInstance,
    VllmMetricsCollector,
)
from gpushare.runtime.service.metrics import render as render_metrics
from gpushare.units import GiB

REPO = Path(__file__).resolve().parents[2]

# Series that come from Prometheus itself or from kube-state-metrics, not from gpushare or vLLM.
EXTERNAL_METRICS = {"up", "kube_pod_container_status_restarts_total"}


class _Statuses:
    def supervised_instances(self) -> list[SupervisedInstance]:
        return [
            SupervisedInstance(
                "a", "qa", "ready", restarts=1, planned_bytes=GiB, actual_bytes={0: GiB}, alerts={"memory": 1}
            )
        ]


class _Utilization:
    def utilization(self) -> dict[int, float]:
        return {0: 0.5}


class _Sensors:
    def telemetry(self) -> dict[int, GpuTelemetry]:
        return {0: GpuTelemetry(60.0, 89.0, 300.0, 700.0, 0.5)}

    def close(self) -> None:
        pass


def exposed_gpushare_metrics() -> set[str]:
    """Every series name a gpushare supervisor + gateway exposes, read off a real exposition."""
    registry = CollectorRegistry()
    gateway = GatewayMetrics(registry)
    gateway.count("qa", "chat", 200)
    gateway.error("qa", "unavailable")
    gateway.model("qa")[1].observe(0.1)
    registry.register(InstanceCollector(_Statuses()))
    registry.register(GpuCollector(StaticInventory([Gpu(0, "X", 80 * GiB)]), _Utilization(), _Sensors()))
    vllm = VllmMetricsCollector()
    vllm.ingest("a", "qa", 'vllm:kv_cache_usage_perc{engine="0",model_name="qa"} 0.5\n')
    registry.register(vllm)
    text = render_metrics(registry).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def metrics_in(expr: str) -> set[str]:
    """The series names in a PromQL expression (not labels, functions, keywords or durations)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    functions = set(re.findall(r"([a-zA-Z_]+)\s*\(", text))
    return words - functions - {"unless", "and", "or"}


ALL_RULES = monitoring.alert_rules(
    k8s_samples.ALL_SOURCES,
    monitoring.RuleScope(
        matchers={monitoring.PART_OF_TARGET_LABEL: "classic"}, namespace="llm", containers=("vllm", "gateway")
    ),
)


def test_every_alert_uses_metrics_that_exist() -> None:
    exposed = exposed_gpushare_metrics()
    used = set().union(*(metrics_in(rule.expr) for rule in ALL_RULES))
    assert used, "no metric found in the rules"
    for name in sorted(used - EXTERNAL_METRICS):
        assert name in exposed, f"{name} is used by an alert but gpushare exposes no such series"
    assert "gpushare_instance_up" in used and monitoring.KV_CACHE_USAGE in used


def test_metric_names_are_read_off_expressions() -> None:
    expr = 'sum by (model) (rate(gpushare_gateway_errors_total{kind="unavailable", a="b"}[5m])) > 0'
    assert metrics_in(expr) == {"gpushare_gateway_errors_total"}
    assert metrics_in('x == 0 unless on (instance, model) vllm:y{state="s"} == 1') == {"x", "vllm:y"}
    assert "gpushare_instance_upp" not in exposed_gpushare_metrics()  # a typo would be caught


def test_vllm_names_its_kv_gauge_so() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed; cannot read its metric names")
    loggers = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"
    assert f'name="{monitoring.KV_CACHE_USAGE}"' in loggers.read_text()


@pytest.mark.parametrize(
    "sources",
    [combo for n in range(1, 5) for combo in itertools.combinations(k8s_samples.ALL_SOURCES, n)],
    ids=lambda s: "+".join(s),
)
def test_every_source_combination_validates(sources: tuple[monitoring.Source, ...]) -> None:
    objects = k8s_samples.monitoring_objects(sources)
    assert k8s_validate.validate_all(objects) == 3
    rules = objects[2]["spec"]["groups"][0]["rules"]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in monitoring.alert_rules(sources, monitoring.RuleScope(namespace="llm", containers=("vllm",))):
        assert rule.source in sources


def test_no_source_no_rules() -> None:
    with pytest.raises(InputError, match="no rule"):
        monitoring.prometheus_rule("x", monitoring.alert_rules([]))


def test_monitors_select_by_labels_and_keep_gpushare_labels() -> None:
    service_monitor, pod_monitor, _ = k8s_samples.monitoring_objects(k8s_samples.ALL_SOURCES)
    endpoint = service_monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # the gateway's `instance` label must survive
    assert service_monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["gateway", "gpu-pod"]}
    ]
    assert service_monitor["spec"]["targetLabels"] == [
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/component",
    ]
    assert pod_monitor["spec"]["podTargetLabels"] == [
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/component",
    ]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is False


def test_examples_rules_file_is_generated() -> None:
    path = REPO / EXAMPLE_RULES_PATH
    assert path.read_text() == example_rules_text(), (
        f"{EXAMPLE_RULES_PATH} is stale: regenerate it with "
        "`python -c 'from pathlib import Path; from gpushare.export.k8s.monitoring import *; "
        "Path(EXAMPLE_RULES_PATH).write_text(example_rules_text())'`"
    )
    groups = yaml.safe_load(path.read_text())
    # The same `groups` validate as a PrometheusRule's spec.
    k8s_validate.validate(
        {
            "apiVersion": monitoring.MONITORING_API,
            "kind": "PrometheusRule",
            "metadata": {"name": "x"},
            "spec": groups,
        }
    )


# -- promtool ---------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus, or its .deb's usr/bin/promtool)",
)


def _render_annotation(template: str, labels: dict[str, str], value: float | None) -> str:
    """The three template forms the rules use, rendered as Prometheus does for these values."""

    def label(match: re.Match[str]) -> str:
        return labels[match.group(1)]

    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", label, template)
    if value is not None:
        out = out.replace("{{ $value | humanize }}", f"{value:.4g}")
        out = out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    assert "{{" not in out, f"unrendered template in {template!r}"
    return out


def _expected(alert: str, labels: dict[str, str], value: float | None = None) -> dict[str, Any]:
    rule = next(r for r in ALL_RULES if r.alert == alert)
    return {
        "exp_labels": {**labels, "severity": rule.severity},
        "exp_annotations": {
            "summary": _render_annotation(rule.summary, labels, value),
            "description": _render_annotation(rule.description, labels, value),
        },
    }


P = 'app_kubernetes_io_part_of="classic"'


def promtool_tests() -> dict[str, Any]:
    inst = {"instance": "a", "model": "qa", "app_kubernetes_io_part_of": "classic"}
    series = [
        # down and not starting: fires; `s` is starting: no alert; `o` is another profile's
        (f'gpushare_instance_up{{instance="a",model="qa",{P}}}', "0x40"),
        (f'gpushare_instance_state{{instance="a",model="qa",state="starting",{P}}}', "0x40"),
        (f'gpushare_instance_up{{instance="s",model="qs",{P}}}', "0x40"),
        (f'gpushare_instance_state{{instance="s",model="qs",state="starting",{P}}}', "1x40"),
        ('gpushare_instance_up{instance="o",model="qo",app_kubernetes_io_part_of="other"}', "0x40"),
        (f'gpushare_instance_state{{instance="a",model="qa",state="failed",{P}}}', "1x40"),
        (f'gpushare_instance_memory_over_plan{{instance="a",model="qa",{P}}}', "1x40"),
        (f'gpushare_instance_restarts_total{{instance="a",model="qa",{P}}}', "0+1x40"),
        (f'up{{app_kubernetes_io_component="model-server",{P},namespace="llm",pod="p1"}}', "0x40"),
        (f'up{{app_kubernetes_io_component="gateway",{P},namespace="llm",pod="gw"}}', "0x40"),
        ('kube_pod_container_status_restarts_total{namespace="llm",container="vllm",pod="p1"}', "0+1x40"),
        ('kube_pod_container_status_restarts_total{namespace="llm",container="other",pod="x"}', "0+1x40"),
        (f'vllm:kv_cache_usage_perc{{model_name="qa",engine="0",{P}}}', "0.97x40"),
        (f'vllm:kv_cache_usage_perc{{model_name="qb",engine="0",{P}}}', "0.5x40"),
        (f'gpushare_gateway_errors_total{{model="qa",kind="unavailable",{P}}}', "0+1x40"),
        (f'gpushare_gateway_errors_total{{model="qb",kind="upstream_5xx",{P}}}', "0+1x40"),
        # GPU 0 runs hot, at its power limit and saturated; GPU 1 is cool, below its limit and idle-ish
        (f'gpushare_gpu_temperature_celsius{{gpu="0",{P}}}', "86x40"),
        (f'gpushare_gpu_slowdown_temperature_celsius{{gpu="0",{P}}}', "89x40"),
        (f'gpushare_gpu_temperature_celsius{{gpu="1",{P}}}', "70x40"),
        (f'gpushare_gpu_slowdown_temperature_celsius{{gpu="1",{P}}}', "89x40"),
        (f'gpushare_gpu_power_watts{{gpu="0",{P}}}', "695x40"),
        (f'gpushare_gpu_power_limit_watts{{gpu="0",{P}}}', "700x40"),
        (f'gpushare_gpu_power_watts{{gpu="1",{P}}}', "500x40"),
        (f'gpushare_gpu_power_limit_watts{{gpu="1",{P}}}', "700x40"),
        (f'gpushare_gpu_sm_utilization_ratio{{gpu="0",{P}}}', "0.98x40"),
        (f'gpushare_gpu_sm_utilization_ratio{{gpu="1",{P}}}', "0.4x40"),
    ]
    gpu0 = {"gpu": "0", "app_kubernetes_io_part_of": "classic"}
    pod = {"app_kubernetes_io_component": "model-server", "app_kubernetes_io_part_of": "classic"}
    pod |= {"namespace": "llm", "pod": "p1"}
    kv = {"model_name": "qa", "engine": "0", "app_kubernetes_io_part_of": "classic"}
    state_failed = {**inst, "state": "failed"}
    checks = [
        (4, "GpushareInstanceDown", []),
        (6, "GpushareInstanceDown", [_expected("GpushareInstanceDown", inst)]),
        (2, "GpushareInstanceFailed", [_expected("GpushareInstanceFailed", state_failed)]),
        (3, "GpushareMemoryOverPlan", [_expected("GpushareMemoryOverPlan", inst)]),
        # +1 a minute: 14 over the 15 samples of [5m, 20m], extrapolated to the 15m window = 15
        (20, "GpushareInstanceRestarting", [_expected("GpushareInstanceRestarting", inst, 15.0)]),
        (29, "GpushareVllmPodDown", []),
        (31, "GpushareVllmPodDown", [_expected("GpushareVllmPodDown", pod)]),
        (
            20,
            "GpushareContainerRestarting",
            [
                _expected(
                    "GpushareContainerRestarting",
                    {"namespace": "llm", "container": "vllm", "pod": "p1"},
                    15.0,
                )
            ],
        ),
        (11, "GpushareKvCacheNearFull", [_expected("GpushareKvCacheNearFull", kv, 0.97)]),
        (10, "GpushareModelUnavailable", [_expected("GpushareModelUnavailable", {"model": "qa"})]),
        (4, "GpushareGpuHot", []),
        (6, "GpushareGpuHot", [_expected("GpushareGpuHot", gpu0, 86.0)]),
        (14, "GpushareGpuPowerCapped", []),
        (16, "GpushareGpuPowerCapped", [_expected("GpushareGpuPowerCapped", gpu0)]),
        (16, "GpushareGpuSaturated", [_expected("GpushareGpuSaturated", gpu0, 0.98)]),
    ]
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": alerts}
                    for minute, name, alerts in checks
                ],
            }
        ],
    }


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render.to_yaml(monitoring.rules_file("gpushare", ALL_RULES)))
    result = _promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALL_RULES)} rules found" in result.stdout
    result = _promtool("check", "rules", str(REPO / EXAMPLE_RULES_PATH), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_each_alert_fires_on_its_series_only(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render.to_yaml(monitoring.rules_file("gpushare", ALL_RULES)))
    (tmp_path / "tests.yml").write_text(render.to_yaml(promtool_tests()))
    tested = {case["alertname"] for case in promtool_tests()["tests"][0]["alert_rule_test"]}
    assert tested == {r.alert for r in ALL_RULES}, "every alert needs a promtool case"
    result = _promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the test can fail: a wrong expectation is reported
    broken = promtool_tests()
    broken["tests"][0]["alert_rule_test"][0]["exp_alerts"] = [
        _expected("GpushareInstanceDown", {"instance": "a", "model": "qa"})
    ]
    (tmp_path / "tests.yml").write_text(render.to_yaml(broken))
    assert _promtool("test", "rules", "tests.yml", cwd=tmp_path).returncode != 0
