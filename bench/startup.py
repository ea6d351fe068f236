"""Benchmark: cold wall time of the commands people type most, each a new Python process.

Like hyperfine: one warm-up run per command (disk cache), then `--runs` timed runs; the table has
the median and the range of the wall time, and the median CPU time (user + system, from the
child's rusage: it moves less than the wall time when other work shares the machine). Targets
(issue 10): `estimate` < 0.3 s, `plan` / `check` of a shipped profile < 0.5 s, `--help` < 0.3 s.

Afterwards it lists the heavy modules each command loads (torch, vLLM, transformers must never
be among them; the solver only where a plan needs HiGHS).

Run: .venv/bin/python bench/startup.py [--runs N] [--tree PATH]
`--tree` times another checkout of gpushare (e.g. the main branch) with the same interpreter, for a
before/after table. Prints markdown (recorded in BENCHMARKS.md, "Start-up").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "vllm",
    "transformers",
    "aiohttp",
    "scipy",
    "numpy",
    "highspy",
    "pydantic",
    "huggingface_hub",
)
COMMANDS: list[tuple[list[str], float]] = [
    (["--help"], 0.3),
    (["estimate", "Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100", "--max-model-len", "8192"], 0.3),
    (["estimate", "google/gemma-2-9b-it", "--gpu", "L40S", "--json"], 0.3),
    (["plan", "profiles/classic.yaml"], 0.5),
    (["plan", "profiles/workstation.yaml", "--json"], 0.5),
    (["check", "profiles/quantized.yaml"], 0.5),
    (["check", "profiles/workstation.yaml"], 0.5),
]


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 1: a profile that does not fit is an answer too
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the gpushare checkout to time")
    args = parser.parse_args()
    tree = args.tree.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(Path(tmp) / "hf-cache"),  # an empty cache: models come from the catalog
            "GPUSHARE_CALIBRATION_FILE": str(Path(tmp) / "none.json"),  # no calibration records
            "COLUMNS": "200",
        }
        print(f"tree {tree}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each\n")
        print("| command | wall median s | wall min–max s | CPU median s | target s | meets |")
        print("|---|---:|---:|---:|---:|:---:|")
        for cli_args, target in COMMANDS:
            argv = [sys.executable, "-m", "gpushare", *cli_args]
            run_once(argv, env, tree)  # warm-up
            walls, cpus = zip(*(run_once(argv, env, tree) for _ in range(args.runs)), strict=True)
            median = statistics.median(walls)
            print(
                f"| `gpushare {' '.join(cli_args)}` | {median:.3f} | {min(walls):.3f}–{max(walls):.3f} "
                f"| {statistics.median(cpus):.3f} | {target} | {'yes' if median < target else 'no'} |"
            )

        print("\n| command | heavy modules loaded |\n|---|---|")
        for cli_args, _target in COMMANDS:
            loaded = ", ".join(heavy_modules(cli_args, env, tree)) or "-"
            print(f"| `gpushare {' '.join(cli_args)}` | {loaded} |")


def heavy_modules(cli_args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The HEAVY modules a command has imported by the time it exits."""
    code = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: print(' '.join(m for m in heavy if m in sys.modules), file=sys.stderr))\n"
        "from gpushare.cli import main\n"
        f"sys.argv = ['gpushare', *{cli_args!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    return done.stderr.strip().splitlines()[-1].split() if done.stderr.strip() else []


if __name__ == "__main__":
    main()
