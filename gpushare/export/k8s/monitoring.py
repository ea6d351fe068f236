"""Prometheus: what to scrape (ServiceMonitor, PodMonitor) and when to alert (PrometheusRule, or the
same rules as a plain rules file), for the Prometheus Operator's `monitoring.coreos.com/v1`.

The alerts are one table, `alert_rules`; `prometheus_rule` (Kubernetes) and `rules_file` (plain
Prometheus, e.g. examples/prometheus-rules.yml for the workstation's examples/prometheus.yml) both
render it, so the two cannot drift. Each alert names the metric source it needs, and only alerts
whose source is scraped are emitted:

- `supervisor`: a gpushare supervisor's /metrics (`gpushare up` on a workstation, the gpu-pod
  mode's pods): gpushare/runtime/service/metrics.py `InstanceCollector` (`gpushare_instance_*`) and each
  instance's `vllm:*` series, relabelled with `instance` and `model`;
- `gateway`: any gpushare gateway's /metrics: `GatewayMetrics` (`gpushare_gateway_*`);
- `vllm-pods`: vLLM's own /metrics scraped from its pods by a PodMonitor (mig, hami, time-slicing,
  mps modes), which carry the pod's `app.kubernetes.io/*` labels as target labels;
- `kube-state-metrics`: `kube_pod_container_status_restarts_total`, for restarts of plain vLLM
  containers (kube-prometheus-stack ships it; without it that alert never fires).

vLLM's name for the KV-cache gauge is `vllm:kv_cache_usage_perc` (vllm/v1/metrics/loggers.py,
"fraction of KV-cache blocks currently in use", 0..1); the older `vllm:gpu_cache_usage_perc` is
deprecated there. The supervisor also exports each GPU's temperature, slowdown threshold, power
draw and limit and SM utilization (metrics.py `GpuCollector` over devices/nvml.py `NvmlTelemetry`);
the GPU alerts compare each reading with the GPU's own threshold or limit, so no model's numbers
are written into the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpushare.errors import InputError
from gpushare.export.k8s.meta import COMPONENT_MODEL_SERVER, check_labels, object_meta

MONITORING_API = "monitoring.coreos.com/v1"

Source = Literal["supervisor", "gateway", "vllm-pods", "kube-state-metrics"]

# Prometheus turns a target label `app.kubernetes.io/part-of` into `app_kubernetes_io_part_of`.
PART_OF_TARGET_LABEL = "app_kubernetes_io_part_of"
COMPONENT_TARGET_LABEL = "app_kubernetes_io_component"
TARGET_LABELS = ("app.kubernetes.io/part-of", "app.kubernetes.io/component")

KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True)
class Thresholds:
    """When each alert fires. Durations in Prometheus form (`5m`)."""

    instance_down_for: str = "5m"
    """A gpushare instance not serving (and not starting) this long."""
    vllm_pod_down_for: str = "30m"
    """A vLLM pod's /metrics unreachable this long; at least the startup probe's budget, since vLLM
    does not listen while it loads and compiles."""
    restarts: int = 3
    """Restarts within `restart_window` that count as a crash loop."""
    restart_window: str = "15m"
    kv_cache_full_ratio: float = 0.95
    """KV-cache use (0..1) above which requests start to queue or be preempted."""
    kv_cache_full_for: str = "10m"
    memory_over_plan_for: str = "2m"
    unavailable_for: str = "5m"
    gpu_slowdown_margin_c: float = 5.0
    """Alert when a GPU is within this many degrees of the temperature where it slows its clocks."""
    gpu_hot_for: str = "5m"
    power_capped_ratio: float = 0.98
    """Power draw over this share of the enforced limit: the GPU is holding its clocks down."""
    power_capped_for: str = "15m"
    sm_saturated_ratio: float = 0.95
    """SM utilization above this: the GPU is compute-bound and requests queue for it."""
    sm_saturated_for: str = "15m"


@dataclass(frozen=True)
class RuleScope:
    """Which series the rules look at.

    `matchers` are added to every selector of gpushare's and vLLM's series (e.g.
    `{"app_kubernetes_io_part_of": "classic"}` in a cluster; none on a workstation);
    `namespace` and `containers` select kube-state-metrics' restart counters.
    """

    matchers: Mapping[str, str] = field(default_factory=dict)
    namespace: str | None = None
    containers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    for_: str
    severity: Literal["critical", "warning"]
    summary: str
    description: str
    source: Source

    def to_rule(self) -> dict[str, Any]:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _selector(
    metric: str, scope: Mapping[str, str], *, regex: Mapping[str, Iterable[str]] | None = None, **extra: str
) -> str:
    """`metric{k="v", ...}`; `regex` adds `k=~"a|b"` matchers (values must be regex-plain, as
    DNS-1123 names are)."""
    matchers = [f"{key}={_quote(value)}" for key, value in sorted({**scope, **extra}.items())]
    for key, values in sorted((regex or {}).items()):
        matchers.append(f"{key}=~{_quote('|'.join(sorted(values)))}")
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def alert_rules(
    sources: Iterable[Source],
    scope: RuleScope | None = None,
    thresholds: Thresholds | None = None,
) -> list[AlertRule]:
    """The alerts whose metrics `sources` provide, in a fixed order."""
    wanted = set(sources)
    scope = scope or RuleScope()
    t = thresholds or Thresholds()
    if not 0 < t.kv_cache_full_ratio <= 1:
        raise InputError(f"kv_cache_full_ratio must be in (0, 1], got {t.kv_cache_full_ratio}")
    m = scope.matchers
    rules: list[AlertRule] = []
    if "supervisor" in wanted:
        up = _selector("gpushare_instance_up", m)
        starting = _selector("gpushare_instance_state", m, state="starting")
        rules += [
            AlertRule(
                alert="GpushareInstanceDown",
                expr=f"{up} == 0 unless on (instance, model) {starting} == 1",
                for_=t.instance_down_for,
                severity="critical",
                summary="gpushare instance {{ $labels.instance }} ({{ $labels.model }}) is not serving",
                description=(
                    "The supervisor has not seen {{ $labels.instance }} answer /health for "
                    f"{t.instance_down_for}, and it is not starting. `gpushare status` and "
                    "`gpushare logs {{ $labels.instance }}` say why."
                ),
                source="supervisor",
            ),
            AlertRule(
                alert="GpushareInstanceFailed",
                expr=f"{_selector('gpushare_instance_state', m, state='failed')} == 1",
                for_="1m",
                severity="critical",
                summary="gpushare gave up restarting {{ $labels.instance }} ({{ $labels.model }})",
                description=(
                    "{{ $labels.instance }} crashed more often than the supervisor's crash-loop limit "
                    "allows; it stays down until restarted by hand."
                ),
                source="supervisor",
            ),
            AlertRule(
                alert="GpushareMemoryOverPlan",
                expr=f"{_selector('gpushare_instance_memory_over_plan', m)} == 1",
                for_=t.memory_over_plan_for,
                severity="warning",
                summary="{{ $labels.instance }} holds more GPU memory than its plan",
                description=(
                    "NVML shows {{ $labels.instance }} above its planned bytes plus the supervisor's "
                    "tolerance. Its neighbours on the GPU may fail to start or run out of memory; compare "
                    "gpushare_instance_gpu_memory_bytes with gpushare_instance_planned_memory_bytes."
                ),
                source="supervisor",
            ),
            AlertRule(
                alert="GpushareInstanceRestarting",
                expr=(
                    f"increase({_selector('gpushare_instance_restarts_total', m)}[{t.restart_window}]) "
                    f">= {t.restarts}"
                ),
                for_="0m",
                severity="warning",
                summary="{{ $labels.instance }} restarted {{ $value | humanize }} times in "
                + t.restart_window,
                description=(
                    "The supervisor keeps restarting {{ $labels.instance }}; read its log "
                    "(`gpushare logs {{ $labels.instance }}`) for the crash."
                ),
                source="supervisor",
            ),
        ]
    if "supervisor" in wanted:
        rules += _gpu_rules(m, t)
    if "vllm-pods" in wanted:
        up = _selector("up", {**m, COMPONENT_TARGET_LABEL: COMPONENT_MODEL_SERVER})
        rules.append(
            AlertRule(
                alert="GpushareVllmPodDown",
                expr=f"{up} == 0",
                for_=t.vllm_pod_down_for,
                severity="critical",
                summary="vLLM pod {{ $labels.pod }} has not answered /metrics for " + t.vllm_pod_down_for,
                description=(
                    "Prometheus cannot scrape {{ $labels.pod }} in {{ $labels.namespace }}: vLLM is down, "
                    "or still loading past its startup budget. `kubectl logs` the pod."
                ),
                source="vllm-pods",
            )
        )
    if "kube-state-metrics" in wanted and scope.containers:
        if scope.namespace is None:
            raise InputError("restart alerts from kube-state-metrics need the namespace")
        restarts = _selector(
            "kube_pod_container_status_restarts_total",
            {},
            regex={"container": scope.containers},
            namespace=scope.namespace,
        )
        rules.append(
            AlertRule(
                alert="GpushareContainerRestarting",
                expr=f"increase({restarts}[{t.restart_window}]) >= {t.restarts}",
                for_="0m",
                severity="warning",
                summary=(
                    "{{ $labels.pod }}/{{ $labels.container }} restarted {{ $value | humanize }} times in "
                    + t.restart_window
                ),
                description=(
                    "The kubelet keeps restarting {{ $labels.container }}: a crash, an out-of-memory kill, "
                    "or a liveness probe failing. `kubectl describe pod {{ $labels.pod }}` says which."
                ),
                source="kube-state-metrics",
            )
        )
    if wanted & {"supervisor", "vllm-pods"}:
        rules.append(
            AlertRule(
                alert="GpushareKvCacheNearFull",
                expr=f"{_selector(KV_CACHE_USAGE, m)} > {t.kv_cache_full_ratio:g}",
                for_=t.kv_cache_full_for,
                severity="warning",
                summary="KV cache of {{ $labels.model_name }} is {{ $value | humanizePercentage }} full",
                description=(
                    f"vLLM's KV cache has been above {t.kv_cache_full_ratio:.0%} for {t.kv_cache_full_for}: "
                    "requests wait or are preempted. The plan's capacity target (concurrency or kv_tokens) "
                    "is smaller than the load; raise it and re-plan."
                ),
                source="supervisor" if "supervisor" in wanted else "vllm-pods",
            )
        )
    if "gateway" in wanted:
        errors = _selector("gpushare_gateway_errors_total", m, kind="unavailable")
        rules.append(
            AlertRule(
                alert="GpushareModelUnavailable",
                expr=f"sum by (model) (rate({errors}[5m])) > 0",
                for_=t.unavailable_for,
                severity="warning",
                summary="The gateway answers 503 for {{ $labels.model }}",
                description=(
                    "Requests for {{ $labels.model }} find no instance that serves it (down, restarting "
                    f"or starting) for {t.unavailable_for}."
                ),
                source="gateway",
            )
        )
    return rules


def _gpu_rules(m: Mapping[str, str], t: Thresholds) -> list[AlertRule]:
    """The supervisor's NVML sensors against each GPU's own threshold and limit (the series share
    every label, so the comparisons match one to one)."""
    if not 0 < t.power_capped_ratio <= 1 or not 0 < t.sm_saturated_ratio <= 1:
        raise InputError("power_capped_ratio and sm_saturated_ratio must be in (0, 1]")
    temperature = _selector("gpushare_gpu_temperature_celsius", m)
    slowdown = _selector("gpushare_gpu_slowdown_temperature_celsius", m)
    power = _selector("gpushare_gpu_power_watts", m)
    limit = _selector("gpushare_gpu_power_limit_watts", m)
    sm = _selector("gpushare_gpu_sm_utilization_ratio", m)
    return [
        AlertRule(
            alert="GpushareGpuHot",
            expr=f"{temperature} >= {slowdown} - {t.gpu_slowdown_margin_c:g}",
            for_=t.gpu_hot_for,
            severity="warning",
            summary="GPU {{ $labels.gpu }} is at {{ $value | humanize }} C, near where it slows down",
            description=(
                f"GPU {{{{ $labels.gpu }}}} has been within {t.gpu_slowdown_margin_c:g} C of its slowdown "
                f"temperature for {t.gpu_hot_for}: its clocks (and tokens per second) are about to drop. "
                "Check the node's cooling and airflow."
            ),
            source="supervisor",
        ),
        AlertRule(
            alert="GpushareGpuPowerCapped",
            expr=f"{power} / {limit} > {t.power_capped_ratio:g}",
            for_=t.power_capped_for,
            severity="warning",
            summary="GPU {{ $labels.gpu }} runs at its power limit",
            description=(
                f"GPU {{{{ $labels.gpu }}}} has drawn over {t.power_capped_ratio:.0%} of its enforced power "
                f"limit for {t.power_capped_for}: the driver holds its clocks down, so every instance on it "
                "runs slower than it could. Check the limit (`nvidia-smi -q -d POWER`) and the load."
            ),
            source="supervisor",
        ),
        AlertRule(
            alert="GpushareGpuSaturated",
            expr=f"{sm} > {t.sm_saturated_ratio:g}",
            for_=t.sm_saturated_for,
            severity="warning",
            summary="GPU {{ $labels.gpu }} has its SMs {{ $value | humanizePercentage }} busy",
            description=(
                f"GPU {{{{ $labels.gpu }}}} has kept over {t.sm_saturated_ratio:.0%} of its SMs busy for "
                f"{t.sm_saturated_for}: it is compute-bound and requests queue. Spread the models over "
                "more GPUs, or lower the load on the ones sharing it."
            ),
            source="supervisor",
        ),
    ]


def rule_groups(name: str, rules: Sequence[AlertRule]) -> list[dict[str, Any]]:
    if not rules:
        raise InputError(f"rule group {name!r}: no rule (no metric source scraped)")
    return [{"name": name, "rules": [rule.to_rule() for rule in rules]}]


def prometheus_rule(
    name: str,
    rules: Sequence[AlertRule],
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A PrometheusRule holding `rules` in one group named after the object.

    `labels` must include whatever the Prometheus's `ruleSelector` matches (kube-prometheus-stack:
    `release: <its release name>`).
    """
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": object_meta(name, namespace=namespace, labels=labels),
        "spec": {"groups": rule_groups(name, rules)},
    }


