"""The gateway against fast fake upstreams: routing, errors, auth, limits, streaming, metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from upstream_fake import FakeUpstream

from gpushare.runtime.service.gateway import Gateway, GatewayConfig
from gpushare.runtime.service.metrics import VllmMetricsCollector
from gpushare.runtime.service.routes import RouteTable, Upstream


@dataclass
class Rig:
    gateway: Gateway
    table: RouteTable
    alpha: FakeUpstream
    beta: FakeUpstream
    client: aiohttp.ClientSession
    unreachable: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.bound_port}"


@asynccontextmanager
async def rig(**config: object) -> AsyncIterator[Rig]:
    alpha = await FakeUpstream("alpha").start()
    beta = await FakeUpstream("beta").start()
    table = RouteTable(
        [
            Upstream("a", "model-a", alpha.url, aliases=("alias-a",)),
            Upstream("b", "model-b", beta.url),
        ]
    )
    unreachable: list[str] = []
    gateway = Gateway(
        table,
        GatewayConfig(port=0, **config),  # type: ignore[arg-type]
        vllm_metrics=VllmMetricsCollector(),
        on_unreachable=unreachable.append,
    )
    await gateway.start()
    client = aiohttp.ClientSession()
    try:
        yield Rig(gateway, table, alpha, beta, client, unreachable)
    finally:
        await client.close()
        await gateway.stop()
        await alpha.close()
        await beta.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "model", "upstream", "sent_model"),
    [
        ("served-name-a", "model-a", "alpha", "model-a"),
        ("alias-rewritten", "alias-a", "alpha", "model-a"),
        ("served-name-b", "model-b", "beta", "model-b"),
    ],
)
def test_routes_by_model(case: str, model: str, upstream: str, sent_model: str) -> None:
    async def scenario() -> None:
        async with rig() as r:
            body = {"model": model, "prompt": "hi", "max_tokens": 3}
            async with r.client.post(
                f"{r.url}/v1/completions?x=1", json=body, headers={"X-Trace": "t1"}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Upstream"] == upstream
                answer = await resp.json()
            target = r.alpha if upstream == "alpha" else r.beta
            (seen,) = target.received
            assert seen["body"] == {**body, "model": sent_model}
            assert seen["headers"]["X-Trace"] == "t1"
            assert answer["choices"][0]["text"] == f"from {upstream}"

    run(scenario)


def test_unknown_model_is_404_listing_models() -> None:
    async def scenario() -> None:
        async with rig() as r:
            async with r.client.post(f"{r.url}/v1/chat/completions", json={"model": "nope"}) as resp:
                assert resp.status == 404
                error = (await resp.json())["error"]
            assert error["code"] == "model_not_found"
            assert error["param"] == "model"
            for name in ("alias-a", "model-a", "model-b"):
                assert name in error["message"]

    run(scenario)


@pytest.mark.parametrize(
    ("case", "data"),
    [("not-json", b"hello"), ("no-model", b'{"prompt": "x"}'), ("json-list", b"[1, 2]")],
)
def test_bad_body_is_400(case: str, data: bytes) -> None:
    async def scenario() -> None:
        async with rig() as r, r.client.post(f"{r.url}/v1/completions", data=data) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "missing_model"

    run(scenario)


def test_unavailable_instance_is_503_with_retry_after() -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.table.set_state("a", available=False, state="backoff", retry_after_s=7)
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "alias-a"}) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "7"
                assert "backoff" in (await resp.json())["error"]["message"]
            assert r.alpha.received == []
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-b"}) as resp:
                assert resp.status == 200

    run(scenario)


def test_refused_connection_is_503_at_once() -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.table.replace([Upstream("dead", "model-dead", f"http://127.0.0.1:{free_port()}")])
            started = time.monotonic()
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-dead"}) as resp:
                assert resp.status == 503
                assert "Retry-After" in resp.headers
            assert time.monotonic() - started < 2
            assert r.unreachable == ["dead"]

    run(scenario)


def test_connect_timeout_is_503_not_a_hang() -> None:
    """A listener whose accept queue is full drops SYNs: the connect hangs until our timeout."""

    async def scenario() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue (backlog 0 still queues one or two)
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        try:
            async with rig(connect_timeout_s=0.5) as r:
                r.table.replace([Upstream("stuck", "model-stuck", f"http://127.0.0.1:{port}")])
                started = time.monotonic()
                async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-stuck"}) as resp:
                    assert resp.status == 503
                assert time.monotonic() - started < 5
        finally:
            for sock in (*fillers, listener):
                sock.close()

    run(scenario)


@pytest.mark.parametrize(
    ("case", "headers", "status"),
    [
        ("no-header", {}, 401),
        ("wrong-key", {"Authorization": "Bearer nope"}, 401),
        ("not-bearer", {"Authorization": "Basic s3cret"}, 401),
        ("right-key", {"Authorization": "Bearer s3cret"}, 200),
        ("lowercase-scheme", {"Authorization": "bearer s3cret"}, 200),
    ],
)
def test_api_key(case: str, headers: dict[str, str], status: int) -> None:
    async def scenario() -> None:
        async with rig(api_key="s3cret") as r:
            async with r.client.post(
                f"{r.url}/v1/completions", json={"model": "model-a"}, headers=headers
            ) as resp:
                assert resp.status == status
                if status == 401:
                    assert (await resp.json())["error"]["code"] == "invalid_api_key"
            async with r.client.get(f"{r.url}/v1/models", headers=headers) as resp:
                assert resp.status == status
            for open_path in ("/health", "/metrics"):
                async with r.client.get(f"{r.url}{open_path}") as resp:
                    assert resp.status == 200
            # The gateway's key is never handed to the instance.
            assert all("Authorization" not in seen["headers"] for seen in r.alpha.received)

    run(scenario)


def test_body_over_limit_is_413() -> None:
    async def scenario() -> None:
        async with rig(max_body_bytes=1024) as r:
            big = {"model": "model-a", "prompt": "x" * 2000}
            async with r.client.post(f"{r.url}/v1/completions", json=big) as resp:
                assert resp.status == 413
                assert (await resp.json())["error"]["code"] == "request_too_large"
            small = {"model": "model-a", "prompt": "x" * 100}
            async with r.client.post(f"{r.url}/v1/completions", json=small) as resp:
                assert resp.status == 200
            assert len(r.alpha.received) == 1

    run(scenario)


def test_stream_is_forwarded_chunk_by_chunk() -> None:
    """The upstream sends chunk n+1 only after the test has read chunk n through the gateway."""

    async def scenario() -> None:
        async with rig() as r:
            r.alpha.stream_gated = True
            body = {"model": "model-a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with r.client.post(f"{r.url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                texts = []
                for _ in r.alpha.chunks:
                    r.alpha.chunk_gate.release()
                    line = await asyncio.wait_for(resp.content.readline(), 5)
                    texts.append(json.loads(line.removeprefix(b"data: "))["choices"][0]["delta"]["content"])
                    assert await resp.content.readline() == b"\n"
                rest = await resp.content.read()
            assert texts == list(r.alpha.chunks)
            assert rest == b"data: [DONE]\n\n"

    run(scenario)


def test_models_lists_every_instance_and_alias() -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.table.set_state("b", available=False, state="starting")
            async with r.client.get(f"{r.url}/v1/models") as resp:
                listing = await resp.json()
            cards = {card["id"]: card for card in listing["data"]}
            assert listing["object"] == "list"
            assert set(cards) == {"model-a", "alias-a", "model-b"}
            assert cards["alias-a"]["parent"] == "model-a"
            assert cards["model-b"]["gpushare"] == {"instance": "b", "state": "starting", "available": False}
            async with r.client.get(f"{r.url}/v1/models/alias-a") as resp:
                assert (await resp.json())["root"] == "model-a"
            async with r.client.get(f"{r.url}/v1/models/zzz") as resp:
                assert resp.status == 404

    run(scenario)


def test_metrics_one_scrape_has_gateway_and_relabelled_vllm_series() -> None:
    async def scenario() -> None:
        async with rig() as r:
            for model in ("model-a", "model-a", "model-b", "nope"):
                async with r.client.post(f"{r.url}/v1/completions", json={"model": model}) as resp:
                    await resp.read()
            async with r.client.get(f"{r.url}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

        def value(name: str, **labels: str) -> float:
            hits = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
            assert len(hits) == 1, (name, labels, hits)
            return hits[0]

        assert (
            value("gpushare_gateway_requests_total", model="model-a", code="200", route="/v1/completions")
            == 2
        )
        assert value("gpushare_gateway_requests_total", model="(unknown)", code="404") == 1
        assert value("gpushare_gateway_errors_total", model="(unknown)", kind="unknown_model") == 1
        assert value("gpushare_gateway_request_duration_seconds_count", model="model-b") == 1
        assert value("gpushare_gateway_requests_in_flight", model="model-a") == 0
        for instance, model in (("a", "model-a"), ("b", "model-b")):
            assert value("vllm:num_requests_running", instance=instance, model=model, model_name="tiny") == 2
            assert value("vllm:e2e_request_latency_seconds_bucket", instance=instance, le="+Inf") == 3
            assert value("gpushare_vllm_scrape_ok", instance=instance) == 1
        assert not [s for s in samples if s.name.startswith("python_gc") and "instance" in s.labels]
        assert text.count("# TYPE vllm:num_requests_running gauge") == 1

    run(scenario)


def test_client_hanging_up_drops_the_upstream_request() -> None:
    async def scenario() -> None:
        async with rig() as r:
            r.alpha.stream_gated = True
            body = {"model": "model-a", "messages": [], "stream": True}
            r.alpha.chunk_gate.release()
            async with r.client.post(f"{r.url}/v1/chat/completions", json=body) as resp:
                assert (await resp.content.readline()).startswith(b"data: ")
                resp.close()  # the client goes away mid-stream
            for _ in range(50):
                await asyncio.sleep(0.02)
                in_flight = r.gateway.registry.get_sample_value(
                    "gpushare_gateway_requests_in_flight", {"model": "model-a"}
                )
                if in_flight == 0:
                    break
            assert in_flight == 0
            for _ in r.alpha.chunks:
                r.alpha.chunk_gate.release()
            for _ in range(50):
                await asyncio.sleep(0.02)
                if r.alpha.streams_aborted:
                    break
            assert r.alpha.streams_aborted == 1

    run(scenario)


@asynccontextmanager
async def silent_upstream() -> AsyncIterator[str]:
    """Accepts connections and reads requests, never answers: a stopped (SIGSTOP) or wedged vLLM,
    whose kernel still completes the TCP handshake."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with suppress(ConnectionError):
            await reader.read(1 << 16)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


