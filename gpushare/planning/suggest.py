"""What would make a model that does not fit fit: its closest GPU(s), how many bytes it is short
by, and single changes (shorter context, fp8 KV, fewer requests, a quantized variant, more GPUs,
a larger GPU), each checked with the memory model. A chain of candidates, each returning a line
or None.

Pure apart from reading the bundled catalog's configs (quantized variants).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from gpushare.catalog.gpus import GPU_MODELS, GpuModel
from gpushare.errors import GpushareError
from gpushare.estimate_job import ModelFacts, gpu_target
from gpushare.memory import Estimate, GpuTarget, ServeSettings
from gpushare.placement import Bin, Item, best_gpu_for
from gpushare.planning.needs import Entry, Needs
from gpushare.planning.plan import Unplaced
from gpushare.units import format_bytes

# The shortest context a "lower max_model_len" suggestion offers.
_MIN_SUGGESTED_LEN = 256
# The most GPUs a tensor-parallel suggestion offers (one host's NVLink domain).
MAX_SUGGESTED_TP = 8


# ---------------------------------------------------------------------------------------------
# Candidates: the one list of each kind of change, shared by a plan's suggestions and the
# estimate's hints


def tp_candidates(facts: ModelFacts, tp: int, limit: int = MAX_SUGGESTED_TP) -> list[int]:
    """Larger tensor-parallel sizes to try: doublings of `tp` up to `limit` that split the
    attention heads evenly (vLLM refuses the others)."""
    heads = facts.arch.num_attention_heads
    out, size = [], tp * 2
    while size <= limit:
        if heads % size == 0:
            out.append(size)
        size *= 2
    return out


def larger_catalog_gpus(cuda_total_bytes: int) -> list[GpuModel]:
    """Catalog GPUs with more memory than `cuda_total_bytes`, smallest first."""
    ordered = sorted(GPU_MODELS, key=lambda g: (g.cuda_total_bytes, g.key))
    return [g for g in ordered if g.cuda_total_bytes > cuda_total_bytes]


def no_room_hints(
    facts: ModelFacts,
    gpu: GpuTarget,
    settings: ServeSettings,
    fits: Callable[[ModelFacts, GpuTarget, ServeSettings], Estimate | None],
) -> list[str]:
    """What would hold a model that leaves no room for one request's KV cache on `gpu`, each
    checked with the memory model through `fits` (an estimate with the same sizing, or None):
    the fewest GPUs with --tp N, a quantized catalog variant, fp8 weights, the smallest larger
    catalog GPU."""
    hints: list[str] = []
    for tp in tp_candidates(facts, settings.tensor_parallel_size):
        e = fits(facts, gpu, replace(settings, tensor_parallel_size=tp))
        if e is not None:
            hints.append(f"--tp {tp}: {tp} of these GPUs hold it ({_capacity(e)})")
            break
    if facts.arch.quantization is None and settings.quantization is None:
        for reference, variant in quantized_variants(facts.resolved.reference):
            e = fits(variant, gpu, replace(settings, dtype="auto"))
            if e is not None:
                hints.append(f"{reference} (quantized, in the catalog) fits ({_capacity(e)})")
                break
        else:
            e = fits(facts, gpu, replace(settings, quantization="fp8"))
            if e is not None:
                hints.append(f"--quantization fp8 fits ({_capacity(e)})")
    for model in larger_catalog_gpus(gpu.cuda_total_bytes):
        e = fits(facts, gpu_target(model.as_gpu(0)), settings)
        if e is not None:
            hints.append(f"an {model.nvml_name} ({model.key}) holds it ({_capacity(e)})")
            break
    return hints


def _capacity(e: Estimate) -> str:
    if not e.has_kv_cache:
        return f"{format_bytes(e.process_bytes)}"
    per_gpu = " per GPU" if e.tensor_parallel_size > 1 else ""
    return f"{e.kv_cache_tokens:,} KV tokens, {format_bytes(e.process_bytes)}{per_gpu}"


def explain_unplaced(
    needs: Needs,
    m: Entry,
    item: Item,
    items: Sequence[Item],
    bins: Sequence[Bin],
    assignment: Mapping[str, tuple[int, ...]],
) -> Unplaced:
    """Why `m` is left out: the GPU(s) it came closest to, the bytes it is short by there, and
    single changes that make it fit (each checked with the memory model)."""
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
    need = max(needs.need(m, g) for g in gpus)
    loads: dict[int, int] = {}
    for other in items:
        for g in assignment.get(other.name, ()):
            loads[g] = loads.get(g, 0) + other.need_bytes
    available = min(needs.usable[g] - loads.get(g, 0) for g in gpus)
    short = max(need - available, closest.short_by_bytes, 1)
    where = ", ".join(f"GPU {g} ({needs.gpus[g].name})" for g in gpus)
    usable = max(min(needs.usable[g] for g in gpus), 0)
    per_gpu = " per GPU" if tp > 1 else ""
    reason = (
        f"needs {format_bytes(need)}{per_gpu} for {m.target_text}; {where} has "
        f"{format_bytes(max(available, 0))} left of {format_bytes(usable)} "
        f"usable; short by {format_bytes(short)}"
    )
    suggester = Suggester(needs, m, gpus, available)
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
                f"alone on {where_alone}: {text}" for text in Suggester(needs, m, alone, room).changes()
            ]
        larger = suggester.other_gpu()
        if larger:
            suggestions.append(larger)
    if not suggestions:
        suggestions.append("no single change makes it fit; combine lower targets with a larger GPU")
    return Unplaced(m.name, reason, short, tuple(suggestions), gpus, need)


class Suggester:
    """Changes that would make `m` fit in `available` bytes on `gpus`, each checked with the model."""

    def __init__(self, needs: Needs, m: Entry, gpus: tuple[int, ...], available: int) -> None:
        self.p = needs
        self.m = m
        self.gpus = gpus
        self.available = available
        self.target = needs.targets[gpus[0]]

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

    def changes(self, more_gpus: bool = True) -> list[str]:
        """Single changes to the model's settings that make it fit (`more_gpus`: tensor
        parallelism among them; not on a MIG slice)."""
        out: list[str] = []
        for suggest in (
            self.shorter_context,
            self.fp8_kv,
            self.fewer_requests,
            self.quantized,
            *((self.more_gpus,) if more_gpus else ()),
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
        whole = {g: u for g, u in self.p.usable.items() if g not in self.p.slices}
        for tp in tp_candidates(m.facts, m.entry.tensor_parallel_size, limit=len(whole)):
            need = self.need(replace(m.settings, tensor_parallel_size=tp))
            if need is None:
                continue
            largest = sorted(whole.values(), reverse=True)[:tp]
            if need <= min(largest):
                return (
                    f"tensor_parallel_size: {tp} needs {format_bytes(need)} on each of {tp} GPUs "
                    "(fits on empty GPUs of this machine)"
                )
        return None

    def other_gpu(self) -> str | None:
        """The smallest catalog GPU that holds it alone, with the profile's reserve."""
        m = self.m
        reserve = self.p.reserve
        current = max(self.p.gpus[g].cuda_total_bytes for g in self.gpus)
        for model in larger_catalog_gpus(current):
            gpu = model.as_gpu(0)
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
