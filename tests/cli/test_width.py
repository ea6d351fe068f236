"""`plan` and `status` at 80 and 200 columns and piped (issue 12, items 13 and 14): folded or with
columns left out to fit, a name never cut short, each command whole on one line, plain text off a
terminal (and every column, every line whole there)."""

from __future__ import annotations

import io
import json
import shlex
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import gpushare.cli.launch as launch_cli
from gpushare.cli import app, term
from gpushare.cli.render_launch import status_lines
from gpushare.cli.render_plan import render_plan
from gpushare.devices.static import StaticInventory
from gpushare.runtime.launcher.status import GpuStatus, InstanceStatus, StatusReport
from gpushare.runtime.store.state import InstanceRecord, ProfileState, profile_paths, save_state

ROOT = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "GPUSHARE_CALIBRATION_FILE": "/nonexistent/calibration.json"}
PLANS = [
    ["plan", "profiles/classic.yaml"],
    ["plan", "profiles/classic.yaml", "--gpus", "L4"],  # does not fit: reasons and suggestions
    ["plan", "bench/gpu/profiles/colocate-mps.yaml", "--gpus", "2xH100"],
]


def _output(args: list[str], columns: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env={**ENV, "COLUMNS": columns})
    return result.exit_code, result.stdout


def _commands(args: list[str]) -> list[str]:
    plan = json.loads(_output([*args, "--json"], "")[1])
    return [
        " ".join([*(f"{k}={shlex.quote(v)}" for k, v in sorted(i["env"].items())), shlex.join(i["argv"])])
        for i in plan["instances"]
    ]


@pytest.mark.parametrize("args", PLANS, ids=[" ".join(a[1:]) for a in PLANS])
@pytest.mark.parametrize("columns", [80, 200])
def test_plan_fits_the_width(args: list[str], columns: int) -> None:
    code, folded = _output(args, str(columns))
    piped_code, piped = _output(args, "")
    assert code == piped_code
    commands = _commands(args)
    lines = folded.splitlines()
    assert all(command in lines for command in commands)  # whole, one line each
    assert all(len(line) <= columns for line in lines if line not in commands), folded
    assert folded.split() == piped.split()  # only folded: the same words in the same order
    assert "…" not in folded


def test_plan_off_a_terminal_is_whole_lines_and_plain() -> None:
    code, piped = _output(PLANS[0], "")
    assert code == 0 and "\x1b[" not in piped
    gpu_lines = [line for line in piped.splitlines() if line.startswith("GPU 0 ")]
    assert len(gpu_lines) == 1 and gpu_lines[0].endswith("free after start 7.94 GiB")
    assert max(map(len, piped.splitlines())) > 120  # nothing was folded


def test_on_a_terminal_the_width_is_the_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert term.output_width(Console(file=io.StringIO(), force_terminal=True, width=80)) == 80
    assert term.output_width(Console(file=io.StringIO())) is None  # a file or a pipe
    monkeypatch.setenv("COLUMNS", "100")
    assert term.output_width(Console(file=io.StringIO())) == 100


def test_a_terminal_gets_colour_and_a_pipe_does_not(tmp_path: Path) -> None:
    from gpushare.cli.plan import make_plan

    _, plan = make_plan(ROOT / "profiles/classic.yaml", None, None, calibrated=False)
    colour = io.StringIO()
    render_plan(plan, Console(file=colour, force_terminal=True, width=80, highlight=False, soft_wrap=True))
    plain = io.StringIO()
    render_plan(plan, Console(file=plain, highlight=False, soft_wrap=True))
    assert "\x1b[" in colour.getvalue() and "\x1b[" not in plain.getvalue()


def test_a_cpu_plan_has_no_bars_and_says_it_is_the_cpu(tmp_path: Path) -> None:
    profile = tmp_path / "cpu.yaml"
    profile.write_text(
        "name: c\ndevice: cpu\nmodels:\n"
        "  - name: q\n    model: Qwen/Qwen2.5-0.5B-Instruct\n    max_model_len: 4096\n"
    )
    code, out = _output(["plan", str(profile)], "")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "plan c: fits (device cpu: no GPU memory to place)"
    assert "strategy" not in out and "█ weights" not in out and "▓" not in out
    assert any(line.startswith("  #0 q Qwen/Qwen2.5-0.5B-Instruct: weights ") for line in lines)
    assert lines[-1].startswith("note: device cpu: --kv-cache-memory-bytes fixes each KV cache")


def _status(model: str, name: str, state: str = "ready") -> InstanceStatus:
    return InstanceStatus(
        profile="lab", name=name, model=model, gpus=(0,), pid=123456, port=8001, state=state,  # type: ignore[arg-type]
        phase="compiling" if state == "starting" else None, planned_bytes=30 << 30, actual_bytes=29 << 30,
        kv_cache_tokens=1_234_567, kv_cache_usage=0.125, requests_running=3, requests_waiting=1,
        uptime_s=4000, restarts=2, log_path="/x.log", error=None,
    )  # fmt: skip


REPORT = StatusReport(
    instances=(
        _status("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct-long-name"),
        _status("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", "qwen-32b", state="starting"),
    ),
    gpus=(GpuStatus(0, "NVIDIA H100 80GB HBM3", 80 << 30, 60 << 30, 20 << 30),),
    profiles=("lab",),
)


@pytest.mark.parametrize("width", [80, 200, None])
def test_status_fits_and_never_cuts_a_name(width: int | None) -> None:
    lines = [line.plain for line in status_lines(REPORT, width)]
    if width is not None:
        assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    assert "llama-3.1-8b-instruct-long-name" in text and "starting (compiling)" in text and "…" not in text
    header = lines[0].split()
    assert header[:2] == ["instance", "model"] if width != 80 else header[0] == "instance"
    if width == 80:
        assert "KV tokens" not in lines[0] and any(
            line.startswith("(left out at 80 columns:") for line in lines
        )
    else:
        assert "KV tokens" in lines[0] and not any("left out" in line for line in lines)


def _record_state(state_dir: Path) -> None:
    rec = InstanceRecord(
        name="llama-3.1-8b", model="meta-llama/Llama-3.1-8B-Instruct", port=8001, argv=("vllm",), env={},
        log_path=str(state_dir / "x.log"), gpus=(0,), planned_bytes=30 << 30, pid=None, state="ready",
    )  # fmt: skip
    save_state(profile_paths("lab", state_dir), ProfileState("lab", (rec,)))


@pytest.fixture
def lab(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _record_state(isolated_env)
    monkeypatch.setattr(launch_cli, "inventory_factory", lambda: StaticInventory([]))
    return isolated_env


@pytest.mark.parametrize("columns", ["80", ""])
def test_status_through_the_cli(columns: str, lab: Path) -> None:
    code, out = _output(["status"], columns)
    assert code == 0 and "\x1b[" not in out
    lines = out.splitlines()
    assert lines[1].startswith("llama-3.1-8b ") and " failed " in f"{lines[1]} "
    if columns:
        assert max(map(len, lines)) <= 80
    else:
        assert lines[0].split()[:3] == ["instance", "model", "gpu"]


def test_status_watch_off_a_terminal_prints_each_report(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    code, out = _output(["status", "--watch", "--interval", "0.5"], "")
    assert code == 0 and sleeps == [0.5, 0.5]
    assert out.count("\ninstance ") == 2 and out.count("llama-3.1-8b ") == 2
    sleeps.clear()
    code, out = _output(["status", "--watch", "--json"], "")
    reports = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["instances"][0]["name"] for r in reports] == ["llama-3.1-8b", "llama-3.1-8b"]
