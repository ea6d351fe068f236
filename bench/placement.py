"""Benchmark gpushare.placement: solve time by size, and packing quality against the greedy and the LP bound.

Run from the repository root:  .venv/bin/python bench/placement.py   (recorded in BENCHMARKS.md)
Prints markdown. Instances are seeded, so the numbers other than times repeat exactly.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from highspy import _core as highs_core

from gpushare.placement import (
    Bin,
    Item,
    Placement,
    Strategy,
    first_fit_decreasing,
    lp_bound,
    solve,
    worst_fit_decreasing,
)

GiB = 1 << 30
RESERVE = 0.9  # usable share of each GPU, as a profile's default safety reserve
GPU_SIZES_GIB = (24, 48, 80)


def gpu_set(rng: random.Random, count: int, sizes: tuple[int, ...] = GPU_SIZES_GIB) -> list[Bin]:
    return [Bin(g, int(rng.choice(sizes) * GiB * RESERVE)) for g in range(count)]


def item_set(
    rng: random.Random, count: int, low: int, high: int, tp2_share: float = 0.0, n_gpus: int = 1
) -> list[Item]:
    return [
        Item(f"m{i}", rng.randint(low, high), tp=2 if n_gpus > 1 and rng.random() < tp2_share else 1)
        for i in range(count)
    ]


def mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" if values else "n/a"


def greedy_for(strategy: Strategy) -> Callable[[list[Item], list[Bin]], Placement]:
    return first_fit_decreasing if strategy == "pack" else worst_fit_decreasing


# ---------------------------------------------------------------------------------------------
# solve time


def timing_instance(seed: int, n_items: int, n_gpus: int) -> tuple[list[Item], list[Bin]]:
    """GPUs: one 80 GiB card, or a 24/48/80 GiB mix. Needs 1 GiB .. min(40 GiB, 2.4 x the mean
    usable capacity per item), so demand is about 1.2x capacity where capacity allows; 10% TP=2."""
    rng = random.Random(seed)
    bins = [Bin(0, int(80 * GiB * RESERVE))] if n_gpus == 1 else gpu_set(rng, n_gpus)
    capacity = sum(b.capacity_bytes for b in bins)
    high = max(2 * GiB, min(40 * GiB, int(2.4 * capacity / n_items)))
    return item_set(rng, n_items, GiB, high, tp2_share=0.1, n_gpus=n_gpus), bins


def timing_table(repeats: int) -> list[str]:
    lines = [
        "| items | GPUs | strategy | method | solve time median / max | proven optimal "
        "| placed (solve) | placed (greedy) |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for n_items in (10, 100, 1000):
        for n_gpus in (1, 8, 64):
            for strategy in ("pack", "spread"):
                times, proven, placed, greedy_placed, methods = [], 0, [], [], set()
                for seed in range(repeats):
                    items, bins = timing_instance(seed, n_items, n_gpus)
                    start = time.perf_counter()
                    result = solve(items, bins, strategy)
                    times.append(time.perf_counter() - start)
                    proven += result.optimal
                    methods.add(result.method)
                    placed.append(len(result.assignment))
                    greedy_placed.append(len(greedy_for(strategy)(items, bins).assignment))
                lines.append(
                    f"| {n_items} | {n_gpus} | {strategy} | {'/'.join(sorted(methods))} "
                    f"| {statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms "
                    f"| {proven}/{repeats} | {statistics.mean(placed):.1f} "
                    f"| {statistics.mean(greedy_placed):.1f} |"
                )
    return lines


# ---------------------------------------------------------------------------------------------
# packing quality


@dataclass(frozen=True)
class QualitySet:
    name: str
    n_items: int
    n_gpus: int
    gpu_sizes: tuple[int, ...]
    low_gib: int
    high_gib: int
    tp2_share: float

    def instance(self, seed: int) -> tuple[list[Item], list[Bin]]:
        rng = random.Random(seed)
        bins = gpu_set(rng, self.n_gpus, self.gpu_sizes)
        items = item_set(
            rng, self.n_items, self.low_gib * GiB, self.high_gib * GiB, self.tp2_share, self.n_gpus
        )
        return items, bins


PACK_SETS = (
    QualitySet("20 items 1-40 GiB on 8 x 80 GiB", 20, 8, (80,), 1, 40, 0.0),
    QualitySet("30 items 1-20 GiB on 8 mixed", 30, 8, GPU_SIZES_GIB, 1, 20, 0.0),
    QualitySet("8 items 4-24 GiB on 4 x 48 GiB, 25% TP=2", 8, 4, (48,), 4, 24, 0.25),
    QualitySet("30 items 1-8 GiB on 8 x 24 GiB", 30, 8, (24,), 1, 8, 0.0),
    QualitySet("64 items 1-8 GiB on 8 mixed", 64, 8, GPU_SIZES_GIB, 1, 8, 0.0),
)
OVERSUBSCRIBED_SETS = (
    QualitySet("16 items 2-16 GiB on 4 x 24 GiB", 16, 4, (24,), 2, 16, 0.0),
    QualitySet("24 items 4-40 GiB on 4 mixed", 24, 4, GPU_SIZES_GIB, 4, 40, 0.0),
)
SPREAD_SETS = (
    QualitySet("8 items 1-40 GiB on 4 x 80 GiB", 8, 4, (80,), 1, 40, 0.0),
    QualitySet("16 items 1-20 GiB on 8 mixed", 16, 8, GPU_SIZES_GIB, 1, 20, 0.0),
)


def pack_quality(instances: int) -> list[str]:
    lines = [
        "| instance set | all placed (MILP / FFD) | GPUs used: MILP | FFD | LP bound "
        "| MILP < FFD | MILP = bound | proven | MILP time median / max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for qs in PACK_SETS:
        milp_gpus, ffd_gpus, bounds, times = [], [], [], []
        both_full, milp_full, ffd_full, fewer, at_bound, proven = 0, 0, 0, 0, 0, 0
        for seed in range(instances):
            items, bins = qs.instance(1000 + seed)
            start = time.perf_counter()
            result = solve(items, bins, "pack")
            times.append(time.perf_counter() - start)
            ffd = first_fit_decreasing(items, bins)
            milp_full += not result.unplaced
            ffd_full += not ffd.unplaced
            proven += result.optimal
            if result.unplaced or ffd.unplaced:
                continue
            both_full += 1
            bound = lp_bound(items, bins, "pack")
            assert bound is not None
            milp_gpus.append(result.objective)
            ffd_gpus.append(ffd.objective)
            bounds.append(bound)
            fewer += result.objective < ffd.objective
            at_bound += result.objective == bound
        lines.append(
            f"| {qs.name} | {milp_full}/{ffd_full} of {instances} "
            f"| {mean(milp_gpus)} | {mean(ffd_gpus)} | {mean(bounds)} "
            f"| {fewer}/{both_full} | {at_bound}/{both_full} | {proven}/{instances} "
            f"| {statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms |"
        )
    return lines


def oversubscribed_quality(instances: int) -> list[str]:
    lines = [
        "| instance set | items placed: MILP | FFD | instances MILP places more | proven "
        "| MILP time median / max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for qs in OVERSUBSCRIBED_SETS:
        milp_placed, ffd_placed, times = [], [], []
        more, proven = 0, 0
        for seed in range(instances):
            items, bins = qs.instance(2000 + seed)
            start = time.perf_counter()
            result = solve(items, bins, "pack")
            times.append(time.perf_counter() - start)
            ffd = first_fit_decreasing(items, bins)
            milp_placed.append(len(result.assignment))
            ffd_placed.append(len(ffd.assignment))
            more += len(result.assignment) > len(ffd.assignment)
            proven += result.optimal
        lines.append(
            f"| {qs.name} | {statistics.mean(milp_placed):.2f} | {statistics.mean(ffd_placed):.2f} "
            f"| {more}/{instances} | {proven}/{instances} "
            f"| {statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms |"
        )
    return lines


def spread_quality(instances: int) -> list[str]:
    lines = [
        "| instance set | smallest headroom: solve | WFD | LP bound | solve > WFD | proven "
        "| solve time median / max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for qs in SPREAD_SETS:
        ours, wfd_values, bounds, times = [], [], [], []
        better, proven = 0, 0
        for seed in range(instances):
            items, bins = qs.instance(3000 + seed)
            start = time.perf_counter()
            result = solve(items, bins, "spread")
            times.append(time.perf_counter() - start)
            wfd = worst_fit_decreasing(items, bins)
            if result.unplaced or wfd.unplaced:
                continue
            bound = lp_bound(items, bins, "spread")
            assert bound is not None
            ours.append(result.objective)
            wfd_values.append(wfd.objective)
            bounds.append(bound)
            better += result.objective > wfd.objective + 1e-4
            proven += result.optimal
        lines.append(
            f"| {qs.name} | {statistics.mean(ours):.3f} | {statistics.mean(wfd_values):.3f} "
            f"| {statistics.mean(bounds):.3f} | {better}/{len(ours)} | {proven}/{len(ours)} "
            f"| {statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms |"
        )
    return lines


def main() -> None:
    started = time.perf_counter()
    out = [
        f"Python {platform.python_version()}, HiGHS {highs_core._Highs().version()} (highspy), "
        f"{os.cpu_count()} CPUs, time limit 2 s per solve, usable = 90% of each GPU.",
        "",
        "### Solve time (3 seeded instances per row)",
        "",
        *timing_table(repeats=3),
        "",
        "### Packing quality, everything fits (`pack`, 20 seeded instances per set)",
        "",
        "GPUs used averaged over the instances where both MILP and FFD placed every item.",
        "",
        *pack_quality(instances=20),
        "",
        "### Oversubscribed: how many items get placed (`pack`, 20 seeded instances per set)",
        "",
        *oversubscribed_quality(instances=20),
        "",
        "### `spread`: smallest headroom fraction (higher is better, 10 seeded instances per set)",
        "",
        *spread_quality(instances=10),
        "",
        f"Total benchmark time: {time.perf_counter() - started:.0f} s.",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
