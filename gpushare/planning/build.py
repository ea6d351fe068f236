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

MIG (planning/mig.py): where a GPU runs as MIG slices (its MIG devices, a pinned geometry, or one
the search chooses with `mig: auto`), each slice is a bin of its own under a private index; step 3
is then `mig.Search` (slices with `mig.fit`, whole GPUs with `placement.solve`), and the rest is
the same, with a fixed KV size, explicit batching limits and `CUDA_VISIBLE_DEVICES=MIG-<uuid>` on
every slice. A plan without MIG takes exactly the path above.

On-demand models (residency on-demand) are placed first, each GPU's as one room item, and
planned awake and asleep (planning/ondemand.py); a profile without them plans as before. They are
not planned onto MIG slices (sleep mode on a slice is not modelled): a MIG plan leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gpushare.devices.base import Gpu, GpuInventory
from gpushare.estimate_job import ModelFacts
from gpushare.memory import Estimate, GpuTarget, SleepFootprint, estimate, sleep_footprint
from gpushare.memory.parallel import unmodelled_parallel_env
from gpushare.memory.settings import with_batching_defaults
from gpushare.placement import MILP_MAX_ITEMS, Bin, Item, Placement, Strategy, share_leftover, solve
from gpushare.planning import mig as mig_plan
from gpushare.planning import ondemand
from gpushare.planning.commands import instance_command, instance_env, profile_env, slice_command, slice_env
from gpushare.planning.cpu import cpu_plan
from gpushare.planning.needs import CalibrationLookup, Entry, Needs, resolve_entries
from gpushare.planning.plan import (
    AwakeRoom,
    HostMemory,
    MigSetup,
    Plan,
    PlannedGpu,
    PlannedInstance,
    Problem,
    Unplaced,
)
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
    mig: mig_plan.MigOverride | None = None,
    mig_settings: Mapping[int, str] | None = None,
    host_memory_bytes: int | None = None,
) -> Plan:
    """Plan `profile` on `gpus`.

    `host_memory_bytes`: the host RAM the sleeping on-demand instances may take, as the host
    reports it (the CLI asks psutil); the profile's host_memory wins. Unused without on-demand
    models.

    `mig` (`--mig auto|off`) overrides every GPU's MIG setting; `mig_settings` are those settings
    by GPU index (default: the profile's `gpus[i].mig`; `{}` when the GPUs are not the profile's).

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
    settings = profile.gpu_mig_settings() if mig_settings is None else mig_settings
    layout = mig_plan.layout(gpu_list, settings, mig)
    notes: list[str] = []
    if profile.has_on_demand and _only_auto(layout):
        # on-demand instances are not planned on slices: a geometry to choose stays unchosen
        layout = mig_plan.layout(gpu_list, settings, "off")
        notes.append(
            "mig: auto not applied: the profile has on-demand models, which are not planned on MIG "
            "slices (sleep mode on a slice is not modelled); every GPU runs whole"
        )
    if layout.plain:
        needs = Needs(profile, gpu_list, own_pids, calibration)
        planner = _Planner(profile, entries, needs, chosen, time_limit_s, host_memory_bytes=host_memory_bytes)
        planner.notes += notes
        return planner.run()
    gpus_and_slices = [*gpu_list, *layout.slice_gpus()]
    needs = Needs(profile, gpus_and_slices, own_pids, calibration, layout.slice_targets())
    return _Planner(profile, entries, needs, chosen, time_limit_s, layout).run_mig()


def _only_auto(layout: mig_plan.MigLayout) -> bool:
    """MIG only where gpushare would choose a geometry (`mig: auto`), nothing MIG already or pinned."""
    modes = {g.mode for g in layout.gpus.values()}
    return "auto" in modes and modes <= {"auto", "whole"} and not layout.notes


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
        self,
        profile: Profile,
        models: list[Entry],
        needs: Needs,
        strategy: Strategy,
        time_limit_s: float,
        layout: mig_plan.MigLayout | None = None,
        host_memory_bytes: int | None = None,
    ) -> None:
        self.layout = layout
        self.spots = layout.spots if layout is not None else {}
        self.spot_of: dict[str, int] = {}
        """The slice (private index) of each instance on one."""
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
        self.host_memory_bytes = host_memory_bytes
        self.on_demand = ondemand.Layout()
        """Where the on-demand instances go (planning/ondemand.py); empty without them."""
        self.asleep: dict[str, SleepFootprint] = {}  # the on-demand instances asleep

    def run(self) -> Plan:
        residents = [m for m in self.models if m.entry.residency == "always"]
        sleepers = [m for m in self.models if m.entry.residency == "on-demand"]
        items = [self.needs.item(m) for m in residents]
        bins = [Bin(g, self.needs.usable[g]) for g in sorted(self.gpus)]
        if sleepers and bins:
            self.on_demand = ondemand.assign(self.profile, self.needs, sleepers)
        rooms = self.on_demand.rooms(self.profile)
        placed_items = items + rooms
        placement = solve(placed_items, bins, self.strategy, time_limit_s=self.time_limit_s) if bins else None
        assignment = dict(placement.assignment) if placement is not None else {}
        self.drop_unplaced_rooms(rooms, placed_items, assignment)
        for room in rooms:
            assignment.pop(room.name, None)
        by_name = {item.name: item for item in items}
        for g, here in self.on_demand.by_gpu.items():
            for sleeper in here:
                assignment[sleeper.name] = (g,)
                by_name[sleeper.name] = Item(sleeper.name, sleeper.need_bytes, pin=(g,))
        shares = self.shares(items, bins, assignment)
        slots: dict[str, list[Slot]] = {}
        for m in self.models:
            if m.name not in assignment:
                continue
            if m.entry.residency == "on-demand":
                (g,) = assignment[m.name]
                slots[m.name] = [self.slot(m, g, self.needs.need_estimate(m, g).kv_cache_bytes)]
            else:
                slots[m.name] = self.final_slots(m, assignment[m.name], by_name[m.name], shares[m.name])
        order = self.start_order(assignment, by_name)
        problems = self.enforce_start_checks(order, slots)
        instances = self.instances(order, slots)
        entries = {m.name: m for m in self.models}
        placed = placement.assignment if placement is not None else {}
        unplaced = [
            explain_unplaced(self.needs, m, by_name[m.name], placed_items, bins, placed)
            for m in residents
            if m.name not in assignment
        ]
        unplaced += ondemand.unplaced_entries(self.needs, self.on_demand, entries)
        for m in sleepers:
            if m.name not in assignment and m.name not in self.on_demand.left_out:
                unplaced.append(Unplaced(m.name, "no GPUs to place it on", 0, ()))
        host = self.host_memory(instances, problems) if sleepers else None
        self.placement_notes(placement, len(placed_items))
        if sleepers and self.profile.defaults.mps != "off":
            self.notes.append(
                "on-demand: sleep mode under CUDA MPS is not measured; defaults.mps: off keeps to "
                "the measured set-up"
            )
        if self.calibrated:
            self.notes.append(f"calibrated (gpushare calibrate): {', '.join(sorted(self.calibrated))}")
        planned_gpus = self.planned_gpus(instances)
        mps = self.mps_mode(planned_gpus)
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
            host=host,
        )

    def run_mig(self) -> Plan:
        """The plan where some GPU runs as MIG slices (module docstring). On-demand models are
        left out of it, each with the reason (sleep mode on MIG is not modelled)."""
        assert self.layout is not None
        sleepers = [m for m in self.models if m.entry.residency == "on-demand"]
        self.models = [m for m in self.models if m.entry.residency == "always"]
        search = mig_plan.Search(self.layout, self.needs, self.models, self.strategy, self.time_limit_s)
        choice = search.choose()
        assignment = choice.assignment
        placed = [choice.items[m.name] for m in self.models if m.name in assignment]
        used = {g for gpus in assignment.values() for g in gpus}
        bins = [Bin(g, self.needs.usable[g]) for g in sorted(set(choice.whole) | used)]
        shares = share_leftover(placed, bins, assignment).extra_bytes
        slots: dict[str, list[Slot]] = {}
        for m in self.models:
            if m.name in assignment:
                item = choice.items[m.name]
                slots[m.name] = self.final_slots(m, assignment[m.name], item, shares[m.name])
        order = self.start_order(assignment, choice.items)
        problems = self.enforce_start_checks(order, slots)
        instances = self.instances(order, slots)
        unplaced = [self.explain_mig(search, choice, m) for m in self.models if m.name not in assignment]
        unplaced += [
            Unplaced(
                m.name,
                "residency on-demand is not planned on MIG (sleep mode on a MIG slice is not modelled)",
                0,
                ("plan the profile with --mig off, or set residency: always",),
            )
            for m in sleepers
        ]
        self.notes[:0] = list(self.layout.notes)
        self.mig_notes(choice)
        if choice.whole_placement is not None:
            self.placement_notes(choice.whole_placement, len(choice.whole_items))
        elif not self.fixed:
            self.notes.append("kv_sizing measured: vLLM sizes each KV cache; instances start one at a time")
        if self.calibrated:
            self.notes.append(f"calibrated (gpushare calibrate): {', '.join(sorted(self.calibrated))}")
        planned_gpus = self.planned_gpus(instances, choice)
        mps = self.mps_mode(planned_gpus)
        setup: MigSetup | None = mig_plan.setup(
            self.layout, choice.geometries, choice.whole, self.profile.display_name
        )
        mig_result = choice.mig_placement
        whole_result = choice.whole_placement
        return Plan(
            profile_name=self.profile.display_name,
            feasible=not unplaced and not problems and bool(bins),
            gpus=tuple(planned_gpus),
            instances=tuple(instances),
            unplaced=tuple(unplaced),
            mps=mps,
            notes=tuple(self.notes),
            strategy=self.strategy,
            method="+".join(
                ([whole_result.method] if whole_result is not None else [])
                + (["mig"] if mig_result is not None else [])
            )
            or "none",
            optimal=(whole_result is None or whole_result.optimal)
            and (mig_result is None or mig_result.optimal),
            lp_bound=None,
            overcommitted=tuple(problems),
            mig_setup=setup,
        )

    def mps_mode(self, planned_gpus: Sequence[PlannedGpu]) -> str:
        """The profile's MPS setting, with `auto` kept only where some whole GPU is shared (a MIG
        GPU's slices are isolated: no MPS there)."""
        mps = self.profile.defaults.mps
        if mps != "auto":
            return mps
        sharing = any(len(g.instances) > 1 for g in planned_gpus if not g.mig)
        return "auto" if sharing else "off"

    def explain_mig(self, search: mig_plan.Search, choice: mig_plan.Choice, m: Entry) -> Unplaced:
        """A model left out of a MIG plan: explained on whole GPUs where it needs one (tensor
        parallel, larger than any slice) and some run whole, else on the slices."""
        if not choice.whole and not choice.mig_bins:
            assert self.layout is not None
            why = "; ".join(self.layout.notes) or "no GPUs to place it on"
            need = self.needs.need_estimate(m, next(iter(self.gpus))).process_bytes if self.gpus else 0
            return Unplaced(m.name, f"no GPU can take it: {why}", need, (), (), need)
        reasons = choice.mig_placement.reasons if choice.mig_placement is not None else {}
        reason = reasons.get(m.name, "")
        needs_whole = m.entry.tensor_parallel_size > 1 or "whole GPU" in reason or not choice.mig_bins
        if choice.whole and needs_whole:
            items = choice.whole_items or [self.needs.item(m, among=choice.whole)]
            item = next((it for it in items if it.name == m.name), None)
            if item is None:
                item = self.needs.item(m, among=choice.whole)
                items = [*items, item]
            whole_assignment = {n: g for n, g in choice.assignment.items() if g[0] < mig_plan.SLICE_BASE}
            bins = [Bin(g, self.needs.usable[g]) for g in choice.whole]
            return explain_unplaced(self.needs, m, item, items, bins, whole_assignment)
        return mig_plan.explain_on_slices(search, choice, m)

    def mig_notes(self, choice: mig_plan.Choice) -> None:
        assert self.layout is not None
        for index, g in sorted(self.layout.gpus.items()):
            if g.mode == "auto" and index in choice.whole:
                self.notes.append(
                    f"GPU {index} (mig: auto) runs whole: as slices it would place fewer models, use "
                    "more GPUs or leave compute slices idle"
                )
            elif g.mode == "auto" and index in choice.geometries:
                self.notes.append(f"GPU {index} (mig: auto): geometry {choice.geometries[index].label}")
        mig = choice.mig_placement
        if mig is not None and not mig.optimal:
            self.notes.append(
                f"MIG slices chosen by first-fit decreasing ({len(choice.mig_items)} models, "
                f"{len(choice.mig_bins)} MIG GPUs: beyond the exact search's size): not proven optimal"
            )
        on_slices = [n for n, g in choice.assignment.items() if g[0] >= mig_plan.SLICE_BASE]
        if on_slices:
            self.notes.append(
                "MIG slices: one instance each, KV size fixed (--kv-cache-memory-bytes) and batching "
                "limits written out, since vLLM has read the parent GPU's memory through NVML on a "
                "slice (vLLM #41776, #50463)"
            )
            self.notes.append(
                "MIG slices: the vLLM run must accept a MIG UUID in CUDA_VISIBLE_DEVICES: 0.20.1 "
                "stopped at start (vLLM #41848); 0.32's platforms map it through NVML; 0.26 was not "
                "checked on a MIG GPU"
            )
            if not self.fixed:
                self.notes.append("kv_sizing measured does not apply on MIG slices: their KV size is fixed")
        for m in self.models:
            if m.name in on_slices and m.entry.mps_thread_percentage is not None:
                self.notes.append(f"{m.name}: mps_thread_percentage ignored on a MIG slice (no MPS there)")

    def where(self, gpu: int) -> tuple[int, str]:
        """(the real GPU, a prefix naming the slice) of a planner index."""
        spot = self.spots.get(gpu)
        return (gpu, "") if spot is None else (spot.gpu, f"MIG slice {spot.label}: ")

    def drop_unplaced_rooms(
        self, rooms: Sequence[Item], placed: Sequence[Item], assignment: Mapping[str, tuple[int, ...]]
    ) -> None:
        """A GPU's on-demand room the solver could not place leaves its instances out."""
        need = {item.name: item.need_bytes for item in placed}
        for room in rooms:
            if room.name in assignment:
                continue
            assert room.pin is not None
            (g,) = room.pin
            taken = sum(need[n] for n, gpus in assignment.items() if g in gpus)
            left = self.needs.usable[g] - taken
            self.on_demand.drop(
                g,
                f"on-demand: the room of GPU {g} (every on-demand residue there and the largest "
                f"awake) needs {format_bytes(room.need_bytes)}; the residents placed there leave "
                f"{format_bytes(max(left, 0))} of {format_bytes(max(self.needs.usable[g], 0))} usable",
                left - (room.need_bytes - max(s.need_bytes for s in self.on_demand.by_gpu[g])),
            )

    def shares(
        self, items: Sequence[Item], bins: Sequence[Bin], assignment: Mapping[str, tuple[int, ...]]
    ) -> dict[str, int]:
        """Each resident's share of the leftover (on-demand GPUs: planning/ondemand.py, step 3)."""
        if not bins:
            return {}
        resident = {n: gpus for n, gpus in assignment.items() if self.on_demand.sleeper(n) is None}
        if not self.on_demand.by_gpu:
            return share_leftover(items, bins, resident).extra_bytes
        need = {item.name: item.need_bytes for item in items}
        resident_need: dict[int, int] = {}
        for n, gpus in resident.items():
            for g in gpus:
                resident_need[g] = resident_need.get(g, 0) + need[n]
        sharing = ondemand.sharing_bins(self.profile, self.on_demand, bins, resident_need)
        return share_leftover(items, sharing, resident).extra_bytes

    def host_memory(self, instances: Sequence[PlannedInstance], problems: list[Problem]) -> HostMemory:
        needed = sum(i.host_bytes for i in instances)
        host, found = ondemand.host_memory(self.profile, needed, self.host_memory_bytes)
        problems += found
        if host.available_bytes is None:
            self.notes.append(
                "host RAM not checked: the host did not report its memory; set host_memory in the profile"
            )
        return host

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
        fixed = self.fixed or gpu in self.spots  # a MIG slice always gets a fixed KV size
        e = estimate(
            m.facts.arch,
            target,
            settings,
            gpu_memory_utilization=util,
            kv_cache_memory_bytes=kv if fixed else None,
            weights_bytes=m.facts.weights_bytes(settings),
            measured=self.needs.measured(m.facts, target, m.settings),
        )
        if e.weights_source == "calibration":
            self.calibrated.add(m.name)
        env_note = unmodelled_parallel_env(e.tensor_parallel_size, profile_env(self.profile, m))
        for note in (*e.notes, *([env_note] if env_note else [])):
            if f"{m.name}: {note}" not in self.notes:
                self.notes.append(f"{m.name}: {note}")
        return Slot(gpu, target, e)

    def start_order(
        self, assignment: Mapping[str, tuple[int, ...]], items: Mapping[str, Item]
    ) -> list[tuple[Entry, int, int]]:
        """(entry, start group, start order) for placed entries (planning/start.py). In a group:
        higher priority first, then tensor-parallel ones, then larger needs."""
        placed = [m for m in self.models if m.name in assignment]
        return start_order(
            placed,
            # slices count as their GPU, as the launcher groups them (planning/start.py)
            lambda m: tuple(sorted({self.where(g)[0] for g in assignment[m.name]})),
            lambda m: (-m.entry.priority, -m.entry.tensor_parallel_size, -items[m.name].need_bytes, m.index),
            lambda m: m.entry.residency == "on-demand",
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
            if m.entry.residency == "on-demand":
                self.asleep[m.name] = self.sleep_of(m, slots[m.name][0].estimate)
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
                    gpu, slice_text = self.where(s.gpu)
                    problems.append(
                        Problem(
                            f"{slice_text}vLLM's start check would fail (requests "
                            f"{format_bytes(s.estimate.requested_bytes)}, short by {format_bytes(deficit)})",
                            instance=m.name,
                            gpu=gpu,
                            hint="raise defaults.reserve or lower a target",
                        )
                    )
                before[s.gpu].append(m.name)
        for g in self.gpus:
            problems += self.wake_problems(g, planned)
            total = self.gpu_planned(g, planned)
            if total > self.needs.usable[g]:
                gpu, slice_text = self.where(g)
                problems.append(
                    Problem(
                        f"{slice_text}planned {format_bytes(total)} is more than its usable "
                        f"{format_bytes(max(self.needs.usable[g], 0))}",
                        gpu=gpu,
                    )
                )
        return problems

    def start_deficit(
        self, name: str, s: Slot, planned: Mapping[str, Mapping[int, int]], before: Mapping[int, list[str]]
    ) -> int:
        """vLLM's start check (memory/budget.py `Budget.start_deficit_bytes`) with what the others
        hold when this one starts. Residents count at their footprint; on-demand neighbours at
        their asleep footprint when this one is on-demand itself (they start one at a time and each
        sleeps once it serves: planning/start.py), else at their largest awake set (a resident may
        restart while they are awake). So an on-demand instance's utilization may exceed what is
        free with its neighbours awake, never what is free with them asleep."""
        g = s.gpu
        sleepers = {n for n in self.asleep if g in planned.get(n, {})}
        if name in self.asleep:
            held = sum(p[g] for n, p in planned.items() if g in p and n not in sleepers)
            held += sum(self.asleep[n].asleep_bytes for n in sleepers if n != name)
        elif self.fixed:
            # fixed KV: any start order, so every other instance may already be up
            held = self.gpu_planned(g, planned) - planned[name][g]
        else:
            held = sum(planned[n][g] for n in before[g])
        free = s.target.cuda_total_bytes - self.needs.others[g] - held
        return s.estimate.budget.start_deficit_bytes(
            s.estimate.gpu_memory_utilization, s.target.cuda_total_bytes, free
        )

    def wake_problems(self, g: int, planned: Mapping[str, Mapping[int, int]]) -> list[Problem]:
        """An on-demand instance that cannot wake with every other one on its GPU asleep."""
        room = self.awake_room(g, planned)
        if room is None:
            return []
        out = []
        for name, p in planned.items():
            if name in self.asleep and g in p:
                awake = p[g] + self.needs.slack(g) - self.asleep[name].asleep_bytes
                if awake > room.room_bytes:
                    out.append(
                        Problem(
                            f"cannot wake: awake it takes {format_bytes(awake)} beyond its asleep "
                            f"footprint, but the GPU keeps {format_bytes(max(room.room_bytes, 0))} for "
                            "on-demand instances (usable − residents − every asleep footprint)",
                            instance=name,
                            gpu=g,
                            hint="lower its target or the residents' targets, or give it another GPU",
                        )
                    )
        return out

    def gpu_planned(self, g: int, planned: Mapping[str, Mapping[int, int]]) -> int:
        """The most GPU `g` holds: residents awake, on-demand instances asleep, and the largest
        set of them that may be awake together."""
        resident = sum(p[g] for n, p in planned.items() if g in p and n not in self.asleep)
        room = self.awake_room(g, planned, resident)
        asleep = sum(self.asleep[n].asleep_bytes for n, p in planned.items() if g in p and n in self.asleep)
        return resident + asleep + (room.largest_bytes if room is not None else 0)

    def awake_room(
        self, g: int, planned: Mapping[str, Mapping[int, int]], resident: int | None = None
    ) -> AwakeRoom | None:
        here = [s for s in self.on_demand.by_gpu.get(g, []) if s.name in planned]
        if not here:
            return None
        if resident is None:
            resident = sum(p[g] for n, p in planned.items() if g in p and n not in self.asleep)
        # the final footprints (on the real GPU, KV in whole blocks) with the utilization slack
        final = [
            ondemand.Sleeper(
                s.name, g, planned[s.name][g] + self.needs.slack(g), self.asleep[s.name], s.priority
            )
            for s in here
        ]
        room = self.needs.usable[g] - resident - sum(s.asleep_bytes for s in final)
        return ondemand.awake_room(self.profile, final, room, g)

    def sleep_of(self, m: Entry, e: Estimate) -> SleepFootprint:
        swap = ondemand.swap_settings(self.profile, m)
        footprint = sleep_footprint(m.facts.arch, e, m.settings, swap.sleep_level)
        for note in footprint.notes:
            if f"{m.name}: {note}" not in self.notes:
                self.notes.append(f"{m.name}: {note}")
        return footprint

    def instances(
        self, order: list[tuple[Entry, int, int]], slots: Mapping[str, list[Slot]]
    ) -> list[PlannedInstance]:
        out = []
        for m, group, position in sorted(order, key=lambda t: t[0].index):
            ss = slots[m.name]
            swap = ondemand.swap_settings(self.profile, m) if m.entry.residency == "on-demand" else None
            sleep = self.asleep.get(m.name)
            util = max(s.estimate.gpu_memory_utilization for s in ss)
            if any(s.estimate.gpu_memory_utilization != util for s in ss):
                # Tensor parallel over different GPUs: one utilization for all ranks.
                ss = [self.slot(m, s.gpu, ss[0].estimate.kv_cache_bytes, util) for s in ss]
            first = ss[0].estimate
            gpus = tuple(s.gpu for s in ss)
            spot = self.spots.get(gpus[0])
            # an encoder-only pooling model keeps no KV cache: no --kv-cache-memory-bytes
            kv_bytes = first.kv_cache_bytes if first.has_kv_cache else None
            if spot is None:
                kv = kv_bytes if self.fixed else None
                argv = instance_command(self.profile, m, util, kv).to_argv()
                env = instance_env(self.profile, m, gpus)
                placed_on, mig_slice = gpus, None
            else:
                kv = kv_bytes
                settings = with_batching_defaults(m.settings, self.needs.targets[spot.index], m.facts.arch)
                argv = slice_command(self.profile, m, util, kv, settings).to_argv()
                env = slice_env(self.profile, m, spot.cuda_device)
                placed_on, mig_slice = (spot.gpu,), mig_plan.spot_slice(spot, m.name)
                self.spot_of[m.name] = spot.index
            out.append(
                PlannedInstance(
                    name=m.name,
                    model=m.entry.model,
                    gpus=placed_on,
                    port=m.port,
                    start_order=position,
                    gpu_memory_utilization=util,
                    kv_cache_memory_bytes=kv,
                    planned_bytes=max(s.estimate.process_bytes for s in ss),
                    argv=argv,
                    env=env,
                    kv_fixed=kv is not None,
                    estimate=first,
                    aliases=tuple(m.entry.aliases),
                    priority=m.entry.priority,
                    start_group=group,
                    kv_target_bytes=self.needs.need_estimate(m, gpus[0]).kv_cache_bytes,
                    target=m.target_text,
                    mig_slice=mig_slice,
                    residency=m.entry.residency,
                    asleep_bytes=sleep.asleep_bytes if sleep is not None else 0,
                    host_bytes=sleep.host_bytes if sleep is not None else 0,
                    swap=swap,
                )
            )
        return out

    def planned_gpus(
        self, instances: Sequence[PlannedInstance], choice: mig_plan.Choice | None = None
    ) -> list[PlannedGpu]:
        out = []
        for index in sorted(self.gpus):
            if index in self.spots:
                continue
            lay = self.layout.gpus[index] if self.layout is not None else None
            if lay is not None and (
                lay.mode in ("devices", "pinned", "unusable")
                or (lay.mode == "auto" and choice is not None and index in choice.geometries)
            ):
                out.append(self.planned_mig_gpu(lay, instances, choice))
                continue
            gpu = self.gpus[index]
            here = sorted((i for i in instances if index in i.gpus), key=lambda i: (i.start_order, i.name))
            footprints = {i.name: {index: i.planned_bytes} for i in here}
            planned = self.gpu_planned(index, footprints)
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
                    awake=self.awake_room(index, footprints),
                )
            )
        return out

    def planned_mig_gpu(
        self, lay: mig_plan.GpuMig, instances: Sequence[PlannedInstance], choice: mig_plan.Choice | None
    ) -> PlannedGpu:
        """A GPU that runs as slices: its totals are its slices' sums."""
        here = sorted((i for i in instances if lay.index in i.gpus), key=lambda i: (i.start_order, i.name))
        by_spot: dict[int, tuple[str, ...]] = {}
        planned: dict[int, int] = {}
        for inst in here:
            spot = self.spot_of[inst.name]
            by_spot[spot] = (*by_spot.get(spot, ()), inst.name)
            planned[spot] = planned.get(spot, 0) + inst.planned_bytes
        geometry = choice.geometries.get(lay.index) if choice is not None else None
        slices = mig_plan.planned_slices(lay, by_spot, geometry, self.needs, planned)
        spots = mig_plan.spots_of(lay, geometry)
        memory = sum(s.memory_bytes for s in spots)
        reserve = sum(s.memory_bytes - math.floor(s.memory_bytes * (1 - self.reserve)) for s in spots)
        others = sum(self.needs.others[s.index] for s in spots)
        total_planned = sum(planned.values())
        return PlannedGpu(
            index=lay.index,
            name=lay.gpu.name,
            total_bytes=lay.gpu.total_bytes,
            reserved_bytes=reserve,
            free_bytes=memory - others - total_planned,
            instances=tuple(i.name for i in here),
            cuda_total_bytes=lay.gpu.cuda_total_bytes,
            driver_reserved_bytes=lay.gpu.reserved_bytes,
            other_processes_bytes=others,
            usable_bytes=sum(max(self.needs.usable[s.index], 0) for s in spots),
            planned_bytes=total_planned,
            mig=lay.mode,
            mig_slices=slices,
        )

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
