"""`gpushare up` of an on-demand profile, end to end, through the real CLI, the real background
gateway/supervisor and real processes of tests/runtime/fake_vllm_server.py (which behaves as vLLM
0.26.0 was measured to: a sleeping server holds a completion unanswered and logs HELD_LINE).

The plan is the planner's own, for an H200 described in the profile, with each instance's command
swapped for the fake server (its sleep-mode flag and environment kept from the plan). It checks:
every on-demand instance is put to sleep by `up` before the next one starts; requests for two
sleeping models on one GPU (awake_max 1) are all answered, streaming and not; no request ever
reaches a sleeping server; `status --json`, /metrics, `gpushare wake`/`sleep` and their errors; an
on-demand instance killed while asleep is restarted by the supervisor and ends asleep."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from gpushare.planning.build import build_plan
from gpushare.planning.plan import Plan
from gpushare.profile import load_profile
from gpushare.runtime.store.state import load_state, profile_paths
from gpushare.vllm.sleep import SLEEP_MODE_FLAG

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "runtime" / "fake_vllm_server.py"
HELD_LINE = "fake: a completion arrived while asleep and is held"

PROFILE = """
name: od
gpus: H200
host_memory: 1TiB
awake_max: 1
defaults:
  mps: "off"
  on_demand: {wait_s: 20}
models:
  - name: small
    model: Qwen/Qwen2.5-1.5B-Instruct
    max_model_len: 8192
  - name: llama
    model: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 8192
    residency: on-demand
  - name: qwen
    model: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
    residency: on-demand
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_plan(tmp_path: Path) -> tuple[Plan, dict[str, int]]:
    """The planner's plan with each command replaced by the fake server on a free port."""
    import dataclasses

    path = tmp_path / "od.yaml"
    path.write_text(textwrap.dedent(PROFILE).lstrip())
    profile = load_profile(path)
    plan = build_plan(profile, profile.described_gpus() or [])
    assert plan.feasible and not plan.problems
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    ports = {}
    instances = []
    for inst in plan.instances:
        # what phase 1 put in the commands: the flag and the development mode, on on-demand only
        assert (SLEEP_MODE_FLAG in inst.argv) == inst.on_demand, inst.name
        assert (inst.env.get("VLLM_SERVER_DEV_MODE") == "1") == inst.on_demand, inst.name
        port = ports[inst.name] = free_port()
        argv = [sys.executable, str(FAKE), "--model", str(model_dir), "--served-model-name", inst.name]
        argv += ["--port", str(port), "--completion-s", "0.2"]
        if inst.on_demand:
            argv += [SLEEP_MODE_FLAG, "--sleep-s", "0.05", "--wake-s", "0.1"]
        instances.append(dataclasses.replace(inst, argv=tuple(argv), port=port))
    return dataclasses.replace(plan, instances=tuple(instances)), ports


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpushare", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return bytes(answer.read())


def sleeping(port: int) -> bool:
    return bool(json.loads(get(f"http://127.0.0.1:{port}/is_sleeping"))["is_sleeping"])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, int], int, Path, Path]]:
    plan, ports = fake_plan(tmp_path)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_json()))
    state_dir = tmp_path / "state"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GPUSHARE_STATE_DIR": str(state_dir),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    env.pop("GPUSHARE_API_KEY", None)
    gateway_port = free_port()
    try:
        up = cli(
            env, "up", "--plan-file", str(plan_file), "--gateway-port", str(gateway_port), "--timeout", "30"
        )
        assert up.returncode == 0, up.stdout + up.stderr
        yield env, ports, gateway_port, state_dir, plan_file
    finally:
        cli(env, "down", "--all")


def held_anywhere(state_dir: Path) -> list[str]:
    logs = (state_dir / "od" / "logs").glob("*.log")
    return [p.name for p in logs if HELD_LINE in p.read_text(errors="replace")]


WAITED: list[float] = []


async def complete(session: aiohttp.ClientSession, url: str, model: str, stream: bool) -> tuple[int, str]:
    body = {"model": model, "prompt": "hi", "max_tokens": 4, "stream": stream}
    async with session.post(url + "/v1/completions", json=body) as answer:
        text = await answer.text()
        if "X-Gpushare-Wake-Wait-Seconds" in answer.headers:
            WAITED.append(float(answer.headers["X-Gpushare-Wake-Wait-Seconds"]))
        if answer.status != 200:
            return answer.status, text
        if not stream:
            return 200, json.loads(text)["choices"][0]["text"]
        events = [
            line[6:] for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"
        ]
        return 200, "".join(json.loads(e)["choices"][0].get("text", "") for e in events)


