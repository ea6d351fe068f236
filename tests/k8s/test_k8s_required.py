"""Drop a field the API server requires from a built object, and validation must fail; drop an
optional one, and it must still pass. Run over every object the samples build, so a builder that
stopped emitting a required field, or a harness that stopped checking it, fails here."""

from __future__ import annotations

import copy
from typing import Any

import k8s_samples
import k8s_validate
import pytest

COMMON = ["apiVersion", "kind", "metadata.name"]

# Required by the Kubernetes API (schemas, or the API server for names) and by the CRDs.
REQUIRED: dict[str, list[str]] = {
    "Deployment": [
        "spec.selector",
        "spec.template",
        "spec.template.spec.containers",
        "spec.template.spec.containers.0.name",
        "spec.template.spec.containers.0.ports.0.containerPort",
        "spec.template.spec.containers.0.startupProbe.httpGet.port",
    ],
    "Service": ["spec.ports.0.port"],
    "ConfigMap": [],
    "PersistentVolumeClaim": [],
    "ServiceMonitor": ["spec", "spec.selector", "spec.endpoints"],
    "PodMonitor": ["spec", "spec.selector"],
    "PrometheusRule": ["spec.groups.0.name", "spec.groups.0.rules.0.expr"],
}

OPTIONAL: dict[str, list[str]] = {
    "Deployment": ["metadata.labels", "spec.strategy", "spec.template.spec.nodeSelector"],
    "Service": ["spec.type"],
    "ConfigMap": ["data"],
    "PersistentVolumeClaim": ["spec.resources"],
    "ServiceMonitor": ["spec.targetLabels"],
    "PodMonitor": ["spec.podMetricsEndpoints"],
    "PrometheusRule": ["spec.groups.0.rules.0.for"],
}


def _drop(obj: dict[str, Any], path: str) -> bool:
    """Delete `path` (dots, list indices as numbers); False when the object has no such field."""
    *parents, last = path.split(".")
    node: Any = obj
    for part in parents:
        if isinstance(node, list):
            if int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _has(obj: dict[str, Any], path: str) -> bool:
    return _drop(copy.deepcopy(obj), path)


CASES = [
    (f"{obj['kind']}/{obj['metadata']['name']}:{path}", obj, path, required)
    for obj in k8s_samples.every_object()
    for required, paths in ((True, [*COMMON, *REQUIRED[obj["kind"]]]), (False, OPTIONAL[obj["kind"]]))
    for path in paths
    if required or _has(obj, path)  # an optional field the object lacks has nothing to drop
]


@pytest.mark.parametrize(("case", "obj", "path", "required"), CASES, ids=[c[0] for c in CASES])
def test_dropping_a_field(case: str, obj: dict[str, Any], path: str, required: bool) -> None:
    broken = copy.deepcopy(obj)
    assert _drop(broken, path), f"{case}: the builder did not emit the required {path}"
    if required:
        with pytest.raises(k8s_validate.InvalidObject):
            k8s_validate.validate(broken)
    else:
        k8s_validate.validate(broken)


def test_every_kind_is_covered() -> None:
    kinds = {obj["kind"] for obj in k8s_samples.every_object()}
    assert kinds == set(REQUIRED) == set(OPTIONAL)
