"""Names, labels and object metadata, checked against the API server's own rules.

The JSON schemas that validate manifests (kubernetes-validate) say only "string" for names and
labels; the API server applies these rules on top, so a manifest that passes the schema can still
be refused at `kubectl apply`. The patterns and lengths are those of
k8s.io/apimachinery/pkg/util/validation/validation.go (IsDNS1123Label, IsDNS1123Subdomain,
IsDNS1035Label, IsQualifiedName, IsValidLabelValue, IsValidPortName).

`object_name` turns gpushare names (profile and model names allow `.`, `_` and capitals) into
valid object names (`unique_object_names` refuses two that would collide); everything else here
checks and raises `InputError` naming the value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpushare.errors import InputError

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
PORT_NAME_MAX = 15

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")

MANAGED_BY = "gpushare"

# app.kubernetes.io/component values (kubernetes.io/docs/concepts/overview/working-with-objects/
# common-labels/). Monitoring selects on them, so they are a fixed vocabulary.
COMPONENT_MODEL_SERVER = "model-server"
COMPONENT_GPU_POD = "gpu-pod"
COMPONENT_GATEWAY = "gateway"


def is_dns1123_label(text: str) -> bool:
    return len(text) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.fullmatch(text) is not None


def is_dns1035_label(text: str) -> bool:
    return len(text) <= DNS1123_LABEL_MAX and _DNS1035_LABEL.fullmatch(text) is not None


def is_dns1123_subdomain(text: str) -> bool:
    return len(text) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(text) is not None


def is_label_key(key: str) -> bool:
    """`[prefix/]name`: a DNS-1123 subdomain prefix, a qualified name of at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= LABEL_VALUE_MAX and _QUALIFIED_NAME.fullmatch(name) is not None


def is_label_value(text: str) -> bool:
    return len(text) <= LABEL_VALUE_MAX and _LABEL_VALUE.fullmatch(text) is not None


def is_port_name(text: str) -> bool:
    """IANA_SVC_NAME: at most 15 of [a-z0-9-], at least one letter, no `--`, no `-` at an end."""
    return (
        len(text) <= PORT_NAME_MAX
        and _PORT_NAME.fullmatch(text) is not None
        and "--" not in text
        and re.search(r"[a-z]", text) is not None
    )


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def object_name(*parts: str, max_length: int = DNS1123_LABEL_MAX) -> str:
    """A DNS-1035 label (valid as any object's name, Services included) made of `parts`.

    Lowercased; every run of other characters becomes one `-`; a leading digit gets a `g` in front
    (`7b` → `g7b`): `("classic", "Qwen2.5-7B")` → `classic-qwen2-5-7b`. A name longer than
    `max_length` is cut and ends in 8 hex digits of the original's SHA-256, so two long names that
    share a beginning stay apart. Two names that differ only in what was replaced (`qwen2.5` and
    `qwen2-5`) give the same result: `unique_object_names` refuses those.
    """
    original = "-".join(parts)
    text = re.sub(r"[^a-z0-9]+", "-", original.lower()).strip("-")
    if not text:
        raise InputError(f"{original!r}: no letter or digit to build a Kubernetes name from")
    if not text[0].isalpha():
        text = "g" + text
    if len(text) <= max_length:
        return text
    suffix = _short_hash(original)
    room = max_length - len(suffix) - 1
    return f"{text[:room].rstrip('-')}-{suffix}"


def unique_object_names(prefix: str, names: Sequence[str], what: str = "model") -> dict[str, str]:
    """`object_name(prefix, name)` for each name; refuses two names that give the same object name."""
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        made = object_name(prefix, name)
        if made in taken and taken[made] != name:
            raise InputError(
                f"{what}s {taken[made]!r} and {name!r} both become the Kubernetes name {made!r}",
                hint="rename one of them so they differ in a letter or digit",
            )
        taken[made] = name
        out[name] = made
    return out


def check_name(name: str, what: str, *, dns1035: bool = False) -> str:
    """`name` when it is a valid object name (DNS-1123 subdomain, or a DNS-1035 label for Services)."""
    ok = is_dns1035_label(name) if dns1035 else is_dns1123_subdomain(name)
    if not ok:
        rule = (
            "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63)"
            if dns1035
            else "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253)"
        )
        raise InputError(f"{what} {name!r} is not a valid Kubernetes name: it must be {rule}")
    return name


def check_labels(labels: Mapping[str, str], what: str) -> dict[str, str]:
    for key, value in labels.items():
        if not is_label_key(key):
            raise InputError(f"{what}: {key!r} is not a valid label key")
        if not is_label_value(value):
            raise InputError(
                f"{what}: label {key}={value!r} is not a valid label value "
                "(at most 63 of letters, digits, '-', '_', '.', starting and ending alphanumeric)"
            )
    return dict(labels)


def label_value(text: str) -> str:
    """`text` as a label value: unchanged when valid, else made valid with a hash (like object_name)."""
    if is_label_value(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    suffix = _short_hash(text)
    room = LABEL_VALUE_MAX - len(suffix) - 1
    return f"{cleaned[:room].rstrip('-_.')}-{suffix}" if cleaned else suffix


@dataclass(frozen=True)
class AppLabels:
    """The recommended `app.kubernetes.io/*` labels of one workload and everything that belongs to it.

    `instance` is unique within the namespace (the Deployment's name); `part_of` the gpushare
    profile; `version` the vLLM version the plan models. `selector()` is the immutable subset a
    Deployment matches its pods by and a Service routes by.
    """

    name: str
    instance: str
    component: str
    part_of: str
    version: str = ""

    def labels(self) -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.instance,
            "app.kubernetes.io/component": self.component,
            "app.kubernetes.io/part-of": self.part_of,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
        if self.version:
            labels["app.kubernetes.io/version"] = self.version
        return check_labels(labels, f"labels of {self.instance!r}")

    def selector(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.instance,
        }


def object_meta(
    name: str,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    dns1035: bool = False,
) -> dict[str, Any]:
    """`metadata` of an object: a checked name, the namespace when given, labels, annotations."""
    meta: dict[str, Any] = {"name": check_name(name, "name", dns1035=dns1035)}
    if namespace is not None:
        if not is_dns1123_label(namespace):
            raise InputError(
                f"namespace {namespace!r} is not a valid Kubernetes namespace "
                "(lowercase letters, digits and '-', at most 63)"
            )
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = check_labels(labels, f"labels of {name!r}")
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
