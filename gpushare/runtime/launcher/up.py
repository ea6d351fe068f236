"""`up`: run a Plan as vLLM processes and return once each serves.

`up(plan, paths, edges)`: lock the profile, adopt what of it runs already, pre-flight, start MPS
where wanted, start the other instances in the plan's start order (its start groups;
planning/start.py), wait for each to answer a real completion from a socket of its own, record
planned against actual, run `after_ready` (the CLI starts the gateway/supervisor there), return.
What it starts it stops again when one fails (unless keep_going), when `after_ready` fails, or when
it is interrupted; what it adopted it leaves running. The outside world comes in through `Edges`
(`edges.py`).

Adopting: an instance of the profile whose session still runs with the plan's command (say
`up` was killed, or it is simply up) is not started again; `up` waits until it serves, as for one
it started. One that runs with another command, or that the plan no longer has, stops `up` (exit 3:
`down` it first).

On-demand instances (residency on-demand) start after the resident ones of their GPU, one at a
time (planning/start.py), and each is put to sleep (/sleep at its sleep level, confirmed with
/is_sleeping) as soon as it serves, before the next one starts: the next one's vLLM start check
passes only with it asleep. An adopted on-demand instance that sleeps counts as serving (a
completion would wait for a wake that only the gateway makes); one adopted awake is left awake.
Its record keeps what the first sleep took (`actual.first_sleep_s`) and the NVML memory of its
processes awake (`process_bytes`) and asleep (`asleep_process_bytes`). The state file gets the
plan's swap layout (`ProfileState.swap`) for the gateway's swap manager.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpushare.errors import DoesNotFitError, EnvironmentProblem, GpushareError, InputError, LaunchError
from gpushare.planning.bind import bind_mig
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.planning.start import next_to_start, start_groups
from gpushare.runtime.host.mps import mps_env
from gpushare.runtime.host.processes import ProcessRunner, port_problem
from gpushare.runtime.launcher.edges import DEFAULT_STOP_TIMEOUT_S, Edges, record_alive, stop_records
from gpushare.runtime.launcher.preflight import PreflightReport, preflight
from gpushare.runtime.phase import InstancePhase
from gpushare.runtime.service.swap.layout import SwapLayout, level_2_problems
from gpushare.runtime.store.lock import profile_lock
from gpushare.runtime.store.service import read_info
from gpushare.runtime.store.state import (
    InstanceRecord,
    MpsRecord,
    ProfilePaths,
    ProfileState,
    load_state,
    save_state,
)
from gpushare.vllm.log import error_line, facts_from_log, log_tail, phase_from_log
from gpushare.vllm.metrics import parse_metrics

DEFAULT_READY_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 25


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceProgress:
    name: str
    state: InstancePhase
    """pending, starting, ready or failed."""
    phase: InstancePhase | None
    """How far the start got (from the log, then /health); None while pending."""
    elapsed_s: float | None
    detail: str = ""


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    """'exited with code 1 before it served', 'not ready after 600 s', ..."""
    error: str | None
    """vLLM's own error line from the log, when there is one."""
    log_path: str
    tail: str

    def summary(self) -> str:
        return f"{self.name} {self.reason}" + (f": {self.error}" if self.error else "")


class InstanceFailedError(LaunchError):
    """One or more instances failed during `up` (and, without keep_going, everything was stopped)."""

    def __init__(self, failures: Sequence[Failure], stopped: Sequence[str]) -> None:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(
            f"{first.summary()}{more}",
            hint=f"full log: gpushare logs {first.name}  ({first.log_path})",
        )
        self.failures = tuple(failures)
        self.stopped = tuple(stopped)


@dataclass(frozen=True)
class UpResult:
    state: ProfileState
    ready: tuple[str, ...]
    failed: tuple[Failure, ...]
    notes: tuple[str, ...]
    versions: dict[str, str | None]
    already_running: bool = False
    """Every instance was running already (adopted): nothing was started."""
    start_seconds: dict[str, float] = field(default_factory=dict)
    """Per instance started: spawn to first successful completion."""
    adopted: tuple[str, ...] = ()
    """Instances that were running already: waited for, not started."""


