"""The fake vLLM server's sleep mode behaves as vLLM 0.26.0 does (tests/runtime/fake_vllm_server.py
says what was measured where): dev-mode endpoints, requests held while asleep, in-flight ones
aborted, timings, partial wakes, failed wakes, the CPU platform, memory per state."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAKE = Path(__file__).parent / "fake_vllm_server.py"
GIB = 1 << 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fake:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(
            self.url + path, data=data if method == "POST" else None, method=method
        )
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def sleeping(self) -> bool:
        code, body = self.call("GET", "/is_sleeping")
        assert code == 200
        return bool(json.loads(body)["is_sleeping"])

    def complete(self, timeout: float = 10.0, stream: bool = False) -> tuple[int, bytes]:
        return self.call("POST", "/v1/completions", {"model": "m", "prompt": "hi", "stream": stream}, timeout)

    def timed(self, method: str, path: str) -> float:
        started = time.monotonic()
        code, _ = self.call(method, path)
        assert code == 200, path
        return time.monotonic() - started

    def log_text(self) -> str:
        return self.log.read_text()


@contextmanager
def fake(tmp_path: Path, *flags: str, dev_mode: bool = True) -> Iterator[Fake]:
    port = free_port()
    log = tmp_path / f"fake-{port}.log"
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1" if dev_mode else "0"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--model", "m", "--port", str(port), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Fake(port, proc, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.call("GET", "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the fake did not listen"
            time.sleep(0.05)
        yield server
    finally:
        proc.kill()
        proc.wait()


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_the_sleep_endpoints_need_dev_mode(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode", dev_mode=False) as f:
        assert f.call("POST", "/sleep?level=1")[0] == 404
        assert f.call("GET", "/is_sleeping")[0] == 404
        assert f.complete()[0] == 200


def test_a_sleeping_server_holds_requests_until_it_wakes(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode") as f:
        assert not f.sleeping()
        f.complete(timeout=5)
        assert f.call("POST", "/sleep?level=1") == (200, b"")
        assert f.sleeping()
        assert f.call("GET", "/health")[0] == 200  # healthy asleep
        assert "a completion arrived while asleep" not in f.log_text()  # the one awake did not count
        with pytest.raises(TimeoutError):
            f.complete(timeout=0.5)  # no answer and no refusal
        assert (
            "fake: a completion arrived while asleep and is held" in f.log_text()
        )  # what swap tests look for
        thread, answers = in_thread(lambda: f.complete(timeout=10))
        time.sleep(0.3)
        assert not answers
        assert f.call("POST", "/wake_up") == (200, b"")
        thread.join(5)
        ((code, body),) = answers
        assert code == 200 and json.loads(body)["choices"][0]["finish_reason"] == "length"
        assert not f.sleeping()


def test_first_sleep_is_slower_and_waking_takes_its_time(tmp_path: Path) -> None:
    with fake(
        tmp_path, "--enable-sleep-mode", "--first-sleep-s", "0.8", "--sleep-s", "0.1", "--wake-s", "0.3"
    ) as f:
        first = f.timed("POST", "/sleep?level=1")
        wake = f.timed("POST", "/wake_up")
        later = f.timed("POST", "/sleep?level=1")
        assert first >= 0.8 and 0.1 <= later < 0.6 and wake >= 0.3
        assert "seconds to fall asleep" in f.log_text() and "seconds to wake up tags" in f.log_text()


@pytest.mark.parametrize(
    ("case", "mode", "reason"), [("abort, vLLM's default", "", "abort"), ("wait", "&mode=wait", "length")]
)
def test_a_request_in_flight_at_sleep(tmp_path: Path, case: str, mode: str, reason: str) -> None:
    with fake(tmp_path, "--enable-sleep-mode", "--completion-s", "1.2") as f:
        thread, answers = in_thread(lambda: f.complete(timeout=10))
        time.sleep(0.3)
        assert f.call("POST", f"/sleep?level=1{mode}")[0] == 200
        thread.join(5)
        ((code, body),) = answers
        assert code == 200 and json.loads(body)["choices"][0]["finish_reason"] == reason, case
        assert f.sleeping()


def test_a_partial_wake_leaves_it_asleep(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode") as f:
        f.call("POST", "/sleep?level=1")
        assert f.call("POST", "/wake_up?tags=weights")[0] == 200
        assert f.sleeping()
        assert f.call("POST", "/wake_up?tags=kv_cache")[0] == 200
        assert not f.sleeping()


def test_sleep_twice_and_wake_twice_change_nothing(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode") as f:
        assert f.call("POST", "/wake_up")[0] == 200 and not f.sleeping()
        f.call("POST", "/sleep?level=1")
        assert f.call("POST", "/sleep?level=2")[0] == 200 and f.sleeping()
        assert "Executor is not sleeping." in f.log_text() and "Executor is already sleeping." in f.log_text()


def test_a_failed_wake_answers_500_and_stays_asleep(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode", "--fail-wake", "1") as f:
        f.call("POST", "/sleep?level=1")
        assert f.call("POST", "/wake_up")[0] == 500
        assert f.sleeping()
        assert f.call("POST", "/wake_up")[0] == 200 and not f.sleeping()


def test_memory_per_state(tmp_path: Path) -> None:
    memory = tmp_path / "memory.json"
    sizes = ["--awake-bytes", str(85 * GIB), "--asleep-bytes", str(2 * GIB), "--weights-bytes", str(15 * GIB)]
    with fake(tmp_path, "--enable-sleep-mode", "--memory-file", str(memory), *sizes) as f:

        def read() -> tuple[bool, int, int]:
            data = json.loads(memory.read_text())
            assert data["pid"] == f.proc.pid
            return data["sleeping"], data["gpu_bytes"] // GIB, data["host_bytes"] // GIB

        assert read() == (False, 85, 0)
        f.call("POST", "/sleep?level=2")
        assert read() == (True, 2, 0)  # level 2 keeps no host copy
        f.call("POST", "/wake_up")
        f.call("POST", "/sleep?level=1")
        assert read() == (True, 2, 15)
        f.call("POST", "/wake_up")
        assert read() == (False, 85, 15)  # the pinned blocks stay
        assert (
            "CuMemAllocator: sleep freed 83.00 GiB memory in total, of which 15.00 GiB is backed up in CPU"
            in (f.log_text())
        )
        assert "2.00 GiB memory is still in use." in f.log_text()


def test_the_cpu_platform_refuses_the_flag(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(FAKE), "--port", str(free_port()), "--platform", "cpu", "--enable-sleep-mode"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "Sleep mode is not supported on current platform." in done.stdout


def test_the_cpu_platform_pauses_without_freeing_memory(tmp_path: Path) -> None:
    memory = tmp_path / "memory.json"
    with fake(tmp_path, "--platform", "cpu", "--memory-file", str(memory), "--awake-bytes", "100") as f:
        f.call("POST", "/sleep?level=1")
        assert f.sleeping() and json.loads(memory.read_text())["gpu_bytes"] == 100
        assert "sleep mode is not supported on CPU, ignore it." in f.log_text()
        with pytest.raises(TimeoutError):
            f.complete(timeout=0.3)


def test_streams_are_held_too_and_end_with_done(tmp_path: Path) -> None:
    with fake(tmp_path, "--enable-sleep-mode") as f:
        code, body = f.complete(stream=True)
        events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
        assert code == 200 and events[-1] == "data: [DONE]" and len(events) == 6
        f.call("POST", "/sleep?level=1")
        thread, answers = in_thread(lambda: f.complete(timeout=10, stream=True))
        time.sleep(0.3)
        assert not answers
        f.call("POST", "/wake_up")
        thread.join(5)
        assert answers and answers[0][1].decode().rstrip().endswith("data: [DONE]")
