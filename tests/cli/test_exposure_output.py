"""`plan` and `up` say when an instance or the gateway listens beyond loopback without an API key
(planning/exposure.py is the rule; issue 12, item 12)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpushare.cli.launch as launch_cli
from gpushare.cli import app
from gpushare.devices.static import StaticInventory
from gpushare.planning.plan import Plan, PlannedInstance

ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "GPUSHARE_CALIBRATION_FILE": "/nonexistent/calibration.json"}
EXPOSED = "warning: qwen listens on 0.0.0.0 without an API key"


def _profile(tmp_path: Path, host: str, extra: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: p\ngpus: H100\ndefaults:\n  host: {host}\nmodels:\n"
        f"  - name: qwen\n    model: Qwen/Qwen2.5-0.5B-Instruct\n    max_model_len: 4096\n{extra}"
    )
    return path


@pytest.mark.parametrize(
    ("case", "host", "extra", "env", "warned"),
    [
        ("loopback", "127.0.0.1", "", {}, False),
        ("all interfaces", "0.0.0.0", "", {}, True),
        ("with --api-key", "0.0.0.0", "    extra_args: [--api-key, secret]\n", {}, False),
        ("VLLM_API_KEY in env", "0.0.0.0", "    env: {VLLM_API_KEY: secret}\n", {}, False),
        ("VLLM_API_KEY inherited", "0.0.0.0", "", {"VLLM_API_KEY": "secret"}, False),
    ],
)
def test_plan_says_so(
    case: str, host: str, extra: str, env: dict[str, str], warned: bool, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["plan", str(_profile(tmp_path, host, extra))], env={**ENV, **env})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert [line.startswith(EXPOSED) for line in lines] == ([True] if warned else [])


def _busy_plan(port: int) -> Plan:
    argv = ("vllm", "serve", "m", "--served-model-name", "qwen", "--host", "0.0.0.0", "--port", str(port))
    return Plan(
        "p", True, (), (PlannedInstance("qwen", "m", (), port, 0, 0.5, 1, 0, argv, {}, kv_fixed=True),), ()
    )


@pytest.mark.parametrize(
    ("case", "args", "env", "expected"),
    [
        ("instance", ["--gateway-host", "127.0.0.1"], {}, [EXPOSED]),
        (
            "and gateway",
            ["--gateway-host", "0.0.0.0"],
            {},
            [EXPOSED, "warning: the gateway listens on 0.0.0.0"],
        ),
        ("gateway with a key", ["--gateway-host", "0.0.0.0"], {"GPUSHARE_API_KEY": "k"}, [EXPOSED]),
        ("no gateway", ["--no-gateway", "--gateway-host", "0.0.0.0"], {}, [EXPOSED]),
    ],
)
def test_up_says_so_before_it_starts_anything(
    case: str,
    args: list[str],
    env: dict[str, str],
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\n")
    with socket.socket() as busy:  # pre-flight refuses the port: nothing starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        plan = _busy_plan(busy.getsockname()[1])
        monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
        monkeypatch.setattr(launch_cli, "inventory_factory", lambda: StaticInventory([]))
        result = CliRunner().invoke(app, ["up", str(profile), *args], env={**ENV, **env})
    assert result.exit_code == 3, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(expected)
    assert all(w.startswith(e) for w, e in zip(warnings, expected, strict=True))
