"""The gateway's control endpoint for swaps: what `gpushare wake` / `gpushare sleep` call, and
what `status` reads.

    POST /gpushare/wake/NAME[?wait_s=S]   200 {"instance", "phase", "changed", "seconds"}
    POST /gpushare/sleep/NAME             200 the same
    GET  /gpushare/swap                   200 {"swaps_total", "instances": [MemberState.to_json()],
                                              "recent_swaps": [SwapRecord.to_json()] (the last 256)}

NAME is a model name, an alias or an instance name. Errors are OpenAI-style bodies as the
gateway's own: 401 (the gateway's API key, checked by `authorize` like every /v1 request), 404
unknown name, 409 a resident instance (nothing to wake or put to sleep), 400 a bad wait_s, 503 +
Retry-After when the manager refuses (failed wake, down, no room, timed out).

The gateway mounts `control_routes(...)` before its catch-all proxy route (gateway.py).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gpushare.runtime.service.swap.manager import SwapManager, SwapRefused, WakeAnswer

CONTROL_PREFIX = "/gpushare"
WAKE_ROUTE = CONTROL_PREFIX + "/wake/{name}"
SLEEP_ROUTE = CONTROL_PREFIX + "/sleep/{name}"
SWAP_ROUTE = CONTROL_PREFIX + "/swap"
MAX_WAIT_S = 3600.0

Authorize = Callable[[web.Request], web.StreamResponse | None]
"""None: let it through; else the answer to give (the gateway's 401)."""
Resolve = Callable[[str], str | None]
"""A model name, alias or instance name → the instance (None: unknown)."""


def error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = "service_unavailable" if status == 503 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _answer(a: WakeAnswer) -> web.Response:
    return web.json_response(
        {"instance": a.name, "phase": a.phase, "changed": a.changed, "seconds": round(a.seconds, 3)}
    )


def _refused(name: str, refused: SwapRefused) -> web.Response:
    return error(503, refused.sentence(name), refused.code, {"Retry-After": str(refused.retry_after_s)})


def control_routes(manager: SwapManager, resolve: Resolve, authorize: Authorize) -> list[web.RouteDef]:
    def target(request: web.Request) -> tuple[str, str] | web.Response:
        name = request.match_info["name"]
        instance = resolve(name)
        if instance is None:
            return error(404, f"No model or instance {name!r} here.", "model_not_found")
        if not manager.manages(instance):
            return error(
                409,
                f"{name!r} (instance {instance}) is resident (residency: always): it is always awake.",
                "not_on_demand",
            )
        return name, instance

    async def wake(request: web.Request) -> web.StreamResponse:
        if (denied := authorize(request)) is not None:
            return denied
        found = target(request)
        if isinstance(found, web.Response):
            return found
        name, instance = found
        text = request.query.get("wait_s")
        try:
            wait_s = float(text) if text is not None else None
        except ValueError:
            wait_s = -1.0
        if wait_s is not None and not 0 < wait_s <= MAX_WAIT_S:
            return error(400, f"wait_s: a number of seconds in (0, {MAX_WAIT_S:g}], got {text!r}", "bad_wait")
        settings = manager.layout.member(instance)
        assert settings is not None
        try:
            answer = await manager.wake(instance, wait_s or settings.settings.wait_s)
        except SwapRefused as refused:
            return _refused(name, refused)
        return _answer(answer)

    async def sleep(request: web.Request) -> web.StreamResponse:
        if (denied := authorize(request)) is not None:
            return denied
        found = target(request)
        if isinstance(found, web.Response):
            return found
        name, instance = found
        try:
            answer = await manager.sleep(instance)
        except SwapRefused as refused:
            return _refused(name, refused)
        return _answer(answer)

    async def swap(request: web.Request) -> web.StreamResponse:
        if (denied := authorize(request)) is not None:
            return denied
        return web.json_response(
            {
                "swaps_total": manager.stats.swaps_total,
                "instances": [s.to_json() for s in manager.snapshot()],
                "recent_swaps": [r.to_json() for r in manager.stats.recent],
            }
        )

    return [web.post(WAKE_ROUTE, wake), web.post(SLEEP_ROUTE, sleep), web.get(SWAP_ROUTE, swap)]
