"""The control endpoint mounted on a stub app (as the gateway will mount it), in front of a real
SwapManager on a scripted vLLM: wake, sleep, the swap view, names, auth, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from gpushare.planning.plan import SwapSettings
from gpushare.runtime.host.clock import LoopClock
from gpushare.runtime.service.swap.control import ControlCall, FakeSleepControl, SleepControlError
from gpushare.runtime.service.swap.endpoint import control_routes, error
from gpushare.runtime.service.swap.layout import SwapGpu, SwapLayout, SwapMember
from gpushare.runtime.service.swap.manager import SwapManager

G = 1 << 30
KEY = "sekrit"
NAMES = {"llama": "llama", "llama-alias": "llama", "qwen": "qwen", "small": "small"}


@dataclass
class App:
    url: str
    manager: SwapManager
    sleeping: dict[str, bool]
    broken: set[str]
    client: aiohttp.ClientSession

    async def post(self, path: str, key: str | None = KEY) -> tuple[int, dict[str, object], str | None]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.client.post(self.url + path, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")


@asynccontextmanager
async def app() -> AsyncIterator[App]:
    on_demand = SwapSettings(sleep_level=1, queue=4, wait_s=5, drain_s=1, idle_s=None)
    layout = SwapLayout(
        (SwapGpu(0, 100 * G, 1, ("llama", "qwen")),),
        (SwapMember("llama", 0, 60 * G, on_demand), SwapMember("qwen", 0, 60 * G, on_demand)),
    )
    sleeping = {"llama": True, "qwen": False}
    broken: set[str] = set()

    async def vllm(call: ControlCall) -> bool | None:
        name = call.base_url.removeprefix("http://")
        if call.kind == "is_sleeping":
            return sleeping[name]
        if name in broken:
            raise SleepControlError(f"POST {call.base_url}/wake_up: HTTP 500: CUDA error: out of memory")
        sleeping[name] = call.kind == "sleep"
        return None

    manager = SwapManager(
        layout, FakeSleepControl(vllm), LoopClock(), lambda n: f"http://{n}", initial={"qwen": "awake"}
    )

    def authorize(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Authorization") == f"Bearer {KEY}":
            return None
        return error(401, "Incorrect or missing API key.", "invalid_api_key")

    web_app = web.Application()
    web_app.add_routes(control_routes(manager, NAMES.get, authorize))
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = aiohttp.ClientSession()
    try:
        yield App(f"http://127.0.0.1:{runner.addresses[0][1]}", manager, sleeping, broken, client)
    finally:
        await client.close()
        await runner.cleanup()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_wake_and_sleep_by_alias() -> None:
    async def scenario() -> None:
        async with app() as a:
            status, body, _ = await a.post("/gpushare/wake/llama-alias")
            assert status == 200
            assert body["instance"] == "llama" and body["phase"] == "awake" and body["changed"] is True
            assert a.sleeping == {"llama": False, "qwen": True}  # awake_max 1: qwen made room
            status, body, _ = await a.post("/gpushare/wake/llama")
            assert (status, body["changed"]) == (200, False)
            status, body, _ = await a.post("/gpushare/sleep/llama")
            assert (status, body["phase"], body["changed"]) == (200, "asleep", True)
            assert a.sleeping["llama"] is True
            async with a.client.get(
                a.url + "/gpushare/swap", headers={"Authorization": f"Bearer {KEY}"}
            ) as r:
                view = await r.json()
            assert view["swaps_total"] == 1
            assert [(i["instance"], i["phase"], i["swaps"]) for i in view["instances"]] == [
                ("llama", "asleep", 1),
                ("qwen", "asleep", 0),
            ]

    run(scenario)


@pytest.mark.parametrize(
    ("case", "path", "key", "status", "code"),
    [
        ("no-key", "/gpushare/wake/llama", None, 401, "invalid_api_key"),
        ("wrong-key", "/gpushare/sleep/llama", "nope", 401, "invalid_api_key"),
        ("unknown", "/gpushare/wake/nope", KEY, 404, "model_not_found"),
        ("resident-wake", "/gpushare/wake/small", KEY, 409, "not_on_demand"),
        ("resident-sleep", "/gpushare/sleep/small", KEY, 409, "not_on_demand"),
        ("bad-wait", "/gpushare/wake/llama?wait_s=zero", KEY, 400, "bad_wait"),
        ("wait-too-long", "/gpushare/wake/llama?wait_s=7200", KEY, 400, "bad_wait"),
    ],
)
def test_refusals(case: str, path: str, key: str | None, status: int, code: str) -> None:
    async def scenario() -> None:
        async with app() as a:
            got, body, _ = await a.post(path, key)
            assert got == status
            error_body = body["error"]
            assert isinstance(error_body, dict) and error_body["code"] == code
            assert a.sleeping == {"llama": True, "qwen": False}  # nothing moved

    run(scenario)


def test_a_failed_wake_is_503_with_the_reason() -> None:
    async def scenario() -> None:
        async with app() as a:
            a.broken.add("llama")
            status, body, retry = await a.post("/gpushare/wake/llama?wait_s=3")
            assert status == 503 and retry == "60"
            error_body = body["error"]
            assert isinstance(error_body, dict)
            assert error_body["code"] == "model_wake_failed"
            assert "out of memory" in str(error_body["message"])
            assert a.manager.phase("llama") == "failed"

    run(scenario)
