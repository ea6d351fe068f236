"""Profile + GPUs → Plan: what each instance needs, where it goes, and its exact vLLM command.

`build_plan` is the one entry point. Pure: the GPUs and the model facts come in as values (an
inventory object is only asked for its list). The steps:

1. Each model's need per GPU is the memory model's inverse (planning/needs.py) with a fixed KV
   cache: the process footprint NVML will show = context + weights + activation + non-torch + KV
   for the capacity target + CUDA graphs.
2. Each GPU is a bin of `cuda_total × (1 − reserve) − memory held by processes not ours`.
3. `placement.solve` places the instances (MILP up to 64, first/worst-fit decreasing beyond, with
   the LP bound in the notes); `placement.share_leftover` gives each instance a share of what is
   left on its GPU(s), in proportion to its need, so no memory is idle by accident.
4. Per instance: the KV size (target + share, whole blocks) and the least
   `gpu_memory_utilization` whose budget covers weights + activation + non-torch + KV
   (memory/budget.py), checked against vLLM's start-up test (`free ≥ utilization × total`,
   v1/worker/utils.py::request_memory) given the instances started before it on that GPU (start
   order: planning/start.py) — and, with a fixed KV size, given all of them, so they can start
   together.
5. Models that do not fit get the GPU they came closest to, the bytes they are short by there,
   and changes that would make them fit (planning/suggest.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gpushare.devices.base import Gpu, GpuInventory
from gpushare.estimate_job import ModelFacts
from gpushare.memory import Estimate, GpuTarget, estimate
from gpushare.memory.settings import with_batching_defaults
from gpushare.placement import MILP_MAX_ITEMS, Bin, Item, Placement, Strategy, share_leftover, solve
from gpushare.planning.commands import instance_command, instance_env
from gpushare.planning.cpu import cpu_plan
from gpushare.planning.needs import CalibrationLookup, Entry, Needs, resolve_entries
from gpushare.planning.plan import Plan, PlannedGpu, PlannedInstance, Problem
from gpushare.planning.start import start_order
from gpushare.planning.suggest import explain_unplaced
from gpushare.profile import ModelLoader, Profile, check_profile_models
from gpushare.units import format_bytes

__all__ = ["Strategy", "build_plan", "plan_loader"]


@dataclass(frozen=True)
class Slot:
    """An instance's numbers on one of its GPUs."""

    gpu: int
    target: GpuTarget
    estimate: Estimate
    context: int


def build_plan(
    profile: Profile,
    gpus: GpuInventory | Sequence[Gpu],
    strategy: Strategy | None = None,
    *,
    models: Mapping[str, ModelFacts] | None = None,
    load: ModelLoader | None = None,
    own_pids: Sequence[int] = (),
    time_limit_s: float = 2.0,
    calibration: CalibrationLookup | None = None,
) -> Plan:
    """Plan `profile` on `gpus`.

    `calibration`: measured terms for (model, GPU, settings) from `gpushare calibrate`, used
    instead of the fitted coefficients where one matches (the plan's notes say which).

    `gpus`: an inventory (asked once for its list) or the GPUs themselves; ignored for
    `device: cpu`. `models`: facts by model reference (otherwise each is resolved with `load`, and
    the profile's model-dependent settings are checked). `own_pids`: processes already ours, not
    counted against capacity. Raises ProfileValidationError for settings the memory model rejects
    (exit code 2); a model that does not fit is an `Unplaced` entry, not an exception.
    """
    facts = dict(models) if models is not None else check_profile_models(profile, load)
    chosen: Strategy = strategy or profile.defaults.strategy
    entries = resolve_entries(profile, facts)
    if profile.device == "cpu":
        return cpu_plan(profile, entries)
    listed = list(gpus) if isinstance(gpus, Sequence) else gpus.gpus()
    gpu_list = sorted(listed, key=lambda g: g.index)
    needs = Needs(profile, gpu_list, own_pids, calibration)
    return _Planner(profile, entries, needs, chosen, time_limit_s).run()


