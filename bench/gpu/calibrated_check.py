"""Calibrated accuracy on held-out settings: calibrate from one real start, predict another.

Run: .venv/bin/python bench/gpu/calibrated_check.py [bench/gpu/results/h200-heldout]

For Qwen3-8B and Llama-3.2-3B on the H200 (vLLM 0.26.0), the start at --gpu-memory-utilization 0.3
(compiled graphs loaded from the cache, as on every start after the first) is turned into a
calibration record exactly as `gpushare calibrate` does; the record then predicts a different
start: --kv-cache-memory-bytes 10 GiB (both models on the GPU at once). Printed: predicted vs
measured KV tokens and NVML process bytes, uncalibrated and calibrated.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from gpushare.calibration import key_for, record_from_run
from gpushare.estimate_job import load_model
from gpushare.memory import GpuTarget, ServeSettings, estimate
from gpushare.memory.cudagraphs import cudagraphs_in_budget
from gpushare.units import GiB
from gpushare.vllm.log import parse_vllm_log

H200 = GpuTarget("NVIDIA H200", 150_109_880_320, 150_754_820_096)
MODELS = {"qwen3-8b": "Qwen/Qwen3-8B", "llama3.2-3b": "meta-llama/Llama-3.2-3B-Instruct"}
KV_FIXED = 10 * GiB


def engine_bytes(nvml_file: Path, log: str) -> int:
    """NVML's bytes for the EngineCore process whose pid the server's log names."""
    pid = int(re.search(r"\(EngineCore pid=(\d+)\)", log).group(1))  # type: ignore[union-attr]
    return next(p["used"] for p in json.loads(nvml_file.read_text())["procs"] if p["pid"] == pid)


def _err(value: int, measured: int) -> str:
    return f"{(value - measured) / measured:+.2%}"


def main(results: Path) -> None:
    print(
        "| model | target | KV tokens measured | predicted (err) | process measured | uncalibrated (err) "
        "| calibrated (err) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, repo in MODELS.items():
        facts = load_model(repo)
        settings = ServeSettings(max_model_len=8192)
        log = (results / "logs" / f"util0.3-{name}.log").read_text(errors="replace")
        accounting = parse_vllm_log(log, name)
        requested = math.ceil(H200.cuda_total_bytes * accounting.utilization)
        process = engine_bytes(results / "direct" / "util0.3" / f"{name}.nvml.json", log)
        record = record_from_run(
            key_for(facts, H200, settings),
            accounting,
            requested,
            process,
            "util 0.3 start",
            graphs_in_budget=cudagraphs_in_budget(settings, facts.arch),
        )
        fixed_log = (results / "logs" / f"kv10g-{name}.log").read_text(errors="replace")
        tokens = int(fixed_log.split("GPU KV cache size: ")[1].split(" tokens")[0].replace(",", ""))
        measured = engine_bytes(results / "direct" / "kv10g" / f"{name}.nvml.json", fixed_log)
        plain = estimate(
            facts.arch, H200, settings, gpu_memory_utilization=0.3, kv_cache_memory_bytes=KV_FIXED
        )
        calibrated = estimate(
            facts.arch,
            H200,
            settings,
            gpu_memory_utilization=0.3,
            kv_cache_memory_bytes=KV_FIXED,
            measured=record.terms,
        )

        print(
            f"| {repo} ({accounting.compile_cache} cache) | --kv-cache-memory-bytes 10GiB | {tokens:,} "
            f"| {calibrated.kv_cache_tokens:,} ({(calibrated.kv_cache_tokens - tokens) / tokens:+.2%}) "
            f"| {measured:,} | {plain.process_bytes:,} ({_err(plain.process_bytes, measured)}) "
            f"| {calibrated.process_bytes:,} ({_err(calibrated.process_bytes, measured)}) |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu/results/h200-heldout"))
