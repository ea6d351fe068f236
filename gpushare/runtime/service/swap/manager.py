"""The swap manager: which on-demand instance is awake, and permission to forward to it.

The gateway asks for a `Lease` before it forwards a request to an instance and releases it when
the answer (the whole stream) is done; it never forwards without one, so nothing is ever sent to a
sleeping vLLM (which would hold the request unanswered, and still run it after a later wake even
if the client gave up). For a resident instance the lease is free (`NO_LEASE`).

A request for an instance that is not awake is *held* (at most `queue` per instance, each for at
most `wait_s`; over either: `SwapRefused`, a 503) and its instance gets a *swap*, one per GPU at a
time under that GPU's lock:
1. choose the awake on-demand instances of the GPU to put to sleep, least recently used first,
   until the target's awake part fits the GPU's room and fewer than `awake_max` are awake
   (layout.py `make_room`, on the plan's figures);
2. drain them: no new request is forwarded (new ones are held for their own swap), the ones in
   flight get up to `drain_s` to finish; vLLM's /sleep aborts whatever is left;
3. put them to sleep (/sleep?level=N, confirmed with /is_sleeping);
4. wake the target (/wake_up; at level 2 the weights first, `reload_weights`, then the KV cache)
   and confirm it with /is_sleeping;
5. grant every held request of the target before the lock is released, so another swap cannot
   take the target away before they are forwarded (it has to drain them).
Requests for two sleeping models of one GPU therefore serialize on the lock, and each is answered
after at most one swap of its own. A failed wake (or sleep) answers the held requests 503 with the
reason, marks the instance `failed` and calls `on_failure` (the supervisor's cue to restart it).
`run()` also puts instances back to sleep after their `idle_s` without a request.

The supervisor tells the manager what it sees: `mark_down` (the process is gone or not serving),
`reserve_start` before it restarts an on-demand instance (room is made for the start, which must
pass vLLM's free-memory check, and the instance is put to sleep once it serves), `mark_asleep`.

Everything outside is injected: the HTTP calls (control.py `SleepControl`), the clock
(runtime/host/clock.py `AsyncClock`) and each instance's address. Runs on one event loop (the
gateway's); nothing here is thread-safe.

The gateway (gateway.py `_lease`) takes a lease after its availability check, answers
`SwapRefused` with 429 (queue full) or 503 and its `retry_after_s`, and releases the lease after
the last byte of the answer; `Lease.waited_s` becomes the answer's X-Gpushare-Wake-Wait-Seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from gpushare.runtime.host.clock import AsyncClock
from gpushare.runtime.service.swap.control import SleepControl, SleepControlError
from gpushare.runtime.service.swap.layout import (
    HOLDS_ROOM,
    AwakeNow,
    SwapGpu,
    SwapLayout,
    SwapMember,
    SwapPhase,
    make_room,
)
from gpushare.runtime.service.swap.stats import RefusalReason, SleepReason, SwapStats

log = logging.getLogger(__name__)

RETRY_AFTER_S: Mapping[RefusalReason, int] = {
    "queue_full": 5,
    "wait_timeout": 5,
    "wake_failed": 60,
    "no_room": 30,
    "down": 30,
}
"""Retry-After per refusal: a full queue or a slow wake clears in seconds; a failed or restarting
instance needs the supervisor (a vLLM start is 90–120 s on an H200)."""


class SwapRefused(Exception):
    """A request the manager will not let through: 503 with `retry_after_s`."""

    def __init__(self, instance: str, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"instance {instance}: {detail}")
        self.instance = instance
        self.reason = reason
        self.detail = detail
        self.retry_after_s = RETRY_AFTER_S[reason]

    @property
    def code(self) -> str:
        """The `code` of the OpenAI-style error body."""
        return f"model_{self.reason}"

    def sentence(self, model: str) -> str:
        return f"The model {model!r} (instance {self.instance}) {self.detail}; retry later."


class Lease:
    """Permission to forward one request. `release()` once its answer is done (idempotent); also an
    async context manager."""

    def __init__(self, release: Callable[[], None] | None = None, waited_s: float | None = None) -> None:
        self._release = release
        self.waited_s = waited_s
        """Seconds the request was held for its model's wake (None: it was awake)."""

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


