"""Mode by mode: which pods a plan becomes, what each asks for, the exact command it runs, and when
a mode cannot hold the plan (refused with the numbers, exit 1, like `check`).

- `gpu-pod`: one pod per start group (the instances that share a GPU, a tensor-parallel group
  included), asking for its whole GPUs and running gpushare on that group's sub-plan
  (`Plan.subset`: GPUs renumbered 0..n-1, as the pod sees them). Every number stays the plan's.
- `mig`: one pod per instance on a MIG slice, asking for `nvidia.com/mig-<profile>: 1` (the device
  plugin's mixed strategy) and running the plan's slice command: its KV size and batching limits
  are fixed already, and its utilization is a fraction of the slice's memory, which is the device
  the container sees (planning/mig.py `slice_target`). Slices of one profile on one GPU model hold
  the same memory, so whichever slice the plugin hands out holds the plan. The plan's whole-GPU
  instances become gpu-pod pods. The geometry travels as a mig-parted config for the GPU
  Operator's MIG manager (the plan's own, `MigSetup`, or, for a plan onto existing MIG devices,
  one written from its slices).
- `hami`: one pod per instance with HAMi's `gpumem` limit. HAMi-core shows the container a device
  whose total is the limit (src/cuda/memory.c `cuMemGetInfo_v2`: total = min(limit, physical),
  free = total - usage, built with HOOK_MEMINFO_ENABLE as its build.sh does), so the limit is the
  least whole MiB that holds the instance's footprint AND passes vLLM's start check there, and the
  utilization is recomputed against it (memory/budget.py `device_total_for`, `utilization_for`).
- `time-slicing` / `mps`: one pod per instance on the device plugin's equal replicas
  (sharing.py's worst case). The container sees the whole GPU; vLLM's start check must pass with
  any replicas-1 of the others already up (time-slicing), or inside the pinned limit, which an MPS
  client sees as its free memory (bench/gpu/results/h200-i15/k8s-facts.txt).

Every vLLM command in a pod listens on 0.0.0.0 (Services reach the pod's IP) and, outside gpu-pod,
passes an explicit `--kv-cache-memory-bytes` (the plan's KV size; vLLM then does not size its KV
cache from whatever is free when it starts).

Pure: plan in, values out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gpushare.catalog.mig import find_mig_table
from gpushare.errors import DoesNotFitError, InputError
from gpushare.export.k8s.gpu import (
    GpuRequest,
    HamiShare,
    MigDevice,
    SharedReplica,
    SharingMethod,
    WholeGpus,
    device_plugin_config,
    gpu_product_label,
    mig_product_label,
    mig_resource,
)
from gpushare.export.k8s.options import Mode
from gpushare.export.k8s.sharing import ALTERNATIVES, EqualSplit, NodeGpus, SharedInstance, equal_split
from gpushare.export.k8s.workload import HF_CACHE_MOUNT
from gpushare.memory.budget import Budget
from gpushare.mig.emit import mig_parted_counts
from gpushare.mig.geometry import profile_counts
from gpushare.planning.mig import config_name
from gpushare.planning.plan import MigSlice, Plan, PlannedGpu, PlannedInstance
from gpushare.planning.start import start_groups, starts_together
from gpushare.units import MiB, format_bytes

POD_HOST = "0.0.0.0"
MPS_THREADS_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
# The device plugin hands the container its devices (NVIDIA_VISIBLE_DEVICES); the plan's own
# numbering would point at the wrong one, or at none.
_HOST_ONLY_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
HAMI_GPU_TYPE_ANNOTATION = "nvidia.com/use-gputype"


@dataclass(frozen=True)
class PodPlan:
    """One Deployment's worth of the plan."""

    key: str
    """What names it: the instance (one per pod) or `gpu<indices>` (gpu-pod)."""
    instances: tuple[PlannedInstance, ...]
    gpu: GpuRequest
    gpu_name: str
    """NVML's name of the GPU model it needs (its nodeSelector)."""
    gpus: tuple[int, ...]
    """The plan's GPU indices it was planned on."""
    vllm_argv: tuple[str, ...] = ()
    """One-instance pods: the exact `vllm serve` argv."""
    env: dict[str, str] = field(default_factory=dict)
    utilization: float | None = None
    device_total_bytes: int | None = None
    """The device total the container sees, where it is not the plan's GPU."""
    sub_plan: Plan | None = None
    """gpu-pod: the plan this pod's gpushare runs."""
    sequential_starts: int = 1
    """Start steps one after another (startup probe budget): 1 when the group starts together."""
    pod_annotations: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class SharingConfig:
    """The device plugin's config for one GPU product: its key in the plugin's ConfigMap and the
    node label that selects it."""

    key: str
    product: str
    split: EqualSplit
    config: dict[str, object]
    usable_bytes: int