ProgressCallback = Callable[[Sequence[InstanceProgress]], None]


@dataclass(frozen=True)
class UpOptions:
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    keep_going: bool = False
    poll_s: float = 0.5
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S
    gateway_port: int | None = None
    """The port the gateway will listen on once the instances serve: pre-flight checks it is free
    with theirs, before anything starts (unless this profile's gateway listens there already).
    None or 0: no such check."""


# --- helpers over edges ------------------------------------------------------------------------


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _rotate_log(path: Path) -> None:
    if path.exists() and path.stat().st_size > 0:
        os.replace(path, path.with_name(path.name + ".1"))


def measure(rec: InstanceRecord, edges: Edges) -> dict[str, object]:
    """Actual numbers once an instance serves: vLLM's log and /metrics, NVML per process."""
    actual: dict[str, object] = dict(facts_from_log(_read(rec.log_path)).as_dict())
    text = edges.prober.metrics(rec.port)
    if text:
        cache = parse_metrics(text).cache_config or {}
        for key in ("block_size", "num_gpu_blocks", "kv_cache_memory_bytes", "kv_cache_size_tokens"):
            value = cache.get(key)
            if value is not None and value.isdigit():
                actual[f"metrics_{key}"] = int(value)
    held = _held(rec, edges)
    if held is not None:
        per_gpu, per_process = held
        actual["process_bytes"] = per_gpu
        # which of its processes holds what (a TP instance: one worker per GPU, vllm/processes.py)
        actual["gpu_processes"] = per_process
    return actual


def process_bytes(rec: InstanceRecord, edges: Edges) -> dict[str, int] | None:
    """NVML: the GPU memory of the instance's processes now, per GPU (None without NVML)."""
    held = _held(rec, edges)
    return held[0] if held is not None else None


def _held(rec: InstanceRecord, edges: Edges) -> tuple[dict[str, int], list[dict[str, object]]] | None:
    """NVML: what the instance's processes hold now on each of its GPUs, and which process holds
    what (gpu, pid, title, bytes: a TP instance has one worker per GPU, vllm/processes.py)."""
    if edges.inventory is None or not rec.gpus or rec.pid is None or rec.pid_start_time is None:
        return None
    titles = {m.pid: m.title for m in edges.runner.session_members(rec.pid, rec.pid_start_time)}
    per_gpu: dict[str, int] = {}
    per_process: list[dict[str, object]] = []
    for gpu in edges.inventory.gpus():
        if gpu.index in rec.gpus:
            # On a MIG GPU its processes are listed on the MIG devices too: each pid once.
            procs = {p.pid: p for d in gpu.mig_devices for p in d.processes}
            procs.update({p.pid: p for p in gpu.processes})
            mine = sorted((p for p in procs.values() if p.pid in titles), key=lambda p: p.pid)
            per_gpu[str(gpu.index)] = sum(p.used_bytes for p in mine)
            per_process += [
                {"gpu": gpu.index, "pid": p.pid, "title": titles[p.pid], "bytes": p.used_bytes} for p in mine
            ]
    return per_gpu, per_process


# --- up ----------------------------------------------------------------------------------------


def _record_for(inst: PlannedInstance, paths: ProfilePaths, extra_env: Mapping[str, str]) -> InstanceRecord:
    # An instance on a MIG slice runs without MPS (planning/mig.py: one instance per slice).
    mps = extra_env if inst.mig_slice is None else {}
    return InstanceRecord(
        name=inst.name,
        model=inst.model,
        port=inst.port,
        argv=tuple(inst.argv),
        env={**inst.env, **mps},
        log_path=str(paths.log_file(inst.name)),
        gpus=tuple(inst.gpus),
        aliases=tuple(inst.aliases),
        planned_bytes=inst.planned_bytes,
        kv_fixed=inst.kv_fixed,
    )


