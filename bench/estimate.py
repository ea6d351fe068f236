"""Benchmark: wall time of `gpushare estimate` on catalog models, start-up included.

Target (issue 2): under 0.5 s per call; the core imports neither torch nor vllm.
Run: .venv/bin/python bench/estimate.py [--runs N]
Prints a markdown table (recorded in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

MODELS = [
    ("Qwen/Qwen2.5-7B-Instruct", ["--gpu", "H100", "--max-model-len", "8192"]),
    (
        "meta-llama/Llama-3.1-8B-Instruct",
        ["--gpu", "A100-80GB", "--concurrency", "16", "--max-model-len", "8192"],
    ),
    ("deepseek-ai/DeepSeek-V2-Lite", ["--gpu", "H100", "--max-model-len", "8192"]),
    ("google/gemma-2-9b-it", ["--gpu", "L40S", "--max-model-len", "8192", "--json"]),
]


def gpushare_cmd() -> list[str]:
    exe = shutil.which("gpushare", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "gpushare"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print("| model | args | median s | max s | runs |\n|---|---|---|---|---|")
    worst = 0.0
    for model, extra in MODELS:
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(
                [*gpushare_cmd(), "estimate", model, *extra], env=env, check=True, stdout=subprocess.DEVNULL
            )
            times.append(time.perf_counter() - start)
        worst = max(worst, max(times))
        print(
            f"| {model} | {' '.join(extra)} | {statistics.median(times):.3f} "
            f"| {max(times):.3f} | {args.runs} |"
        )
    probe = (
        "import sys, gpushare.cli; from gpushare.estimate_job import load_model; "
        "load_model('Qwen/Qwen2.5-7B-Instruct'); "
        "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
    )
    print(
        f"\nheavy modules imported by the CLI: {imported.stdout.strip()}; "
        f"worst call {worst:.3f} s (target < 0.5 s)"
    )


if __name__ == "__main__":
    main()
