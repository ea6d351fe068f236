"""Names and labels, against cases from the API server's own rules
(k8s.io/apimachinery/pkg/util/validation/validation.go)."""

from __future__ import annotations

import pytest

from gpushare.errors import InputError
from gpushare.export.k8s import meta


@pytest.mark.parametrize(
    ("case", "parts", "expected"),
    [
        ("already-valid", ("classic", "llama"), "classic-llama"),
        ("dots-and-capitals", ("classic", "Qwen2.5-7B"), "classic-qwen2-5-7b"),
        ("underscores", ("lab", "my_model"), "lab-my-model"),
        ("leading-digit", ("7b",), "g7b"),
        ("runs-collapse", ("a..b__c",), "a-b-c"),
    ],
)
def test_object_name(case: str, parts: tuple[str, ...], expected: str) -> None:
    name = meta.object_name(*parts)
    assert name == expected
    assert meta.is_dns1035_label(name)


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    a = meta.object_name("profile", "x" * 80 + "a")
    b = meta.object_name("profile", "x" * 80 + "b")
    assert len(a) == len(b) == 63
    assert a != b
    assert meta.is_dns1035_label(a) and meta.is_dns1035_label(b)


def test_collisions_are_refused_with_both_names() -> None:
    assert meta.unique_object_names("p", ["a", "b"]) == {"a": "p-a", "b": "p-b"}
    with pytest.raises(InputError, match="'qwen2.5' and 'qwen2-5'"):
        meta.unique_object_names("p", ["qwen2.5", "qwen2-5"])
    with pytest.raises(InputError, match="no letter or digit"):
        meta.object_name("--")


@pytest.mark.parametrize(
    ("text", "label", "subdomain", "dns1035"),
    [
        ("a", True, True, True),
        ("abc-123", True, True, True),
        ("1abc", True, True, False),
        ("a.b", False, True, False),
        ("-a", False, False, False),
        ("a-", False, False, False),
        ("A", False, False, False),
        ("a_b", False, False, False),
        ("a" * 63, True, True, True),
        ("a" * 64, False, True, False),
    ],
)
def test_dns_rules(text: str, label: bool, subdomain: bool, dns1035: bool) -> None:
    assert meta.is_dns1123_label(text) is label
    assert meta.is_dns1123_subdomain(text) is subdomain
    assert meta.is_dns1035_label(text) is dns1035


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("app.kubernetes.io/name", True),
        ("nvidia.com/gpu.product", True),
        ("simple", True),
        ("Upper_case.ok", True),
        ("bad/prefix/twice", False),
        ("UPPER.com/x", False),
        ("x/" + "a" * 64, False),
        ("", False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert meta.is_label_key(key) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("NVIDIA-H100-80GB-HBM3", True), ("qwen2.5-7b", True), ("a/b", False), ("a-", False)],
)
def test_label_values(value: str, ok: bool) -> None:
    assert meta.is_label_value(value) is ok


def test_label_value_made_valid() -> None:
    assert meta.label_value("qwen2.5-7b") == "qwen2.5-7b"
    made = meta.label_value("Qwen/Qwen2.5-7B-Instruct")
    assert meta.is_label_value(made) and made.startswith("Qwen-Qwen2.5-7B-Instruct-")
    assert meta.is_label_value(meta.label_value("x" * 100))


@pytest.mark.parametrize(
    ("name", "ok"),
    [("http", True), ("vllm-0", True), ("metrics", True), ("123", False), ("a--b", False), ("a" * 16, False)],
)
def test_port_names(name: str, ok: bool) -> None:
    assert meta.is_port_name(name) is ok


def test_app_labels() -> None:
    labels = meta.AppLabels("vllm", "classic-qwen", meta.COMPONENT_MODEL_SERVER, "classic", "0.26.0")
    assert labels.labels() == {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": "classic-qwen",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "classic",
        "app.kubernetes.io/managed-by": "gpushare",
        "app.kubernetes.io/version": "0.26.0",
    }
    assert labels.selector().items() <= labels.labels().items()
    with pytest.raises(InputError, match="part-of"):
        meta.AppLabels("vllm", "x", "model-server", "bad/profile").labels()