async def alternate(url: str) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        calls = [
            complete(session, url, model, stream)
            for _ in range(2)
            for model in ("llama", "qwen", "small")
            for stream in (False, True)
        ]
        return await asyncio.gather(*calls)


def test_up_of_an_on_demand_profile_serves_every_model_through_the_gateway(
    running: tuple[dict[str, str], dict[str, int], int, Path, Path],
) -> None:
    env, ports, gateway_port, state_dir, plan_file = running
    url = f"http://127.0.0.1:{gateway_port}"
    state = load_state(profile_paths("od", state_dir))
    assert state is not None and state.swap is not None
    records = {r.name: r for r in state.instances}
    # up put each on-demand instance to sleep once it served, before the next one started
    assert sleeping(ports["llama"]) and sleeping(ports["qwen"])
    assert {n: "first_sleep_s" in records[n].actual for n in records} == {
        "small": False,
        "llama": True,
        "qwen": True,
    }
    llama_ready, qwen_started = records["llama"].ready_at, records["qwen"].started_at
    assert llama_ready is not None and qwen_started is not None and qwen_started >= llama_ready

    WAITED.clear()
    answers = asyncio.run(alternate(url))
    assert answers == [(200, "xxxx")] * len(answers)
    assert held_anywhere(state_dir) == []  # nothing was forwarded to a sleeping server
    assert WAITED and all(w >= 0 for w in WAITED)  # the held ones say how long they waited
    swaps = json.loads(get(url + "/gpushare/swap"))
    assert len(swaps["recent_swaps"]) == swaps["swaps_total"] >= 2
    assert all(len(r["put_to_sleep"]) == 1 for r in swaps["recent_swaps"][1:])  # awake_max 1
    assert sleeping(ports["llama"]) != sleeping(ports["qwen"])  # awake_max 1: one of them awake

    status = json.loads(cli(env, "status", "od", "--json").stdout)
    phases = {i["name"]: (i["residency"], i["sleep"]) for i in status["instances"]}
    assert phases["small"] == ("always", None)
    assert {phases["llama"][1], phases["qwen"][1]} == {"awake", "asleep"}
    assert status["swaps_total"]["od"] >= 2
    metrics = get(url + "/metrics").decode()
    for series in (
        "gpushare_swaps_total",
        "gpushare_swap_duration_seconds_bucket",
        "gpushare_wake_wait_seconds_count",
    ):
        assert series in metrics

    woke = cli(env, "wake", "llama")
    assert woke.returncode == 0 and woke.stdout.startswith("llama: "), woke.stdout + woke.stderr
    assert not sleeping(ports["llama"]) and sleeping(ports["qwen"])
    slept = cli(env, "sleep", "llama")
    assert slept.returncode == 0 and "asleep" in slept.stdout, slept.stdout + slept.stderr
    assert sleeping(ports["llama"])
    resident = cli(env, "wake", "small")
    assert resident.returncode == 2 and "resident" in resident.stderr + resident.stdout
    unknown = cli(env, "wake", "nope")
    assert unknown.returncode == 2 and "no model or instance 'nope'" in unknown.stderr + unknown.stdout
    # the development endpoints are the gateway's alone
    request = urllib.request.Request(url + "/sleep?level=1", data=b'{"model": "small"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 404

    # up again adopts what runs: the sleeping ones count as serving (no completion sent to them)
    again = cli(
        env, "up", "--plan-file", str(plan_file), "--gateway-port", str(gateway_port), "--timeout", "30"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sleeping(ports["llama"]) and held_anywhere(state_dir) == []


def test_an_on_demand_instance_killed_while_asleep_comes_back_asleep(
    running: tuple[dict[str, str], dict[str, int], int, Path, Path],
) -> None:
    env, ports, gateway_port, state_dir, plan_file = running
    paths = profile_paths("od", state_dir)
    before = load_state(paths)
    assert before is not None
    rec = next(r for r in before.instances if r.name == "qwen")
    assert rec.pid is not None and sleeping(ports["qwen"])
    os.killpg(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 40
    while True:
        assert time.monotonic() < deadline, "not restarted asleep within 40 s"
        state = load_state(paths)
        now = next(r for r in state.instances if r.name == "qwen") if state else None
        if now is not None and now.pid != rec.pid and now.restarts == 1 and now.state == "ready":
            try:
                if sleeping(ports["qwen"]):
                    break
            except OSError:
                pass
        time.sleep(0.2)
    assert psutil.pid_exists(now.pid)
    answers = asyncio.run(alternate(f"http://127.0.0.1:{gateway_port}"))
    assert answers == [(200, "xxxx")] * len(answers)
    assert held_anywhere(state_dir) == []
