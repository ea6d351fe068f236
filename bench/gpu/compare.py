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
from gpushare.memory import GpuTarget, ServeSettings, estimate
from gpushare.units import GiB


def settings_of(case: dict) -> ServeSettings:
    args = case["cmd"].split()

    def value(flag: str) -> int | None:
        return int(args[args.index(flag) + 1]) if flag in args else None

    return ServeSettings(
        max_model_len=case["max_model_len"],
        max_num_seqs=value("--max-num-seqs"),
        max_num_batched_tokens=value("--max-num-batched-tokens"),
        enforce_eager="--enforce-eager" in args,
    )


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
        "| case | KV tokens vLLM | predicted | err | activation GiB vLLM / pred | graphs GiB vLLM / pred "
        "| process GiB NVML / pred | err |"
    )
    print("|---|---|---|---|---|---|---|---|")
    worst_kv = worst_proc = 0.0
    for line in Path(path).read_text().splitlines():
        case = json.loads(line)
        summary = case.get("parsed", {}).get("summary")
        if (
            not summary
            or "kv_tokens" not in case["parsed"]
            or case.get("config_source") == "embedded-fallback"
        ):
            if "error" in case:
                print(f"| {case['case']} | failed: {case['error']} | | | | | | |")
            continue
        arch = parse_config(case["config"], case["case"])
        e = estimate(arch, gpu, settings_of(case), gpu_memory_utilization=case["util"])
        kv_real = int(case["parsed"]["kv_tokens"][0])
        proc_real = case["nvml_process_bytes_all"]
        kv_err = (e.kv_cache_tokens - kv_real) / kv_real
        proc_err = (e.process_bytes - proc_real) / proc_real
        worst_kv, worst_proc = max(worst_kv, abs(kv_err)), max(worst_proc, abs(proc_err))
        print(
            f"| {case['case']} | {kv_real:,} | {e.kv_cache_tokens:,} | {kv_err:+.2%} "
            f"| {summary['peak_activation_gib']:.2f} / {e.activation_bytes / GiB:.2f} "
            f"| {summary['cudagraph_gib']:.2f} / {e.cuda_graph_bytes / GiB:.2f} "
            f"| {proc_real / GiB:.2f} / {e.process_bytes / GiB:.2f} | {proc_err:+.2%} |"
        )
    print(
        f"\nworst KV-token error {worst_kv:.2%} (target 2%); worst process error {worst_proc:.2%} (target 3%)"
    )
    if not math.isfinite(worst_kv):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu/results/h200-vllm0.26.0/results.jsonl")
