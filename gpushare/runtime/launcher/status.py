"""`status`: what runs now, per instance and per GPU, gathered into plain data (the CLI draws it).

Live state per instance (an `InstancePhase`), from its process and its HTTP server:
  starting   the process runs, /health does not answer yet, and `up` has not seen it ready
             (its `phase` then says how far the log got: starting, loading, compiling, serving)
  ready      /health answers
  unhealthy  the process runs but /health does not answer, after it had been ready
  exited     no process of its session is left (`phase.NO_PROCESS`)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushare.runtime.launcher.edges import Edges, record_alive
from gpushare.runtime.phase import NO_PROCESS, InstancePhase
from gpushare.runtime.store.state import (
    InstanceRecord,
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
class StatusReport:
    instances: tuple[InstanceStatus, ...]
    gpus: tuple[GpuStatus, ...]
    profiles: tuple[str, ...]
    up_in_progress: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "profiles": list(self.profiles),
            "up_in_progress": list(self.up_in_progress),
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


def instance_status(
    profile: str, rec: InstanceRecord, edges: Edges, gpu_procs: dict[int, list[tuple[int, int]]]
) -> InstanceStatus:
    alive = record_alive(rec, edges.runner)
    metrics = None
    state: InstancePhase
    if not alive:
        state = NO_PROCESS
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
        error=rec.error if state == NO_PROCESS else None,
    )


def collect_status(root: Path, edges: Edges, profiles: Sequence[str] | None = None) -> StatusReport:
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
    instances = tuple(
        instance_status(state.profile, rec, edges, gpu_procs) for state in states for rec in state.instances
    )
    in_progress = tuple(s.profile for s in states if s.up_pid is not None and _pid_exists(s.up_pid))
    return StatusReport(instances, tuple(gpus), tuple(s.profile for s in states), in_progress)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
