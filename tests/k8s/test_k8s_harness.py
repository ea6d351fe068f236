"""The validation harness itself: it must catch what a cluster would refuse, or every other test in
tests/k8s proves nothing."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from typing import Any

import k8s_samples
import k8s_validate
import pytest

Mutation = Callable[[dict[str, Any]], None]


def _deployment() -> dict[str, Any]:
    return k8s_samples.every_object()[0]


def _by_kind(kind: str) -> dict[str, Any]:
    return next(o for o in k8s_samples.every_object() if o["kind"] == kind)


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return mutate


CONTAINER = "spec.template.spec.containers.0"

# (case id, kind of the sample, mutation, text the error must contain)
BROKEN: list[tuple[str, str, Mutation, str]] = [
    ("unknown-field", "Deployment", _set(f"{CONTAINER}.gpuMemory", "1Gi"), "gpuMemory"),
    ("typo-in-field", "Deployment", _set("spec.strategy.typ", "Recreate"), "typ"),
    ("missing-selector", "Deployment", _drop("spec.selector"), "selector"),
    ("wrong-type", "Deployment", _set("spec.replicas", "1"), "replicas"),
    ("unknown-apiversion", "Deployment", _set("apiVersion", "apps/v1beta1"), "Couldn't find schema"),
    ("bad-name", "Deployment", _set("metadata.name", "Qwen2.5_7B"), "name"),
    (
        "bad-label-value",
        "Deployment",
        lambda o: o["metadata"]["labels"].update({"app.kubernetes.io/part-of": "a/b"}),
        "label",
    ),
    ("selector-mismatch", "Deployment", _set("spec.selector.matchLabels", {"x": "y"}), "selector"),
    ("service-name-dns1035", "Service", _set("metadata.name", "7b-model"), "name"),
    ("service-port-missing", "Service", _drop("spec.ports.0.port"), "port"),
    ("cr-unknown-field", "ServiceMonitor", _set("spec.endpoints.0.pathh", "/metrics"), "pathh"),
    (
        "cr-wrong-apiversion",
        "PrometheusRule",
        _set("apiVersion", "monitoring.coreos.com/v1beta1"),
        "no vendored CRD",
    ),
    ("cr-bad-duration", "PrometheusRule", _set("spec.groups.0.rules.0.for", "5 minutes"), "for"),
    ("cr-missing-expr", "PrometheusRule", _drop("spec.groups.0.rules.0.expr"), "expr"),
    ("cr-metadata-unknown", "PodMonitor", _set("metadata.labelz", {}), "labelz"),
    ("cr-label-in-metadata", "PodMonitor", _set("metadata.labels", {"bad key!": "x"}), "label key"),
]


@pytest.mark.parametrize(("case", "kind", "mutate", "needle"), BROKEN, ids=[c[0] for c in BROKEN])
def test_harness_refuses(case: str, kind: str, mutate: Mutation, needle: str) -> None:
    obj = copy.deepcopy(_by_kind(kind))
    mutate(obj)
    with pytest.raises(k8s_validate.InvalidObject, match=re.escape(needle)):
        k8s_validate.validate(obj)


def test_harness_refuses_duplicate_rule_group_names() -> None:
    # spec.groups is `x-kubernetes-list-type: map` keyed by name: the API server refuses repeats.
    rule = copy.deepcopy(_by_kind("PrometheusRule"))
    rule["spec"]["groups"].append(copy.deepcopy(rule["spec"]["groups"][0]))
    with pytest.raises(k8s_validate.InvalidObject, match="list-map key"):
        k8s_validate.validate(rule)


@pytest.mark.parametrize("version", k8s_validate.K8S_VERSIONS)
def test_both_versions_are_bundled(version: str) -> None:
    # kubernetes-validate picks the newest schema not newer than the version asked for; make sure
    # the one asked for is the one used, or "1.37" could silently mean an older schema.
    import kubernetes_validate

    assert kubernetes_validate.validate(_deployment(), version, strict=True) == version


def test_crds_are_the_vendored_release() -> None:
    sources = (k8s_validate.CRD_DIR / "SOURCES.md").read_text()
    files = sorted(k8s_validate.CRD_DIR.glob("*.yaml"))
    assert [f.name for f in files] == [
        "monitoring.coreos.com_podmonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
        "monitoring.coreos.com_servicemonitors.yaml",
    ]
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"| {path.name} | {digest} |" in sources, f"{path.name} differs from SOURCES.md"
    kinds = {kind for (_, kind) in k8s_validate.crd_validators()}
    assert kinds == {"PodMonitor", "PrometheusRule", "ServiceMonitor"}
