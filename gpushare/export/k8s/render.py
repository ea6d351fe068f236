"""Writing manifests down: one YAML document, a multi-document stream, a kustomize directory.

Pure: functions return text (or a mapping of file name to text); the CLI writes it. Output is
deterministic (keys in the order the builders put them, documents in the order given), so golden
files and `git diff` of an export stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gpushare.errors import InputError
from gpushare.export.k8s.meta import is_dns1123_label


class _Dumper(yaml.SafeDumper):
    """SafeDumper that keeps key order, writes multi-line strings as blocks, and never emits
    anchors/aliases (kubectl reads them, but people and some tools do not)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


# PromQL expressions and long argv stay on one line each (PyYAML folds at 80 by default).
_NO_FOLDING = 1 << 16


def to_yaml(obj: Mapping[str, Any]) -> str:
    """One document. Strings YAML 1.1 would misread (`on`, `no`, `1e3`) are quoted by PyYAML."""
    return yaml.dump(dict(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=_NO_FOLDING)


def multi_document(objects: Sequence[Mapping[str, Any]]) -> str:
    """Every object as one document of a `---`-separated stream (what `kubectl apply -f -` reads)."""
    if not objects:
        raise InputError("nothing to write: no Kubernetes object")
    return "".join(f"---\n{to_yaml(obj)}" for obj in objects)


def file_name(obj: Mapping[str, Any]) -> str:
    """`<kind>-<name>.yaml` in lowercase, e.g. `deployment-classic-qwen2-5-7b.yaml`."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def kustomization(
    resources: Sequence[str],
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A `kustomize.config.k8s.io/v1beta1` Kustomization listing `resources` (file names).

    `labels` are added to every object's metadata only (`includeSelectors: false`), so a later
    `kustomize edit` cannot change a Deployment's immutable selector.
    """
    if not resources:
        raise InputError("a kustomization needs at least one resource")
    if len(set(resources)) != len(resources):
        raise InputError("a kustomization lists a resource twice")
    out: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace is not None:
        if not is_dns1123_label(namespace):
            raise InputError(f"namespace {namespace!r} is not a valid Kubernetes namespace")
        out["namespace"] = namespace
    if labels:
        out["labels"] = [{"pairs": dict(labels), "includeSelectors": False}]
    out["resources"] = list(resources)
    return out


def kustomize_directory(
    objects: Sequence[Mapping[str, Any]],
    *,
    namespace: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """File name → text: one file per object plus `kustomization.yaml` listing them in order.

    `extra_files` (e.g. a Dockerfile, README notes) are written beside them but not listed.
    Two objects of one kind and name are refused: the second would overwrite the first.
    """
    files: dict[str, str] = {}
    names: list[str] = []
    for obj in objects:
        name = file_name(obj)
        if name in files:
            raise InputError(f"two {obj['kind']} objects are both named {obj['metadata']['name']!r}")
        files[name] = to_yaml(obj)
        names.append(name)
    files["kustomization.yaml"] = to_yaml(kustomization(names, namespace=namespace))
    for name, text in (extra_files or {}).items():
        if name in files:
            raise InputError(f"extra file {name!r} would overwrite a manifest")
        files[name] = text
    return files
