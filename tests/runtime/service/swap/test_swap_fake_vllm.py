"""The swap manager against real processes of tests/runtime/fake_vllm_server.py (which behaves as
vLLM 0.26.0 was measured to: a sleeping server holds completions unanswered), over HTTP, with the
lease → forward → release steps the gateway takes (`Forwarder`).

Every server logs "fake: a completion arrived while asleep and is held" when a completion reaches
it asleep; each test checks that no server logged it: nothing was forwarded to a sleeping one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gpushare.planning.plan import SwapSettings
from gpushare.runtime.host.clock import LoopClock
from gpushare.runtime.service.swap.control import HttpSleepControl, put_to_sleep_blocking
from gpushare.runtime.service.swap.layout import SwapGpu, SwapLayout, SwapMember
from gpushare.runtime.service.swap.manager import SwapManager, SwapRefused
from gpushare.vllm.sleep import SleepLevel

FAKE = Path(__file__).resolve().parents[2] / "fake_vllm_server.py"
HELD_LINE = "fake: a completion arrived while asleep and is held"
G = 1 << 30


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sleeping(self) -> bool:
        with urllib.request.urlopen(self.url + "/is_sleeping", timeout=5) as answer:
            return bool(json.loads(answer.read())["is_sleeping"])

    def count(self, text: str) -> int:
        return self.log.read_text().count(text)


def start(tmp_path: Path, name: str, *flags: str) -> Server:
    port = free_port()
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--model", name, "--port", str(port), "--enable-sleep-mode", *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"},
        )
    server = Server(name, port, proc, log)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=1):
                return server
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the fake did not listen"
            time.sleep(0.05)


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    finish: str | None = None
    done_at: float = 0.0
    reason: str | None = None


@dataclass
class Forwarder:
    """What the gateway does for one request: a lease, the forward (the whole answer or stream),
    the release."""

    manager: SwapManager
    servers: dict[str, Server]
    session: aiohttp.ClientSession = field(init=False)

    async def __aenter__(self) -> Forwarder:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def complete(self, name: str, stream: bool = False) -> Answer:
        try:
            lease = await self.manager.lease(name)
        except SwapRefused as refused:
            return Answer(503, refused.detail, done_at=time.monotonic(), reason=refused.reason)
        try:
            body = {"model": name, "prompt": "hi", "stream": stream}
            url = self.servers[name].url + "/v1/completions"
            async with self.session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                if not stream:
                    data = await resp.json()
                    choice = data["choices"][0]
                    return Answer(resp.status, choice["text"], choice["finish_reason"], time.monotonic())
                text, finish = "", None
                async for line in resp.content:
                    event = line.decode().strip()
                    if not event.startswith("data: ") or event == "data: [DONE]":
                        continue
                    choice = json.loads(event[6:])["choices"][0]
                    text += choice["text"]
                    finish = choice["finish_reason"] or finish
                return Answer(resp.status, text, finish, time.monotonic())
        finally:
            lease.release()


def settings(level: SleepLevel = 1, **kw: float) -> SwapSettings:
    values = {"queue": 16, "wait_s": 20.0, "drain_s": 10.0, "idle_s": None, **kw}
    return SwapSettings(
        sleep_level=level,
        queue=int(values["queue"]),  # type: ignore[arg-type]
        wait_s=float(values["wait_s"]),  # type: ignore[arg-type]
        drain_s=float(values["drain_s"]),  # type: ignore[arg-type]
        idle_s=values["idle_s"],
    )


@dataclass
class Rig:
    servers: dict[str, Server]
    layout: SwapLayout
    awake: tuple[str, ...]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def manager(self, control: HttpSleepControl) -> SwapManager:
        return SwapManager(
            self.layout,
            control,
            LoopClock(),
            lambda name: self.servers[name].url,
            initial={n: "awake" for n in self.awake},
            on_failure=lambda n, why: self.failures.append((n, why)),
            idle_tick_s=0.1,
        )

    def run(self, scenario: Callable[[SwapManager, Forwarder], Awaitable[None]]) -> None:
        async def main() -> None:
            control = HttpSleepControl()
            manager = self.manager(control)
            try:
                async with Forwarder(manager, self.servers) as forward:
                    await asyncio.wait_for(scenario(manager, forward), 60)
            finally:
                await control.close()

        asyncio.run(main())
        for server in self.servers.values():
            assert server.count(HELD_LINE) == 0, f"{server.name} was sent a request while asleep"


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    started: list[Server] = []

    def make(
        members: dict[str, tuple[int, SwapSettings, tuple[str, ...]]],
        *,
        awake: tuple[str, ...] = (),
        room: int = 100,
        awake_max: int | None = None,
    ) -> Rig:
        servers = {}
        for name, (_, _, flags) in members.items():
            servers[name] = start(tmp_path, name, "--sleep-s", "0.1", "--wake-s", "0.2", *flags)
            started.append(servers[name])
            if name not in awake:
                put_to_sleep_blocking(servers[name].url, members[name][1].sleep_level)  # as `up` does
        layout = SwapLayout(
            (SwapGpu(0, room * G, awake_max, tuple(members)),),
            tuple(SwapMember(n, 0, size * G, s) for n, (size, s, _) in members.items()),
        )
        return Rig(servers, layout, awake)

    yield make
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait()


def test_two_sleeping_models_on_one_gpu(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig({"a": (60, settings(), ()), "b": (60, settings(), ())}, awake_max=1)

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        answers = await asyncio.gather(*(forward.complete(n) for n in ("a", "b", "a", "b", "a", "b")))
        assert [(a.status, a.text, a.finish) for a in answers] == [(200, "xxxx", "length")] * 6
        # one swap each: the three for the first model ride on its wake, the other model's on its own
        assert manager.stats.wakes == {"a": 1, "b": 1}
        assert sorted((rig.servers["a"].sleeping(), rig.servers["b"].sleeping())) == [False, True]

    rig.run(scenario)
    assert rig.servers["a"].count("wake up the engine") == 1
    assert rig.servers["b"].count("wake up the engine") == 1


def test_a_wake_that_fails(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig({"a": (60, settings(), ("--fail-wake", "1"))})

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        first = await asyncio.gather(forward.complete("a"), forward.complete("a"))
        assert [(x.status, x.reason) for x in first] == [(503, "wake_failed")] * 2
        assert "HTTP 500" in first[0].text and "failed to wake up" in first[0].text
        assert manager.phase("a") == "failed"
        again = await forward.complete("a")
        assert (again.status, again.reason) == (503, "wake_failed")  # at once, no new wake
        assert rig.servers["a"].count("wake up the engine") == 1
        await manager.wake("a", 10)  # `gpushare wake` tries again
        assert (await forward.complete("a")).status == 200

    rig.run(scenario)
    assert [n for n, _ in rig.failures] == ["a"]


def test_a_model_killed_while_asleep(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig({"a": (60, settings(), ())})
    rig.servers["a"].proc.send_signal(signal.SIGKILL)
    rig.servers["a"].proc.wait()

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        started = time.monotonic()
        answer = await forward.complete("a")
        assert (answer.status, answer.reason) == (503, "wake_failed")
        assert "Cannot connect" in answer.text
        assert time.monotonic() - started < 5
        manager.mark_down("a", "the process exited")  # the supervisor's view, once it looks
        assert (await forward.complete("a")).reason == "down"

    rig.run(scenario)
    assert rig.failures and rig.failures[0][0] == "a"


def test_the_idle_timeout(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig({"a": (60, settings(idle_s=0.5), ())})

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        stop = asyncio.Event()
        idle = asyncio.create_task(manager.run(stop))
        assert (await forward.complete("a")).status == 200
        assert manager.phase("a") == "awake"
        deadline = time.monotonic() + 10
        while manager.phase("a") != "asleep":
            assert time.monotonic() < deadline, "not put back to sleep"
            await asyncio.sleep(0.05)
        assert rig.servers["a"].sleeping()
        assert manager.stats.sleeps == {("a", "idle"): 1}
        stop.set()
        await idle

    rig.run(scenario)


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_drain_lets_the_requests_in_flight_finish(make_rig: Callable[..., Rig], stream: bool) -> None:
    rig = make_rig(
        {"a": (60, settings(), ("--completion-s", "1.0")), "b": (60, settings(), ())},
        awake=("a",),
        awake_max=1,
    )

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        in_flight = asyncio.create_task(forward.complete("a", stream=stream))
        await asyncio.sleep(0.3)
        for_b = await forward.complete("b", stream=stream)
        from_a = await in_flight
        assert (from_a.status, from_a.text, from_a.finish) == (200, "xxxx", "length")
        assert (for_b.status, for_b.text, for_b.finish) == (200, "xxxx", "length")
        assert from_a.done_at <= for_b.done_at
        assert manager.stats.aborted_by_sleep == {}
        assert rig.servers["a"].sleeping() and not rig.servers["b"].sleeping()

    rig.run(scenario)


def test_a_drain_that_runs_out_aborts_what_is_left(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        {"a": (60, settings(drain_s=0.3), ("--completion-s", "4.0")), "b": (60, settings(), ())},
        awake=("a",),
        awake_max=1,
    )

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        in_flight = asyncio.create_task(forward.complete("a", stream=True))
        await asyncio.sleep(0.2)
        for_b = await forward.complete("b")
        from_a = await in_flight
        assert for_b.status == 200
        assert (from_a.status, from_a.finish) == (200, "abort")  # vLLM's /sleep ended it
        assert len(from_a.text) < 4
        assert manager.stats.aborted_by_sleep == {"a": 1}

    rig.run(scenario)


def test_a_streaming_request_for_a_sleeping_model(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig({"a": (60, settings(), ("--completion-s", "0.4"))})

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        answer = await forward.complete("a", stream=True)
        assert (answer.status, answer.text, answer.finish) == (200, "xxxx", "length")
        assert manager.stats.wake_wait_seconds["a"].count == 1

    rig.run(scenario)


def test_level_2_reloads_the_weights(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        {
            "real": (40, settings(level=2), ("--reload-s", "0.2")),
            "dummy": (40, settings(level=2), ("--load-format", "dummy")),
        },
        awake_max=2,
    )

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        real = await forward.complete("real")
        assert (real.status, real.text) == (200, "xxxx")  # "####" had the reload been skipped
        dummy = await forward.complete("dummy")
        assert (dummy.status, dummy.reason) == (503, "wake_failed")
        assert "Model reloading with `dummy` format" in dummy.text

    rig.run(scenario)
    assert rig.servers["real"].count("Reloading and processing weights") == 1


def test_requests_that_arrive_during_a_swap_are_held(make_rig: Callable[..., Rig]) -> None:
    """One for the model being drained, one for the model being woken: neither is forwarded
    before its model is awake."""
    rig = make_rig(
        {
            "a": (60, settings(), ("--completion-s", "1.0")),
            "b": (60, settings(), ("--wake-s", "1.0", "--sleep-s", "0.1")),
        },
        awake=("a",),
        awake_max=1,
    )

    async def scenario(manager: SwapManager, forward: Forwarder) -> None:
        in_flight = asyncio.create_task(forward.complete("a"))
        await asyncio.sleep(0.2)
        for_b = asyncio.create_task(forward.complete("b"))
        await asyncio.sleep(0.3)
        assert manager.phase("a") == "draining"
        late_a = asyncio.create_task(forward.complete("a"))
        deadline = time.monotonic() + 10
        while manager.phase("b") != "waking":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        late_b = asyncio.create_task(forward.complete("b"))
        answers = await asyncio.gather(in_flight, for_b, late_a, late_b)
        assert [(x.status, x.text) for x in answers] == [(200, "xxxx")] * 4
        assert manager.stats.wakes == {"b": 1, "a": 1}

    rig.run(scenario)
