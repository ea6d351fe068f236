"""`gpushare gateway --routes FILE`: the routes file (what `export k8s` puts in the gateway's
ConfigMap), its mistakes, and a real gateway process routing by it to a real (fake vLLM) server."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.cli import app
from gpushare.errors import InputError
from gpushare.runtime.service.routes import Upstream, routes_from_document

FAKE_SERVER = Path(__file__).parent.parent / "fake_vllm_server.py"


def test_a_routes_document_reads_as_upstreams() -> None:
    data = {
        "routes": [
            {"model": "qwen2.5-7b", "aliases": ["qwen"], "url": "http://classic-qwen2-5-7b:8001/"},
            {"model": "llama", "url": "https://llama.example:443", "read_timeout_s": 600},
        ]
    }
    assert routes_from_document(data, "routes.yaml") == [
        Upstream("qwen2.5-7b", "qwen2.5-7b", "http://classic-qwen2-5-7b:8001", ("qwen",)),
        Upstream("llama", "llama", "https://llama.example:443", read_timeout_s=600.0),
    ]


@pytest.mark.parametrize(
    ("case", "data", "message"),
    [
        ("not-a-mapping", ["x"], "routes.yaml: expected a `routes:` list"),
        ("empty", {"routes": []}, "routes.yaml: expected a `routes:` list"),
        ("extra-top", {"routes": [{"model": "a", "url": "http://a"}], "x": 1}, "unknown key 'x'"),
        ("entry-not-mapping", {"routes": ["a"]}, r"routes\[0\]: expected a mapping"),
        ("no-model", {"routes": [{"url": "http://a"}]}, r"routes\[0\].model: must be the served"),
        ("bad-url", {"routes": [{"model": "a", "url": "a:80"}]}, r"routes\[0\].url: must start with http"),
        (
            "bad-aliases",
            {"routes": [{"model": "a", "url": "http://a", "aliases": "b"}]},
            r"routes\[0\].aliases: must be a list",
        ),
        (
            "typo",
            {"routes": [{"model": "a", "url": "http://a", "alias": ["b"]}]},
            r"routes\[0\]: unknown key 'alias'",
        ),
        (
            "read-timeout-zero",
            {"routes": [{"model": "a", "url": "http://a", "read_timeout_s": 0}]},
            r"routes\[0\].read_timeout_s: must be a number of seconds > 0, got 0; leave it out",
        ),
        (
            "read-timeout-bool",
            {"routes": [{"model": "a", "url": "http://a", "read_timeout_s": True}]},
            r"routes\[0\].read_timeout_s: must be a number of seconds > 0, got True",
        ),
    ],
)
def test_routes_document_mistakes(case: str, data: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        routes_from_document(data, "routes.yaml")


@pytest.mark.parametrize(
    ("case", "text", "message"),
    [
        ("no-route", None, "no route: give --upstream"),
        ("not-yaml", "routes: [\n", "not YAML or JSON"),
        (
            "duplicate",
            "routes:\n- {model: a, url: 'http://x:1'}\n- {model: b, aliases: [a], url: 'http://y:2'}\n",
            "model name 'a' is served by both",
        ),
        (
            "read-timeout-word",
            "routes:\n- {model: a, url: 'http://x:1'}\n--read-timeout=soon",
            "expected SECONDS",
        ),
        (
            "read-timeout-negative",
            "routes:\n- {model: a, url: 'http://x:1'}\n--read-timeout=a=-1",
            "a number > 0",
        ),
        (
            "read-timeout-no-name",
            "routes:\n- {model: a, url: 'http://x:1'}\n--read-timeout==5",
            "MODEL=SECONDS",
        ),
    ],
)
def test_gateway_cli_route_mistakes(tmp_path: Path, case: str, text: str | None, message: str) -> None:
    args = ["gateway"]
    if text is not None:
        text, _, flag = text.partition("\n--")
        (tmp_path / "routes.yaml").write_text(text)
        args += ["--routes", str(tmp_path / "routes.yaml"), *(["--" + flag] if flag else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 20.0) -> None:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {deadline_s} s")


def test_gateway_routes_by_the_file(tmp_path: Path) -> None:
    upstream_port, gateway_port = _port(), _port()
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"routes:\n- model: tiny\n  aliases: [t]\n  url: http://127.0.0.1:{upstream_port}\n")
    server = subprocess.Popen(
        [sys.executable, str(FAKE_SERVER), "--served-model-name", "tiny", "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpushare",
                "gateway",
                "--routes",
                str(routes),
                "--port",
                str(gateway_port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(f"http://127.0.0.1:{upstream_port}/health", server)
        _wait_until_up(f"http://127.0.0.1:{gateway_port}/health", gateway)
        models = _get(f"http://127.0.0.1:{gateway_port}/v1/models")
        assert sorted(m["id"] for m in models["data"]) == ["t", "tiny"]  # type: ignore[index, union-attr]
        body = json.dumps({"model": "t", "prompt": "hi", "max_tokens": 2}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway_port}/v1/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200 and json.load(resp)["choices"]
    finally:
        for proc in (gateway, server):
            proc.send_signal(signal.SIGTERM)
        codes = [gateway.wait(timeout=10), server.wait(timeout=10)]
    assert codes[0] == 0  # SIGTERM ends the gateway cleanly
    # issue 12: `gateway` runs on uvloop, as `supervise` does (the test extra installs it)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"gateway on 127.0.0.1:{gateway_port} ({loop})" in log.read_text()