@dataclass(frozen=True)
class MigConfig:
    """mig mode: the mig-parted config that makes the plan's slices (`name` is the value of the
    node label `nvidia.com/mig.config` that selects it), and whether the plan creates them or
    found them (a plan onto existing MIG devices)."""

    name: str
    mig_parted: dict[str, object]
    from_devices: bool = False


@dataclass(frozen=True)
class ModePlan:
    mode: Mode
    pods: tuple[PodPlan, ...]
    vllm_version: str
    sharing: tuple[SharingConfig, ...] = ()
    notes: tuple[str, ...] = ()
    """What the mode changes or cannot keep, for README.txt (never silent)."""
    mig: MigConfig | None = None

    def summary_lines(self) -> list[str]:
        return [p.summary for p in self.pods] + [
            f"{s.product}: device plugin {s.split.method} with {s.split.replicas} replicas (config {s.key}); "
            f"worst case, the largest {s.split.replicas} together: "
            f"{format_bytes(s.split.worst_case_bytes)} of {format_bytes(s.usable_bytes)} usable"
            for s in self.sharing
        ]


def plan_for_mode(plan: Plan, mode: Mode, replicas: int | None = None) -> ModePlan:
    """The pods of `plan` in `mode`, or DoesNotFitError (exit 1) saying why the mode cannot hold
    it (instances on MIG slices outside mig mode, no slice in it, too little memory...); InputError
    (exit 2) for what no mode can export (a CPU profile, a local model folder)."""
    version = _exportable(plan)
    if mode == "mig":
        return _mig_pods(plan, version)
    _no_slices(plan, mode)
    if mode == "gpu-pod":
        return _gpu_pods(plan, version)
    if mode == "hami":
        return _hami_pods(plan, version)
    method: SharingMethod = "timeSlicing" if mode == "time-slicing" else "mps"
    return _shared_pods(plan, mode, method, version, replicas)


# --- what every mode needs ---------------------------------------------------------------------


def _exportable(plan: Plan) -> str:
    """The plan's vLLM version, once the plan is one a cluster can run."""
    if not plan.feasible:
        reasons = list(plan.problems) + [f"{u.name}: {u.reason}" for u in plan.unplaced]
        raise DoesNotFitError(
            f"the plan for {plan.profile_name!r} does not fit: {'; '.join(reasons) or 'no GPU'}",
            hint="`gpushare check` says why and what would fit; only a plan that fits is exported",
        )
    if not plan.instances or not any(inst.gpus for inst in plan.instances):
        raise InputError(
            f"{plan.profile_name}: a device: cpu profile has no GPU plan to export",
            hint="export a profile planned for GPUs (device: cuda)",
        )
    sleepers = [inst.name for inst in plan.instances if inst.on_demand]
    if sleepers:
        # the swaps are the gateway's (runtime/service/swap/), beside the instances on one host;
        # no mode writes that gateway into a pod yet
        raise InputError(
            f"{plan.profile_name}: {', '.join(sleepers)}: residency on-demand is planned (gpushare plan) "
            "but cannot be exported: the exported pods have no swap manager "
            "(`gpushare up` runs it on a host)",
            hint="set residency: always to export this profile",
        )
    versions = set()
    for inst in plan.instances:
        if inst.estimate is None:
            raise InputError(f"{inst.name}: the plan has no memory estimate for it (not planned by gpushare)")
        versions.add(inst.estimate.vllm_version)
        program = inst.argv[0] if inst.argv else ""
        if os.path.isabs(program):
            raise InputError(
                f"{inst.name}: its command starts with {program}, a path on this machine that the image "
                "does not have",
                hint="set defaults.command to [vllm, serve] (the image's vLLM) for the export",
            )
        model = inst.command.model or inst.model
        if model.startswith(("/", "./", "../", "~")) and not model.startswith(HF_CACHE_MOUNT + "/"):
            raise InputError(
                f"{inst.name}: model {model!r} is a folder on this machine, which a pod cannot read",
                hint=f"use a Hugging Face repo id, or a folder on the HF-cache volume ({HF_CACHE_MOUNT}/...)",
            )
    if len(versions) != 1:
        raise InputError(f"the plan's instances are modelled for different vLLM versions: {sorted(versions)}")
    return versions.pop()