NO_LEASE = Lease()
"""The lease of an instance the manager does not manage (a resident one)."""


@dataclass(frozen=True)
class _Outcome:
    granted: bool
    refusal: SwapRefused | None = None


@dataclass
class _Hold:
    arrived: float
    future: asyncio.Future[_Outcome]
    request: bool = True
    """A client request (counts against the queue); False: a `gpushare wake`."""


@dataclass
class _Member:
    spec: SwapMember
    phase: SwapPhase
    last_used: float
    in_flight: int = 0
    holds: deque[_Hold] = field(default_factory=deque)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while nothing is in flight."""
    swap: asyncio.Task[None] | None = None
    error: str | None = None
    failed_holds_room: bool = False
    """A failed instance whose memory is unknown (it did not say it sleeps) keeps its room."""

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def name(self) -> str:
        return self.spec.name

    def holds_room(self) -> bool:
        return self.phase in HOLDS_ROOM or (self.phase == "failed" and self.failed_holds_room)

    @property
    def held_requests(self) -> int:
        return sum(1 for h in self.holds if h.request)


@dataclass
class _Gpu:
    spec: SwapGpu
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class MemberState:
    """One on-demand instance now, for `status`, the control endpoint and the metrics."""

    name: str
    gpu: int
    phase: SwapPhase
    in_flight: int
    held: int
    idle_s: float
    """Seconds since a request last started or ended."""
    wakes: int
    error: str | None

    @property
    def awake(self) -> bool:
        return self.phase == "awake"

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.name,
            "gpu": self.gpu,
            "phase": self.phase,
            "awake": self.awake,
            "in_flight": self.in_flight,
            "held": self.held,
            "idle_s": round(self.idle_s, 3),
            "swaps": self.wakes,
            "error": self.error,
        }


@dataclass(frozen=True)
class WakeAnswer:
    """What `wake`/`sleep` did: the phase reached, whether it had to act, and how long it took."""

    name: str
    phase: SwapPhase
    changed: bool
    seconds: float


class SwapManager:
    """See the module docstring. `url_of(instance)` gives its base URL (None: unknown now)."""

    def __init__(
        self,
        layout: SwapLayout,
        control: SleepControl,
        clock: AsyncClock,
        url_of: Callable[[str], str | None],
        *,
        initial: Mapping[str, SwapPhase] | None = None,
        on_failure: Callable[[str, str], None] | None = None,
        stats: SwapStats | None = None,
        idle_tick_s: float = 1.0,
    ) -> None:
        self.layout = layout
        self.control = control
        self.clock = clock
        self.url_of = url_of
        self.on_failure = on_failure
        self.stats = stats if stats is not None else SwapStats()
        self.idle_tick_s = idle_tick_s
        now = clock.monotonic()
        phases = initial or {}
        self._members = {m.name: _Member(m, phases.get(m.name, "asleep"), now) for m in layout.members}
        self._gpus = {g.index: _Gpu(g) for g in layout.gpus}

    # -- views -------------------------------------------------------------------------------

    def manages(self, name: str) -> bool:
        return name in self._members

    def phase(self, name: str) -> SwapPhase:
        return self._members[name].phase

    def snapshot(self) -> list[MemberState]:
        now = self.clock.monotonic()
        return [
            MemberState(
                m.name,
                m.spec.gpu,
                m.phase,
                m.in_flight,
                m.held_requests,
                max(now - m.last_used, 0.0),
                self.stats.wakes[m.name],
                m.error,
            )
            for m in sorted(self._members.values(), key=lambda m: (m.spec.gpu, m.name))
        ]

    # -- leases (the gateway) ----------------------------------------------------------------

    async def lease(self, name: str) -> Lease:
        """Permission to forward a request to `name` now; waits for a swap when it is not awake.
        Raises SwapRefused (a 503 for the client)."""
        m = self._members.get(name)
        if m is None:
            return NO_LEASE
        if m.phase == "awake":
            return self._grant(m)
        self._check_can_wake(m)
        if m.held_requests >= m.spec.settings.queue:
            raise self._refusal(
                m, "queue_full", f"has {m.spec.settings.queue} requests waiting for it to wake"
            )
        return await self._wait_for(m, self._hold(m, request=True), m.spec.settings.wait_s)

    def _check_can_wake(self, m: _Member) -> None:
        if m.phase == "down":
            raise self._refusal(m, "down", f"is not serving ({m.error or 'restarting'})")
        if m.phase == "failed":
            raise self._refusal(m, "wake_failed", f"could not be woken: {m.error}")

    def _refusal(self, m: _Member, reason: RefusalReason, detail: str, count: bool = True) -> SwapRefused:
        if count:
            self.stats.refused[(m.name, reason)] += 1
        return SwapRefused(m.name, reason, detail)

    def _grant(self, m: _Member) -> Lease:
        m.in_flight += 1
        m.idle.clear()
        m.last_used = self.clock.monotonic()
        return Lease(lambda: self._release(m))

    def _release(self, m: _Member) -> None:
        m.in_flight -= 1
        m.last_used = self.clock.monotonic()
        if m.in_flight == 0:
            m.idle.set()

    def _hold(self, m: _Member, *, request: bool) -> _Hold:
        hold = _Hold(self.clock.monotonic(), asyncio.get_running_loop().create_future(), request)
        m.holds.append(hold)
        if m.swap is None or m.swap.done():
            m.swap = asyncio.create_task(self._swap_in(m), name=f"swap in {m.name}")
        return hold

    async def _wait_for(self, m: _Member, hold: _Hold, wait_s: float) -> Lease:
        try:
            await self._within(hold.future, wait_s)
        except asyncio.CancelledError:
            self._drop(m, hold)  # the client left
            raise
        if not hold.future.done():
            self._drop(m, hold)
            raise self._refusal(m, "wait_timeout", f"did not wake within {wait_s:g} s", count=hold.request)
        outcome = hold.future.result()
        if outcome.refusal is not None:
            raise outcome.refusal
        waited = self.clock.monotonic() - hold.arrived
        if hold.request:
            self.stats.waited(m.name, waited)
        return Lease(lambda: self._release(m), waited_s=waited)

    def _drop(self, m: _Member, hold: _Hold) -> None:
        """A hold whose waiter gave up: out of the queue, and its lease back if it had one."""
        if hold in m.holds:
            m.holds.remove(hold)
        if not hold.future.done():
            hold.future.cancel()
        elif not hold.future.cancelled() and hold.future.result().granted:
            self._release(m)

    def _grant_holds(self, m: _Member) -> None:
        while m.holds:
            hold = m.holds.popleft()
            if not hold.future.done():
                m.in_flight += 1
                hold.future.set_result(_Outcome(True))
        if m.in_flight:
            m.idle.clear()
        m.last_used = self.clock.monotonic()

    def _refuse_holds(self, m: _Member, reason: RefusalReason, detail: str) -> None:
        while m.holds:
            hold = m.holds.popleft()
            if not hold.future.done():
                hold.future.set_result(_Outcome(False, self._refusal(m, reason, detail, count=hold.request)))

    async def _within(self, waited: Awaitable[Any], seconds: float) -> bool:
        """Wait for `waited` at most `seconds` (on the injected clock); whether it finished."""
        target = asyncio.ensure_future(waited)
        if target.done():
            return True
        timer = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({target, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if target is not waited and not target.done():
                target.cancel()  # a task made here for a coroutine: nobody else waits for it
        return target.done() and not target.cancelled()

    # -- the swap ----------------------------------------------------------------------------

    async def _swap_in(self, m: _Member) -> None:
        gpu = self._gpus[m.spec.gpu]
        try:
            async with gpu.lock:
                await self._swap_in_locked(m, gpu)
        except Exception as exc:  # never leave a held request hanging
            log.exception("swap of %s failed", m.name)
            self._refuse_holds(m, "wake_failed", f"could not be woken: {exc}")

    async def _swap_in_locked(self, m: _Member, gpu: _Gpu) -> None:
        if not m.holds:
            return  # every waiter gave up while it waited for the lock
        if m.phase == "awake":
            self._grant_holds(m)
            return
        if m.phase in ("down", "failed"):
            refusal: RefusalReason = "down" if m.phase == "down" else "wake_failed"
            self._refuse_holds(m, refusal, f"could not be woken: {m.error}")
            return
        started = self.clock.monotonic()
        choice = make_room(gpu.spec, self._awake_on(gpu, m.name), m.spec.awake_bytes)
        if choice.short is not None:
            self._refuse_holds(m, "no_room", f"cannot wake on GPU {gpu.spec.index}: {choice.short}")
            return
        slept = await self._sleep_all(choice.to_sleep, "make_room")
        woken_from = self.clock.monotonic()
        if not slept:
            stuck = [n for n in choice.to_sleep if self._members[n].phase == "failed"]
            self._refuse_holds(
                m, "no_room", f"cannot wake: {', '.join(stuck)} did not go to sleep to make room"
            )
            return
        if not m.holds:
            return  # all gave up during the drain: the room is made, the wake is not needed
        if await self._wake(m):
            done = self.clock.monotonic()
            seconds = done - started
            self.stats.swapped(
                gpu.spec.index,
                m.name,
                seconds,
                put_to_sleep=choice.to_sleep,
                sleep_s=woken_from - started,
                wake_s=done - woken_from,
            )
            log.info(
                "GPU %d: %s awake in %.2f s%s",
                gpu.spec.index,
                m.name,
                seconds,
                f" (put to sleep: {', '.join(choice.to_sleep)})" if choice.to_sleep else "",
            )
            self._grant_holds(m)
        else:
            self._refuse_holds(m, "wake_failed", f"could not be woken: {m.error}")

    def _awake_on(self, gpu: _Gpu, target: str) -> list[AwakeNow]:
        return [
            AwakeNow(
                n,
                self._members[n].spec.awake_bytes,
                self._members[n].last_used,
                self._members[n].phase == "awake",
            )
            for n in gpu.spec.members
            if n != target and self._members[n].holds_room()
        ]

    async def _sleep_all(self, names: Sequence[str], reason: SleepReason) -> bool:
        """Drain these (at once), then put them to sleep (at once); whether all of them sleep."""
        if not names:
            return True
        victims = [self._members[n] for n in names]
        for v in victims:
            v.phase = "draining"
        await asyncio.gather(*(self._drain(v) for v in victims))
        slept = await asyncio.gather(*(self._fall_asleep(v, reason) for v in victims))
        return all(slept)

    async def _drain(self, v: _Member) -> None:
        if v.in_flight and not await self._within(v.idle.wait(), v.spec.settings.drain_s):
            log.warning(
                "%s: %d request(s) still in flight after %g s of drain: vLLM's /sleep aborts them",
                v.name,
                v.in_flight,
                v.spec.settings.drain_s,
            )

    async def _fall_asleep(self, v: _Member, reason: SleepReason) -> bool:
        left = v.in_flight
        v.phase = "falling-asleep"
        url = self.url_of(v.name)
        why = ""
        try:
            if url is None:
                raise SleepControlError("its address is not known")
            await self.control.sleep(url, v.spec.sleep_level)
            asleep = await self.control.is_sleeping(url)
            if not asleep:
                why = "/sleep answered but /is_sleeping says it is awake"
        except SleepControlError as exc:
            asleep, why = False, str(exc)
        if _went_down(v):
            return True  # its process went away meanwhile: it holds nothing
        if not asleep:
            self._fail(v, f"could not be put to sleep: {why}", holds_room=True)
            return False
        v.phase = "asleep"
        self.stats.sleeps[(v.name, reason)] += 1
        if left:
            self.stats.aborted_by_sleep[v.name] += left
        return True

    async def _wake(self, m: _Member) -> bool:
        m.phase = "waking"
        url = self.url_of(m.name)
        weights_back = False
        try:
            if url is None:
                raise SleepControlError("its address is not known")
            if m.spec.sleep_level == 2:
                # level 2 discarded the weights: wake their allocations, load them again, then the
                # KV cache (the engine stays paused until every tag is back: v1/engine/core.py)
                await self.control.wake(url, ("weights",))
                weights_back = True
                await self.control.reload_weights(url)
                await self.control.wake(url, ("kv_cache",))
            else:
                await self.control.wake(url)
            if await self.control.is_sleeping(url):
                raise SleepControlError("/wake_up answered but /is_sleeping still says asleep")
            if _went_down(m):
                return False  # the supervisor saw it go meanwhile: its word wins
            m.phase, m.error = "awake", None
            return True
        except SleepControlError as exc:
            if _went_down(m):
                return False
            self.stats.failed_wakes[m.name] += 1
            holds_room = weights_back or not await self._says_asleep(url)
            # its waiters hear why before `on_failure` (a restart) calls it down
            self._refuse_holds(m, "wake_failed", f"could not be woken: {exc}")
            self._fail(m, str(exc), holds_room=holds_room)
            return False

    async def _says_asleep(self, url: str | None) -> bool:
        if url is None:
            return False
        try:
            return await self.control.is_sleeping(url)
        except SleepControlError:
            return False

    def _fail(self, m: _Member, why: str, *, holds_room: bool) -> None:
        m.phase = "failed"
        m.error = why
        m.failed_holds_room = holds_room
        log.warning("%s: %s", m.name, why)
        if self.on_failure is not None:
            self.on_failure(m.name, why)

    # -- control (gpushare wake / sleep) -----------------------------------------------------

    async def wake(self, name: str, wait_s: float) -> WakeAnswer:
        """Wake `name` now (a swap, as for a request) and wait at most `wait_s`. A failed instance
        is tried again. Raises KeyError for an instance it does not manage, SwapRefused."""
        m = self._members[name]
        started = self.clock.monotonic()
        if m.phase == "awake":
            return WakeAnswer(name, m.phase, False, 0.0)
        if m.phase == "failed":
            m.phase, m.error = "asleep", None
        self._check_can_wake(m)
        lease = await self._wait_for(m, self._hold(m, request=False), wait_s)
        lease.release()
        return WakeAnswer(name, m.phase, True, self.clock.monotonic() - started)

    async def sleep(self, name: str) -> WakeAnswer:
        """Put `name` to sleep now (drained first, as for a swap). Raises KeyError, SwapRefused."""
        m = self._members[name]
        started = self.clock.monotonic()
        async with self._gpus[m.spec.gpu].lock:
            if m.phase == "asleep":
                return WakeAnswer(name, m.phase, False, 0.0)
            if m.phase == "down":
                raise self._refusal(m, "down", f"is not serving ({m.error or 'restarting'})", count=False)
            if not await self._sleep_all([name], "manual"):
                raise self._refusal(m, "wake_failed", f"{m.error}", count=False)
        return WakeAnswer(name, m.phase, True, self.clock.monotonic() - started)

    # -- idle timeout ------------------------------------------------------------------------

    async def idle_sweep(self) -> list[str]:
        """Put to sleep every awake instance idle for its `idle_s`; the ones it put to sleep. A GPU
        in the middle of a swap is left for the next sweep."""
        slept = []
        for m in self._members.values():
            if not self._idle_expired(m):
                continue
            lock = self._gpus[m.spec.gpu].lock
            if lock.locked():
                continue
            async with lock:
                if self._idle_expired(m) and await self._sleep_all([m.name], "idle"):
                    slept.append(m.name)
        return slept

    def _idle_expired(self, m: _Member) -> bool:
        idle_s = m.spec.settings.idle_s
        return (
            idle_s is not None
            and m.phase == "awake"
            and m.in_flight == 0
            and not m.holds
            and self.clock.monotonic() - m.last_used >= idle_s
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep for idle instances every `idle_tick_s` until `stop` is set."""
        if all(m.spec.settings.idle_s is None for m in self._members.values()):
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await self.idle_sweep()
            except Exception:  # a bad sweep must not end the loop
                log.exception("idle sweep failed")
            await self._within(stop.wait(), self.idle_tick_s)

    # -- what the supervisor sees ------------------------------------------------------------

    def mark_down(self, name: str, why: str) -> None:
        """The instance's process is gone or does not serve: its held requests get 503 and it
        holds no room until it is started again."""
        m = self._members.get(name)
        if m is None:
            return
        m.phase, m.error = "down", why
        self._refuse_holds(m, "down", f"is not serving ({why})")

    def mark_asleep(self, name: str) -> None:
        """The instance serves and sleeps (restarted and put to sleep, or found so)."""
        m = self._members.get(name)
        if m is not None:
            m.phase, m.error = "asleep", None

    async def reserve_start(self, name: str) -> StartReservation:
        """Make room on its GPU for (re)starting `name` awake, and hold the GPU's lock until
        `StartReservation.finish` (put it to sleep once it serves) or `abandon`. Raises KeyError,
        SwapRefused (no room)."""
        m = self._members[name]
        gpu = self._gpus[m.spec.gpu]
        await gpu.lock.acquire()
        try:
            choice = make_room(gpu.spec, self._awake_on(gpu, name), m.spec.awake_bytes)
            if choice.short is not None:
                raise self._refusal(
                    m, "no_room", f"cannot start on GPU {gpu.spec.index}: {choice.short}", False
                )
            if not await self._sleep_all(choice.to_sleep, "make_room"):
                raise self._refusal(m, "no_room", "cannot start: another instance did not go to sleep", False)
            m.phase, m.error = "starting", None
        except BaseException:
            gpu.lock.release()
            raise
        return StartReservation(self, m, gpu)

    async def refresh(self, name: str) -> None:
        """Ask one instance whether it sleeps (it serves after a start the manager did not make
        room for); one that does not answer is `down`."""
        m = self._members.get(name)
        if m is None:
            return
        async with self._gpus[m.spec.gpu].lock:
            await self._ask(m)

    async def _ask(self, m: _Member) -> None:
        url = self.url_of(m.name)
        try:
            if url is None:
                raise SleepControlError("its address is not known")
            m.phase = "asleep" if await self.control.is_sleeping(url) else "awake"
            m.error = None
            m.last_used = self.clock.monotonic()
        except SleepControlError as exc:
            m.phase, m.error = "down", str(exc)

    async def sync(self) -> None:
        """Ask each instance whether it sleeps (the gateway starting beside running instances);
        one that does not answer is `down` until the supervisor says otherwise."""
        for gpu in self._gpus.values():
            async with gpu.lock:
                for name in gpu.spec.members:
                    await self._ask(self._members[name])


def _went_down(m: _Member) -> bool:
    """Whether the supervisor marked it down while a call to it was awaited (a function, so the
    type checker does not take the phase set before the await for the phase after it)."""
    return m.phase == "down"


class StartReservation:
    """Room held on a GPU while the supervisor (re)starts an on-demand instance."""

    def __init__(self, manager: SwapManager, member: _Member, gpu: _Gpu) -> None:
        self._manager = manager
        self._member = member
        self._gpu = gpu
        self._open = True

    async def finish(self) -> bool:
        """It serves: put it to sleep (the slow first sleep) and free the GPU; whether it sleeps."""
        if not self._open:
            return self._member.phase == "asleep"
        try:
            return await self._manager._fall_asleep(self._member, "restart")
        finally:
            self._close()

    def abandon(self, why: str) -> None:
        """The start failed: it is down, and the GPU is free for swaps again."""
        if self._open:
            self._manager.mark_down(self._member.name, why)
            self._close()

    def _close(self) -> None:
        self._open = False
        self._gpu.lock.release()
