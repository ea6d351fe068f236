"""`status`: what runs now, per instance and per GPU, gathered into plain data (the CLI draws it).

Live state per instance (an `InstancePhase`), from its process and its HTTP server:
  starting   the process runs, /health does not answer yet, and `up` has not seen it ready
             (its `phase` then says how far the log got: starting, loading, compiling, serving)
  ready      /health answers
  unhealthy  the process runs but /health does not answer, after it had been ready
  backoff    no process is left and the running supervisor restarts it after a delay
  stopped    no process is left: a failed `up` stopped it
  failed     no process is left and nothing restarts it (`phase.NO_PROCESS`)

Per profile, its background gateway/supervisor (a `ServiceState`, with its pid and URL).

An on-demand instance also has its swap phase (`sleep`: asleep, awake, waking, draining, ...;
runtime/service/swap/layout.py `SwapPhase`) and its swap count, from the running gateway's
control endpoint (GET /gpushare/swap); without a gateway, `sleep` is what the instance's
/is_sleeping says and the count is unknown (None).
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushare.runtime.launcher.edges import Edges, record_alive
from gpushare.runtime.phase import NO_PROCESS, InstancePhase, ServiceState
from gpushare.runtime.store.service import ServiceInfo, read_info
from gpushare.runtime.store.state import (
    InstanceRecord,
    ProfilePaths,
    ProfileState,
    list_profiles,
    load_state,
    profile_paths,
)
from gpushare.vllm.log import phase_from_log
from gpushare.vllm.metrics import parse_metrics


@dataclass(frozen=True)
class InstanceStatus:
    profile: str
    name: str
    model: str
    gpus: tuple[int, ...]
    pid: int | None
    port: int
    state: InstancePhase
    phase: InstancePhase | None
    planned_bytes: int
    """Per GPU, as the plan gives it (a tensor-parallel instance has this on each of its GPUs)."""
    actual_bytes: int | None
    """Per GPU like `planned_bytes`: the most its processes hold on any one of its GPUs (NVML now,
    else what `up` recorded)."""
    kv_cache_tokens: int | None
    kv_cache_usage: float | None
    requests_running: float | None
    requests_waiting: float | None
    uptime_s: float | None
    restarts: int
    log_path: str
    error: str | None
    residency: str = "always"
    sleep: str | None = None
    """On-demand only: the swap manager's phase (asleep, awake, waking, ...), else /is_sleeping's
    asleep or awake; None when neither answers."""
    swaps: int | None = None
    """On-demand only: wakes done by a swap since the gateway started (None: no gateway)."""
    actual_bytes_per_gpu: dict[int, int] = dataclasses.field(default_factory=dict)
    """What its processes hold on each of its GPUs (NVML now, else what `up` recorded)."""


@dataclass(frozen=True)
class GpuStatus:
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class ServiceStatus:
    """A profile's background gateway/supervisor."""

    profile: str
    state: ServiceState
    pid: int | None
    """None when not running."""
    host: str | None = None
    port: int | None = None
    """Where it listens, or listened when last seen (a killed one leaves its supervisor.json);
    None when it never ran or stopped cleanly."""

    @property
    def url(self) -> str | None:
        """Its endpoint's base (the OpenAI API is `url/v1`)."""
        if self.host is None or self.port is None:
            return None
        return ServiceInfo(0, 0.0, self.host, self.port).url

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "url": self.url}