def _no_slices(plan: Plan, mode: Mode) -> None:
    """Outside mig mode, a plan with instances on MIG slices is refused: a whole GPU, a HAMi share
    or a replica is another device than the slice the plan sized each instance for."""
    on_slices = [i for i in plan.instances if i.mig_slice is not None]
    if on_slices:
        where = ", ".join(f"{i.name} on GPU {i.gpus[0]}'s {_label(i.mig_slice)}" for i in on_slices)
        raise DoesNotFitError(
            f"{mode}: the plan runs instances on MIG slices ({where}), which only --mode mig asks for",
            hint=f"use --mode mig, or plan on whole GPUs (--mig off) for --mode {mode}",
        )


def _label(s: MigSlice | None) -> str:
    return "" if s is None else s.label


def pod_command(inst: PlannedInstance, **changes: object) -> tuple[str, ...]:
    """The instance's argv with the pod's host (and `changes`, e.g. a recomputed utilization)."""
    return replace(inst.command, host=POD_HOST, **changes).to_argv()  # type: ignore[arg-type]


def _pod_env(inst: PlannedInstance) -> dict[str, str]:
    return {k: v for k, v in inst.env.items() if k not in _HOST_ONLY_ENV and k != MPS_THREADS_ENV}


def _thread_percentage(inst: PlannedInstance) -> int | None:
    value = inst.env.get(MPS_THREADS_ENV)
    return int(value) if value is not None else None


def _gpu_of(plan: Plan, index: int) -> PlannedGpu:
    return next(g for g in plan.gpus if g.index == index)


def _kv_and_budget(inst: PlannedInstance) -> tuple[int, Budget]:
    assert inst.estimate is not None  # _exportable checked
    kv = (
        inst.kv_cache_memory_bytes if inst.kv_cache_memory_bytes is not None else inst.estimate.kv_cache_bytes
    )
    return kv, inst.estimate.budget


def _kv_flag(inst: PlannedInstance, kv: int) -> int | None:
    """The pod's --kv-cache-memory-bytes: the plan's KV size, none for an encoder-only pooling
    model, which keeps no KV cache (the plan passes none either: planning/build.py)."""
    assert inst.estimate is not None
    return kv if inst.estimate.has_kv_cache else None


def _measured_note(plan: Plan) -> list[str]:
    measured = [
        i.name
        for i in plan.instances
        if not i.kv_fixed and i.estimate is not None and i.estimate.has_kv_cache
    ]
    if not measured:
        return []
    return [
        f"kv_sizing measured ({', '.join(measured)}): each pod passes the KV size the plan predicts as "
        "--kv-cache-memory-bytes, so pods may start in any order"
    ]


# --- gpu-pod -------------------------------------------------------------------------------------


def _gpu_pods(plan: Plan, version: str) -> ModePlan:
    pods = [_gpu_pod(plan, group) for group in start_groups(plan.instances)]
    return ModePlan("gpu-pod", tuple(pods), version, notes=tuple(_gpu_pod_notes(plan, pods)))


def _gpu_pod(plan: Plan, group: Sequence[PlannedInstance]) -> PodPlan:
    """One start group on its whole GPUs, running gpushare on the group's sub-plan."""
    indices = tuple(sorted({g for inst in group for g in inst.gpus}))
    names = {_gpu_of(plan, g).name for g in indices}
    if len(names) != 1:
        raise DoesNotFitError(
            f"gpu-pod: {', '.join(i.name for i in group)} share GPUs of {len(names)} models "
            f"({', '.join(sorted(names))}); a pod's GPUs come from one node, selected by one product",
            hint="pin the group to GPUs of one model, or use --mode hami",
        )
    sub = plan.subset([inst.name for inst in group])
    sub = replace(sub, instances=tuple(replace(i, argv=pod_command(i)) for i in sub.instances))
    steps = 1 if starts_together(group) else len(group)
    (name,) = names
    return PodPlan(
        key="gpu" + "-".join(str(g) for g in indices),
        instances=tuple(group),
        gpu=WholeGpus(len(indices)),
        gpu_name=name,
        gpus=indices,
        sub_plan=sub,
        sequential_starts=steps,
        summary=_gpu_pod_summary(plan, indices, group, name),
    )