def _check_plan(plan: Plan) -> None:
    if plan.problems:
        raise DoesNotFitError(
            f"the plan for {plan.profile_name!r} cannot start: {'; '.join(plan.problems)}",
            hint="run `gpushare plan` for details",
        )
    if plan.unplaced or not plan.feasible:
        unplaced = ", ".join(u.name for u in plan.unplaced) or "some instances"
        raise DoesNotFitError(
            f"the plan for {plan.profile_name!r} does not fit: {unplaced} could not be placed",
            hint="run `gpushare plan` for the reasons and what would make it fit",
        )
    names = [inst.name for inst in plan.instances]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DoesNotFitError(f"the plan names {', '.join(duplicates)} more than once")
    if not plan.instances:
        raise DoesNotFitError(f"the plan for {plan.profile_name!r} has no instances")
    refused = level_2_problems(plan)
    if refused:
        raise InputError(f"the plan for {plan.profile_name!r} cannot start: {'; '.join(refused)}")


def _bind_mig(plan: Plan, edges: Edges) -> Plan:
    """The plan's MIG slices bound to this machine's MIG devices (planning/bind.py)."""
    if not plan.uses_mig:
        return plan
    if edges.inventory is None:
        raise EnvironmentProblem(
            f"the plan for {plan.profile_name!r} runs on MIG slices, but NVML cannot be read here "
            "to find the MIG devices"
        )
    return bind_mig(plan, edges.inventory.gpus())


def _running_already(
    previous: ProfileState | None, plan: Plan, runner: ProcessRunner
) -> dict[str, InstanceRecord]:
    """The records of the instances of this profile that still run with the plan's command (to be
    adopted, not started again). Raises when one runs that the plan does not have, or with another
    command: `up` would start a second one beside it."""
    if previous is None:
        return {}
    planned = {inst.name: tuple(inst.argv) for inst in plan.instances}
    alive = [rec for rec in previous.instances if record_alive(rec, runner)]
    others = [rec.name for rec in alive if planned.get(rec.name) != rec.argv]
    if others:
        what = "another command or an instance the plan no longer has"
        raise EnvironmentProblem(
            f"profile {plan.profile_name!r} already runs {', '.join(others)} ({what})",
            hint=f"run `gpushare down {plan.profile_name}` first",
        )
    return {rec.name: rec for rec in alive}


def _adopted_record(fresh: InstanceRecord, running: InstanceRecord) -> InstanceRecord:
    """The record of an instance `up` adopts: the plan's view of it (aliases, planned bytes) with
    the running process's identity, environment and history."""
    return dataclasses.replace(
        fresh,
        env=running.env,
        log_path=running.log_path,
        pid=running.pid,
        pid_start_time=running.pid_start_time,
        state=running.state,
        restarts=running.restarts,
        started_at=running.started_at,
        ready_at=running.ready_at,
        last_start_s=running.last_start_s,
        exit_code=None,
        error=None,
        actual=running.actual,
    )


def _gateway_port_problem(paths: ProfilePaths, edges: Edges, port: int | None) -> str | None:
    """Why the gateway could not listen on `port` once the instances serve, or None (free, not
    asked, or this profile's own gateway/supervisor holds it already)."""
    if not port:
        return None
    ours = read_info(paths)
    if ours is not None and ours.port == port and edges.runner.is_running(ours.pid, ours.pid_start_time):
        return None
    if edges.port_free(port):
        return None
    return f"gateway: port {port} is already in use (--gateway-port picks another)"


def _setup_mps(
    plan: Plan, paths: ProfilePaths, edges: Edges, previous: ProfileState | None, notes: list[str]
) -> MpsRecord | None:
    whole_gpu = any(inst.gpus and inst.mig_slice is None for inst in plan.instances)
    if plan.mps == "off" or not whole_gpu or not edges.mps.available():
        return None
    pipe, logs = paths.mps_pipe_dir, paths.mps_log_dir
    if edges.mps.running(pipe):
        ours = bool(previous and previous.mps and previous.mps.started_by_us)
        notes.append(f"MPS daemon already running on {pipe}; using it")
        return MpsRecord(str(pipe), str(logs), started_by_us=ours)
    edges.mps.start(pipe, logs)
    notes.append(f"started an MPS daemon (pipe {pipe})")
    return MpsRecord(str(pipe), str(logs), started_by_us=True)


