"""Offline validation of Kubernetes objects, as strict as we can be without an API server.

- Built-in kinds: `kubernetes_validate.validate(obj, version, strict=True)` against the bundled
  OpenAPI schemas of every version in `K8S_VERSIONS` (strict: unknown fields are errors). A kind
  or apiVersion the version does not know is an error here (the library's CLI only warns).
- Custom resources (ServiceMonitor, PodMonitor, PrometheusRule): the `openAPIV3Schema` of the CRD
  files vendored in tests/fixtures/k8s/crds (SOURCES.md there says from where), made strict the
  way the API server behaves: a field the schema does not list would be pruned silently, so it is
  an error here (`additionalProperties: false` on every object schema with `properties`, unless
  it preserves unknown fields); `x-kubernetes-list-type: map|set` lists must have unique keys;
  `metadata` is checked as an ObjectMeta by kubernetes-validate.
- What the schemas leave to the API server: names (DNS-1123 / DNS-1035), label keys and values,
  container names.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from gpushare.export.k8s.meta import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_key,
    is_label_value,
)

K8S_VERSIONS = ("1.30", "1.37")
"""The oldest and newest Kubernetes versions the export supports (kubernetes-validate 1.37.0
bundles 1.25-1.37)."""

CRD_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "k8s" / "crds"


class InvalidObject(AssertionError):
    pass


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def validate_builtin(obj: Mapping[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise InvalidObject(f"{_where(obj)} against Kubernetes {version}: {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise InvalidObject(f"{_where(obj)}: {exc.message}") from None


# -- custom resources --------------------------------------------------------------------------


def _strict_schema(node: Any) -> Any:
    """A copy of a CRD schema where unknown fields fail instead of being pruned."""
    if isinstance(node, list):
        return [_strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict_schema(value) for key, value in node.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        # Go's RE2 takes an inline flag anywhere; Python only at the start.
        out["pattern"] = "(?i)^" + pattern[len("^(?i)") :]
    return out


def _list_key_errors(schema: Any, value: Any, path: str) -> Iterator[str]:
    """`x-kubernetes-list-type: map` (unique map keys) and `set` (unique items), recursively."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            if len(seen) != len(set(seen)):
                yield f"{path}: two items share the list-map key {keys}"
        elif list_type == "set" and len({yaml.safe_dump(v) for v in value}) != len(value):
            yield f"{path}: a list-type set has a repeated item"
        for i, item in enumerate(value):
            yield from _list_key_errors(schema.get("items"), item, f"{path}[{i}]")
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                yield from _list_key_errors(props[key], item, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from _list_key_errors(schema["additionalProperties"], item, f"{path}.{key}")


class CrdValidator:
    def __init__(self, crd: Mapping[str, Any], version: str) -> None:
        spec = crd["spec"]
        self.api_version = f"{spec['group']}/{version}"
        self.kind = spec["names"]["kind"]
        served = [v for v in spec["versions"] if v["name"] == version and v.get("served")]
        if not served:
            raise ValueError(f"{crd['metadata']['name']} serves no version {version}")
        self.schema = _strict_schema(served[0]["schema"]["openAPIV3Schema"])
        # OpenAPI v3.0 schemas are JSON Schema draft 4 in their validation keywords.
        self._validator = jsonschema.Draft4Validator(self.schema)

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        where = _where(obj)
        errors = []
        if obj.get("apiVersion") != self.api_version:
            errors.append(f"{where}: apiVersion {obj.get('apiVersion')!r}, expected {self.api_version!r}")
        for err in sorted(self._validator.iter_errors(dict(obj)), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in err.path)
            errors.append(f"{where}: {path}: {err.message}")
        errors.extend(f"{where}: {e}" for e in _list_key_errors(self.schema, dict(obj), ""))
        meta_probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata")}
        for version in K8S_VERSIONS:
            try:
                validate_builtin(meta_probe, version)
            except InvalidObject as exc:
                errors.append(f"{where}: metadata: {exc}")
        return errors


@functools.cache
def crd_validators() -> dict[tuple[str, str], CrdValidator]:
    validators = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            validator = CrdValidator(crd, version["name"])
            validators[(validator.api_version, validator.kind)] = validator
    if not validators:
        raise FileNotFoundError(f"no CRD under {CRD_DIR}")
    return validators


def is_custom(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("monitoring.coreos.com/")


# -- what the API server checks beyond the schema ---------------------------------------------


def _label_errors(labels: Mapping[str, str] | None, where: str) -> Iterator[str]:
    for key, value in (labels or {}).items():
        if not is_label_key(key):
            yield f"{where}: label key {key!r} is invalid"
        if not isinstance(value, str) or not is_label_value(value):
            yield f"{where}: label value {key}={value!r} is invalid"


def name_errors(obj: Mapping[str, Any]) -> list[str]:
    where = _where(obj)
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    errors = []
    kind = obj.get("kind")
    if kind == "Service":
        ok = is_dns1035_label(name)
    elif kind == "Kustomization":
        ok = True
    else:
        ok = is_dns1123_subdomain(name)
    if not ok:
        errors.append(f"{where}: name {name!r} is not valid for a {kind}")
    if "namespace" in meta and not is_dns1123_label(meta["namespace"]):
        errors.append(f"{where}: namespace {meta['namespace']!r} is invalid")
    errors.extend(_label_errors(meta.get("labels"), where))
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        errors.extend(_label_errors((template.get("metadata") or {}).get("labels"), f"{where} pod template"))
        for c in (template.get("spec") or {}).get("containers", []):
            if not is_dns1123_label(c.get("name", "")):
                errors.append(f"{where}: container name {c.get('name')!r} is invalid")
        selector = (obj.get("spec") or {}).get("selector", {}).get("matchLabels", {})
        labels = (template.get("metadata") or {}).get("labels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: the selector does not match the pod template's labels")
    return errors


def validate(obj: Mapping[str, Any]) -> None:
    """Raise InvalidObject listing everything wrong with `obj`."""
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj.get(key):
            raise InvalidObject(f"{_where(obj)}: no {key}")
    errors = name_errors(obj)
    if is_custom(obj):
        validator = crd_validators().get((obj["apiVersion"], obj["kind"]))
        if validator is None:
            errors.append(f"{_where(obj)}: no vendored CRD for {obj['apiVersion']} {obj['kind']}")
        else:
            errors.extend(validator.errors(obj))
    else:
        for version in K8S_VERSIONS:
            try:
                validate_builtin(obj, version)
            except InvalidObject as exc:
                errors.append(str(exc))
    if errors:
        raise InvalidObject("\n".join(errors))


def validate_all(objects: Iterable[Mapping[str, Any]]) -> int:
    count = 0
    for obj in objects:
        validate(copy.deepcopy(dict(obj)))
        count += 1
    return count
