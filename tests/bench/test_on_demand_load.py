"""bench/gpu/on_demand_load.py in its dry mode: the GPU script's driver against fake vLLM servers
(tests/runtime/fake_vllm_server.py) brought up by the real `gpushare up`, so its logic is checked
before the lead spends GPU time on it. The plan is the planner's for bench/gpu/profiles/
on-demand-h200.yaml on an H200 (model folders named by their Hugging Face ids here), which also
checks that the profile keeps one model awake at a time; each command is swapped for the fake."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from gpushare.planning.build import build_plan
from gpushare.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "bench" / "gpu" / "on_demand_load.py"
SCRIPT = ROOT / "bench" / "gpu" / "run_on_demand.sh"
PROFILE = ROOT / "bench" / "gpu" / "profiles" / "on-demand-h200.yaml"
FAKE = ROOT / "tests" / "runtime" / "fake_vllm_server.py"
HELD_LINE = "fake: a completion arrived while asleep and is held"
IDS = {
    "/tmp/models/llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "/tmp/models/qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_plan_on_fakes(tmp_path: Path) -> Path:
    text = PROFILE.read_text().replace("gpus: auto", "gpus: H200")
    for folder, hf_id in IDS.items():
        text = text.replace(folder, hf_id)
    path = tmp_path / "on-demand-h200.yaml"
    path.write_text(text)
    profile = load_profile(path)
    plan = build_plan(profile, profile.described_gpus() or [])
    assert plan.feasible and not plan.problems
    (gpu,) = plan.gpus
    assert gpu.awake is not None
    # the point of the profile: more than the GPU awake together, one at a time
    assert sum(i.planned_bytes for i in plan.instances) > gpu.cuda_total_bytes
    assert [sorted(s) for s in gpu.awake.sets] == [["llama-a"], ["llama-b"], ["qwen2.5-7b"]]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    instances = []
    for inst in plan.instances:
        port = free_port()
        argv = [sys.executable, str(FAKE), "--model", str(model_dir), "--served-model-name", inst.name]
        argv += ["--port", str(port), "--completion-s", "0.1", "--enable-sleep-mode", "--wake-s", "0.05"]
        argv += ["--awake-bytes", str(inst.planned_bytes), "--asleep-bytes", str(inst.asleep_bytes)]
        instances.append(dataclasses.replace(inst, argv=tuple(argv), port=port))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(dataclasses.replace(plan, instances=tuple(instances)).to_json()))
    return plan_file


def test_the_gpu_script_parses_and_names_its_driver() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "bench/gpu/on_demand_load.py" in text and "bench/gpu/profiles/$PROFILE.yaml" in text
    assert re.search(r"^PROFILE=on-demand-h200$", text, re.M)


def test_dry_run_of_the_driver_against_fake_servers(tmp_path: Path) -> None:
    plan_file = bench_plan_on_fakes(tmp_path)
    state_dir, out = tmp_path / "state", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPUSHARE_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("GPUSHARE_API_KEY", None)
    gateway = free_port()

    def gpushare(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpushare", *args], env=env, capture_output=True, text=True, timeout=120
        )

    def drive(phase: str, *extra: str) -> str:
        args = [
            sys.executable,
            str(DRIVER),
            phase,
            "--gateway",
            f"http://127.0.0.1:{gateway}",
            "--plan",
            str(plan_file),
        ]
        args += ["--state-dir", str(state_dir), "--profile", "on-demand-h200", "--out", str(out)]
        args += ["--burst", "4", "--max-tokens", "8", "--rounds", "2", "--up-seconds", "1.5", *extra]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=200)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    up = gpushare("up", "--plan-file", str(plan_file), "--gateway-port", str(gateway), "--timeout", "30")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        for phase in ("alone", "asleep", "alternate"):
            drive(phase)
        text = drive("restart", "--restart", "llama-b")
    finally:
        gpushare("down", "--all")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = {(r["phase"], r["kind"]) for r in rows}
    expected = {("alone", "wake"), ("alone", "burst"), ("alone", "memory"), ("asleep", "memory")}
    expected |= {("alternate", "burst"), ("alternate", "swap"), ("restart", "cold_start")}
    assert expected <= kinds
    requests = [r for r in rows if r["kind"] == "request"]
    assert requests and all(r["status"] == 200 for r in requests)
    # every burst of the alternating load began with its model asleep: some requests waited
    waits = [r["wake_wait_s"] for r in requests if r["phase"] == "alternate"]
    assert sum(w is not None for w in waits) >= 6
    swaps = [r for r in rows if r["kind"] == "swap"]
    # 2 rounds x 3 models; the first from all asleep, each later one puts the previous model to sleep
    assert [len(s["put_to_sleep"]) for s in swaps] == [0, 1, 1, 1, 1, 1]
    (cold,) = [r for r in rows if r["kind"] == "cold_start"]
    assert cold["instance"] == "llama-b" and cold["first_completion_s"] is not None
    asleep = {r["instance"]: r for r in rows if r["kind"] == "memory" and r["label"] == "all-asleep"}
    assert set(asleep) == {"llama-a", "llama-b", "qwen2.5-7b"}
    assert all(r["swap_phase"] == "asleep" and r["rss_bytes"] > 0 for r in asleep.values())
    for table in (
        "| swap seconds (lock to target awake) | 6 |",
        "| llama-a |",
        "| llama-b | 0.",  # its start-to-ready, from the state as up left it (restart took it out)
        "llama-swap's way (stop llama-b",
    ):
        assert table in text
    assert (out / "summary.md").read_text() == text.rstrip("\n") + "\n"
    logs = (state_dir / "on-demand-h200" / "logs").glob("*.log")
    assert [p.name for p in logs if HELD_LINE in p.read_text()] == []
