"""The launcher against real, cheap processes (tests/runtime/fake_vllm_server.py), for the faults:
crash at start, port taken, never ready, broken engine, SIGTERM ignored, gpushare killed mid-`up`,
stale state, two `up`s at once, a command that does not exist."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launch_helpers import fake_server_argv, free_port, instance, model_folder, plan_of, real_process_edges

from gpushare.errors import EnvironmentProblem
from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.launcher.down import down
from gpushare.runtime.launcher.edges import record_alive
from gpushare.runtime.launcher.status import collect_status
from gpushare.runtime.launcher.up import InstanceFailedError, UpOptions, up
from gpushare.runtime.store.lock import profile_lock
from gpushare.runtime.store.state import InstanceRecord, ProfileState, load_state, profile_paths, save_state

FAST = UpOptions(ready_timeout_s=20, poll_s=0.1, stop_timeout_s=1.5)


def _alive(records: tuple[InstanceRecord, ...]) -> list[str]:
    runner = SubprocessRunner()
    return [rec.name for rec in records if record_alive(rec, runner)]


def test_two_fake_servers_up_status_logs_down(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    ports = [free_port(), free_port()]
    plan = plan_of(
        *(instance(f"m{i}", fake_server_argv(f"m{i}", p, model, "--child"), p) for i, p in enumerate(ports))
    )
    paths = profile_paths("lab", isolated_env)
    edges = real_process_edges()
    result = up(plan, paths, edges, FAST)
    assert set(result.ready) == {"m0", "m1"}
    assert result.state.instances[0].actual["kv_cache_tokens"] == 131072
    assert result.state.instances[0].actual["metrics_num_gpu_blocks"] == 1024

    report = collect_status(isolated_env, edges)
    assert [(s.name, s.state, s.kv_cache_tokens, s.kv_cache_usage) for s in report.instances] == [
        ("m0", "ready", 131072, 0.25),
        ("m1", "ready", 131072, 0.25),
    ]
    assert "Starting vLLM server" in Path(report.instances[0].log_path).read_text()

    again = up(plan, paths, edges, FAST)  # the same plan again: a no-op
    assert again.already_running

    state = load_state(paths)
    assert state is not None
    stopped = down(paths, edges, timeout_s=5)
    assert set(stopped.stopped) == {"m0", "m1"}
    assert _alive(state.instances) == []
    assert load_state(paths) is None
    assert down(paths, edges).stopped == ()  # idempotent


def test_crash_at_start_shows_error_and_stops_the_others(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    good, bad = free_port(), free_port()
    plan = plan_of(
        instance("good", fake_server_argv("good", good, model, "--child"), good),
        instance(
            "bad", fake_server_argv("bad", bad, model, "--crash", "boom: head size 48 unsupported"), bad
        ),
    )
    paths = profile_paths("lab", isolated_env)
    with pytest.raises(InstanceFailedError) as caught:
        up(plan, paths, real_process_edges(), FAST)
    failure = caught.value.failures[0]
    assert failure.name == "bad"
    assert failure.reason == "exited with code 1 before it served"
    assert failure.error == "ValueError: boom: head size 48 unsupported"
    assert "Traceback" in failure.tail
    assert "good" in caught.value.stopped
    state = load_state(paths)
    assert state is not None
    assert {r.name: r.state for r in state.instances} == {"good": "stopped", "bad": "failed"}
    assert _alive(state.instances) == []
    assert state.up_pid is None


def test_keep_going_leaves_the_good_one_running(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    good, bad = free_port(), free_port()
    plan = plan_of(
        instance("good", fake_server_argv("good", good, model), good),
        instance("bad", fake_server_argv("bad", bad, model, "--crash", "boom"), bad),
    )
    paths = profile_paths("lab", isolated_env)
    edges = real_process_edges()
    result = up(plan, paths, edges, UpOptions(ready_timeout_s=20, poll_s=0.1, keep_going=True))
    assert result.ready == ("good",)
    assert [f.name for f in result.failed] == ["bad"]
    assert _alive(result.state.instances) == ["good"]
    assert down(paths, edges).stopped == ("good",)


def test_port_taken_fails_preflight_and_starts_nothing(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = free_port()
        plan = plan_of(
            instance("a", fake_server_argv("a", other, model), other),
            instance("b", fake_server_argv("b", port, model), port),
        )
        paths = profile_paths("lab", isolated_env)
        with pytest.raises(EnvironmentProblem, match=f"b: port {port} is already in use"):
            up(plan, paths, real_process_edges(), FAST)
    assert load_state(paths) is None
    assert not paths.log_file("a").exists()


@pytest.mark.parametrize(
    ("case", "argv0_and_module", "message"),
    [
        (
            "missing-program",
            ["/nonexistent/bin/python3", "-m", "vllm.entrypoints.openai.api_server"],
            "command not found",
        ),
        (
            "missing-module",
            [sys.executable, "-m", "vllm_not_installed.api_server"],
            "module vllm_not_installed not found",
        ),
        (
            "missing-submodule",
            [sys.executable, "-m", "json.no_such_server"],
            "module json.no_such_server not found",
        ),
        ("missing-script", [sys.executable, "/nonexistent/serve.py"], "script not found"),
    ],
)
def test_vllm_command_that_does_not_exist(
    case: str, argv0_and_module: list[str], message: str, tmp_path: Path, isolated_env: Path
) -> None:
    model = model_folder(tmp_path)
    port = free_port()
    plan = plan_of(instance("a", [*argv0_and_module, "--model", str(model), "--port", str(port)], port))
    with pytest.raises(EnvironmentProblem, match=message):
        up(plan, profile_paths("lab", isolated_env), real_process_edges(), FAST)


def test_model_folder_missing_fails_preflight(tmp_path: Path, isolated_env: Path) -> None:
    port = free_port()
    plan = plan_of(instance("a", fake_server_argv("a", port, tmp_path / "nope"), port))
    with pytest.raises(EnvironmentProblem, match="model folder not found"):
        up(plan, profile_paths("lab", isolated_env), real_process_edges(), FAST)


def test_not_ready_in_time_is_stopped_with_its_phase(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    port = free_port()
    plan = plan_of(instance("slow", fake_server_argv("slow", port, model, "--never-ready", "--child"), port))
    paths = profile_paths("lab", isolated_env)
    with pytest.raises(InstanceFailedError, match=r"slow not ready after 1 s \(phase: compiling\)"):
        up(plan, paths, real_process_edges(), UpOptions(ready_timeout_s=1, poll_s=0.1, stop_timeout_s=1.5))
    state = load_state(paths)
    assert state is not None and _alive(state.instances) == []


def test_engine_dead_behind_live_api_server_fails_fast(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    port = free_port()
    plan = plan_of(instance("sick", fake_server_argv("sick", port, model, "--broken-engine"), port))
    start = time.monotonic()
    with pytest.raises(InstanceFailedError, match="serves but cannot complete"):
        up(plan, profile_paths("lab", isolated_env), real_process_edges(), FAST)
    assert time.monotonic() - start < 15


def test_down_escalates_to_sigkill_for_a_session_ignoring_sigterm(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    port = free_port()
    plan = plan_of(
        instance("stubborn", fake_server_argv("stubborn", port, model, "--ignore-sigterm", "--child"), port)
    )
    paths = profile_paths("lab", isolated_env)
    edges = real_process_edges()
    result = up(plan, paths, edges, FAST)
    rec = result.state.instances[0]
    assert rec.pid is not None and rec.pid_start_time is not None
    assert len(edges.runner.session_pids(rec.pid, rec.pid_start_time)) == 2  # server + its child
    started = time.monotonic()
    assert down(paths, edges, timeout_s=1).stopped == ("stubborn",)
    assert 1 <= time.monotonic() - started < 10
    assert _alive(result.state.instances) == []


_UP_SCRIPT = """
import json, sys
from gpushare.runtime.launcher.up import UpOptions, up
from gpushare.runtime.store.state import profile_paths
from gpushare.planning.plan import Plan, PlannedInstance
from pathlib import Path
spec = json.loads(sys.argv[1])
instances = tuple(PlannedInstance(**{**i, "argv": tuple(i["argv"]), "gpus": ()}) for i in spec["instances"])
plan = Plan(profile_name="lab", feasible=True, gpus=(), instances=instances, unplaced=())
from gpushare.runtime.launcher.edges import real_edges
paths = profile_paths("lab", Path(spec["root"]))
up(plan, paths, real_edges(None), UpOptions(ready_timeout_s=600, poll_s=0.1))
"""


def test_gpushare_killed_mid_up_then_down_cleans_up(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    fast, slow = free_port(), free_port()
    spec = {
        "root": str(isolated_env),
        "instances": [
            instance("fast", fake_server_argv("fast", fast, model, "--child"), fast).__dict__,
            instance(
                "slow", fake_server_argv("slow", slow, model, "--never-ready", "--child"), slow
            ).__dict__,
        ],
    }
    proc = subprocess.Popen([sys.executable, "-c", _UP_SCRIPT, json.dumps(spec)])
    paths = profile_paths("lab", isolated_env)
    deadline = time.monotonic() + 30
    state: ProfileState | None = None
    while time.monotonic() < deadline:
        state = load_state(paths)
        if state and {r.name: r.state for r in state.instances} == {"fast": "ready", "slow": "starting"}:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"up did not get going: {state}")
    assert state is not None and state.up_pid == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(_alive(state.instances)) == ["fast", "slow"]  # orphans, each in its own session

    report = collect_status(isolated_env, real_process_edges())
    assert {s.name: s.state for s in report.instances} == {"fast": "ready", "slow": "starting"}
    assert report.up_in_progress == ()  # the up that wrote it is dead

    result = down(paths, real_process_edges(), timeout_s=5)
    assert sorted(result.stopped) == ["fast", "slow"]
    assert _alive(state.instances) == []


def test_stale_state_dead_and_recycled_pids(tmp_path: Path, isolated_env: Path) -> None:
    paths = profile_paths("lab", isolated_env)
    runner = SubprocessRunner()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A live process that took over a pid: same pid, another start time. Never signalled.
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        import psutil

        real_start = psutil.Process(bystander.pid).create_time()
        records = (
            InstanceRecord("dead", "m", 1, ("x",), {}, str(paths.log_file("dead")), pid=dead.pid,
                           pid_start_time=time.time() - 100, state="ready"),
            InstanceRecord("recycled", "m", 2, ("x",), {}, str(paths.log_file("recycled")), pid=bystander.pid,
                           pid_start_time=real_start - 50, state="ready"),
        )  # fmt: skip
        save_state(paths, ProfileState("lab", records))
        report = collect_status(isolated_env, real_process_edges())
        assert [s.state for s in report.instances] == ["failed", "failed"]
        result = down(paths, real_process_edges(), timeout_s=1)
        assert result.stopped == ()
        assert set(result.gone) == {"dead", "recycled"}
        assert bystander.poll() is None
        assert runner.is_running(bystander.pid, real_start)
        assert load_state(paths) is None
    finally:
        bystander.kill()
        bystander.wait()


_HOLD_LOCK = """
import sys
from pathlib import Path
from gpushare.runtime.store.lock import profile_lock
from gpushare.runtime.store.state import profile_paths
with profile_lock(profile_paths("lab", Path(sys.argv[1]))):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_two_ups_at_once_the_second_is_refused(tmp_path: Path, isolated_env: Path) -> None:
    model = model_folder(tmp_path)
    port = free_port()
    plan = plan_of(instance("a", fake_server_argv("a", port, model), port))
    paths = profile_paths("lab", isolated_env)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(isolated_env)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(EnvironmentProblem, match=rf"busy: gpushare pid {holder.pid} holds its lock"):
            up(plan, paths, real_process_edges(), FAST)
        assert load_state(paths) is None
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    with profile_lock(paths):  # released by the holder's exit
        pass