@dataclass(frozen=True)
class StatusReport:
    instances: tuple[InstanceStatus, ...]
    gpus: tuple[GpuStatus, ...]
    profiles: tuple[str, ...]
    up_in_progress: tuple[str, ...] = ()
    services: tuple[ServiceStatus, ...] = ()
    swaps_total: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Per profile with on-demand instances and a gateway running: its swaps so far."""

    def to_json(self) -> dict[str, Any]:
        return {
            "profiles": list(self.profiles),
            "up_in_progress": list(self.up_in_progress),
            "services": [s.to_json() for s in self.services],
            "swaps_total": dict(self.swaps_total),
            "instances": [dataclasses.asdict(i) for i in self.instances],
            "gpus": [dataclasses.asdict(g) for g in self.gpus],
        }


def _nvml_bytes(
    rec: InstanceRecord, edges: Edges, gpu_procs: dict[int, list[tuple[int, int]]]
) -> dict[int, int] | None:
    if not rec.gpus or rec.pid is None or rec.pid_start_time is None or not gpu_procs:
        return None
    pids = set(edges.runner.session_pids(rec.pid, rec.pid_start_time))
    return {g: sum(used for pid, used in gpu_procs.get(g, []) if pid in pids) for g in rec.gpus}


def _recorded_bytes(rec: InstanceRecord) -> dict[int, int] | None:
    per_gpu = rec.actual.get("process_bytes")
    if isinstance(per_gpu, dict) and per_gpu:
        return {int(g): int(v) for g, v in per_gpu.items()}
    return None


def _without_process(rec: InstanceRecord, supervised: bool) -> InstancePhase:
    """What an instance none of whose processes is left is: about to be restarted (backoff, while
    a supervisor runs), stopped by a failed `up`, else given up on (one word with the supervisor
    and the gateway: `phase.NO_PROCESS`)."""
    if rec.state == "backoff" and supervised:
        return "backoff"
    if rec.state == "stopped":
        return "stopped"
    return NO_PROCESS


def instance_status(
    profile: str,
    rec: InstanceRecord,
    edges: Edges,
    gpu_procs: dict[int, list[tuple[int, int]]],
    supervised: bool = False,
) -> InstanceStatus:
    """`supervised`: the profile's gateway/supervisor runs."""
    alive = record_alive(rec, edges.runner)
    metrics = None
    state: InstancePhase
    if not alive:
        state = _without_process(rec, supervised)
    elif edges.prober.health(rec.port):
        state = "ready"
        text = edges.prober.metrics(rec.port)
        metrics = parse_metrics(text) if text else None
    else:
        state = "starting" if rec.state in ("pending", "starting") else "unhealthy"
    phase = None
    if state == "starting":
        try:
            phase = phase_from_log(Path(rec.log_path).read_text(errors="replace"))
        except OSError:
            phase = "starting"
    kv_tokens = rec.actual.get("kv_cache_tokens") or rec.actual.get("metrics_kv_cache_size_tokens")
    live_tokens = (metrics.cache_config or {}).get("kv_cache_size_tokens", "") if metrics else ""
    if live_tokens.isdigit():
        kv_tokens = int(live_tokens)
    per_gpu = (_nvml_bytes(rec, edges, gpu_procs) if alive else None) or _recorded_bytes(rec) or {}
    return InstanceStatus(
        profile=profile,
        name=rec.name,
        model=rec.model,
        gpus=rec.gpus,
        pid=rec.pid,
        port=rec.port,
        state=state,
        phase=phase,
        planned_bytes=rec.planned_bytes,
        actual_bytes=max(per_gpu.values()) if per_gpu else None,
        actual_bytes_per_gpu=per_gpu,
        kv_cache_tokens=int(kv_tokens) if kv_tokens is not None else None,
        kv_cache_usage=metrics.kv_cache_usage if metrics else None,
        requests_running=metrics.requests_running if metrics else None,
        requests_waiting=metrics.requests_waiting if metrics else None,
        uptime_s=(edges.clock.time() - rec.started_at) if alive and rec.started_at else None,
        restarts=rec.restarts,
        log_path=rec.log_path,
        error=rec.error if not alive else None,
    )


LOOPBACK_OR_WILDCARD = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""})
"""Gateway addresses `status` can reach its /health on, through 127.0.0.1."""


