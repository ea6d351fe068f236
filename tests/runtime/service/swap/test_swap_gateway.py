"""The gateway with a swap manager in front of a fake upstream (tests/runtime/service/
upstream_fake.py) whose sleep-mode calls are scripted: a held request is forwarded only after its
wake and says how long it waited; a full queue is 429 and a wait past wait_s 503, both with
Retry-After; vLLM's development endpoints are never forwarded."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from gpushare.planning.plan import SwapSettings
from gpushare.runtime.host.clock import LoopClock
from gpushare.runtime.service.gateway import WAKE_WAIT_HEADER, Gateway, GatewayConfig
from gpushare.runtime.service.routes import RouteTable, Upstream
from gpushare.runtime.service.swap.control import ControlCall, FakeSleepControl
from gpushare.runtime.service.swap.layout import SwapGpu, SwapLayout, SwapMember
from gpushare.runtime.service.swap.manager import SwapManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from upstream_fake import FakeUpstream  # noqa: E402

G = 1 << 30


def test_held_queue_full_wait_timeout_and_dev_paths() -> None:
    async def scenario() -> None:
        upstream = await FakeUpstream("llama").start()
        settings = SwapSettings(sleep_level=1, queue=2, wait_s=0.5, drain_s=1, idle_s=None)
        layout = SwapLayout((SwapGpu(0, 100 * G, 1, ("a",)),), (SwapMember("a", 0, 60 * G, settings),))
        wake_may_finish = asyncio.Event()
        sleeping = {"a": True}

        async def vllm(call: ControlCall) -> bool | None:
            if call.kind == "is_sleeping":
                return sleeping["a"]
            if call.kind == "wake":
                await wake_may_finish.wait()
            sleeping["a"] = call.kind == "sleep"
            return None

        manager = SwapManager(layout, FakeSleepControl(vllm), LoopClock(), lambda name: upstream.url)
        table = RouteTable([Upstream("a", "model-a", upstream.url)])
        gateway = Gateway(table, GatewayConfig(port=0), swap=manager)
        await gateway.start()
        url = f"http://127.0.0.1:{gateway.bound_port}"
        body = {"model": "model-a", "prompt": "hi"}
        async with aiohttp.ClientSession() as client:

            async def post() -> tuple[int, dict[str, str], str]:
                async with client.post(url + "/v1/completions", json=body) as resp:
                    return resp.status, dict(resp.headers), await resp.text()

            held = [asyncio.create_task(post()) for _ in range(2)]
            await asyncio.sleep(0.1)
            status, headers, text = await post()  # the third: the queue holds two
            assert (status, headers.get("Retry-After")) == (429, "5")
            assert "model_queue_full" in text and "2 requests waiting" in text
            assert upstream.received == []  # nothing forwarded while it sleeps
            timed_out = await asyncio.gather(*held)  # the wake does not finish within wait_s
            assert [(s, h.get("Retry-After")) for s, h, _ in timed_out] == [(503, "5"), (503, "5")]
            assert all("did not wake within 0.5 s" in t for _, _, t in timed_out)
            wake_may_finish.set()  # the wake the timed-out requests asked for goes on
            while manager.phase("a") != "awake":
                await asyncio.sleep(0.01)
            await manager.sleep("a")
            status, headers, _ = await post()  # held for the next wake
            assert status == 200 and float(headers[WAKE_WAIT_HEADER]) >= 0
            status, headers, _ = await post()  # awake now: no wait, no header
            assert status == 200 and WAKE_WAIT_HEADER not in headers
            async with client.post(url + "/sleep?level=1", json=body) as resp:
                assert resp.status == 404
            assert len(upstream.received) == 2
        await gateway.stop()
        await upstream.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