def plan_loader(cache: dict[str, ModelFacts] | None = None) -> Callable[[str], ModelFacts]:
    """`load_model` with a cache, for planning many profiles (benchmarks, tests)."""
    from gpushare.estimate_job import load_model

    store: dict[str, ModelFacts] = {} if cache is None else cache

    def load(reference: str) -> ModelFacts:
        if reference not in store:
            store[reference] = load_model(reference)
        return store[reference]

    return load


class _Planner:
    """One CUDA plan: place the entries' needs, size each instance's KV cache and utilization,
    order the starts, explain what does not fit."""

    def __init__(
        self, profile: Profile, models: list[Entry], needs: Needs, strategy: Strategy, time_limit_s: float
    ) -> None:
        self.profile = profile
        self.models = models
        self.needs = needs
        self.gpus = needs.gpus
        self.strategy = strategy
        self.reserve = needs.reserve
        self.fixed = needs.fixed
        self.time_limit_s = time_limit_s
        self.notes: list[str] = []
        self.calibrated: set[str] = set()

    def run(self) -> Plan:
        items = [self.needs.item(m) for m in self.models]
        bins = [Bin(g, self.needs.usable[g]) for g in sorted(self.gpus)]
        placement = solve(items, bins, self.strategy, time_limit_s=self.time_limit_s) if bins else None
        assignment = placement.assignment if placement is not None else {}
        shares = share_leftover(items, bins, assignment).extra_bytes if bins else {}
        by_name = {item.name: item for item in items}
        slots: dict[str, list[Slot]] = {}
        for m in self.models:
            if m.name in assignment:
                slots[m.name] = self.final_slots(m, assignment[m.name], by_name[m.name], shares[m.name])
        order = self.start_order(assignment, by_name)
        problems = self.enforce_start_checks(order, slots)
        instances = self.instances(order, slots)
        unplaced = [
            explain_unplaced(self.needs, m, by_name[m.name], items, bins, assignment)
            for m in self.models
            if m.name not in assignment
        ]
        self.placement_notes(placement, len(items))
        if self.calibrated:
            self.notes.append(f"calibrated (gpushare calibrate): {', '.join(sorted(self.calibrated))}")
        planned_gpus = self.planned_gpus(instances)
        sharing = any(len(g.instances) > 1 for g in planned_gpus)
        mps = self.profile.defaults.mps
        if mps == "auto":
            mps = "auto" if sharing else "off"
        return Plan(
            profile_name=self.profile.display_name,
            feasible=not unplaced and not problems and bool(bins),
            gpus=tuple(planned_gpus),
            instances=tuple(instances),
            unplaced=tuple(unplaced),
            mps=mps,
            notes=tuple(self.notes),
            strategy=self.strategy,
            method=placement.method if placement is not None else "none",
            optimal=placement.optimal if placement is not None else False,
            lp_bound=placement.bound if placement is not None else None,
            overcommitted=tuple(problems),
        )

    def final_slots(self, m: Entry, gpus: tuple[int, ...], item: Item, extra: int) -> list[Slot]:
        """KV = target + (what it booked beyond its need on this GPU) + its share, whole blocks."""
        base = [self.needs.need_estimate(m, g) for g in gpus]
        spare = min(item.need_bytes + extra - self.needs.need(m, g) for g in gpus)
        block = base[0].kv_block_bytes
        if block == 0:  # encoder-only: no KV cache to grow
            return [self.slot(m, g, 0) for g in gpus]
        kv = base[0].kv_cache_bytes + max(spare, 0) // block * block
        return [self.slot(m, g, kv) for g in gpus]

    def slot(self, m: Entry, gpu: int, kv: int, util: float | None = None) -> Slot:
        """The forward estimate on the real GPU with KV bytes `kv` (fixed) or the utilization that
        gives them (measured)."""
        need = self.needs.need_estimate(m, gpu)
        target = self.needs.targets[gpu]
        if util is None:
            util = need.budget.utilization_for(kv, target.cuda_total_bytes)
        settings = with_batching_defaults(m.settings, target, m.facts.arch)
        e = estimate(
            m.facts.arch,
            target,
            settings,
            gpu_memory_utilization=util,
            kv_cache_memory_bytes=kv if self.fixed else None,
            weights_bytes=m.facts.weights_bytes(settings),
            measured=self.needs.measured(m.facts, target, m.settings),
        )
        if e.weights_source == "calibration":
            self.calibrated.add(m.name)
        for note in e.notes:
            if f"{m.name}: {note}" not in self.notes:
                self.notes.append(f"{m.name}: {note}")
        return Slot(gpu, target, e, need.budget.context_bytes)

    def start_order(
        self, assignment: Mapping[str, tuple[int, ...]], items: Mapping[str, Item]
    ) -> list[tuple[Entry, int, int]]:
        """(entry, start group, start order) for placed entries (planning/start.py). In a group:
        higher priority first, then tensor-parallel ones, then larger needs."""
        placed = [m for m in self.models if m.name in assignment]
        return start_order(
            placed,
            lambda m: assignment[m.name],
            lambda m: (-m.entry.priority, -m.entry.tensor_parallel_size, -items[m.name].need_bytes, m.index),
        )

    def enforce_start_checks(
        self, order: list[tuple[Entry, int, int]], slots: dict[str, list[Slot]]
    ) -> list[Problem]:
        """Make every instance pass vLLM's start check: ceil(util × total) ≤ free memory, where free
        = total − other processes − instances already up − its own CUDA context. Measured sizing:
        those started before it; fixed: all the others on its GPU (so any start order works).
        Where it fails, the KV share is trimmed block by block (never below the target)."""
        problems: list[Problem] = []
        planned: dict[str, dict[int, int]] = {
            name: {s.gpu: s.estimate.process_bytes for s in ss} for name, ss in slots.items()
        }
        before: dict[int, list[str]] = {g: [] for g in self.gpus}
        ordered = sorted(order, key=lambda t: (t[1], t[2]))
        for m, _group, _pos in ordered:
            ss = slots[m.name]
            target_kv = self.needs.need_estimate(m, ss[0].gpu).kv_cache_bytes
            for _ in range(64):
                deficit = max(self.start_deficit(m.name, s, planned, before) for s in ss)
                kv = ss[0].estimate.kv_cache_bytes
                if deficit <= 0 or kv <= target_kv:
                    break
                block = ss[0].estimate.kv_block_bytes
                kv = max(target_kv, kv - max(1, math.ceil(deficit / block)) * block)
                ss = [self.slot(m, s.gpu, kv) for s in ss]
            slots[m.name] = ss
            planned[m.name] = {s.gpu: s.estimate.process_bytes for s in ss}
            for s in ss:
                deficit = self.start_deficit(m.name, s, planned, before)
                if deficit > 0:
                    problems.append(
                        Problem(
                            f"vLLM's start check would fail (requests "
                            f"{format_bytes(s.estimate.requested_bytes)}, short by {format_bytes(deficit)})",
                            instance=m.name,
                            gpu=s.gpu,
                            hint="raise defaults.reserve or lower a target",
                        )
                    )
                before[s.gpu].append(m.name)
        for g in self.gpus:
            total = sum(p.get(g, 0) for p in planned.values())
            if total > self.needs.usable[g]:
                problems.append(
                    Problem(
                        f"planned {format_bytes(total)} is more than its usable "
                        f"{format_bytes(max(self.needs.usable[g], 0))}",
                        gpu=g,
                    )
                )
        return problems

    def start_deficit(
        self, name: str, s: Slot, planned: Mapping[str, Mapping[int, int]], before: Mapping[int, list[str]]
    ) -> int:
        # Fixed KV: any start order, so every other instance may already be up.
        up = [n for n, p in planned.items() if n != name and s.gpu in p] if self.fixed else before[s.gpu]
        free = (
            s.target.cuda_total_bytes
            - self.needs.others[s.gpu]
            - sum(planned[n][s.gpu] for n in up)
            - s.context
        )
        return s.estimate.requested_bytes - free

    def instances(
        self, order: list[tuple[Entry, int, int]], slots: Mapping[str, list[Slot]]
    ) -> list[PlannedInstance]:
        out = []
        for m, group, position in sorted(order, key=lambda t: t[0].index):
            ss = slots[m.name]
            util = max(s.estimate.gpu_memory_utilization for s in ss)
            if any(s.estimate.gpu_memory_utilization != util for s in ss):
                # Tensor parallel over different GPUs: one utilization for all ranks.
                ss = [self.slot(m, s.gpu, ss[0].estimate.kv_cache_bytes, util) for s in ss]
            first = ss[0].estimate
            kv = first.kv_cache_bytes if self.fixed and first.has_kv_cache else None
            gpus = tuple(s.gpu for s in ss)
            out.append(
                PlannedInstance(
                    name=m.name,
                    model=m.entry.model,
                    gpus=gpus,
                    port=m.port,
                    start_order=position,
                    gpu_memory_utilization=util,
                    kv_cache_memory_bytes=kv,
                    planned_bytes=max(s.estimate.process_bytes for s in ss),
                    argv=instance_command(self.profile, m, util, kv).to_argv(),
                    env=instance_env(m, gpus),
                    kv_fixed=self.fixed,
                    estimate=first,
                    aliases=tuple(m.entry.aliases),
                    priority=m.entry.priority,
                    start_group=group,
                    kv_target_bytes=self.needs.need_estimate(m, gpus[0]).kv_cache_bytes,
                    target=m.target_text,
                )
            )
        return out

    def planned_gpus(self, instances: Sequence[PlannedInstance]) -> list[PlannedGpu]:
        out = []
        for index in sorted(self.gpus):
            gpu = self.gpus[index]
            here = sorted((i for i in instances if index in i.gpus), key=lambda i: (i.start_order, i.name))
            planned = sum(i.planned_bytes for i in here)
            cuda_total = gpu.cuda_total_bytes
            reserve = cuda_total - math.floor(cuda_total * (1 - self.reserve))
            out.append(
                PlannedGpu(
                    index=index,
                    name=gpu.name,
                    total_bytes=gpu.total_bytes,
                    reserved_bytes=reserve,
                    free_bytes=cuda_total - self.needs.others[index] - planned,
                    instances=tuple(i.name for i in here),
                    cuda_total_bytes=cuda_total,
                    driver_reserved_bytes=gpu.reserved_bytes,
                    other_processes_bytes=self.needs.others[index],
                    usable_bytes=self.needs.usable[index],
                    planned_bytes=planned,
                )
            )
        return out

    def placement_notes(self, placement: Placement | None, count: int) -> None:
        if placement is None:
            self.notes.append("no GPUs: describe them in the profile (gpus:) or with --gpus")
            return
        if placement.method == "heuristic" and count > MILP_MAX_ITEMS:
            kind = "first-fit decreasing" if self.strategy == "pack" else "worst-fit decreasing"
            bound = placement.bound
            if bound is None:
                bound_text = "LP bound unavailable"
            elif self.strategy == "pack":
                bound_text = (
                    f"LP bound: at least {bound:.0f} GPU(s); this plan uses {placement.objective:.0f}"
                )
            else:
                bound_text = (
                    f"LP bound: tightest headroom ≤ {bound:.1%}; this plan has {placement.objective:.1%}"
                )
            self.notes.append(f"{count} instances (> {MILP_MAX_ITEMS}): placed by {kind}; {bound_text}")
        elif not placement.optimal:
            self.notes.append(
                f"solver stopped at its {self.time_limit_s:g} s limit: the placement is feasible but "
                "not proven optimal"
            )
        if not self.fixed:
            self.notes.append("kv_sizing measured: vLLM sizes each KV cache; instances start one at a time")
