"""Compare `gpushare estimate` with what vLLM and NVML reported in a results.jsonl from collect.py
(or from i11_suite.py, whose records add `runner`, `task`, `phase` and `group`).

Run: .venv/bin/python bench/gpu/compare.py bench/gpu/results/h200-vllm0.26.0/results.jsonl
Prints a markdown table: per case, predicted vs measured KV tokens, activation, CUDA graphs and
NVML process bytes, with the relative errors (targets: KV tokens within 2%, process within 3%).
A start that gpushare refuses is a row saying so. An encoder-only pooling model has no KV cache
in vLLM (no "GPU KV cache size" line): its row compares weights and process bytes only. For
servers started together (`group`), the process bytes are those of the server's own processes.
Records from i11_suite.py get a second table: how each start went (times, compile path, probe).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from gpushare.errors import GpushareError
from gpushare.hfconfig import parse_config
from gpushare.memory import V1_MOE_NOTE, Estimate, GpuTarget, ServeSettings, estimate
from gpushare.units import GiB
from gpushare.vllm.command import VllmCommand


def flag_value(case: dict, flag: str) -> int | None:
    args = case["cmd"].split()
    return int(args[args.index(flag) + 1]) if flag in args else None


def settings_of(case: dict) -> ServeSettings:
    args = case["cmd"].split()

    def value(flag: str) -> int | None:
        return flag_value(case, flag)

    command = VllmCommand.from_argv(args)
    return ServeSettings(
        max_model_len=case["max_model_len"],
        max_num_seqs=value("--max-num-seqs"),
        max_num_batched_tokens=value("--max-num-batched-tokens"),
        enforce_eager="--enforce-eager" in args,
        runner="pooling" if case.get("runner") == "pooling" else "generate",
        language_model_only=command.language_model_only,
        mm_limits=tuple(sorted(command.limit_mm_per_prompt)),
    )


def process_bytes(case: dict) -> int | None:
    """NVML bytes of this server at ready: its own processes when others shared the GPU."""
    if len(case.get("group") or []) > 1:
        return case.get("nvml_process_bytes_matched")
    return case.get("nvml_process_bytes_all")


def run_facts(cases: list[dict]) -> None:
    """How each start of an i11_suite.py run went: what vLLM resolved, how long, what answered."""
    print(
        "\n| case | phase | runner | dtype | compile | health s | ready s | encoder budget | MXFP4 backend "
        "| probe |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        p = case.get("parsed", {})
        cast = p.get("dtype_cast")
        enc = p.get("encoder_budget")
        probe = case.get("probe") or {}
        said = ", ".join(
            f"{k} {probe[k]}" for k in ("status", "prompt_tokens", "embedding_dim", "scores") if k in probe
        )
        cells = [
            case["case"],
            case.get("phase", "–"),
            case.get("runner", "–") + ("/" + p["convert_resolved"][0] if "convert_resolved" in p else ""),
            f"{cast[1]} → {cast[2]}" if cast else "as config",
            case.get("compile_cache") or "–",
            str(case.get("health_s", "–")),
            str(case.get("ready_s", "–")),
            f"{int(enc[0]):,} tokens, {int(enc[1])} {enc[2]}" if enc else "–",
            p["mxfp4_backend"][0] if "mxfp4_backend" in p else "–",
            said or (case.get("error", "–")[:60]),
        ]
        print("| " + " | ".join(cells) + " |")


def pair(summary: dict, key: str, predicted: int) -> str:
    """ "measured / predicted" in GiB; "–" where vLLM did not log the figure."""
    real = f"{summary[key]:.2f}" if key in summary else "–"
    return f"{real} / {predicted / GiB:.2f}"


def graphs_cell(summary: dict, e: Estimate) -> str:
    """The CUDA graphs' size; for the V1 runner also the estimate vLLM subtracts from its budget."""
    cell = pair(summary, "cudagraph_gib", e.cuda_graph_bytes)
    reserved = e.budget.cuda_graph_estimate_bytes
    return cell if reserved is None else f"{cell} (est {reserved / GiB:.2f})"


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
    cases = [json.loads(line) for line in Path(path).read_text().splitlines()]
    for case in cases:
        parsed = case.get("parsed", {})
        # An encoder-only pooling model: vLLM keeps no KV cache, so it logs no KV line at all.
        no_kv = case.get("runner") == "pooling" and "model_loading" in parsed and "kv_tokens" not in parsed
        if "kv_tokens" not in parsed and not no_kv:
            if "error" in case:
                print(f"| {case['case']} | failed: {case['error']} | | | | | | | |")
            else:
                print(
                    f"| {case['case']} | its log has no KV-cache line and no model-loading line |" + " |" * 7
                )
            continue
        # With --kv-cache-memory-bytes vLLM skips its profiling line; only the load line is there.
        loaded = {"weights_gib": parsed["model_loading"][0]} if "model_loading" in parsed else {}
        summary = parsed.get("summary") or loaded
        label = case["case"]
        if case.get("config_source") == "embedded-fallback":
            label += " †"  # a config written from memory, not an exact copy of the published file
            recalled.append(case["case"])
        try:
            arch = parse_config(case["config"], case["case"])
            e = estimate(
                arch,
                gpu,
                settings_of(case),
                gpu_memory_utilization=case["util"],
                kv_cache_memory_bytes=flag_value(case, "--kv-cache-memory-bytes"),
            )
        except GpushareError as err:  # a refusal is a result: say so in the table
            print(f"| {label} | refused by gpushare: {err.message} | | | | | | | |")
            continue
        if no_kv:
            kv_cells = "– (none) | " + (f"{e.kv_cache_tokens:,}" if e.kv_cache_tokens else "0") + " | –"
        else:
            kv_real = int(parsed["kv_tokens"][0])
            kv_err = (e.kv_cache_tokens - kv_real) / kv_real
            kv_cells = f"{kv_real:,} | {e.kv_cache_tokens:,} | {kv_err:+.2%}"
            if V1_MOE_NOTE in e.notes:  # gpushare's note: checked on this one model only; reported apart
                label += " ‡"
                flagged.append(case["case"])
            else:
                worst_kv = max(worst_kv, abs(kv_err))
        proc_real = process_bytes(case)
        if proc_real:
            proc_err = (e.process_bytes - proc_real) / proc_real
            if V1_MOE_NOTE not in e.notes:
                worst_proc = max(worst_proc, abs(proc_err))
            process = f"{proc_real / GiB:.2f} / {e.process_bytes / GiB:.2f} | {proc_err:+.2%}"
        else:  # it never answered (see its error): no NVML reading at ready
            process = f"– / {e.process_bytes / GiB:.2f} | not ready: {case.get('error', '')[:40]}"

        print(
            f"| {label} | {pair(summary, 'weights_gib', e.weights_bytes)} | {kv_cells} "
            f"| {pair(summary, 'peak_activation_gib', e.activation_bytes)} "
            f"| {graphs_cell(summary, e)} | {process} |"
        )
    if recalled:
        print(f"\n† config.json written from memory (no exact copy here): {', '.join(recalled)}")
    if flagged:
        print(
            "\n‡ MoE on vLLM's V1 runner (its terms checked on Qwen3-30B-A3B-FP8 and gpt-oss-20b only; "
            f"kept out of the worst errors): {', '.join(flagged)}"
        )
    print(
        f"\nworst KV-token error {worst_kv:.2%} (target 2%); worst process error {worst_proc:.2%} (target 3%)"
    )
    suite = [case for case in cases if "phase" in case]
    if suite:
        run_facts(suite)
    if not math.isfinite(worst_kv):
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu/results/h200-vllm0.26.0/results.jsonl")