class _Launch:
    """The mutable bookkeeping of one `up` (kept out of the pure functions above)."""

    def __init__(self, plan: Plan, paths: ProfilePaths, edges: Edges, options: UpOptions) -> None:
        self.plan = plan
        self.paths = paths
        self.edges = edges
        self.options = options
        self.states: dict[str, InstancePhase] = {inst.name: "pending" for inst in plan.instances}
        self.started_mono: dict[str, float] = {}
        self.ready_s: dict[str, float] = {}
        self.phases: dict[str, InstancePhase] = {}
        self.failures: list[Failure] = []
        self.state = ProfileState(profile=plan.profile_name)
        self.by_name = {inst.name: inst for inst in plan.instances}
        self.adopted: set[str] = set()
        self.stopped = False
        """`stop_started` ran."""

    def save(self) -> None:
        self.state = save_state(self.paths, self.state, now=self.edges.clock.time())

    def update(self, rec: InstanceRecord) -> None:
        self.state = self.state.with_instance(rec)
        self.save()

    def rec(self, name: str) -> InstanceRecord:
        found = self.state.instance(name)
        assert found is not None
        return found

    def next_to_start(self, groups: Sequence[Sequence[PlannedInstance]]) -> list[str]:
        """The instances the plan's start order lets start now (planning/start.py)."""
        waiting = {n for n, s in self.states.items() if s == "pending"}
        settled = {n for n, s in self.states.items() if s in ("ready", "failed")}
        return next_to_start(groups, waiting, settled)

    def start(self, name: str) -> None:
        rec = self.rec(name)
        log_path = Path(rec.log_path)
        _rotate_log(log_path)
        spawned = self.edges.runner.spawn(rec.argv, rec.env, log_path)
        self.started_mono[name] = self.edges.clock.monotonic()
        self.states[name] = "starting"
        self.update(
            dataclasses.replace(
                rec,
                pid=spawned.pid,
                pid_start_time=spawned.start_time,
                state="starting",
                started_at=self.edges.clock.time(),
                exit_code=None,
                error=None,
            )
        )

    def adopt(self, name: str) -> None:
        """An instance that runs already: waited for like one this `up` started, never stopped."""
        rec = self.rec(name)
        self.adopted.add(name)
        self.states[name] = "starting"
        running_s = max(0.0, self.edges.clock.time() - rec.started_at) if rec.started_at else 0.0
        self.started_mono[name] = self.edges.clock.monotonic() - running_s

    def fail(self, name: str, reason: str, exit_code: int | None = None, exited: bool = False) -> None:
        rec = self.rec(name)
        text = _read(rec.log_path)
        last_lines = [line.strip() for line in text.splitlines() if line.strip()]
        # A process that died without an error line: its last words are the best clue.
        error = error_line(text) or (last_lines[-1] if last_lines and exited else None)
        failure = Failure(name, reason, error, rec.log_path, log_tail(text, LOG_TAIL_LINES))
        self.failures.append(failure)
        self.states[name] = "failed"
        if name in self.adopted:
            return  # running before this `up`: it is not this `up`'s to stop or to mark
        if self.options.keep_going:
            stop_records([rec], self.edges.runner, self.edges.clock, self.options.stop_timeout_s)
        self.update(dataclasses.replace(rec, state="failed", exit_code=exit_code, error=failure.summary()))

    def check(self, name: str) -> None:
        """Advance one starting instance: exited? serving? answering? out of time?"""
        rec = self.rec(name)
        runner, prober = self.edges.runner, self.edges.prober
        assert rec.pid is not None and rec.pid_start_time is not None
        code = runner.exit_code(rec.pid)
        if code is not None or not runner.is_running(rec.pid, rec.pid_start_time):
            how = f"exited with code {code}" if code is not None else "exited"
            if code is not None and code < 0:
                how = f"was killed by signal {-code}"
            self.fail(name, f"{how} before it served", exit_code=code, exited=True)
            return
        if "stopped" in runner.session_states(rec.pid, rec.pid_start_time).values():
            self.fail(name, "is stopped (T state: SIGSTOP or a debugger), so it cannot serve")
            return
        self.phases[name] = phase_from_log(_read(rec.log_path))
        if prober.health(rec.port):
            self.phases[name] = "serving"
            if name in self.adopted and self.by_name[name].on_demand and prober.is_sleeping(rec.port):
                self.ready(name)  # asleep: a completion would wait for a wake only the gateway makes
                return
            problem = prober.complete(rec.port, rec.served_name())
            if problem is None:
                # Another program took the port between the pre-flight check and the start and
                # answered for it (this instance then cannot bind it: vLLM binds its port first),
                # or listens beside it (SO_REUSEPORT): the answer is not the instance's.
                foreign = port_problem(runner.port_holder(rec.pid, rec.pid_start_time, rec.port), rec.port)
                if foreign is not None:
                    self.fail(name, foreign)
                    return
                self.ready(name)
                return
            # An engine that died behind a live API server never recovers: stop waiting.
            if "EngineCore" in problem or "EngineDead" in problem:
                self.fail(name, f"serves but cannot complete ({problem})")
                return
        elapsed = self.edges.clock.monotonic() - self.started_mono[name]
        if elapsed > self.options.ready_timeout_s:
            limit = self.options.ready_timeout_s
            self.fail(name, f"not ready after {limit:.0f} s (phase: {self.phases[name]})")

    def ready(self, name: str) -> None:
        self.states[name] = "ready"
        self.phases[name] = "ready"
        took = self.edges.clock.monotonic() - self.started_mono[name]
        rec = self.rec(name)
        if name in self.adopted and rec.state == "ready":
            return  # it was ready before: its record (start, measurements) stands
        if name not in self.adopted:
            self.ready_s[name] = took
        rec = dataclasses.replace(rec, state="ready", ready_at=self.edges.clock.time(), last_start_s=took)
        rec = dataclasses.replace(rec, actual=measure(rec, self.edges))
        self.update(rec)
        inst = self.by_name[name]
        if inst.on_demand and self.edges.prober.is_sleeping(rec.port) is not True:
            self.put_to_sleep(name, inst)

    def put_to_sleep(self, name: str, inst: PlannedInstance) -> None:
        """An on-demand instance serves: put it to sleep now, before the next one starts."""
        assert inst.swap is not None
        rec = self.rec(name)
        began = self.edges.clock.monotonic()
        problem = self.edges.prober.sleep(rec.port, inst.swap.sleep_level)
        if problem is None and self.edges.prober.is_sleeping(rec.port) is not True:
            problem = "/sleep answered but /is_sleeping does not say it sleeps"
        if problem is not None:
            self.fail(
                name, f"served but could not be put to sleep (level {inst.swap.sleep_level}): {problem}"
            )
            return
        actual = {**rec.actual, "first_sleep_s": round(self.edges.clock.monotonic() - began, 3)}
        asleep = process_bytes(rec, self.edges)
        if asleep is not None:
            actual["asleep_process_bytes"] = asleep
        self.update(dataclasses.replace(rec, actual=actual))

    def progress(self) -> list[InstanceProgress]:
        now = self.edges.clock.monotonic()
        out = []
        for inst in self.plan.instances:
            state = self.states[inst.name]
            began = self.started_mono.get(inst.name)
            elapsed = (self.ready_s.get(inst.name) or (now - began)) if began is not None else None
            phase = self.phases.get(inst.name, "starting") if state != "pending" else None
            detail = next((f.summary() for f in self.failures if f.name == inst.name), "")
            out.append(InstanceProgress(inst.name, state, phase, elapsed, detail))
        return out

    def stop_started(self) -> list[str]:
        """Stop what this `up` started (not what it adopted)."""
        self.stopped = True
        started = [self.rec(n) for n, s in self.states.items() if s != "pending" and n not in self.adopted]
        stopped = stop_records(started, self.edges.runner, self.edges.clock, self.options.stop_timeout_s)
        for rec in started:
            new_state: InstancePhase = "failed" if self.states[rec.name] == "failed" else "stopped"
            self.state = self.state.with_instance(dataclasses.replace(rec, state=new_state))
        self.save()
        return stopped


