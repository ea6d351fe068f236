"""The OpenAI-compatible gateway: one endpoint in front of every instance.

A request's JSON `model` (a served name or an alias) picks the instance through `Routes`; the body
goes on unchanged (bar the model name when an alias was used) over a pooled aiohttp client session.
Streams (SSE, or any answer without a Content-Length) are written on chunk by chunk as they arrive;
small answers with a Content-Length are read whole and sent in one write, which is faster.

Answers the gateway gives itself, all OpenAI-style `{"error": {...}}` bodies:
  400 no or bad JSON / no `model`; 401 wrong API key; 404 unknown model (the message lists the models);
  413 body over `max_body_bytes`; 503 + Retry-After when the instance is down, restarting or does not
  accept a connection within `connect_timeout_s` (never a hang); 504 when it sends nothing for the
  route's read timeout (`read_timeout_s`, off by default: a long non-streamed answer is normal);
  404 for vLLM's development endpoints (/sleep, /wake_up, /collective_rpc, ...:
  gpushare/vllm/sleep.py `DEV_PATHS`), which only the swap manager calls.

On-demand instances (a `SwapManager`, runtime/service/swap/manager.py): every request takes a lease
from the manager before it is forwarded and gives it back when the answer (the whole stream) is
done; a request for a sleeping model waits there for its wake. The manager's refusals: 429 +
Retry-After when the model's queue is full, 503 + Retry-After otherwise (wait timeout, failed
wake, down, no room). `/gpushare/wake/NAME`, `/gpushare/sleep/NAME` and `/gpushare/swap` are its
control endpoint (swap/endpoint.py). An answer to a request that was held for a wake carries
`X-Gpushare-Wake-Wait-Seconds`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from gpushare.errors import EnvironmentProblem
from gpushare.runtime.host.probe import own_poll
from gpushare.runtime.service.metrics import CONTENT_TYPE, GatewayMetrics, VllmMetricsCollector, render
from gpushare.runtime.service.routes import Routes, Upstream
from gpushare.runtime.service.swap.endpoint import control_routes
from gpushare.runtime.service.swap.manager import NO_LEASE, Lease, SwapManager, SwapRefused
from gpushare.vllm.sleep import DEV_PATHS

log = logging.getLogger(__name__)

# RFC 9110 hop-by-hop headers, plus the ones aiohttp computes itself for the new message.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The client's Authorization holds the gateway's key, not the instance's; the server already
# decompressed the body it read.
_DROP_REQUEST = _HOP_BY_HOP | {"authorization", "content-encoding"}
_DROP_RESPONSE = _HOP_BY_HOP | {"date", "server"}

# Routes named in metrics labels; anything else is counted as "other" to bound cardinality.
KNOWN_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/score",
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/score",
        "/pooling",
        "/classify",
        "/tokenize",
        "/detokenize",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
    }
)
UNKNOWN_MODEL_LABEL = "(unknown)"
WAKE_WAIT_HEADER = "X-Gpushare-Wake-Wait-Seconds"
"""On an answer whose request was held for its model's wake: how many seconds it waited."""
METRICS_PATH = own_poll("/metrics")
"""What the gateway asks each instance for: marked, so `gpushare logs` leaves it out."""

