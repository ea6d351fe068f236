"""Compare `gpushare estimate` with what vLLM and NVML reported in a results.jsonl from collect.py.

Run: .venv/bin/python bench/gpu/compare.py bench/gpu/results/h200-vllm0.26.0/results.jsonl
Prints a markdown table: per case, predicted vs measured KV tokens, activation, CUDA graphs and
NVML process bytes, with the relative errors (targets: KV tokens within 2%, process within 3%).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from gpushare.hfconfig import parse_config
from gpushare.memory import V1_MOE_NOTE, GpuTarget, ServeSettings, estimate
from gpushare.units import GiB


def flag_value(case: dict, flag: str) -> int | None:
    args = case["cmd"].split()
    return int(args[args.index(flag) + 1]) if flag in args else None


def settings_of(case: dict) -> ServeSettings:
    args = case["cmd"].split()

    def value(flag: str) -> int | None:
        return flag_value(case, flag)

    return ServeSettings(
        max_model_len=case["max_model_len"],
        max_num_seqs=value("--max-num-seqs"),
        max_num_batched_tokens=value("--max-num-batched-tokens"),
        enforce_eager="--enforce-eager" in args,
    )


def pair(summary: dict, key: str, predicted: int) -> str:
    """ "measured / predicted" in GiB; "–" where vLLM did not log the figure."""
    real = f"{summary[key]:.2f}" if key in summary else "–"
    return f"{real} / {predicted / GiB:.2f}"


def main(path: str) -> None:
    folder = Path(path).parent
    info = json.loads((folder / "gpuinfo.json").read_text())
    gpu = GpuTarget(
        name=info["torch"]["name"],
        cuda_total_bytes=info["torch"]["torch_total"],
        nvml_total_bytes=info["nvml"]["nvml_total"],
    )
    print(f"GPU {gpu.name}: CUDA total {gpu.cuda_total_bytes:,} B, NVML total {gpu.nvml_total_bytes:,} B\n")
    print(
        "| case | weights GiB vLLM / pred | KV tokens vLLM | predicted | err | activation GiB vLLM / pred "
        "| graphs GiB vLLM / pred | process GiB NVML / pred | err |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    recalled: list[str] = []
    flagged: list[str] = []
    worst_kv = worst_proc = 0.0
    for line in Path(path).read_text().splitlines():
        case = json.loads(line)
        parsed = case.get("parsed", {})
        if "kv_tokens" not in parsed:
            if "error" in case:
                print(f"| {case['case']} | failed: {case['error']} | | | | | | | |")
            continue
        # With --kv-cache-memory-bytes vLLM skips its profiling line; only the load line is there.
        summary = parsed.get("summary") or {"weights_gib": parsed["model_loading"][0]}
        label = case["case"]
        if case.get("config_source") == "embedded-fallback":
            label += " †"  # a config written from memory, not an exact copy of the published file
            recalled.append(case["case"])
        arch = parse_config(case["config"], case["case"])
        e = estimate(
            arch,
            gpu,
            settings_of(case),
            gpu_memory_utilization=case["util"],
            kv_cache_memory_bytes=flag_value(case, "--kv-cache-memory-bytes"),
        )
        kv_real = int(parsed["kv_tokens"][0])
        kv_err = (e.kv_cache_tokens - kv_real) / kv_real
        if V1_MOE_NOTE in e.notes:  # gpushare's note: checked on this one model only; reported apart
            label += " ‡"
            flagged.append(case["case"])
        else:
            worst_kv = max(worst_kv, abs(kv_err))
        proc_real = case.get("nvml_process_bytes_all")
        if proc_real:
            proc_err = (e.process_bytes - proc_real) / proc_real
            if V1_MOE_NOTE not in e.notes:
                worst_proc = max(worst_proc, abs(proc_err))
            process = f"{proc_real / GiB:.2f} / {e.process_bytes / GiB:.2f} | {proc_err:+.2%}"
        else:  # it never answered (see its error): no NVML reading at ready
            process = f"– / {e.process_bytes / GiB:.2f} | not ready: {case.get('error', '')[:40]}"

        print(
            f"| {label} | {pair(summary, 'weights_gib', e.weights_bytes)} "
            f"| {kv_real:,} | {e.kv_cache_tokens:,} | {kv_err:+.2%} "
            f"| {pair(summary, 'peak_activation_gib', e.activation_bytes)} "
            f"| {pair(summary, 'cudagraph_gib', e.cuda_graph_bytes)} | {process} |"
        )
    if recalled:
        print(f"\n† config.json written from memory (no exact copy here): {', '.join(recalled)}")
    if flagged:
        print(f"\n‡ MoE on vLLM's V1 runner (checked on this model only): {', '.join(flagged)}")
    print(
        f"\nworst KV-token error {worst_kv:.2%} (target 2%); worst process error {worst_proc:.2%} (target 3%)"
    )
    if not math.isfinite(worst_kv):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu/results/h200-vllm0.26.0/results.jsonl")
