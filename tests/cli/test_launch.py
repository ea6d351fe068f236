"""`gpushare up | status | logs | down` through CliRunner, on fake servers (real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

import gpushare.cli.launch as launch_cli
from gpushare.cli import app
from gpushare.devices.static import StaticInventory
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.runtime.service.process import read_info
from gpushare.runtime.store.state import profile_paths

FAKE_SERVER = Path(__file__).parent.parent / "runtime" / "fake_vllm_server.py"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plan(tmp_path: Path, *faults_by_name: tuple[str, list[str]]) -> Plan:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    instances = []
    for name, faults in faults_by_name:
        port = _port()
        argv = (sys.executable, str(FAKE_SERVER), "--model", str(model), "--served-model-name", name,
                "--port", str(port), *faults)  # fmt: skip
        instances.append(
            PlannedInstance(name, str(model), (), port, 0, 0.9, 64 << 20, 0, argv, {}, kv_fixed=True)
        )
    return Plan("lab", True, (), tuple(instances), ())


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab\n")
    return path


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_cli, "inventory_factory", lambda: StaticInventory([]))


def test_up_status_logs_down(tmp_path: Path, profile_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(tmp_path, ("small", []), ("big", []))
    monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["up", str(profile_file), "--timeout", "20", "--gateway-port", "0"])
        assert result.exit_code == 0, result.output
        assert "small ready on port" in result.output and "KV cache 131,072 tokens" in result.output

        # `up` also started the gateway + supervisor: one endpoint lists both instances.
        gateway = read_info(profile_paths("lab"))
        assert gateway is not None and f"gateway {gateway.url}/v1" in result.output
        with urllib.request.urlopen(gateway.url + "/v1/models", timeout=5) as resp:
            assert sorted(m["id"] for m in json.load(resp)["data"]) == ["big", "small"]

        status = runner.invoke(app, ["status", "--json"])
        assert status.exit_code == 0, status.output
        data = json.loads(status.output)
        assert [(i["name"], i["state"], i["kv_cache_tokens"]) for i in data["instances"]] == [
            ("small", "ready", 131072),
            ("big", "ready", 131072),
        ]
        table = runner.invoke(app, ["status", "lab"], env={"COLUMNS": "160"})
        assert table.exit_code == 0 and "small" in table.output and "ready" in table.output

        logs = runner.invoke(app, ["logs", "small", "-n", "0"])
        assert logs.exit_code == 0 and "Starting vLLM server" in logs.output
        missing = runner.invoke(app, ["logs", "nope"])
        assert missing.exit_code == 2 and "no instance 'nope'" in missing.output
    finally:
        down = runner.invoke(app, ["down", "lab"])
    assert down.exit_code == 0, down.output
    assert "stopped" in down.output
    assert read_info(profile_paths("lab")) is None  # the gateway/supervisor went with them
    again = runner.invoke(app, ["down", "--all"])
    assert again.exit_code == 0
    assert "nothing to stop" in again.output


def test_up_failure_prints_log_tail_and_exits_1(
    tmp_path: Path, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tmp_path, ("ok", []), ("bad", ["--crash", "no [bold]markup[/] here"]))
    monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
    result = CliRunner().invoke(app, ["up", str(profile_file), "--timeout", "20"])
    assert result.exit_code == 1
    assert "ValueError: no [bold]markup[/] here" in result.output
    assert "Traceback (most recent call last)" in result.output
    assert "stopped what this up started" in result.output


def test_up_port_taken_exits_3(tmp_path: Path, profile_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(tmp_path, ("a", []))
    monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", plan.instances[0].port))
        busy.listen()
        result = CliRunner().invoke(app, ["up", str(profile_file)])
    assert result.exit_code == 3
    assert "pre-flight failed, nothing started" in result.output


def test_down_without_profile_when_none_is_up() -> None:
    result = CliRunner().invoke(app, ["down"])
    assert result.exit_code == 2
    assert "no profile is up" in result.output


def test_status_when_nothing_runs() -> None:
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0
    assert "no profile is up" in result.output


def test_up_on_a_running_profile_readopts_and_restarts_a_killed_supervisor(
    tmp_path: Path, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 12: after the supervisor was killed the instances ran unsupervised and nothing said
    so; `up` again exited 3."""
    plan = _plan(tmp_path, ("small", []))
    monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
    runner = CliRunner()
    try:
        first = runner.invoke(app, ["up", str(profile_file), "--timeout", "20", "--gateway-port", "0"])
        assert first.exit_code == 0, first.output
        gateway = read_info(profile_paths("lab"))
        assert gateway is not None
        data = json.loads(runner.invoke(app, ["status", "--json"]).output)
        assert data["services"] == [
            {"profile": "lab", "state": "running", "pid": gateway.pid, "host": "127.0.0.1",
             "port": gateway.port, "url": gateway.url},
        ]  # fmt: skip
        text = runner.invoke(app, ["status"]).output
        assert f"gateway/supervisor: running, {gateway.url}/v1 (pid {gateway.pid})" in text

        os.kill(gateway.pid, signal.SIGKILL)  # as `kill -9`: its supervisor.json stays behind
        deadline = time.monotonic() + 10
        while psutil.pid_exists(gateway.pid) and psutil.Process(gateway.pid).status() != "zombie":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        data = json.loads(runner.invoke(app, ["status", "--json"]).output)
        assert data["services"][0]["state"] == "not running" and data["services"][0]["pid"] is None
        assert [i["state"] for i in data["instances"]] == ["ready"]
        text = runner.invoke(app, ["status"]).output
        assert "gateway/supervisor: not running: nothing restarts these instances" in text
        assert f"\n  gpushare supervise lab --port {gateway.port}\n" in text

        again = runner.invoke(app, ["up", str(profile_file), "--timeout", "20", "--gateway-port", "0"])
        assert again.exit_code == 0, again.output
        assert "profile 'lab' is already up: small" in again.output
        fresh = read_info(profile_paths("lab"))
        assert fresh is not None and fresh.pid != gateway.pid and f"gateway {fresh.url}/v1" in again.output
    finally:
        down = runner.invoke(app, ["down", "lab"])
    assert down.exit_code == 0, down.output


def test_up_with_the_gateway_port_taken_starts_nothing(
    tmp_path: Path, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 12: `up` started every instance, then exited 1 with the reason only in supervisor.log."""
    plan = _plan(tmp_path, ("a", []))
    monkeypatch.setattr(launch_cli, "plan_factory", lambda path, inventory: plan)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["up", str(profile_file), "--gateway-port", str(port)])
    assert result.exit_code == 3, result.output
    assert f"gateway: port {port} is already in use" in result.output
    assert not profile_paths("lab").log_file("a").exists()