def _gpu_pod_notes(plan: Plan, pods: Sequence[PodPlan]) -> list[str]:
    if plan.mps != "off" and any(p.sub_plan is not None and len(p.instances) > 1 for p in pods):
        return [
            "MPS: each pod with several instances starts its own MPS daemon (nvidia-cuda-mps-control "
            "from the NVIDIA container toolkit's utilities); without it they time-share the GPU"
        ]
    return []


def _gpu_pod_summary(
    plan: Plan, indices: tuple[int, ...], group: Sequence[PlannedInstance], name: str
) -> str:
    first = _gpu_of(plan, indices[0])
    members = ", ".join(f"{i.name} {format_bytes(i.planned_bytes)}" for i in group)
    pod = "gpu" + "-".join(str(g) for g in indices)
    used = f"{format_bytes(first.planned_bytes)} of {format_bytes(first.usable_bytes)} usable per GPU"
    return (
        f"pod {pod} (nvidia.com/gpu {len(indices)}, {gpu_product_label(name)}): {members}; {used}, "
        "the plan's own commands"
    )


# --- mig -----------------------------------------------------------------------------------------


def _mig_pods(plan: Plan, version: str) -> ModePlan:
    if not any(i.mig_slice is not None for i in plan.instances):
        raise DoesNotFitError(
            f"mig: the plan for {plan.profile_name!r} puts no instance on a MIG slice "
            "(it runs on whole GPUs)",
            hint="plan it on slices: --mig auto, or mig: on the profile's GPU (gpushare plan shows them); "
            "or use --mode gpu-pod",
        )
    pods: list[PodPlan] = []
    for group in start_groups(plan.instances):
        # a slice's GPU holds only slices, so a group is all on slices or all on whole GPUs
        if all(i.mig_slice is None for i in group):
            pods.append(_gpu_pod(plan, group))
        else:
            pods += [_slice_pod(plan, inst) for inst in group]
    notes = [
        "mig: each slice pod asks for one nvidia.com/mig-<profile> and selects nodes whose GPU model "
        "has it (nvidia.com/mig-<profile>.product); the device plugin may hand it any slice of that "
        "profile there, and each holds the memory planned (slices of one profile are the same size)",
        "mig: the mig-parted config names GPU indices as the plan does; a node labelled with it gets "
        "that geometry on those GPUs",
        "mig: each slice command passes --kv-cache-memory-bytes and its batching limits, since vLLM has "
        "read the parent GPU's memory through NVML on a slice (vLLM #41776, #50463); the container sees "
        "its slice as device 0 (the device plugin sets NVIDIA_VISIBLE_DEVICES), so no CUDA_VISIBLE_DEVICES",
    ]
    notes += _gpu_pod_notes(plan, pods)
    return ModePlan("mig", tuple(pods), version, notes=tuple(notes), mig=_mig_config(plan))


def _slice_pod(plan: Plan, inst: PlannedInstance) -> PodPlan:
    """One instance alone on its slice, running the plan's slice command."""
    s = inst.mig_slice
    assert s is not None
    gpu = _gpu_of(plan, inst.gpus[0])
    where = f"GPU {gpu.index}'s MIG slice {s.label}"
    if len(inst.gpus) > 1:
        raise DoesNotFitError(
            f"mig: {inst.name} is tensor parallel over {len(inst.gpus)} GPUs on {where}: slices cannot be "
            "joined (no NCCL across MIG slices)",
            hint="plan it on whole GPUs (mig: off on its GPUs) or lower tensor_parallel_size to 1",
        )
    planned = next((x for x in gpu.mig_slices if inst.name in x.instances), s)
    if len(planned.instances) > 1:
        raise DoesNotFitError(
            f"mig: {where} holds {', '.join(planned.instances)}; mig mode runs one instance per slice "
            "(a pod asks for a whole slice)",
            hint="use --mode gpu-pod, or a geometry with one instance per slice",
        )
    resource = MigDevice(s.profile)
    _, product = mig_product_label(gpu.name, s.profile)
    return PodPlan(
        key=inst.name,
        instances=(inst,),
        gpu=resource,
        gpu_name=gpu.name,
        gpus=inst.gpus,
        # The plan's command as it stands: KV size and batching limits fixed, the utilization a
        # fraction of the slice (what the container sees as its device 0).
        vllm_argv=pod_command(inst),
        env=_pod_env(inst),
        utilization=inst.gpu_memory_utilization,
        device_total_bytes=s.memory_bytes,
        summary=(
            f"{inst.name}: {mig_resource(s.profile)} 1 ({product}, {format_bytes(s.memory_bytes)}; "
            f"planned {format_bytes(inst.planned_bytes)}), the plan's slice command "
            f"(utilization {inst.gpu_memory_utilization:g} of the slice)"
        ),
    )


