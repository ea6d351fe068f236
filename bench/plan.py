"""Benchmark: planning time, and how many more models fit than with vLLM's default reservation.

1. Plan time: the whole `build_plan` (memory model for every instance, MILP or greedy placement,
   leftover shares, start-check-safe utilizations, argv, suggestions for what does not fit) for
   10 / 100 / 1000 models on 1 / 8 / 64 H100s. Models are drawn (seeded) from the bundled catalog
   with random context lengths and concurrency targets. Each model's facts (its config.json,
   normalised) are loaded once before timing and passed in, so the table measures planning, not
   reading JSON files.
2. Packing against a scheduler that books `gpu_memory_utilization × total` per instance with
   vLLM's old default 0.9 (what schedulers that reserve the default do): such a scheduler fits at
   most one instance per GPU (two would book 1.8 × the GPU). gpushare books what each model needs
   for its target, plus the 10% safety reserve.

Run: .venv/bin/python bench/plan.py [--runs N] [--quick]
Prints markdown (recorded in BENCHMARKS.md, "Planning").
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpushare.catalog.gpus import parse_gpu_spec  # noqa: E402
from gpushare.estimate_job import ModelFacts  # noqa: E402
from gpushare.planning.build import build_plan, plan_loader  # noqa: E402
from gpushare.profile import Profile  # noqa: E402

# Dense chat models of the bundled catalog that fit on one H100, with vLLM's defaults.
POOL = [
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-8B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-2-7b-chat-hf",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "microsoft/Phi-3-mini-4k-instruct",
    "THUDM/chatglm3-6b",
    "google/gemma-2-9b-it",
]
LENGTHS = (2048, 4096, 8192)
CONCURRENCY = (1, 2, 4, 8)


def random_profile(count: int, seed: int, facts: dict[str, ModelFacts], pool: list[str]) -> Profile:
    rng = random.Random(seed)
    models: list[dict[str, Any]] = []
    for i in range(count):
        ref = rng.choice(pool)
        limit = facts[ref].arch.max_position_embeddings
        models.append(
            {
                "name": f"m{i}",
                "model": ref,
                "max_model_len": min(rng.choice(LENGTHS), limit),
                "concurrency": rng.choice(CONCURRENCY),
            }
        )
    return Profile.model_validate({"models": models, "defaults": {"base_port": 20000}})


def time_plans(runs: int, sizes: list[int], gpu_counts: list[int], facts: dict[str, ModelFacts]) -> list[str]:
    rows = [
        "| models | GPUs | plan time (median) | min | placed | method | LP bound note |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for count in sizes:
        profile = random_profile(count, seed=count, facts=facts, pool=POOL)
        for gpus in gpu_counts:
            listed = parse_gpu_spec(f"{gpus}xH100")
            times = []
            plan = None
            for _ in range(runs):
                started = time.perf_counter()
                plan = build_plan(profile, listed, models=facts)
                times.append(time.perf_counter() - started)
            assert plan is not None
            note = next((n for n in plan.notes if "LP bound" in n), "")
            note = note.split("; ", 1)[1] if "; " in note else ("optimal" if plan.optimal else "")
            rows.append(
                f"| {count} | {gpus} | {statistics.median(times) * 1000:.0f} ms | {min(times) * 1000:.0f} ms "
                f"| {len(plan.instances)} | {plan.method} | {note} |"
            )
    return rows


def packing(sizes: list[int], gpu_counts: list[int], facts: dict[str, ModelFacts], seeds: int) -> list[str]:
    """`sizes` are models offered per GPU."""
    rows = [
        "| models offered | GPUs | gpushare places (mean) | default 0.9 places | more models |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for gpus in gpu_counts:
        listed = parse_gpu_spec(f"{gpus}xH100")
        for count in [size * gpus for size in sizes]:
            placed = []
            for seed in range(seeds):
                profile = random_profile(count, seed=1000 + seed, facts=facts, pool=POOL)
                placed.append(len(build_plan(profile, listed, models=facts).instances))
            ours = statistics.mean(placed)
            # Booking 0.9 × total each: one instance per GPU, every pool model fits in 0.9 of an H100.
            baseline = min(count, gpus)
            rows.append(
                f"| {count} | {gpus} | {ours:.1f} | {baseline} | {ours - baseline:+.1f} "
                f"({ours / baseline:.1f}×) |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 and 100 models only")
    args = parser.parse_args()
    load = plan_loader()
    facts = {ref: load(ref) for ref in POOL}  # cached once: the timings measure planning
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    gpu_counts = [1, 8, 64]
    print("## Plan time (build_plan end to end; model facts cached)\n")
    print("\n".join(time_plans(args.runs, sizes, gpu_counts, facts)))
    print("\n## Models that fit: gpushare vs booking 0.9 × total per instance (H100 80GB)\n")
    print("\n".join(packing([2, 4, 8, 16], [1, 8], facts, seeds=5)))


if __name__ == "__main__":
    main()
