"""`gpushare calibrate`: start each planned instance alone, once, and read vLLM's accounting.

Each instance runs by itself on its GPU(s) with the plan's --gpu-memory-utilization and without
--kv-cache-memory-bytes, so vLLM profiles and logs its own weights, peak activation, non-torch and
CUDA-graph memory. NVML gives the process footprint. Everything it starts it stops again.

A first start that compiles the model from scratch logs a higher peak activation than every later
start, which loads the compiled graphs from vLLM's cache; such a start is measured once more, so
the record holds what the model spends whenever it is started again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gpushare.calibration import (
    CalibrationRecord,
    key_from_planned,
    measuring_argv,
    planned_estimate,
    record_from_run,
)
from gpushare.errors import EnvironmentProblem
from gpushare.memory.budget import requested_bytes
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.runtime.launcher.down import down
from gpushare.runtime.launcher.edges import Edges
from gpushare.runtime.launcher.up import UpOptions, up
from gpushare.runtime.store.state import ProfilePaths
from gpushare.vllm.log import VllmAccounting, parse_vllm_log


@dataclass(frozen=True)
class CalibrationRun:
    instance: PlannedInstance
    accounting: VllmAccounting
    record: CalibrationRecord
    log_path: str


def _alone(plan: Plan, inst: PlannedInstance) -> Plan:
    measuring = dataclasses.replace(
        inst,
        argv=measuring_argv(inst.argv),
        kv_cache_memory_bytes=None,
        kv_fixed=False,
        start_order=0,
        env={**inst.env, "VLLM_LOGGING_LEVEL": "DEBUG"},  # the context snapshot is a DEBUG line
    )
    return dataclasses.replace(plan, instances=(measuring,), feasible=True, unplaced=(), mps="off")


def _measure_once(
    plan: Plan, inst: PlannedInstance, paths: ProfilePaths, edges: Edges, timeout_s: float
) -> tuple[VllmAccounting, int, str]:
    result = up(_alone(plan, inst), paths, edges, UpOptions(ready_timeout_s=timeout_s))
    try:
        rec = result.state.instances[0]
        log_path = str(rec.log_path)
        accounting = parse_vllm_log(Path(log_path).read_text(errors="replace"), log_path)
        per_gpu = rec.actual.get("process_bytes")
        process = max(per_gpu.values()) if isinstance(per_gpu, dict) and per_gpu else 0
    finally:
        down(paths, edges)
    return accounting, int(process), log_path


def calibrate_plan(
    plan: Plan,
    paths: ProfilePaths,
    edges: Edges,
    ready_timeout_s: float,
    names: tuple[str, ...] = (),
    on_start: Callable[[PlannedInstance, str], None] | None = None,
) -> list[CalibrationRun]:
    """Run each selected instance alone and turn what vLLM logged into records (not saved here)."""
    if edges.inventory is None:
        raise EnvironmentProblem(
            "calibration measures GPU memory and needs NVML (an NVIDIA driver)",
            hint="run gpushare calibrate on the machine with the GPUs",
        )
    totals = {g.index: g.cuda_total_bytes for g in edges.inventory.gpus()}
    runs = []
    for inst in plan.instances:
        if names and inst.name not in names:
            continue
        if on_start is not None:
            on_start(inst, "")
        accounting, process, log_path = _measure_once(plan, inst, paths, edges, ready_timeout_s)
        if accounting.compile_cache == "cold":
            if on_start is not None:
                on_start(inst, "compiled from scratch: measuring again with the warm compile cache")
            accounting, process, log_path = _measure_once(plan, inst, paths, edges, ready_timeout_s)
        total = totals[inst.gpus[0]]
        # The utilization vLLM itself reports (the plan's, unless something rewrote the command).
        requested = requested_bytes(accounting.utilization, total)
        record = record_from_run(
            key_from_planned(inst),
            accounting,
            requested,
            process,
            datetime.now(UTC).isoformat(timespec="seconds"),
            graphs_in_budget=planned_estimate(inst).budget.cuda_graph_in_budget,
        )
        runs.append(CalibrationRun(inst, accounting, record, log_path))
    return runs