def test_read_timeout_answers_504_instead_of_hanging() -> None:
    """issue 12, item 1: a connected instance that sends nothing gets the client a 504 after the
    route's read timeout (and the supervisor is told), not a 40 s hang."""

    async def scenario() -> None:
        async with silent_upstream() as url, rig(read_timeouts={"model-stuck": 0.5}) as r:
            r.table.replace([Upstream("stuck", "model-stuck", url), Upstream("a", "model-a", r.alpha.url)])
            started = time.monotonic()
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-stuck"}) as resp:
                assert resp.status == 504
                error = (await resp.json())["error"]
            assert time.monotonic() - started < 3
            assert error["code"] == "upstream_timeout"
            assert "sent nothing for 0.5 s" in error["message"]
            assert r.unreachable == ["stuck"]
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-a"}) as resp:
                assert resp.status == 200  # another route, no timeout of its own: unaffected
            async with r.client.get(f"{r.url}/metrics") as resp:
                text = await resp.text()
            assert 'gpushare_gateway_errors_total{kind="upstream_timeout",model="model-stuck"} 1.0' in text

    run(scenario)


def test_read_timeout_cuts_a_stream_that_stops() -> None:
    async def scenario() -> None:
        async with rig(read_timeout_s=0.5) as r:
            r.alpha.stream_gated = True
            body = {"model": "model-a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            started = time.monotonic()
            async with r.client.post(f"{r.url}/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                r.alpha.chunk_gate.release()  # one chunk, then silence
                assert (await asyncio.wait_for(resp.content.readline(), 5)).startswith(b"data: ")
                with pytest.raises(aiohttp.ClientPayloadError):
                    await asyncio.wait_for(resp.content.read(), 5)
            assert time.monotonic() - started < 4
            assert r.unreachable == ["a"]

    run(scenario)


@pytest.mark.parametrize(
    ("case", "config", "upstream", "seconds"),
    [
        ("none", GatewayConfig(), Upstream("a", "m", "http://x"), None),
        ("every-route", GatewayConfig(read_timeout_s=30), Upstream("a", "m", "http://x"), 30),
        (
            "by-alias",
            GatewayConfig(read_timeout_s=30, read_timeouts={"al": 600}),
            Upstream("a", "m", "http://x", aliases=("al",)),
            600,
        ),
        (
            "another-route's",
            GatewayConfig(read_timeouts={"other": 600}),
            Upstream("a", "m", "http://x"),
            None,
        ),
        (
            "routes-file-wins",
            GatewayConfig(read_timeout_s=30, read_timeouts={"m": 600}),
            Upstream("a", "m", "http://x", read_timeout_s=5),
            5,
        ),
    ],
)
def test_read_timeout_of_a_route(
    case: str, config: GatewayConfig, upstream: Upstream, seconds: float | None
) -> None:
    assert config.read_timeout(upstream) == seconds


def test_an_upstream_cookie_is_passed_on_never_kept_for_the_next_client() -> None:
    """One client session serves every client: a cookie jar would send client 1's cookie with
    client 2's request. (aiohttp's jar keeps no cookie of an IP address: the route names a host,
    as a routes file's Kubernetes service names do.)"""

    async def scenario() -> None:
        async with rig() as r:
            r.alpha.cookie = "client-1"
            port = r.alpha.url.rsplit(":", 1)[1]
            r.table.replace([Upstream("a", "model-a", f"http://localhost:{port}")])
            async with r.client.post(f"{r.url}/v1/completions", json={"model": "model-a"}) as resp:
                assert resp.status == 200 and "session=client-1" in resp.headers["Set-Cookie"]
            async with (
                aiohttp.ClientSession() as other,
                other.post(f"{r.url}/v1/completions", json={"model": "model-a"}) as resp,
            ):
                assert resp.status == 200
            assert "Cookie" not in r.alpha.received[-1]["headers"]

    run(scenario)
