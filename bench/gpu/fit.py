"""Fit the measured terms of gpushare's memory model (memory.Coefficients) on real vLLM runs.

Run: .venv/bin/python bench/gpu/fit.py [bench/gpu/results/h200-vllm0.26.0/results.jsonl]
Reads what collect.py recorded (vLLM's logged memory lines and NVML's process bytes) and prints:
- the context memory at vLLM's first snapshot ("cuda_memory" in the worker init line);
- the sampler warm-up held after the KV cache: NVML − requested − graphs − context + activation,
  fitted as base + bytes/logit × min(max_num_seqs, batched) × vocab;
- CUDA-graph memory, fitted as base + bytes × hidden × (sum of full-graph capture sizes).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from gpushare.hfconfig import parse_config
from gpushare.memory import GpuTarget, capture_sizes, default_batching
from gpushare.units import GiB

SNAPSHOT = re.compile(r"worker init memory snapshot: .*?cuda_memory=([\d.]+)GiB")


def main(path: str) -> None:
    folder = Path(path).parent
    info = json.loads((folder / "gpuinfo.json").read_text())
    total = int(info["torch"]["torch_total"])
    gpu = GpuTarget(info["torch"]["name"], total, int(info["nvml"]["nvml_total"]))
    rows = []
    for line in Path(path).read_text().splitlines():
        case = json.loads(line)
        summary = case.get("parsed", {}).get("summary")
        if not summary or "nvml_process_bytes_all" not in case:
            continue
        arch = parse_config(case["config"], case["case"])
        args = case["cmd"].split()
        batched, seqs = default_batching(gpu)
        if "--max-num-batched-tokens" in args:
            batched = int(args[args.index("--max-num-batched-tokens") + 1])
        if "--max-num-seqs" in args:
            seqs = int(args[args.index("--max-num-seqs") + 1])
        log = (folder / "logs" / f"{case['case']}.log").read_text(errors="replace")
        snap = SNAPSHOT.search(log)
        context = float(snap.group(1)) * GiB if snap else float("nan")
        requested = -(-total * round(summary["util"] * 1000) // 1000)
        graphs = summary["cudagraph_gib"] * GiB
        sampler = (
            case["nvml_process_bytes_all"]
            - requested
            - graphs
            - context
            + summary["peak_activation_gib"] * GiB
        )
        full_tokens = (
            0 if "--enforce-eager" in args else sum(s for s in capture_sizes(seqs, batched) if s <= seqs)
        )
        rows.append(
            (
                case["case"],
                context,
                min(seqs, batched) * arch.vocab_size,
                sampler,
                arch.hidden_size * full_tokens,
                graphs,
                "--enforce-eager" in args,
            )
        )
    print(f"context (cuda_memory at init): {sorted({round(r[1] / GiB, 2) for r in rows})} GiB")
    logits = np.array([r[2] for r in rows], dtype=float)
    sampler = np.array([r[3] for r in rows])
    slope, base = np.polyfit(logits, sampler, 1)
    print(f"sampler warm-up: {base / 2**20:.0f} MiB + {slope:.2f} B per row × vocab entry")
    graph_rows = [r for r in rows if not r[6]]
    x = np.array([r[4] for r in graph_rows], dtype=float)
    y = np.array([r[5] for r in graph_rows])
    g_slope, g_base = np.polyfit(x, y, 1)
    print(f"CUDA graphs: {g_base / GiB:.2f} GiB + {g_slope:.1f} B × hidden × sum of full-graph sizes")
    print("\n| case | sampler warm-up GiB | fit | graphs GiB | fit |\n|---|---|---|---|---|")
    for name, _, lg, smp, hx, gr, eager in rows:
        fit_graph = "-" if eager else f"{(g_base + g_slope * hx) / GiB:.2f}"
        print(
            f"| {name} | {smp / GiB:.2f} | {(base + slope * lg) / GiB:.2f} | {gr / GiB:.2f} | {fit_graph} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu/results/h200-vllm0.26.0/results.jsonl")