def _mig_config(plan: Plan) -> MigConfig:
    """The plan's mig-parted config; a plan onto existing MIG devices creates none (`mig_setup` is
    None), so one is written from its slices: per GPU the count of each profile, MIG off on the
    MIG-capable GPUs that run whole (as planning/mig.py `setup` writes them)."""
    if plan.mig_setup is not None:
        return MigConfig(plan.mig_setup.config_name, dict(plan.mig_setup.mig_parted))
    counts: dict[int, dict[str, int] | None] = {}
    for gpu in plan.gpus:
        table = find_mig_table(gpu.name)
        if table is None:
            continue  # no MIG: mig-parted leaves it alone
        counts[gpu.index] = profile_counts(table.profile(s.profile) for s in gpu.mig_slices) or None
    name = config_name(plan.profile_name)
    return MigConfig(name, mig_parted_counts(name, counts), from_devices=True)


# --- hami ----------------------------------------------------------------------------------------


def _hami_pods(plan: Plan, version: str) -> ModePlan:
    pods = []
    notes = _measured_note(plan)
    for inst in plan.instances:
        kv, budget = _kv_and_budget(inst)
        limit = budget.device_total_for(kv, inst.planned_bytes, MiB)
        gpu = _gpu_of(plan, inst.gpus[0])
        if limit > gpu.cuda_total_bytes:
            raise DoesNotFitError(
                f"hami: {inst.name} needs a gpumem limit of {limit // MiB} MiB to start, more than the "
                f"{format_bytes(gpu.cuda_total_bytes)} CUDA sees on an {gpu.name}",
                hint="use --mode gpu-pod (keeps each instance's own memory on whole GPUs)",
            )
        util = budget.utilization_for(kv, limit)
        share = HamiShare(memory_bytes=limit, count=len(inst.gpus), cores_percent=_thread_percentage(inst))
        pods.append(
            PodPlan(
                key=inst.name,
                instances=(inst,),
                gpu=share,
                gpu_name=gpu.name,
                gpus=inst.gpus,
                vllm_argv=pod_command(
                    inst, gpu_memory_utilization=util, kv_cache_memory_bytes=_kv_flag(inst, kv)
                ),
                env=_pod_env(inst),
                utilization=util,
                device_total_bytes=limit,
                pod_annotations={HAMI_GPU_TYPE_ANNOTATION: gpu.name},
                summary=(
                    f"{inst.name}: nvidia.com/gpu {len(inst.gpus)}, gpumem {share.memory_mib} MiB per GPU "
                    f"(planned {format_bytes(inst.planned_bytes)}), utilization {util:g} of that limit"
                    + (f", gpucores {share.cores_percent}" if share.cores_percent is not None else "")
                ),
            )
        )
    if any(len(inst.gpus) > 1 for inst in plan.instances):
        notes.append(
            "tensor parallel under HAMi: NCCL allocates with cuMemCreate, which HAMi-core counts in the "
            "version read (src/cuda/memory.c) but older releases did not (HAMi #1196, #1381; HAMi-core #79)"
        )
    notes.append(
        "HAMi clamps each container to its gpumem, but CUDA-graph capture has been seen to pass the clamp "
        "(HAMi #1522); an instance with enforce_eager has no graphs"
    )
    notes.append(
        "HAMi fills a GPU up to the memory its device plugin registers: the profile's reserve is not kept "
        "free by the scheduler (set HAMi's deviceMemoryScaling below 1 to keep room)"
    )
    return ModePlan("hami", tuple(pods), version, notes=tuple(notes))


# --- time-slicing / mps --------------------------------------------------------------------------


