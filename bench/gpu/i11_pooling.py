"""Issue 11's pooling models alone on the GPU: what an encoder-only model (bge-m3, the reranker) and
a decoder embedder (Qwen3-Embedding-0.6B) hold, one server at a time, at a utilization, with and
without CUDA graphs and at a second batch size, so each term of the process footprint shows apart.

The six-at-once run (bench/gpu/results/h200-i11) measured each process with its neighbours
starting beside it, which pollutes every free-memory figure vLLM logs (its "Graph capturing ...
took" reads the GPU's free memory); alone, the log's init snapshot (CUDA context), the load line,
the profile's accounting (decoders) and NVML's per-process bytes are this server's own.

GPU machine, after the receive.sh calls and `source .vllm-wheels/bin/env.sh`:
  python3 bench/gpu/i11_pooling.py --out $OUT --deadline-epoch EPOCH
(bench/gpu/run_i11_pooling.sh does it all.) Records are i11_suite.py's, so compare.py reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

import collect as c
from i11_folders import MODELS
from i11_suite import MAX_MODEL_LEN, compile_path, ensure_folders, log_folders, log_result, record

# (case, model, utilization, extra vllm serve arguments, cap seconds, seconds needed), by priority.
CASES = [
    ("bge-m3_u005", "bge-m3", 0.05, [], 150, 60),
    ("qwen3-embedding-0.6b_u008", "qwen3-embedding-0.6b", 0.08, [], 170, 70),
    ("bge-m3_u005_eager", "bge-m3", 0.05, ["--enforce-eager"], 100, 40),
    ("bge-reranker-v2-m3_u005", "bge-reranker-v2-m3", 0.05, [], 150, 60),
    ("bge-m3_u005_b16k", "bge-m3", 0.05, ["--max-num-batched-tokens", "16384"], 150, 60),
    ("qwen3-embedding-0.6b_u008_eager", "qwen3-embedding-0.6b", 0.08, ["--enforce-eager"], 100, 40),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--state", default="/tmp/collect-i11-pooling")
    ap.add_argument("--models-root", default="/tmp/models")
    ap.add_argument("--deadline-epoch", type=float, default=c.now() + 500)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.makedirs(os.path.join(a.state, "logs_full"), exist_ok=True)
    gpu = threading.Thread(target=c.gpu_info, args=(a.state,))
    gpu.start()
    names = sorted({t[1] for t in CASES})
    folders = ensure_folders(a.models_root, names, tiny=False)
    log_folders(folders)
    gpu.join()
    done_path = os.path.join(a.state, "done.json")
    done: list[str] = c.read_json(done_path) if os.path.exists(done_path) else []
    only = {s for s in a.only.split(",") if s}
    results = os.path.join(a.state, "results.jsonl")
    for i, (case, model, util, extra, cap_max, need) in enumerate(CASES):
        if (only and case not in only) or case in done or "error" in folders[model]:
            continue
        left = a.deadline_epoch - c.now()
        if left < need:
            c.log(f"deadline: {left:.0f}s left, not starting {case} (needs {need}s)")
            continue
        cap = min(cap_max, left - 15)
        res = record(case, model, util, "alone", folders[model], cap, MAX_MODEL_LEN)
        res["extra_args"] = ["--runner", "pooling", *extra]
        res["kv_cache_memory_bytes"] = None
        argv = c.serve_argv(folders[model]["folder"], case, 8400 + i, util, MAX_MODEL_LEN, res["extra_args"])
        c.log(f"alone: {case} (cap {cap:.0f}s, {left:.0f}s left)")
        logpath = os.path.join(a.state, "logs_full", case + ".log")
        [res] = c.run_together([(res, argv, 8400 + i, logpath, MODELS[model].task)], cap)
        res["group"] = None
        res["compile_cache"] = compile_path(res.get("parsed", {}))
        log_result(res)
        with open(results, "a") as f:
            f.write(json.dumps(res) + "\n")
        if "timeout" not in res.get("error", ""):
            done.append(case)
        c.write_json(done, done_path)
        c.export(a.state, a.out, files=("results.jsonl", "gpuinfo.json"), full_logs=True)
    c.export(a.state, a.out, files=("results.jsonl", "gpuinfo.json"), full_logs=True)
    c.log("done:", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