def rules_file(group: str, rules: Sequence[AlertRule]) -> dict[str, Any]:
    """The same rules as a Prometheus rules file (`rule_files:` in prometheus.yml)."""
    return {"groups": rule_groups(group, rules)}


@dataclass(frozen=True)
class ScrapeEndpoint:
    """Where and how often to scrape. `honor_labels`: keep the `instance`/`model` labels the
    gateway sets on its series (without it Prometheus renames them `exported_*`)."""

    port: str = "http"
    path: str = "/metrics"
    interval: str = "15s"
    scrape_timeout: str = "10s"
    honor_labels: bool = True

    def to_endpoint(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "path": self.path,
            "interval": self.interval,
            "scrapeTimeout": self.scrape_timeout,
            "honorLabels": self.honor_labels,
        }


def _label_selector(match_labels: Mapping[str, str], components: Sequence[str]) -> dict[str, Any]:
    selector: dict[str, Any] = {"matchLabels": check_labels(match_labels, "monitor selector")}
    if components:
        selector["matchExpressions"] = [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(components)}
        ]
    return selector


def service_monitor(
    name: str,
    match_labels: Mapping[str, str],
    *,
    components: Sequence[str] = (),
    endpoint: ScrapeEndpoint | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ServiceMonitor scraping the Services that carry `match_labels` (and one of `components`).

    The Services' `app.kubernetes.io/part-of` and `component` become target labels, which the rules'
    scope matches on.
    """
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": object_meta(name, namespace=namespace, labels=labels),
        "spec": {
            "selector": _label_selector(match_labels, components),
            "targetLabels": list(TARGET_LABELS),
            "endpoints": [(endpoint or ScrapeEndpoint()).to_endpoint()],
        },
    }


def pod_monitor(
    name: str,
    match_labels: Mapping[str, str],
    *,
    components: Sequence[str] = (),
    endpoint: ScrapeEndpoint | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A PodMonitor scraping pods directly (vLLM's own /metrics on its `http` port)."""
    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": object_meta(name, namespace=namespace, labels=labels),
        "spec": {
            "selector": _label_selector(match_labels, components),
            "podTargetLabels": list(TARGET_LABELS),
            "podMetricsEndpoints": [(endpoint or ScrapeEndpoint(honor_labels=False)).to_endpoint()],
        },
    }


EXAMPLE_RULES_PATH = "examples/prometheus-rules.yml"
"""The plain rules file for a workstation (`gpushare up` + examples/prometheus.yml), generated here."""


def example_rules_text() -> str:
    """examples/prometheus-rules.yml: the alerts for a gpushare gateway + supervisor, unscoped."""
    from gpushare.export.k8s.render import to_yaml

    rules = alert_rules(("supervisor", "gateway"))
    return (
        "# Alerts for gpushare (`gpushare up` on a workstation), for Prometheus without the Operator.\n"
        "# Generated by gpushare/export/k8s/monitoring.py (the same rules as the Kubernetes\n"
        "# export's PrometheusRule); do not edit by hand. Use it from examples/prometheus.yml with:\n"
        "#   rule_files: [prometheus-rules.yml]\n" + to_yaml(rules_file("gpushare", rules))
    )
