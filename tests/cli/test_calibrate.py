"""`gpushare calibrate` through the CLI: real processes (a stand-in server replaying a real H200
vLLM log), the record stored, then `plan` using it and `--no-calibration` ignoring it."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpushare.cli.launch as launch_cli
import gpushare.cli.plan as plan_cli
from gpushare.cli import app
from gpushare.devices.static import StaticInventory
from gpushare.resolve import CATALOG_DIR

TESTS = Path(__file__).parents[1]
FAKE_SERVER = TESTS / "runtime" / "fake_vllm_server.py"
LOG = TESTS / "fixtures" / "vllm_logs" / "h200-vllm0.26.0-llama-3.1-8b.log"
H200 = TESTS / "fixtures" / "gpus" / "nvidia_H200_x1_measured.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    model = tmp_path / "llama"
    model.mkdir()
    shutil.copy(CATALOG_DIR / "meta-llama--Llama-3.1-8B-Instruct.json", model / "config.json")
    inventory = StaticInventory.from_json_file(H200)
    monkeypatch.setattr(launch_cli, "inventory_factory", lambda: inventory)
    monkeypatch.setattr(plan_cli, "inventory_factory", lambda: inventory)
    monkeypatch.setenv("GPUSHARE_CALIBRATION_FILE", str(tmp_path / "calibration.json"))
    path = tmp_path / "lab.yaml"
    path.write_text(
        f"""name: lab
gpus: auto
defaults:
  command: [{sys.executable}, {FAKE_SERVER}]
  base_port: {free_port()}  # not 8001: the machine may be running something there
models:
  - name: llama
    model: {model}
    max_model_len: 8192
    concurrency: 16
    extra_args: [--replay-log, {LOG}]
"""
    )
    return path


def test_calibrate_then_plan_uses_the_record(profile: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", str(profile)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "predicted (uncalibrated) vs measured" in result.output
    # The replayed log compiled from scratch, so calibrate measured a second time.
    assert "measuring again with the warm compile cache" in result.output
    records = json.loads((tmp_path / "calibration.json").read_text())["records"]
    assert len(records) == 1
    assert records[0]["key"]["gpu"] == "NVIDIA H200"
    assert records[0]["kv_cache_tokens"] == 381_552
    assert records[0]["compile_cache"] == "cold"  # the stand-in replays the same cold log twice

    planned = runner.invoke(app, ["plan", str(profile), "--json"])
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.output)["instances"][0]["estimate"]["weights_source"] == "calibration"
    ignored = runner.invoke(app, ["plan", str(profile), "--json", "--no-calibration"])
    assert json.loads(ignored.output)["instances"][0]["estimate"]["weights_source"] == "config"

    model = str(tmp_path / "llama")
    est = runner.invoke(app, ["estimate", model, "--gpu", "H200", "--max-model-len", "8192", "--json"])
    assert est.exit_code == 0, est.output
    calibrated = json.loads(est.output)
    assert calibrated["weights_source"] == "calibration"
    # The record came from a run at 0.45: the calibrated estimate at 0.45 reproduces its KV cache.
    at_run = runner.invoke(
        app,
        [
            "estimate",
            model,
            "--gpu",
            "H200",
            "--max-model-len",
            "8192",
            "--gpu-memory-utilization",
            "0.45",
            "--json",
        ],
    )
    assert abs(json.loads(at_run.output)["kv_cache_tokens"] - 381_552) / 381_552 < 0.005
    # The inverse estimate (a capacity target) uses the record too.
    for target in (["--concurrency", "16"], ["--kv-tokens", "100000"]):
        inverse = runner.invoke(
            app, ["estimate", model, "--gpu", "H200", "--max-model-len", "8192", *target, "--json"]
        )
        assert inverse.exit_code == 0, inverse.output
        assert json.loads(inverse.output)["weights_source"] == "calibration", target


def test_calibrate_refuses_a_cpu_profile(tmp_path: Path) -> None:
    path = tmp_path / "cpu.yaml"
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(CATALOG_DIR / "Qwen--Qwen2.5-0.5B-Instruct.json", model / "config.json")
    path.write_text(f"device: cpu\nmodels:\n  - name: q\n    model: {model}\n    max_model_len: 256\n")
    result = CliRunner().invoke(app, ["calibrate", str(path)])
    assert result.exit_code == 2
    assert "calibration measures GPU memory" in result.output
