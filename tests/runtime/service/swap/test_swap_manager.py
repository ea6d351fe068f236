"""The swap manager on a fake clock and a scripted vLLM (FakeSleepControl): leases, held requests,
swaps under the GPU's lock, drains, failures, level 2, the idle timeout, the supervisor's calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpushare.planning.plan import SwapSettings
from gpushare.runtime.host.clock import FakeAsyncClock, settle
from gpushare.runtime.service.swap.control import ControlCall, FakeSleepControl, SleepControlError
from gpushare.runtime.service.swap.layout import SwapGpu, SwapLayout, SwapMember
from gpushare.runtime.service.swap.manager import NO_LEASE, Lease, SwapManager, SwapRefused
from gpushare.runtime.service.swap.metrics import SwapCollector
from gpushare.vllm.sleep import SleepLevel

G = 1 << 30


def settings(
    level: SleepLevel = 1,
    queue: int = 8,
    wait_s: float = 60,
    drain_s: float = 30,
    idle_s: float | None = None,
) -> SwapSettings:
    return SwapSettings(sleep_level=level, queue=queue, wait_s=wait_s, drain_s=drain_s, idle_s=idle_s)


def layout(
    sizes: dict[str, int], room: int = 100, awake_max: int | None = None, **per: SwapSettings
) -> SwapLayout:
    members = tuple(SwapMember(n, 0, size * G, per.get(n, settings())) for n, size in sizes.items())
    return SwapLayout((SwapGpu(0, room * G, awake_max, tuple(sizes)),), members)


@dataclass
class Vllm:
    """The instances as vLLM would answer: asleep or not, slow or failing on request."""

    clock: FakeAsyncClock
    sleeping: dict[str, bool] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    fail_wakes: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    """Seconds per call kind ("sleep", "wake", "reload_weights")."""
    partial: dict[str, set[str]] = field(default_factory=dict)

    async def __call__(self, call: ControlCall) -> bool | None:
        name = call.base_url.removeprefix("http://")
        if name in self.dead:
            raise SleepControlError(f"POST {call.base_url}: Cannot connect to host")
        if call.kind == "is_sleeping":
            return self.sleeping[name]
        delay = self.delay.get(call.kind, 0.0)
        if delay:
            await self.clock.sleep(delay)
        if call.kind == "sleep":
            self.sleeping[name] = True
            self.partial[name] = {"weights", "kv_cache"}
        elif call.kind == "wake":
            if self.fail_wakes.get(name, 0) > 0:
                self.fail_wakes[name] -= 1
                raise SleepControlError(f"POST {call.base_url}/wake_up: HTTP 500: out of memory")
            left = self.partial.get(name, set()) - set(call.tags or ("weights", "kv_cache"))
            self.partial[name] = left
            self.sleeping[name] = bool(left)
        return None


@dataclass
class Rig:
    manager: SwapManager
    vllm: Vllm
    control: FakeSleepControl
    clock: FakeAsyncClock
    failures: list[tuple[str, str]]

    def calls(self) -> list[tuple[str, str]]:
        return [(c.kind, c.base_url.removeprefix("http://")) for c in self.control.calls]

    async def lease(self, name: str) -> Lease:
        """A lease, checking the rule: never one for an instance vLLM says is asleep."""
        lease = await self.manager.lease(name)
        if self.manager.manages(name):
            assert not self.vllm.sleeping[name], f"lease for {name} while it sleeps"
        return lease


def rig(lay: SwapLayout, awake: tuple[str, ...] = ()) -> Rig:
    clock = FakeAsyncClock()
    vllm = Vllm(clock, sleeping={m.name: m.name not in awake for m in lay.members})
    control = FakeSleepControl(vllm)
    failures: list[tuple[str, str]] = []
    manager = SwapManager(
        lay,
        control,
        clock,
        lambda name: f"http://{name}",
        initial={n: "awake" for n in awake},
        on_failure=lambda n, why: failures.append((n, why)),
    )
    return Rig(manager, vllm, control, clock, failures)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_resident_and_awake_instances_get_a_lease_at_once() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 40}), awake=("a",))
        assert await r.manager.lease("resident") is NO_LEASE
        lease = await r.lease("a")
        assert r.manager.snapshot()[0].in_flight == 1
        lease.release()
        lease.release()  # idempotent
        assert r.manager.snapshot()[0].in_flight == 0
        assert r.calls() == []

    run(scenario)


def test_a_request_for_a_sleeping_model_waits_for_one_swap() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("a",))
        r.vllm.delay = {"sleep": 0.4, "wake": 0.5}
        task = asyncio.create_task(r.lease("b"))
        await r.clock.advance(0.3)
        assert not task.done()
        assert r.manager.phase("a") == "falling-asleep"
        await r.clock.advance(0.7)
        lease = await task
        assert r.calls() == [("sleep", "a"), ("is_sleeping", "a"), ("wake", "b"), ("is_sleeping", "b")]
        assert (r.manager.phase("a"), r.manager.phase("b")) == ("asleep", "awake")
        stats = r.manager.stats
        assert stats.wakes["b"] == 1 and stats.sleeps[("a", "make_room")] == 1
        assert stats.swap_seconds[0].count == 1 and stats.swap_seconds[0].total == pytest.approx(0.9)
        assert stats.wake_wait_seconds["b"].total == pytest.approx(0.9)
        lease.release()

    run(scenario)


def test_two_sleeping_models_on_one_gpu_serialize_and_each_swaps_once() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}, awake_max=1))
        r.vllm.delay = {"sleep": 0.4, "wake": 0.5}
        for_a = asyncio.create_task(r.lease("a"))
        for_b = asyncio.create_task(r.lease("b"))
        await r.clock.advance(0.5)
        lease_a = await for_a
        assert not for_b.done()
        assert r.calls() == [("wake", "a"), ("is_sleeping", "a")]
        # b's swap drains a's request first
        await r.clock.advance(5)
        assert r.manager.phase("a") == "draining" and not for_b.done()
        lease_a.release()
        await r.clock.advance(0.9)
        lease_b = await for_b
        assert r.calls()[2:] == [("sleep", "a"), ("is_sleeping", "a"), ("wake", "b"), ("is_sleeping", "b")]
        assert r.manager.stats.wakes == {"a": 1, "b": 1}
        assert r.manager.stats.aborted_by_sleep == {}
        lease_b.release()

    run(scenario)


def test_requests_arriving_during_a_drain_are_held_not_forwarded() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("a",))
        busy = await r.lease("a")
        for_b = asyncio.create_task(r.lease("b"))
        await settle()
        assert r.manager.phase("a") == "draining"
        late_a = asyncio.create_task(r.lease("a"))
        await settle()
        assert not late_a.done()  # held for a's own swap, after b's
        busy.release()
        lease_b = await for_b
        await settle()
        assert not late_a.done()  # now waiting for b's request to drain
        lease_b.release()
        lease_a = await late_a
        assert r.manager.stats.wakes == {"b": 1, "a": 1}
        lease_a.release()

    run(scenario)


def test_a_drain_that_runs_out_puts_it_to_sleep_anyway() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}, a=settings(drain_s=10)), awake=("a",))
        stuck = await r.lease("a")
        for_b = asyncio.create_task(r.lease("b"))
        await r.clock.advance(9.9)
        assert not for_b.done() and r.calls() == []
        await r.clock.advance(0.2)
        lease_b = await for_b
        assert r.manager.stats.aborted_by_sleep == {"a": 1}
        stuck.release()  # vLLM aborted it; the gateway's forward ends and releases
        assert r.manager.snapshot()[0].in_flight == 0
        lease_b.release()

    run(scenario)


def test_the_queue_is_bounded() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60}, a=settings(queue=2)))
        r.vllm.delay = {"wake": 1.0}
        held = [asyncio.create_task(r.lease("a")) for _ in range(2)]
        await settle()
        with pytest.raises(SwapRefused) as refused:
            await r.lease("a")
        assert refused.value.reason == "queue_full" and refused.value.retry_after_s == 5
        assert "2 requests waiting" in refused.value.sentence("model-a")
        await r.clock.advance(1.0)
        for lease in await asyncio.gather(*held):
            lease.release()
        assert r.manager.stats.refused == {("a", "queue_full"): 1}

    run(scenario)


def test_a_wait_past_wait_s_is_refused_and_the_wake_goes_on() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60}, a=settings(wait_s=5)))
        r.vllm.delay = {"wake": 8.0}
        held = asyncio.create_task(r.lease("a"))
        await r.clock.advance(5.1)
        with pytest.raises(SwapRefused) as refused:
            await held
        assert refused.value.reason == "wait_timeout"
        assert r.manager.snapshot()[0].held == 0
        assert r.manager.phase("a") == "waking"  # the wake goes on for the next request
        await r.clock.advance(3)
        assert r.manager.phase("a") == "awake"
        (await r.lease("a")).release()
        assert r.calls().count(("wake", "a")) == 1

    run(scenario)


def test_a_failed_wake_answers_the_held_requests_and_tells_the_supervisor() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60, "c": 50}), awake=("b",))
        r.vllm.fail_wakes = {"a": 1}
        held = [asyncio.create_task(r.lease("a")) for _ in range(3)]
        results = await asyncio.gather(*held, return_exceptions=True)
        assert all(isinstance(x, SwapRefused) and x.reason == "wake_failed" for x in results)
        assert "out of memory" in str(results[0])
        assert r.manager.phase("a") == "failed"
        assert r.failures and r.failures[0][0] == "a"
        with pytest.raises(SwapRefused):  # at once, no new wake
            await r.lease("a")
        assert r.calls().count(("wake", "a")) == 1
        assert r.manager.stats.failed_wakes == {"a": 1}
        # it said it still sleeps, so it holds no room: c wakes (a's 60 + c's 50 would not fit)
        (await r.lease("c")).release()
        assert r.calls()[-2:] == [("wake", "c"), ("is_sleeping", "c")]
        # `gpushare wake` tries again
        answer = await r.manager.wake("a", 10)
        assert answer.changed and r.manager.phase("a") == "awake"
        lease = await r.lease("a")
        lease.release()

    run(scenario)


def test_a_model_killed_while_asleep() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60}))
        r.vllm.dead = {"a"}
        with pytest.raises(SwapRefused) as refused:
            await r.lease("a")
        assert refused.value.reason == "wake_failed"
        assert "Cannot connect" in refused.value.detail
        assert r.failures == [("a", "POST http://a: Cannot connect to host")]
        # the supervisor sees the exit, restarts it, and puts it to sleep once it serves
        r.manager.mark_down("a", "the process exited")
        with pytest.raises(SwapRefused) as down:
            await r.lease("a")
        assert down.value.reason == "down" and "the process exited" in down.value.detail
        r.vllm.dead = set()
        reservation = await r.manager.reserve_start("a")
        r.vllm.sleeping["a"] = False  # the new process serves, awake
        assert await reservation.finish()
        assert r.manager.phase("a") == "asleep"
        lease = await r.lease("a")
        lease.release()
        assert r.manager.stats.sleeps[("a", "restart")] == 1

    run(scenario)


def test_mark_down_answers_the_held_requests() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60}))
        r.vllm.delay = {"wake": 5.0}
        held = asyncio.create_task(r.lease("a"))
        await r.clock.advance(1)
        r.manager.mark_down("a", "the process exited")
        with pytest.raises(SwapRefused) as refused:
            await held
        assert refused.value.reason == "down"
        await r.clock.advance(5)
        assert r.manager.phase("a") == "down"  # the wake that was under way does not undo it

    run(scenario)


def test_level_2_reloads_the_weights_between_the_two_wakes() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60}, a=settings(level=2)))
        r.vllm.partial["a"] = {"weights", "kv_cache"}
        r.vllm.delay = {"reload_weights": 20.0}
        held = asyncio.create_task(r.lease("a"))
        await r.clock.advance(19)
        assert not held.done()
        await r.clock.advance(1)
        lease = await held
        kinds = [(c.kind, c.tags) for c in r.control.calls]
        assert kinds == [
            ("wake", ("weights",)),
            ("reload_weights", None),
            ("wake", ("kv_cache",)),
            ("is_sleeping", None),
        ]
        lease.release()
        await r.manager.sleep("a")
        assert r.control.calls[-2].level == 2

    run(scenario)


def test_the_idle_timeout_puts_it_back_to_sleep() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 20}, a=settings(idle_s=600)), awake=("a", "b"))
        stop = asyncio.Event()
        loop = asyncio.create_task(r.manager.run(stop))
        lease = await r.lease("a")
        await r.clock.advance(900)
        assert r.manager.phase("a") == "awake"  # busy: never idle
        lease.release()
        await r.clock.advance(599)
        assert r.manager.phase("a") == "awake"
        await r.clock.advance(2)
        assert r.manager.phase("a") == "asleep"
        assert r.manager.phase("b") == "awake"  # no idle_s: stays
        assert r.manager.stats.sleeps == {("a", "idle"): 1}
        stop.set()
        await r.clock.advance(1)
        await loop

    run(scenario)


def test_models_that_fit_together_stay_awake_together() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 40, "b": 40, "c": 40}))
        (await r.lease("a")).release()
        await r.clock.advance(1)
        (await r.lease("b")).release()
        assert ("sleep", "a") not in r.calls()
        (await r.lease("c")).release()  # a is the least recently used
        assert ("sleep", "a") in r.calls() and ("sleep", "b") not in r.calls()
        assert [s.phase for s in r.manager.snapshot()] == ["asleep", "awake", "awake"]

    run(scenario)


def test_a_client_that_leaves_frees_its_place_and_no_wake_happens_for_nobody() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}, awake_max=1), awake=("a",))
        busy = await r.lease("a")
        for_b = asyncio.create_task(r.lease("b"))
        other_b = asyncio.create_task(r.lease("b"))
        await settle()
        assert r.manager.snapshot()[1].held == 2
        for_b.cancel()
        other_b.cancel()
        await settle()
        assert r.manager.snapshot()[1].held == 0
        busy.release()
        await settle()
        assert ("wake", "b") not in r.calls()  # a was drained and slept, b not woken for nobody

    run(scenario)


def test_a_sleep_that_fails_leaves_the_target_asleep_with_a_reason() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("a",))
        r.vllm.dead = {"a"}
        with pytest.raises(SwapRefused) as refused:
            await r.lease("b")
        assert refused.value.reason == "no_room"
        assert "a did not go to sleep" in refused.value.detail
        assert r.manager.phase("a") == "failed" and r.manager.phase("b") == "asleep"
        # a is failed and might still hold its memory: b cannot wake until the supervisor acts
        with pytest.raises(SwapRefused):
            await r.lease("b")
        r.manager.mark_down("a", "restarting")
        r.vllm.dead = set()
        lease = await r.lease("b")
        lease.release()

    run(scenario)


def test_reserve_start_makes_room_and_holds_the_gpu() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("b",))
        r.manager.mark_down("a", "exited")
        reservation = await r.manager.reserve_start("a")
        assert r.manager.phase("b") == "asleep" and r.manager.phase("a") == "starting"
        for_b = asyncio.create_task(r.lease("b"))
        await r.clock.advance(30)
        assert not for_b.done()  # the GPU is the start's until it is asleep
        r.vllm.sleeping["a"] = False
        assert await reservation.finish()
        lease = await for_b
        lease.release()
        assert r.manager.phase("a") == "asleep"

    run(scenario)


def test_a_start_that_fails_frees_the_gpu() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}))
        reservation = await r.manager.reserve_start("a")
        reservation.abandon("not ready within 900 s")
        assert r.manager.phase("a") == "down"
        lease = await r.lease("b")
        lease.release()

    run(scenario)


def test_sync_asks_each_instance() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 30, "b": 30, "c": 30}))
        r.vllm.sleeping = {"a": False, "b": True, "c": True}
        r.vllm.dead = {"c"}
        await r.manager.sync()
        assert [(s.name, s.phase) for s in r.manager.snapshot()] == [
            ("a", "awake"),
            ("b", "asleep"),
            ("c", "down"),
        ]

    run(scenario)


def test_manual_sleep_and_wake() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("a",))
        assert not (await r.manager.wake("a", 5)).changed
        slept = await r.manager.sleep("a")
        assert slept.changed and slept.phase == "asleep"
        assert not (await r.manager.sleep("a")).changed
        woke = await r.manager.wake("b", 5)
        assert woke.changed and woke.phase == "awake"
        assert r.manager.stats.sleeps == {("a", "manual"): 1}
        assert r.manager.stats.wake_wait_seconds == {}  # not a request
        with pytest.raises(KeyError):
            await r.manager.wake("resident", 5)

    run(scenario)


def test_metrics_export_the_stats() -> None:
    async def scenario() -> None:
        r = rig(layout({"a": 60, "b": 60}), awake=("a",))
        r.vllm.delay = {"wake": 0.5}
        held = asyncio.create_task(r.lease("b"))
        await r.clock.advance(0.5)
        (await held).release()
        registry = CollectorRegistry()
        registry.register(SwapCollector(r.manager))
        text = generate_latest(registry).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("gpushare_swaps_total", (("gpu", "0"), ("instance", "b")))] == 1
        assert samples[("gpushare_swaps_total", (("gpu", "0"), ("instance", "a")))] == 0
        assert samples[("gpushare_swap_duration_seconds_count", (("gpu", "0"),))] == 1
        assert samples[("gpushare_swap_duration_seconds_bucket", (("gpu", "0"), ("le", "0.5")))] == 1
        assert samples[("gpushare_swap_duration_seconds_bucket", (("gpu", "0"), ("le", "0.25")))] == 0
        assert samples[("gpushare_wake_wait_seconds_sum", (("instance", "b"),))] == pytest.approx(0.5)
        assert samples[("gpushare_instance_awake", (("gpu", "0"), ("instance", "b")))] == 1
        assert samples[("gpushare_instance_awake", (("gpu", "0"), ("instance", "a")))] == 0
        assert samples[("gpushare_swap_sleeps_total", (("instance", "a"), ("reason", "make_room")))] == 1

    run(scenario)