# aiohttp's client errors, sorted once into what they mean for a request in flight.
_NOT_ANSWERING = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)
"""Refused, timed out connecting, or dropped before answering: the instance is down (503)."""
_DROPPED = (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
"""The instance went away after its status line: mid-answer or mid-stream."""
_SCRAPE_FAILED = (TimeoutError, aiohttp.ClientError)
"""Anything that ends a /metrics scrape of an instance."""


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway listens and talks to instances.

    `api_key`: when set, every `/v1/*` request needs `Authorization: Bearer <key>`; `/health` and
    `/metrics` stay open (bind to loopback or firewall them). `upstream_timeout_s`: a cap on a whole
    upstream answer (None: no cap, long generations are normal); the connect timeout is what turns a
    dead instance into a 503.

    `read_timeout_s`: the longest an instance may send nothing, before its status line (the first
    byte) or between two chunks; past it the client gets a 504 (or, mid-stream, a cut stream) and
    the supervisor is told to probe it. None: no limit. `read_timeouts` sets it per route, by served
    name or alias; a routes file's `read_timeout_s` (`Upstream.read_timeout_s`) wins over both.
    A streamed answer's chunks come once per token, a non-streamed answer only when it is whole, so
    a route's timeout must cover its longest non-streamed generation.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    connect_timeout_s: float = 3.0
    upstream_timeout_s: float | None = None
    metrics_scrape_timeout_s: float = 2.0
    max_connections: int = 1024
    read_timeout_s: float | None = None
    read_timeouts: Mapping[str, float] = field(default_factory=dict)

    def read_timeout(self, upstream: Upstream) -> float | None:
        """The read timeout of the route to `upstream` (see the class docstring)."""
        if upstream.read_timeout_s is not None:
            return upstream.read_timeout_s
        for name in upstream.names if self.read_timeouts else ():
            if name in self.read_timeouts:
                return self.read_timeouts[name]
        return self.read_timeout_s


def openai_error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class Gateway:
    """The aiohttp application. `routes` decides where a model goes; everything else is injected.

    `on_unreachable(instance)` is called when an instance marked available refuses the connection
    (the supervisor uses it to check that instance at once instead of at its next tick).
    """

    def __init__(
        self,
        routes: Routes,
        config: GatewayConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        vllm_metrics: VllmMetricsCollector | None = None,
        on_unreachable: Callable[[str], None] | None = None,
        swap: SwapManager | None = None,
    ) -> None:
        self.routes = routes
        self.swap = swap
        self.config = config or GatewayConfig()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.vllm_metrics = vllm_metrics
        if vllm_metrics is not None:
            self.registry.register(vllm_metrics)
        self._on_unreachable = on_unreachable
        self._session: aiohttp.ClientSession | None = None
        self._created = int(time.time())
        self._runner: web.AppRunner | None = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        if self.swap is not None:
            app.router.add_routes(control_routes(self.swap, self._instance_of, self._check_key))
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        app.cleanup_ctx.append(self._client_session)
        return app

    async def _client_session(self, app: web.Application) -> Any:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            enable_cleanup_closed=False,
        )
        timeout = aiohttp.ClientTimeout(
            total=self.config.upstream_timeout_s, sock_connect=self.config.connect_timeout_s
        )
        # auto_decompress off: bytes pass through as the instance sent them, Content-Encoding kept.
        # No cookie jar: one session serves every client, so a Set-Cookie meant for one must never
        # go out with another's request (and each request skips the jar's filtering).
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        yield
        await self._session.close()
        self._session = None

    async def start(self) -> None:
        """Listen on config.host:port. `handler_cancellation` lets a client that hangs up cancel the
        upstream request, so vLLM stops generating for nobody. Raises EnvironmentProblem when the
        address cannot be had (busy, not this machine's)."""
        runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.config.host}:{self.config.port}"
            raise EnvironmentProblem(
                f"the gateway cannot listen on {where}: {exc.strerror or exc}",
                hint="another gateway may run there: pick another --port",
            ) from exc
        self._runner = runner

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._runner is not None, "start() first"
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("the gateway is not listening")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- local answers -----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _model_cards(self) -> list[dict[str, Any]]:
        cards = []
        for upstream in sorted(self.routes.upstreams(), key=lambda u: u.instance):
            for name in upstream.names:
                cards.append(
                    {
                        "id": name,
                        "object": "model",
                        "created": self._created,
                        "owned_by": "gpushare",
                        "root": upstream.served_name,
                        "parent": None if name == upstream.served_name else upstream.served_name,
                        "gpushare": {
                            "instance": upstream.instance,
                            "state": upstream.state,
                            "available": upstream.available,
                        },
                    }
                )
        return cards

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": self._model_cards()})

    async def _model(self, request: web.Request) -> web.Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        name = request.match_info["model"]
        for card in self._model_cards():
            if card["id"] == name:
                return web.json_response(card)
        return self._unknown_model(name)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.vllm_metrics is not None:
            await self._scrape_instances(self.vllm_metrics)
        return web.Response(body=render(self.registry), headers={"Content-Type": CONTENT_TYPE})

    async def _scrape_instances(self, collector: VllmMetricsCollector) -> None:
        session = self._session
        assert session is not None
        timeout = aiohttp.ClientTimeout(total=self.config.metrics_scrape_timeout_s)

        async def scrape(upstream: Upstream) -> None:
            if not upstream.available:
                collector.failed(upstream.instance, upstream.served_name)
                return
            try:
                async with session.get(upstream.base_url + METRICS_PATH, timeout=timeout) as resp:
                    resp.raise_for_status()
                    text = (await resp.read()).decode("utf-8", "replace")
            except _SCRAPE_FAILED as exc:
                log.debug("scraping %s failed: %s", upstream.instance, exc)
                collector.failed(upstream.instance, upstream.served_name)
                return
            collector.ingest(upstream.instance, upstream.served_name, text)

        await asyncio.gather(*(scrape(u) for u in self.routes.upstreams()))

    def _instance_of(self, name: str) -> str | None:
        """A model name, an alias or an instance name -> the instance."""
        upstream = self.routes.lookup(name)
        if upstream is not None:
            return upstream.instance
        return next((u.instance for u in self.routes.upstreams() if u.instance == name), None)

    # -- errors ------------------------------------------------------------------------------

    def _check_key(self, request: web.Request) -> web.Response | None:
        key = self.config.api_key
        if key is None:
            return None
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return None
        return openai_error(
            401,
            "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
            type_="invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _unknown_model(self, name: str) -> web.Response:
        names = sorted(n for u in self.routes.upstreams() for n in u.names)
        return openai_error(
            404,
            f"The model {name!r} does not exist here. Models: {', '.join(names) or '(none)'}.",
            type_="invalid_request_error",
            code="model_not_found",
            param="model",
        )

    def _client_timeout(self, read_timeout_s: float | None) -> aiohttp.ClientTimeout:
        """The session's timeouts plus a read timeout: one object per value, made once. (Always
        one: aiohttp reads `timeout=None` as no timeouts at all, the connect timeout included.)"""
        timeout = self._timeouts.get(read_timeout_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=self.config.upstream_timeout_s,
                sock_connect=self.config.connect_timeout_s,
                sock_read=read_timeout_s,
            )
            self._timeouts[read_timeout_s] = timeout
        return timeout

    def _timed_out(self, upstream: Upstream, read_timeout_s: float | None) -> web.Response:
        self.metrics.error(upstream.served_name, "upstream_timeout")
        log.info("instance %s sent nothing for %s s", upstream.instance, read_timeout_s)
        if self._on_unreachable is not None:
            self._on_unreachable(upstream.instance)
        return openai_error(
            504,
            f"The model {upstream.served_name!r} (instance {upstream.instance}) sent nothing for "
            f"{read_timeout_s:g} s (the route's read timeout); retry later.",
            type_="timeout",
            code="upstream_timeout",
        )

    @staticmethod
    def _unavailable(upstream: Upstream, why: str) -> web.Response:
        return openai_error(
            503,
            f"The model {upstream.served_name!r} (instance {upstream.instance}) is {why}; retry later.",
            type_="service_unavailable",
            code="model_unavailable",
            headers={"Retry-After": str(upstream.retry_after_s)},
        )

    # -- the proxy ---------------------------------------------------------------------------

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.path if request.path in KNOWN_ROUTES else "other"
        status = 499  # the client went away before we answered (nginx's convention)
        seen = [UNKNOWN_MODEL_LABEL]  # set as soon as the model is known: a cancelled request counts too
        try:
            response = await self._route_and_forward(request, started, seen)
            status = response.status
            return response
        finally:
            elapsed = time.perf_counter() - started
            model = seen[0]
            self.metrics.count(model, route, status)
            if model != UNKNOWN_MODEL_LABEL:
                self.metrics.model(model)[1].observe(elapsed)

    async def _route_and_forward(
        self, request: web.Request, started: float, seen: list[str]
    ) -> web.StreamResponse:
        unknown = UNKNOWN_MODEL_LABEL
        if (denied := self._check_key(request)) is not None:
            self.metrics.error(unknown, "unauthorized")
            return denied
        if request.path.rstrip("/") in DEV_PATHS:
            self.metrics.error(unknown, "bad_request")
            return openai_error(
                404,
                f"{request.path} is not forwarded: the gateway alone puts instances to sleep and wakes them.",
                type_="invalid_request_error",
                code="not_found",
            )
        if request.method != "POST":
            self.metrics.error(unknown, "bad_request")
            return openai_error(
                404,
                f"No route {request.method} {request.path} on the gateway.",
                type_="invalid_request_error",
                code="not_found",
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.error(unknown, "too_large")
            return openai_error(
                413,
                f"The request body is larger than {self.config.max_body_bytes} bytes.",
                type_="invalid_request_error",
                code="request_too_large",
            )
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        name = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            self.metrics.error(unknown, "bad_request")
            models = ", ".join(sorted(n for u in self.routes.upstreams() for n in u.names)) or "(none)"
            message = f"The body must be a JSON object with a 'model' field. Models: {models}."
            return openai_error(
                400, message, type_="invalid_request_error", code="missing_model", param="model"
            )
        upstream = self.routes.lookup(name)
        if upstream is None:
            self.metrics.error(unknown, "unknown_model")
            return self._unknown_model(name)
        model = upstream.served_name
        seen[0] = model
        if not upstream.available:
            self.metrics.error(model, "unavailable")
            return self._unavailable(upstream, upstream.state)
        if name != upstream.served_name:
            assert isinstance(payload, dict)
            body = json.dumps({**payload, "model": upstream.served_name}).encode()
        lease = await self._lease(upstream)
        if not isinstance(lease, Lease):
            return lease
        in_flight, _, first_byte = self.metrics.model(model)
        in_flight.inc()
        try:
            return await self._forward(request, upstream, body, started, first_byte, lease.waited_s)
        finally:
            in_flight.dec()
            lease.release()

    async def _lease(self, upstream: Upstream) -> Lease | web.Response:
        """The swap manager's permission to forward (waits for a wake), or its refusal."""
        if self.swap is None:
            return NO_LEASE
        try:
            return await self.swap.lease(upstream.instance)
        except SwapRefused as refused:
            self.metrics.error(upstream.served_name, f"swap_{refused.reason}")
            return openai_error(
                429 if refused.reason == "queue_full" else 503,
                refused.sentence(upstream.served_name),
                type_="rate_limit_exceeded" if refused.reason == "queue_full" else "service_unavailable",
                code=refused.code,
                headers={"Retry-After": str(refused.retry_after_s)},
            )

    async def _forward(
        self,
        request: web.Request,
        upstream: Upstream,
        body: bytes,
        started: float,
        first_byte: Any,
        waited_s: float | None = None,
    ) -> web.StreamResponse:
        session = self._session
        assert session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST)
        model = upstream.served_name
        read_timeout = self.config.read_timeout(upstream)
        try:
            upstream_response = await session.request(
                request.method,
                upstream.base_url + request.rel_url.path_qs,
                data=body,
                headers=headers,
                timeout=self._client_timeout(read_timeout),
            )
        except aiohttp.SocketTimeoutError:  # connected; no status line within the read timeout
            return self._timed_out(upstream, read_timeout)
        except _NOT_ANSWERING as exc:
            log.info("instance %s unreachable: %s", upstream.instance, exc)
            self.metrics.error(model, "unavailable")
            if self._on_unreachable is not None:
                self._on_unreachable(upstream.instance)
            return self._unavailable(upstream, "not answering")
        async with upstream_response as resp:
            first_byte.observe(time.perf_counter() - started)
            if resp.status >= 500:
                self.metrics.error(model, "upstream_5xx")
            out_headers = CIMultiDict(
                (k, v) for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE
            )
            if waited_s is not None:
                out_headers[WAKE_WAIT_HEADER] = f"{waited_s:.4f}"
            streaming = resp.content_length is None or resp.headers.get("Content-Type", "").startswith(
                "text/event-stream"
            )
            if not streaming:
                try:
                    data = await resp.read()
                except aiohttp.SocketTimeoutError:
                    return self._timed_out(upstream, read_timeout)
                except _DROPPED as exc:
                    self.metrics.error(model, "upstream_disconnect")
                    log.info("instance %s dropped an answer: %s", upstream.instance, exc)
                    return self._unavailable(upstream, "gone away mid-answer")
                return web.Response(body=data, status=resp.status, headers=out_headers)
            return await self._stream(request, resp, out_headers, upstream)

    async def _stream(
        self,
        request: web.Request,
        resp: aiohttp.ClientResponse,
        headers: CIMultiDict[str],
        upstream: Upstream,
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=resp.status, headers=headers)
        out.enable_chunked_encoding()
        await out.prepare(request)
        try:
            # iter_any: whatever bytes arrived, as soon as they arrive; never wait for a full buffer.
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
        except (*_DROPPED, aiohttp.SocketTimeoutError) as exc:
            # Status and headers are out; all we can do is cut the stream so the client sees an error.
            if isinstance(exc, aiohttp.SocketTimeoutError):
                self.metrics.error(upstream.served_name, "upstream_timeout")
                if self._on_unreachable is not None:
                    self._on_unreachable(upstream.instance)
            else:
                self.metrics.error(upstream.served_name, "upstream_disconnect")
            log.info("instance %s dropped a stream: %s", upstream.instance, exc)
            if request.transport is not None:
                request.transport.close()
            return out
        except ConnectionResetError:
            resp.close()  # the client left: drop the upstream connection so vLLM aborts the request
            return out
        await out.write_eof()
        return out
