"""bench/gpu: issue 16's two-GPU run, the parts that can be checked here (the run itself needs two
GPUs: bench/gpu/README.md, "Issue 16").

- bench/gpu/profiles/multi.yaml plans on 2 x H200 with both strategies: the TP instance on both
  GPUs, NVLink multicast off in every instance's environment, and no note that it is not;
- multi.table reads a plan, a state file and an NVML snapshot into per-GPU rows: each instance's
  processes on each of its GPUs (a TP instance: one worker per GPU), the miss against the targets;
- multi.load_kill against the bench plan run by `gpushare up --plan-file` on fake servers that
  lay their processes out as vLLM does at TP 2: the worker is killed, the instance comes back,
  the other models never fail.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.planning.build import build_plan, plan_loader
from gpushare.profile import load_profile
from gpushare.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import multi  # noqa: E402

CONFIGS = ROOT / "gpushare" / "catalog" / "hf_configs"
MODELS = {
    "qwen2.5-32b": "Qwen--Qwen2.5-32B-Instruct",
    "qwen2.5-7b": "Qwen--Qwen2.5-7B-Instruct",
    "llama3.1-8b": "meta-llama--Llama-3.1-8B-Instruct",
}
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def bench_profile(tmp_path: Path, command: list[str] | None = None, base_port: int | None = None) -> Path:
    """multi.yaml with its /tmp/models folders here (config.json only), optionally another command."""
    for name, config in MODELS.items():
        (tmp_path / "models" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / name / "config.json").write_text((CONFIGS / f"{config}.json").read_text())
    text = (ROOT / "bench" / "gpu" / "profiles" / "multi.yaml").read_text()
    text = text.replace("/tmp/models/", f"{tmp_path}/models/")
    extra = ""
    if command is not None:
        extra += f"  command: {json.dumps(command)}\n"
    if base_port is not None:
        extra += f"  base_port: {base_port}\n"
    text = text.replace('  mps: "off"\n', '  mps: "off"\n' + extra)
    path = tmp_path / "multi.yaml"
    path.write_text(text)
    return path


def plan_json(profile: Path, strategy: str) -> dict[str, object]:
    loaded = load_profile(profile)
    plan = build_plan(loaded, parse_gpu_spec("2xH200"), strategy=strategy, load=plan_loader())
    return plan.to_json()


@pytest.mark.parametrize("strategy", ["pack", "spread"])
def test_the_bench_profile_plans_a_tp_instance_across_both_gpus(tmp_path: Path, strategy: str) -> None:
    plan = plan_json(bench_profile(tmp_path), strategy)
    assert plan["feasible"] is True
    by_name = {i["name"]: i for i in plan["instances"]}  # type: ignore[attr-defined]
    assert by_name["qwen2.5-32b"]["gpus"] == [0, 1]
    assert by_name["qwen2.5-32b"]["estimate"]["parallel_bytes"] == 588 * MiB
    for inst in by_name.values():
        assert {k: inst["env"][k] for k in MULTICAST_OFF} == MULTICAST_OFF
    singles = sorted(tuple(by_name[n]["gpus"]) for n in ("qwen2.5-7b", "llama3.1-8b"))
    assert singles == ([(0,), (0,)] if strategy == "pack" else [(0,), (1,)])
    assert not any("NVLink SHARP" in n for n in plan["notes"])  # type: ignore[attr-defined]


PLAN = {
    "instances": [
        {"name": "tp", "gpus": [0, 1], "planned_bytes": 40 * GiB,
         "estimate": {"kv_cache_tokens": 100_000, "tensor_parallel_size": 2}},
        {"name": "one", "gpus": [0], "planned_bytes": 20 * GiB,
         "estimate": {"kv_cache_tokens": 50_000, "tensor_parallel_size": 1}},
    ],
    "gpus": [{"index": 0, "planned_bytes": 60 * GiB}, {"index": 1, "planned_bytes": 40 * GiB}],
}  # fmt: skip
STATE = {
    "instances": [
        {"name": "tp", "pid": 100, "actual": {"kv_cache_tokens": 99_000}},
        {"name": "one", "pid": 200, "actual": {"kv_cache_tokens": 50_000}},
    ]
}
NVML = {
    "gpus": [
        {"index": 0, "used": 61 * GiB, "free": 79 * GiB, "procs": [
            {"pid": 102, "bytes": 39 * GiB, "title": "VLLM::Worker_TP0", "sid": 100},
            {"pid": 100, "bytes": GiB // 2, "title": "/usr/bin/python3 -m vllm serve", "sid": 100},
            {"pid": 201, "bytes": 20 * GiB, "title": "VLLM::EngineCore", "sid": 200},
            {"pid": 900, "bytes": GiB, "title": "someone else", "sid": 900},
        ]},
        {"index": 1, "used": 43 * GiB, "free": 97 * GiB, "procs": [
            {"pid": 103, "bytes": 43 * GiB, "title": "VLLM::Worker_TP1", "sid": 100},
        ]},
    ]
}  # fmt: skip


def test_table_reads_each_gpu_of_a_tp_instance_against_the_per_gpu_plan() -> None:
    text = multi.table(PLAN, STATE, NVML, "pack-ready")
    rows = [line for line in text.splitlines() if line.startswith("| tp |") or line.startswith("| one |")]
    assert rows[0] == "| tp | 0 | VLLM::Worker_TP0 39.00, python3 0.50 | 40.00 | 39.50 | -1.2 % |"
    assert rows[1] == "| tp | 1 | VLLM::Worker_TP1 43.00 | 40.00 | 43.00 | +7.5 % |"
    assert rows[2] == "| one | 0 | VLLM::EngineCore 20.00 | 20.00 | 20.00 | +0.0 % |"
    assert rows[3] == "| tp | 2 | 100,000 | 99,000 | -1.0 % |"
    assert "Outside the targets: tp on GPU 1: process +7.5 % (target ±3 %)" in text
    assert "DRY RUN" not in text and "NVML:" not in text


def test_a_dry_table_says_it_measured_nothing() -> None:
    text = multi.table(PLAN, STATE, {"error": "NVMLError_LibraryNotFound", "gpus": []}, "x", dry=True)
    assert "DRY RUN: fake servers" in text and "NVML: NVMLError_LibraryNotFound" in text
    assert "| tp | 0 | - | 40.00 | - | - |" in text


def test_load_kill_against_the_bench_plan_on_fake_servers(tmp_path: Path) -> None:
    state_dir = Path(os.environ["GPUSHARE_STATE_DIR"])
    fake = str(ROOT / "tests" / "runtime" / "fake_vllm_server.py")
    profile = bench_profile(tmp_path, [sys.executable, fake], base_port=random.randint(20000, 40000))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan_json(profile, "pack")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def gpushare(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "gpushare", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    up = gpushare("up", "--plan-file", str(plan_file), "--gateway-port", "0", "--timeout", "60")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        victim = {"victim": "qwen2.5-32b", "title": "VLLM::Worker_TP1"}
        args = Namespace(state_dir=str(state_dir), profile="multi", max_s=60, **victim)
        report = multi.load_kill(args)
    finally:
        down = gpushare("down", "multi")
    assert down.returncode == 0, down.stdout + down.stderr
    assert set(report["processes_before"]) == {"VLLM::EngineCore", "VLLM::Worker_TP0", "VLLM::Worker_TP1"}
    assert report["killed"]["pid"] == report["processes_before"]["VLLM::Worker_TP1"]
    assert report["served_again_s"] is not None and report["others_all_200"] is True
    assert report["old_processes_left"] == []
    assert set(report["processes_after"]) == set(report["processes_before"])
    assert not set(report["processes_after"].values()) & set(report["processes_before"].values())
    errors = [e["error"] for e in report["timeline"] if e["error"]]
    assert errors and "VLLM::Worker_TP1" in errors[0]
    assert report["timeline"][-1]["restarts"] == 1 and report["timeline"][-1]["state"] == "ready"
    victim = report["load"]["qwen2.5-32b"]["outcomes"]
    assert victim["200"] >= 6 and set(victim) <= {"200", "500", "503"}