def _shared_pods(
    plan: Plan, mode: Mode, method: SharingMethod, version: str, replicas: int | None
) -> ModePlan:
    label = "time-slicing" if method == "timeSlicing" else "MPS"
    by_product: dict[str, list[PlannedInstance]] = {}
    for inst in plan.instances:
        by_product.setdefault(_gpu_of(plan, inst.gpus[0]).name, []).append(inst)
    pods: list[PodPlan] = []
    configs: list[SharingConfig] = []
    notes = _measured_note(plan)
    for name, members in sorted(by_product.items()):
        product = gpu_product_label(name)
        gpus = [g for g in plan.gpus if g.name == name]
        node = NodeGpus(
            product=product,
            total_bytes=min(g.total_bytes for g in gpus),
            usable_bytes=min(g.usable_bytes for g in gpus),
            count=len(gpus),
        )
        split = equal_split(
            method, [SharedInstance(i.name, i.planned_bytes, len(i.gpus)) for i in members], node, replicas
        )
        gpu = min(gpus, key=lambda g: g.cuda_total_bytes)
        for inst in members:
            kv, budget = _kv_and_budget(inst)
            util = budget.utilization_for(kv, gpu.cuda_total_bytes)
            _start_check(label, inst, members, split, budget, util, gpu)
            pods.append(
                PodPlan(
                    key=inst.name,
                    instances=(inst,),
                    gpu=SharedReplica(renamed=True),
                    gpu_name=name,
                    gpus=inst.gpus,
                    vllm_argv=pod_command(
                        inst, gpu_memory_utilization=util, kv_cache_memory_bytes=_kv_flag(inst, kv)
                    ),
                    env=_pod_env(inst),
                    utilization=util,
                    summary=(
                        f"{inst.name}: one of {split.replicas} {label} replicas of an {product} "
                        f"(planned {format_bytes(inst.planned_bytes)}"
                        + (
                            f", pinned limit {format_bytes(split.pinned_limit_bytes)}"
                            if split.pinned_limit_bytes
                            else ""
                        )
                        + f"), utilization {util:g}"
                    ),
                )
            )
            share = _thread_percentage(inst)
            if share is not None and share != split.thread_percentage:
                given = (
                    f"{split.thread_percentage}%" if split.thread_percentage else "all of the SMs, in turn"
                )
                notes.append(
                    f"{inst.name}: mps_thread_percentage {share} is not kept; the device plugin gives each "
                    f"replica {given}"
                )
        key = f"gpushare-{plan.profile_name}-{product}".lower()
        config = device_plugin_config(method, split.replicas, rename_by_default=True)
        configs.append(SharingConfig(key, product, split, config, node.usable_bytes))
    notes.append(
        f"{label}: the scheduler may put any {', '.join(str(c.split.replicas) for c in configs)} pods asking "
        "for nvidia.com/gpu.shared on one GPU, this profile's or another's: keep the labelled nodes for "
        "this profile (a taint its pods tolerate), since the check above counts only its own instances"
    )
    if method == "timeSlicing":
        notes.append(
            "time-slicing isolates no memory: an instance above its plan takes it from the others on its GPU"
        )
    else:
        notes.append(
            "device-plugin MPS is marked experimental by NVIDIA, and vLLM has failed under it "
            "(vllm-project/production-stack #504); gpu-pod mode runs gpushare's own MPS daemon instead"
        )
    return ModePlan(mode, tuple(pods), version, tuple(configs), tuple(notes))


def _start_check(
    label: str,
    inst: PlannedInstance,
    members: Sequence[PlannedInstance],
    split: EqualSplit,
    budget: Budget,
    util: float,
    gpu: PlannedGpu,
) -> None:
    """vLLM's start check in the worst case the equal split allows (memory/budget.py)."""
    if split.pinned_limit_bytes is not None:
        # An MPS client sees the pinned limit as its free memory, whatever the others hold.
        free, beside = split.pinned_limit_bytes, "inside its pinned limit"
    else:
        others = sorted((m for m in members if m.name != inst.name), key=lambda m: -m.planned_bytes)
        neighbours = others[: split.replicas - 1]
        free = gpu.cuda_total_bytes - gpu.other_processes_bytes - sum(m.planned_bytes for m in neighbours)
        beside = "next to " + (", ".join(m.name for m in neighbours) or "nothing")
    deficit = budget.start_deficit_bytes(util, gpu.cuda_total_bytes, free)
    if deficit > 0:
        raise DoesNotFitError(
            f"{label} with {split.replicas} replicas: {inst.name} could not start {beside} on an "
            f"{gpu.name}: vLLM's start check (free ≥ utilization {util:g} × "
            f"{format_bytes(gpu.cuda_total_bytes)}) misses by {format_bytes(deficit)}",
            hint=ALTERNATIVES,
        )
