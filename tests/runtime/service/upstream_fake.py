"""A fast fake vLLM instance (an aiohttp app) for the gateway's unit tests.

It records what it received, answers `/v1/completions` with a small JSON body, streams
`/v1/chat/completions` as SSE one chunk per `release` of a semaphore (so a test can prove the gateway
forwards a chunk before the next one exists), and serves a vLLM-like `/metrics`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 42.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.5",model_name="tiny"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 3.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 3.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 2.5
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 100.0
"""


@dataclass
class FakeUpstream:
    """State shared between the test and the fake server."""

    name: str = "fake"
    received: list[dict[str, Any]] = field(default_factory=list)
    chunk_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    chunks: tuple[str, ...] = ("Hello", " world", "!")
    stream_gated: bool = False
    streams_aborted: int = 0
    cookie: str | None = None
    """Set as a `session` cookie on each completion answer, when given."""
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._completions)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        return app

    async def start(self) -> FakeUpstream:
        self.server = TestServer(self.app())
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        response = web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "text": f"from {self.name}", "finish_reason": "stop"}],
            },
            headers={"X-Upstream": self.name},
        )
        if self.cookie is not None:
            response.set_cookie("session", self.cookie)
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        try:
            for text in self.chunks:
                if self.stream_gated:
                    await self.chunk_gate.acquire()
                event = {"choices": [{"index": 0, "delta": {"content": text}}], "model": body.get("model")}
                await out.write(f"data: {json.dumps(event)}\n\n".encode())
            await out.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            # The gateway dropped the connection (aiohttp cancels the handler, or the write fails):
            # vLLM would abort the request here.
            self.streams_aborted += 1
            raise
        await out.write_eof()
        return out

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=VLLM_METRICS, content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()
