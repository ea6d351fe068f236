"""`gpushare plan` / `check` with on-demand models: the awake sets in the text, the JSON keys, exit
1 when host RAM or the GPU cannot hold the schedule, and host RAM asked of the host only when
needed (through `plan_cli.host_ram_factory`, a static one here)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpushare.cli.plan as plan_cli
from gpushare.cli import app
from gpushare.devices.host import HostRam, StaticHostRam
from gpushare.units import GiB


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


class CountingHostRam:
    def __init__(self, size: int | None) -> None:
        self.size = size
        self.asked = 0

    def available_bytes(self) -> int | None:
        self.asked += 1
        return self.size


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> CountingHostRam:
    ram = CountingHostRam(96 * GiB)

    def factory() -> HostRam:
        return ram

    monkeypatch.setattr(plan_cli, "host_ram_factory", factory)
    return ram


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


PROFILE = """
gpus: H200
defaults: {mps: "off"}
models:
  - {name: small, model: Qwen/Qwen2.5-1.5B-Instruct, max_model_len: 8192, concurrency: 8}
  - {name: llama, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 8192, concurrency: 48,
     residency: on-demand}
  - {name: qwen, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 96,
     residency: on-demand}
  - {name: mistral, model: mistralai/Mistral-7B-Instruct-v0.3, max_model_len: 8192, concurrency: 48,
     residency: on-demand}
"""


def test_plan_text_shows_the_awake_sets_and_host_ram(tmp_path: Path, host: CountingHostRam) -> None:
    code, out = run("plan", str(write(tmp_path, PROFILE)))
    assert code == 0, out
    assert "on-demand room 110.47 GiB (as many as fit); awake together: {llama} | {mistral} | {qwen}" in out
    llama_host = "host RAM 20.60 GiB (pinned weights copy 17.60 GiB + vLLM processes 3.00 GiB)"
    assert f"on-demand, sleep level 1: asleep 2.57 GiB on the GPU, {llama_host}" in out
    assert "reported by the host at plan time" in out and host.asked == 1


def test_plan_json_adds_residency_asleep_and_host_bytes(tmp_path: Path, host: CountingHostRam) -> None:
    code, out = run("plan", str(write(tmp_path, PROFILE)), "--json")
    assert code == 0, out
    data = json.loads(out)
    insts = {i["name"]: i for i in data["instances"]}
    assert insts["small"]["residency"] == "always" and insts["small"]["asleep_bytes"] == 0
    assert insts["llama"]["residency"] == "on-demand"
    assert 2 * GiB < insts["llama"]["asleep_bytes"] < 3 * GiB
    assert insts["llama"]["host_bytes"] > insts["llama"]["estimate"]["weights_bytes"]
    assert insts["llama"]["on_demand"]["sleep_level"] == 1
    assert data["host"]["available_bytes"] == 96 * GiB
    assert data["host"]["needed_bytes"] == sum(i["host_bytes"] for i in data["instances"])
    assert len(data["gpus"][0]["awake"]["awake_sets"]) == 3


def test_check_fails_when_host_ram_cannot_hold_the_sleepers(tmp_path: Path, host: CountingHostRam) -> None:
    host.size = 20 * GiB
    code, out = run("check", str(write(tmp_path, PROFILE)))
    assert code == 1
    assert "host RAM" in out and "short by" in out
    code, out = run("check", str(write(tmp_path, PROFILE)), "--format", "json")
    assert code == 1 and not json.loads(out)["ok"]


def test_check_fails_when_an_on_demand_model_cannot_wake(tmp_path: Path, host: CountingHostRam) -> None:
    too_big = PROFILE.replace("concurrency: 96", "concurrency: 400")
    code, out = run("check", str(write(tmp_path, too_big)))
    assert code == 1, out
    assert "does not fit" in out and "qwen" in out


def test_profile_host_memory_wins_and_the_host_is_not_asked(tmp_path: Path, host: CountingHostRam) -> None:
    text = PROFILE.replace("gpus: H200\n", "gpus: H200\nhost_memory: 512GiB\n")
    code, out = run("check", str(write(tmp_path, text)))
    assert code == 0, out
    assert "3 on-demand; host RAM" in out and "of 512.00 GiB" in out
    assert host.asked == 0


def test_profiles_without_on_demand_never_ask_the_host(tmp_path: Path, host: CountingHostRam) -> None:
    plain = "gpus: H200\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192}]\n"
    code, out = run("plan", str(write(tmp_path, plain)), "--json")
    assert code == 0 and host.asked == 0
    assert "host" not in json.loads(out)


def test_static_host_ram_reports_its_size() -> None:
    assert StaticHostRam(5).available_bytes() == 5 and StaticHostRam(None).available_bytes() is None


def test_psutil_host_ram_reports_a_size() -> None:
    from gpushare.devices.host import PsutilHostRam

    size = PsutilHostRam().available_bytes()
    assert size is not None and size > 0