def service_status(profile: str, root: Path, edges: Edges) -> ServiceStatus:
    """The profile's gateway/supervisor: its process (pid and start time) and its /health."""
    info = read_info(profile_paths(profile, root))
    if info is None:
        return ServiceStatus(profile, "not running", None)
    if not edges.runner.is_running(info.pid, info.pid_start_time):
        return ServiceStatus(profile, "not running", None, info.host, info.port)
    answers = info.host not in LOOPBACK_OR_WILDCARD or edges.prober.health(info.port)
    state: ServiceState = "running" if answers else "not answering"
    return ServiceStatus(profile, state, info.pid, info.host, info.port)


SwapView = Callable[[ProfilePaths], Mapping[str, Any] | None]
"""The running gateway's GET /gpushare/swap answer for a profile (None: no gateway answers)."""


def gateway_swap_view(paths: ProfilePaths) -> Mapping[str, Any] | None:
    """Ask the profile's background gateway (supervisor.json) for its swap manager's view, with
    $GPUSHARE_API_KEY when set."""
    from gpushare.planning.exposure import GATEWAY_API_KEY_ENV
    from gpushare.runtime.service.swap.endpoint import SWAP_ROUTE

    info = read_info(paths)
    if info is None:
        return None
    request = urllib.request.Request(info.url + SWAP_ROUTE)
    key = os.environ.get(GATEWAY_API_KEY_ENV)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=2.0) as answer:
            data = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _with_swap(
    status: InstanceStatus, rec: InstanceRecord, edges: Edges, view: Mapping[str, Any] | None
) -> InstanceStatus:
    """An on-demand instance's swap phase and count (see the module docstring)."""
    found = next(
        (
            i
            for i in (view or {}).get("instances", [])
            if isinstance(i, dict) and i.get("instance") == rec.name
        ),
        None,
    )
    if found is not None:
        swaps = found.get("swaps")
        return dataclasses.replace(
            status,
            residency="on-demand",
            sleep=str(found.get("phase")),
            swaps=int(swaps) if isinstance(swaps, int) else None,
        )
    sleeping = edges.prober.is_sleeping(rec.port) if status.state == "ready" else None
    sleep = None if sleeping is None else ("asleep" if sleeping else "awake")
    return dataclasses.replace(status, residency="on-demand", sleep=sleep)


def collect_status(
    root: Path,
    edges: Edges,
    profiles: Sequence[str] | None = None,
    swap_view: SwapView = gateway_swap_view,
) -> StatusReport:
    """Status of `profiles` (default: every profile with a state file under `root`)."""
    names = list(profiles) if profiles else list_profiles(root)
    states: list[ProfileState] = []
    for name in names:
        state = load_state(profile_paths(name, root))
        if state is not None:
            states.append(state)
    gpus: list[GpuStatus] = []
    gpu_procs: dict[int, list[tuple[int, int]]] = {}
    if edges.inventory is not None:
        for gpu in edges.inventory.gpus():
            free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes - gpu.used_bytes
            gpus.append(GpuStatus(gpu.index, gpu.name, gpu.total_bytes, gpu.used_bytes, free))
            gpu_procs[gpu.index] = [(p.pid, p.used_bytes) for p in gpu.processes]
    services = {state.profile: service_status(state.profile, root, edges) for state in states}
    instances: list[InstanceStatus] = []
    swaps_total: dict[str, int] = {}
    for state in states:
        on_demand = {str(m.get("name")) for m in (state.swap or {}).get("members", []) if isinstance(m, dict)}
        view = swap_view(profile_paths(state.profile, root)) if on_demand else None
        if view is not None and isinstance(view.get("swaps_total"), int):
            swaps_total[state.profile] = int(view["swaps_total"])
        supervised = services[state.profile].state != "not running"
        for rec in state.instances:
            status = instance_status(state.profile, rec, edges, gpu_procs, supervised)
            if rec.name in on_demand:
                status = _with_swap(status, rec, edges, view)
            instances.append(status)
    in_progress = tuple(s.profile for s in states if s.up_pid is not None and _pid_exists(s.up_pid))
    profiles = tuple(s.profile for s in states)
    return StatusReport(
        tuple(instances), tuple(gpus), profiles, in_progress, tuple(services.values()), swaps_total
    )


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
