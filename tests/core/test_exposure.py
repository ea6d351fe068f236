"""The one rule for "listens beyond loopback without an API key" (planning/exposure.py)."""

from __future__ import annotations

import pytest

from gpushare.planning.exposure import gateway_warning, instance_warnings, is_loopback
from gpushare.planning.plan import PlannedInstance


def _inst(name: str, *args: str, env: dict[str, str] | None = None) -> PlannedInstance:
    argv = ("vllm", "serve", "m", "--served-model-name", name, *args)
    return PlannedInstance(name, "m", (0,), 8001, 0, 0.5, None, 0, argv, dict(env or {}), kv_fixed=True)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gpu-box", False), (None, False)],
)  # fmt: skip
def test_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("case", "instances", "environ", "expected"),
    [
        ("loopback", [_inst("a", "--host", "127.0.0.1")], {}, []),
        ("exposed", [_inst("a", "--host", "0.0.0.0")], {}, ["a listens on 0.0.0.0"]),
        ("two on one address", [_inst("a", "--host", "0.0.0.0"), _inst("b", "--host", "0.0.0.0")], {},
         ["a, b listen on 0.0.0.0"]),
        ("no --host is every interface", [_inst("a")], {}, ["a listens on every interface (no --host)"]),
        ("--api-key", [_inst("a", "--host", "0.0.0.0", "--api-key", "k")], {}, []),
        ("--api-key=", [_inst("a", "--host", "0.0.0.0", "--api_key=k")], {}, []),
        ("key in the plan's env", [_inst("a", "--host", "0.0.0.0", env={"VLLM_API_KEY": "k"})], {}, []),
        ("key inherited", [_inst("a", "--host", "0.0.0.0")], {"VLLM_API_KEY": "k"}, []),
        ("empty key", [_inst("a", "--host", "0.0.0.0")], {"VLLM_API_KEY": ""}, ["a listens on 0.0.0.0"]),
    ],
)  # fmt: skip
def test_instance_warnings(
    case: str, instances: list[PlannedInstance], environ: dict[str, str], expected: list[str]
) -> None:
    warnings = instance_warnings(instances, environ)
    assert [w.split(" without")[0] for w in warnings] == expected
    assert all("set defaults.host: 127.0.0.1" in w and "--api-key" in w for w in warnings)


def test_gateway_warning() -> None:
    assert gateway_warning("127.0.0.1", has_key=False) is None
    assert gateway_warning("0.0.0.0", has_key=True) is None
    warning = gateway_warning("0.0.0.0", has_key=False)
    assert warning is not None and warning.startswith("the gateway listens on 0.0.0.0 without an API key")