def _swap_layout(plan: Plan) -> dict[str, object] | None:
    layout = SwapLayout.from_plan(plan)
    return layout.to_json() if layout.members else None


def up(
    plan: Plan,
    paths: ProfilePaths,
    edges: Edges,
    options: UpOptions | None = None,
    on_progress: ProgressCallback | None = None,
    after_ready: Callable[[UpResult], object] | None = None,
) -> UpResult:
    """Start every instance of `plan` that does not run already and return once each serves (or
    failed, with keep_going). `after_ready(result)` runs then, still under the profile lock; when
    it raises a GpushareError, what this call started is stopped and a LaunchError says both.

    Raises: DoesNotFitError (infeasible plan), EnvironmentProblem (lock held, pre-flight failed,
    something else of the profile runs), InstanceFailedError (an instance failed; everything this
    call started has been stopped unless keep_going), LaunchError (`after_ready` failed).
    """
    opts = options or UpOptions()
    _check_plan(plan)
    plan = _bind_mig(plan, edges)
    paths.ensure()
    with profile_lock(paths, "up"):
        previous = load_state(paths)
        running = _running_already(previous, plan, edges.runner)
        to_start = dataclasses.replace(
            plan, instances=tuple(i for i in plan.instances if i.name not in running)
        )
        report: PreflightReport = preflight(
            to_start, edges.runner, edges.inventory, edges.port_free, edges.mps.available(), edges.base_env
        )
        gateway_problem = _gateway_port_problem(paths, edges, opts.gateway_port)
        problems = [*report.problems, *([gateway_problem] if gateway_problem else [])]
        if problems:
            raise EnvironmentProblem(
                f"pre-flight failed, nothing started: {'; '.join(problems)}",
                hint="fix these (a busy port: `gpushare status` or `ss -ltnp` shows its owner), run up again",
            )
        notes = list(report.notes)
        run = _Launch(plan, paths, edges, opts)
        mps = _setup_mps(plan, paths, edges, previous, notes)
        extra_env = mps_env(Path(mps.pipe_dir), Path(mps.log_dir)) if mps else {}
        records = []
        for inst in plan.instances:
            fresh = _record_for(inst, paths, extra_env)
            records.append(_adopted_record(fresh, running[inst.name]) if inst.name in running else fresh)
        run.state = ProfileState(
            profile=plan.profile_name,
            instances=tuple(records),
            mps=mps,
            up_pid=os.getpid(),
            swap=_swap_layout(plan),
        )
        run.save()
        for name in running:
            run.adopt(name)
        groups = start_groups(plan.instances)
        try:
            while True:
                for name in run.next_to_start(groups):
                    try:
                        run.start(name)
                    except EnvironmentProblem as exc:
                        run.fail(name, f"could not start: {exc.message}")
                for name, state in list(run.states.items()):
                    if state == "starting":
                        run.check(name)
                if on_progress is not None:
                    on_progress(run.progress())
                if run.failures and not opts.keep_going:
                    stopped = run.stop_started()
                    raise InstanceFailedError(run.failures, stopped)
                if all(s in ("ready", "failed") for s in run.states.values()):
                    break
                if run.next_to_start(groups):
                    continue  # one just became ready: start the next in its group without waiting
                edges.clock.sleep(opts.poll_s)
            result = UpResult(
                state=run.state,
                ready=tuple(n for n, s in run.states.items() if s == "ready"),
                failed=tuple(run.failures),
                notes=tuple(notes),
                versions=report.versions,
                already_running=len(run.adopted) == len(plan.instances),
                start_seconds=dict(run.ready_s),
                adopted=tuple(n for n in run.states if n in run.adopted),
            )
            if after_ready is not None:
                try:
                    after_ready(result)
                except GpushareError as exc:
                    stopped = run.stop_started()
                    said = f"; stopped what this up started: {', '.join(stopped)}" if stopped else ""
                    raise LaunchError(f"{exc.message}{said}", hint=exc.hint) from exc
        except BaseException:
            if not run.stopped:
                run.stop_started()  # interrupted or crashed: leave nothing orphaned
            raise
        finally:
            run.state = dataclasses.replace(run.state, up_pid=None)
            run.save()
    return dataclasses.replace(result, state=run.state)
