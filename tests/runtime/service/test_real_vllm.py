"""The gateway and supervisor in front of real vllm-cpu servers.

- A streamed chat answer through the gateway equals the direct one (temperature 0).
- Two models under a bounded load; one instance is killed with SIGKILL: the supervisor (a real
  background `gpushare supervise` process) restarts it and it serves again; every request to the
  other model succeeds meanwhile; requests to the killed one get 503s, never hangs.

- A tensor-parallel instance (vllm-cpu at --tensor-parallel-size 2: API server, engine core, two
  workers) under load: one worker is killed with SIGKILL; the supervisor sees that worker gone,
  stops what is left of the session and restarts the instance whole (new workers); the other model
  keeps answering every request.

Reuses the session's shared `vllm_server` (tests/conftest.py) as the model that stays up, and starts
one more server, on `tiny_model_dir_b`, as the one that is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from fixtures.tiny_model import VLLM_CPU_ENV, vllm_cpu_argv
from prometheus_client.parser import text_string_to_metric_families

from gpushare.runtime.host.clock import SystemClock
from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.service.gateway import Gateway, GatewayConfig
from gpushare.runtime.service.metrics import VllmMetricsCollector
from gpushare.runtime.service.process import read_info, start_background, stop_background
from gpushare.runtime.service.routes import RouteTable, Upstream
from gpushare.runtime.store.state import InstanceRecord, ProfileState, load_state, profile_paths, save_state
from gpushare.vllm.processes import is_vllm_process

pytestmark = pytest.mark.vllm

START_TIMEOUT_S = 180.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "the quick brown fox"}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": stream,
        "ignore_eos": True,
    }


async def _streamed_text(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[str, int]:
    """The concatenated deltas of an SSE chat stream, and how many data events it had."""
    text, events = [], 0
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            events += 1
            choices = json.loads(line[len(b"data: ") :]).get("choices") or [{}]
            delta = choices[0].get("delta", {}).get("content")
            if delta:
                text.append(delta)
    return "".join(text), events


def test_stream_through_gateway_equals_direct(vllm_server: Any) -> None:
    async def scenario() -> None:
        table = RouteTable([Upstream("a", vllm_server.model_name, vllm_server.base_url, aliases=("small",))])
        gateway = Gateway(table, GatewayConfig(port=0), vllm_metrics=VllmMetricsCollector())
        await gateway.start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                direct, direct_events = await _streamed_text(
                    session,
                    f"{vllm_server.base_url}/v1/chat/completions",
                    _chat(vllm_server.model_name, True),
                )
                via, via_events = await _streamed_text(
                    session,
                    f"http://127.0.0.1:{gateway.bound_port}/v1/chat/completions",
                    _chat("small", True),
                )
                async with session.get(f"http://127.0.0.1:{gateway.bound_port}/metrics") as resp:
                    metrics = await resp.text()
        finally:
            await gateway.stop()
        assert direct and via == direct
        # Passed on event by event, not as one buffered blob. (How many events vLLM sends for the
        # same tokens depends on its timing, so the counts are not compared with each other.)
        assert via_events > 1 and direct_events > 1
        names = {
            s.name
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.labels.get("instance") == "a"
        }
        assert "vllm:num_requests_running" in names

    asyncio.run(asyncio.wait_for(scenario(), 240))


# --- kill -9 under load ------------------------------------------------------------------------


@dataclass
class Doomed:
    """The instance the test kills, started here (the shared server must survive)."""

    record: InstanceRecord


def _wait_ready(port: int, model: str, timeout_s: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 1}).encode()
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"instance on port {port} not ready in {timeout_s:.0f} s")


def _doomed(model_dir: Path, tmp_path: Path, extra: tuple[str, ...], env: dict[str, str]) -> Iterator[Doomed]:
    """Instance b on `model_dir`, started here and stopped at the end, whatever incarnation of it
    the state file names by then."""
    runner = SubprocessRunner()
    port = _free_port()
    argv = (*vllm_cpu_argv(sys.executable, model_dir, "tiny-qwen2", port), *extra)
    log_path = tmp_path / "b.log"
    spawned = runner.spawn(argv, env, log_path)
    record = InstanceRecord(
        name="b",
        model=str(model_dir),
        port=port,
        argv=argv,
        env=env,
        log_path=str(log_path),
        pid=spawned.pid,
        pid_start_time=spawned.start_time,
        state="starting",
    )
    try:
        _wait_ready(port, "tiny-qwen2", START_TIMEOUT_S)
        yield Doomed(record)
    finally:
        # Whatever incarnation of b the state file names now, and the first one: stop their sessions.
        paths = profile_paths("lab")
        state = load_state(paths) if paths.state_file.exists() else None
        current = state.instance("b") if state is not None else None
        for rec in (record, current):
            if rec is not None and rec.pid and rec.pid_start_time:
                pids = runner.session_pids(rec.pid, rec.pid_start_time)
                runner.signal(pids, signal.SIGKILL)


@pytest.fixture
def doomed(tiny_model_dir_b: Path, tmp_path: Path) -> Iterator[Doomed]:
    yield from _doomed(tiny_model_dir_b, tmp_path, (), dict(VLLM_CPU_ENV))


TP_ENV = {
    **VLLM_CPU_ENV,
    # the engine core in its own process, as on a GPU (the shared server runs it in-process)
    "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    # vllm-cpu binds each TP worker's threads to a NUMA node and refuses two workers on one node
    # ("Not enough allowed NUMA nodes"); one core each instead
    "VLLM_CPU_OMP_THREADS_BIND": "0|1",
}


@pytest.fixture
def doomed_tp(tiny_model_dir_b: Path, tmp_path: Path) -> Iterator[Doomed]:
    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("vllm-cpu at --tensor-parallel-size 2 binds its workers to CPUs 0 and 1")
    yield from _doomed(tiny_model_dir_b, tmp_path, ("--tensor-parallel-size", "2"), dict(TP_ENV))


def _vllm_processes(record: InstanceRecord) -> dict[str, int]:
    """Title -> pid of vLLM's own processes of the instance's session (besides the API server)."""
    assert record.pid is not None and record.pid_start_time is not None
    members = SubprocessRunner().session_members(record.pid, record.pid_start_time)
    return {m.title: m.pid for m in members if is_vllm_process(m.title, record.env)}


async def _load(
    gateway: str, model: str, stop_at: list[float], results: Counter[str], latencies: list[float]
) -> None:
    """Requests one after another until `stop_at[0]`; each outcome counted, none may hang."""
    timeout = aiohttp.ClientTimeout(total=60)
    body = {"model": model, "prompt": "several models share", "max_tokens": 4, "temperature": 0}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop_at[0]:
            started = time.monotonic()
            try:
                async with session.post(f"{gateway}/v1/completions", json=body) as resp:
                    await resp.read()
                    outcome = str(resp.status)
                    if resp.status == 503:
                        assert int(resp.headers["Retry-After"]) >= 1
            except TimeoutError:
                outcome = "timeout"
            except aiohttp.ClientError as exc:
                outcome = type(exc).__name__
            latencies.append(time.monotonic() - started)
            results[outcome] += 1
            await asyncio.sleep(0.2 if outcome == "503" else 0.02)


def test_kill_9_under_load_restarts_and_isolates(vllm_server: Any, doomed: Doomed) -> None:
    paths = profile_paths("lab")
    leader = psutil.Process(vllm_server.pid)
    stays = InstanceRecord(
        name="a",
        model=str(vllm_server.model_dir),
        port=vllm_server.port,
        argv=vllm_server.argv,
        env=dict(VLLM_CPU_ENV),
        log_path=str(vllm_server.log_path),
        pid=vllm_server.pid,
        pid_start_time=leader.create_time(),
        state="ready",
    )
    save_state(paths, ProfileState("lab", (stays, doomed.record)))
    runner, clock = SubprocessRunner(), SystemClock()
    port = _free_port()
    info = start_background(
        paths, ["--port", str(port), "--health-interval", "1"], runner=runner, clock=clock
    )
    try:
        assert read_info(paths) == info
        gateway = info.url
        a_results: Counter[str] = Counter()
        b_results: Counter[str] = Counter()
        b_latencies: list[float] = []
        a_latencies: list[float] = []

        async def scenario() -> None:
            deadline = [time.monotonic() + 240.0]
            loads = [
                asyncio.create_task(_load(gateway, vllm_server.model_name, deadline, a_results, a_latencies)),
                asyncio.create_task(_load(gateway, "tiny-qwen2", deadline, b_results, b_latencies)),
            ]
            while b_results["200"] < 3:  # both serving through the gateway first
                await asyncio.sleep(0.1)
            os.kill(doomed.record.pid or 0, signal.SIGKILL)
            killed_at = time.monotonic()
            while b_results["503"] == 0:
                await asyncio.sleep(0.05)
                assert time.monotonic() - killed_at < 30, f"no 503 after the kill: {b_results}"
            served_before = b_results["200"]
            while b_results["200"] < served_before + 3:  # restarted and serving again
                await asyncio.sleep(0.2)
                assert time.monotonic() < deadline[0] - 5, f"b never served again: {b_results}"
            deadline[0] = time.monotonic()
            await asyncio.gather(*loads)

        asyncio.run(asyncio.wait_for(scenario(), 300))

        assert set(a_results) == {"200"}, a_results
        assert a_results["200"] >= 10
        assert set(b_results) <= {"200", "503"}, b_results  # no timeouts, resets or 502s
        assert b_results["503"] >= 1
        assert max(b_latencies) < 30  # a 503 comes at once; a 200 within the tiny model's time
        state = load_state(paths)
        assert state is not None
        b = state.instance("b")
        assert b is not None and b.restarts == 1 and b.state == "ready" and b.pid != doomed.record.pid
        a = state.instance("a")
        assert a is not None and a.restarts == 0 and a.pid == vllm_server.pid

        async def scrape() -> str:
            async with aiohttp.ClientSession() as session, session.get(f"{gateway}/metrics") as resp:
                return await resp.text()

        samples = [s for f in text_string_to_metric_families(asyncio.run(scrape())) for s in f.samples]
        restarts = {
            s.labels["instance"]: s.value for s in samples if s.name == "gpushare_instance_restarts_total"
        }
        assert restarts == {"a": 0.0, "b": 1.0}
        errors = [
            s
            for s in samples
            if s.name == "gpushare_gateway_errors_total"
            and s.labels == {"model": "tiny-qwen2", "kind": "unavailable"}
        ]
        assert errors and errors[0].value >= 1
        relabelled = {s.labels.get("instance") for s in samples if s.name == "vllm:num_requests_running"}
        assert relabelled == {"a", "b"}
        print(
            f"\nrequests to the model that stayed up: {dict(a_results)}; to the killed one: {dict(b_results)}"
        )
    finally:
        assert stop_background(paths, runner=runner, clock=clock)
        assert read_info(paths) is None


def test_kill_9_of_one_tp_worker_restarts_the_whole_instance(vllm_server: Any, doomed_tp: Doomed) -> None:
    paths = profile_paths("lab")
    first = _vllm_processes(doomed_tp.record)
    assert set(first) == {"VLLM::EngineCore", "VLLM::Worker_TP0", "VLLM::Worker_TP1"}, first
    stays = InstanceRecord(
        name="a",
        model=str(vllm_server.model_dir),
        port=vllm_server.port,
        argv=vllm_server.argv,
        env=dict(VLLM_CPU_ENV),
        log_path=str(vllm_server.log_path),
        pid=vllm_server.pid,
        pid_start_time=psutil.Process(vllm_server.pid).create_time(),
        state="ready",
    )
    save_state(paths, ProfileState("lab", (stays, replace(doomed_tp.record, state="ready"))))
    runner, clock = SubprocessRunner(), SystemClock()
    info = start_background(
        paths, ["--port", str(_free_port()), "--health-interval", "1"], runner=runner, clock=clock
    )
    try:
        a_results: Counter[str] = Counter()
        b_results: Counter[str] = Counter()
        errors: set[str] = set()

        async def scenario() -> None:
            deadline = [time.monotonic() + 400.0]  # a TP restart: 30-120 s on 2 busy cores
            loads = [
                asyncio.create_task(_load(info.url, vllm_server.model_name, deadline, a_results, [])),
                asyncio.create_task(_load(info.url, "tiny-qwen2", deadline, b_results, [])),
            ]
            while b_results["200"] < 3:
                await asyncio.sleep(0.1)
            os.kill(first["VLLM::Worker_TP1"], signal.SIGKILL)  # the API server and TP0 run on
            killed_at = time.monotonic()
            while b_results["503"] == 0:
                await asyncio.sleep(0.05)
                assert time.monotonic() - killed_at < 30, f"no 503 after the kill: {b_results}"
            served_before = b_results["200"]
            while b_results["200"] < served_before + 3:
                state = load_state(paths)
                b = state.instance("b") if state is not None else None
                if b is not None and b.error:
                    errors.add(b.error)
                await asyncio.sleep(0.2)
                assert time.monotonic() < deadline[0] - 5, f"b never served again: {b_results}"
            deadline[0] = time.monotonic()
            await asyncio.gather(*loads)

        asyncio.run(asyncio.wait_for(scenario(), 450))

        assert set(a_results) == {"200"}, a_results  # the other model never noticed
        # vLLM answers the one request in flight when its worker died with a 500 (the engine is
        # dead); every later one gets the gateway's 503 until the restart serves
        assert set(b_results) <= {"200", "503", "500"} and b_results["500"] <= 1, b_results
        # the supervisor acted on the dead worker (and whatever went with it by its next tick), not
        # on the API server's own exit seconds later
        (error,) = errors
        assert f"VLLM::Worker_TP1 (pid {first['VLLM::Worker_TP1']})" in error, error
        assert error.startswith("its process") and error.endswith(" exited"), error
        state = load_state(paths)
        assert state is not None
        b, a = state.instance("b"), state.instance("a")
        assert b is not None and b.restarts == 1 and b.state == "ready" and b.pid != doomed_tp.record.pid
        assert a is not None and a.restarts == 0 and a.pid == vllm_server.pid
        second = _vllm_processes(b)
        assert set(second) == set(first) and not set(second.values()) & set(first.values())
        assert not psutil.pid_exists(first["VLLM::Worker_TP0"])  # nothing of the first one is left
    finally:
        assert stop_background(paths, runner=runner, clock=clock)
