"""`up --plan-file FILE --foreground` (runtime/launcher/foreground.py) on real, cheap processes
(tests/runtime/fake_vllm_server.py): a plan file read back, every instance started, the gateway +
supervisor serving in the same process, and everything stopped on SIGTERM, on a signal during the
start, and when the supervisor gives up on an instance. Plus the pre-flight check that a plan
runs on the GPU it was made for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from launch_helpers import (
    fake_server_argv,
    free_port,
    instance,
    model_folder,
    plan_of,
    real_process_edges,
)

from gpushare.devices.base import Gpu
from gpushare.devices.static import StaticInventory
from gpushare.planning.plan import Plan, PlannedGpu
from gpushare.runtime.launcher.foreground import ForegroundOptions, run_in_foreground
from gpushare.runtime.launcher.preflight import check_gpu_models
from gpushare.runtime.launcher.up import UpOptions
from gpushare.runtime.service.gateway import GatewayConfig
from gpushare.runtime.service.policy import SupervisorPolicy
from gpushare.runtime.store.state import load_state, profile_paths

REPO = Path(__file__).resolve().parents[3]


def write_plan(path: Path, plan: Plan) -> Path:
    path.write_text(json.dumps(plan.to_json(), indent=2))
    return path


def gpushare_up(plan_file: Path, gateway_port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gpushare", "up", "--plan-file", str(plan_file), "--foreground"]
        + ["--gateway-port", str(gateway_port), "--timeout", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(url: str, proc: subprocess.Popen[str], deadline_s: float = 40.0) -> bytes:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise AssertionError(
                f"exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {deadline_s} s")


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_foreground_serves_a_plan_file_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    model = model_folder(tmp_path)
    ports = [free_port(), free_port()]
    plan = plan_of(
        instance("small", fake_server_argv("small", ports[0], model), ports[0], start_order=0),
        instance("big", fake_server_argv("big", ports[1], model), ports[1], start_order=1),
        profile="pod",
    )
    gateway_port = free_port()
    proc = gpushare_up(write_plan(tmp_path / "plan.json", plan), gateway_port)
    try:
        wait_for(f"http://127.0.0.1:{gateway_port}/health", proc)
        models = json.loads(wait_for(f"http://127.0.0.1:{gateway_port}/v1/models", proc))
        assert sorted(m["id"] for m in models["data"]) == ["big", "small"]
        metrics = wait_for(f"http://127.0.0.1:{gateway_port}/metrics", proc).decode()
        assert 'gpushare_instance_up{instance="small",model="small"} 1.0' in metrics
        state = load_state(profile_paths("pod"))
        assert state is not None and {r.state for r in state.instances} == {"ready"}
        pids = [r.pid for r in state.instances if r.pid is not None]
        children = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert alive(pids + children) == []
    assert load_state(profile_paths("pod")) is None  # down removed the state: nothing is left


def test_a_signal_during_the_start_stops_what_had_started(tmp_path: Path) -> None:
    model = model_folder(tmp_path)
    ports = [free_port(), free_port()]
    plan = plan_of(
        instance("first", fake_server_argv("first", ports[0], model), ports[0], start_order=0),
        instance("slow", fake_server_argv("slow", ports[1], model, "--never-ready"), ports[1], start_order=1),
        profile="pod",
    )
    proc = gpushare_up(write_plan(tmp_path / "plan.json", plan), free_port())
    try:
        until = time.monotonic() + 30
        pids: list[int] = []
        while time.monotonic() < until and len(pids) < 2:
            state = load_state(profile_paths("pod"))
            pids = [r.pid for r in state.instances if r.pid is not None] if state else []
            time.sleep(0.1)
        assert len(pids) == 2, "both instances should have been spawned (the first serves, the second never)"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "stopped during the start" in out
    assert alive(pids) == []


def test_an_instance_given_up_on_stops_everything_with_exit_1(tmp_path: Path) -> None:
    model = model_folder(tmp_path)
    ports = [free_port(), free_port()]
    plan = plan_of(
        instance("keeps", fake_server_argv("keeps", ports[0], model), ports[0]),
        instance("dies", fake_server_argv("dies", ports[1], model), ports[1], start_order=1),
        profile="pod",
    )
    paths = profile_paths("pod")
    options = ForegroundOptions(
        up=UpOptions(ready_timeout_s=20, stop_timeout_s=5),
        gateway=GatewayConfig(port=0),
        policy=SupervisorPolicy(crash_loop_restarts=0, tick_s=0.1, health_interval_s=0.2),
        failed_check_s=0.2,
    )

    def kill_one(result: object) -> None:
        state = load_state(paths)
        assert state is not None
        victim = next(r.pid for r in state.instances if r.name == "dies")
        assert victim is not None
        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()

    done = run_in_foreground(plan, paths, real_process_edges(), options, on_serving=kill_one)
    assert done.exit_code == 1 and done.failed == ("dies",)
    assert set(done.stopped.stopped) | set(done.stopped.gone) == {"keeps", "dies"}
    assert load_state(paths) is None


H100 = Gpu(0, "NVIDIA H100 80GB HBM3", 85_520_809_984, reserved_bytes=503_316_480)


@pytest.mark.parametrize(
    ("case", "found", "problem"),
    [
        ("same", H100, None),
        ("other-model", Gpu(0, "NVIDIA L40S", 48_305_799_168), "GPU 0 is an NVIDIA L40S with 44.99 GiB"),
        ("other-total", Gpu(0, H100.name, 85_899_345_920), "but the plan is for an NVIDIA H100 80GB HBM3"),
    ],
)
def test_preflight_checks_the_plan_runs_on_its_gpu(case: str, found: Gpu, problem: str | None) -> None:
    planned = PlannedGpu(0, H100.name, H100.total_bytes, 0, 0, ("a",))
    plan = plan_of(instance("a", ["x"], 1, gpus=(0,)), gpus=[planned])
    problems = check_gpu_models(plan, StaticInventory([found]))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]
        assert "--gpus gpus.json" in problems[0]


@pytest.mark.parametrize(
    ("case", "args", "text", "message"),
    [
        ("neither", [], None, "give a profile YAML or --plan-file FILE"),
        ("both", ["x.yaml", "--plan-file", "{plan}"], "{}", "give a profile YAML or --plan-file FILE"),
        ("not-json", ["--plan-file", "{plan}"], "feasible: yes", "not JSON"),
        ("not-a-plan", ["--plan-file", "{plan}"], '{"routes": []}', "format: expected 1"),
        ("missing", ["--plan-file", "{plan}.nope"], None, "No such file"),
        ("keep-going", ["--plan-file", "{plan}", "--foreground", "--keep-going"], "{}", "--foreground runs"),
    ],
)
def test_up_plan_file_mistakes(
    tmp_path: Path, case: str, args: list[str], text: str | None, message: str
) -> None:
    from typer.testing import CliRunner

    from gpushare.cli import app

    plan = tmp_path / "plan.json"
    if text is not None:
        plan.write_text(text)
    result = CliRunner().invoke(app, ["up", *(a.replace("{plan}", str(plan)) for a in args)])
    assert result.exit_code == 2, result.output
    assert message in result.output
