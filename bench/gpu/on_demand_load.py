"""The load driver of bench/gpu/run_on_demand.sh: on-demand models through gpushare's gateway.

Standard library only (it runs on the GPU machine beside vLLM, and here against the fake servers:
tests/bench/test_on_demand_load.py). Each phase appends its records to OUT/results.jsonl and
rewrites OUT/summary.md, so a run cut short by its deadline still leaves both.

    python3 on_demand_load.py PHASE --gateway URL --plan plan.json --state-dir DIR --profile NAME
        --out OUT [--deadline EPOCH] [--burst 16] [--max-tokens 128] [--rounds 4]

Phases:
  alone       for each model: `wake` it through the control endpoint, one warm-up request, NVML
              and host RSS of every instance (this one awake, the others asleep), then a burst of
              --burst concurrent requests with no swap: tokens/s alone
  asleep      put every model to sleep, then NVML and RSS of every instance asleep
  alternate   rounds of bursts, each model in turn (each burst starts with its model asleep, so
              it waits for a swap): per request its wait for the wake (the gateway's
              X-Gpushare-Wake-Wait-Seconds) and latency, per burst tokens/s, per swap the
              gateway's record (GET /gpushare/swap: seconds, sleep part, wake part)
  restart     what llama-swap does instead: stop one instance (`gpushare down PROFILE NAME`) and
              start its very command again, timing to /health and to the first completion
  summary     only rewrite OUT/summary.md from OUT/results.jsonl (and the state file)

Memory is read from NVML (pynvml, when it imports and a driver answers) per process of the
instance's session, and host RSS from /proc; both are summed over the instance's session.
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
from pathlib import Path
from typing import Any

WAIT_HEADER = "X-Gpushare-Wake-Wait-Seconds"
UP_STATE = "state-after-up.json"
GIB = 1 << 30


# --- small I/O helpers ---------------------------------------------------------------------------


def http(
    method: str, url: str, body: Any = None, timeout: float = 300.0
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    key = os.environ.get("GPUSHARE_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read()


def record(out: Path, phase: str, kind: str, /, **data: Any) -> dict[str, Any]:
    row = {"phase": phase, "kind": kind, "time": round(time.time(), 3), **data}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def read_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_state(state_dir: Path, profile: str) -> dict[str, Any]:
    return dict(json.loads((state_dir / profile / "state.json").read_text()))


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def nvml_per_pid() -> dict[int, int] | None:
    """pid -> GPU bytes on every GPU, or None without NVML."""
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception:
        return None
    try:
        used: dict[int, int] = {}
        for i in range(nv.nvmlDeviceGetCount()):
            for p in nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(i)):
                if p.usedGpuMemory is not None:
                    used[int(p.pid)] = used.get(int(p.pid), 0) + int(p.usedGpuMemory)
        return used
    finally:
        nv.nvmlShutdown()


def swap_view(gateway: str) -> dict[str, Any]:
    status, _, body = http("GET", gateway + "/gpushare/swap", timeout=10)
    return dict(json.loads(body)) if status == 200 else {"error": status}


# --- the phases ----------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.gateway = args.gateway.rstrip("/")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.plan = json.loads(Path(args.plan).read_text())
        self.models = [i["name"] for i in self.plan["instances"] if i.get("residency") == "on-demand"]
        self.deadline = args.deadline or time.time() + 3600
        kept = self.out / UP_STATE
        if not kept.exists():  # the state as `up` left it (restart takes an instance out of it)
            with contextlib.suppress(OSError):
                kept.write_text(json.dumps(load_state(Path(args.state_dir), args.profile)))

    def left(self) -> float:
        return self.deadline - time.time()

    def memory(self, phase: str, label: str) -> None:
        """NVML and host RSS per instance now, beside what the plan says."""
        state = load_state(Path(self.args.state_dir), self.args.profile)
        used = nvml_per_pid()
        phases = {i["instance"]: i["phase"] for i in swap_view(self.gateway).get("instances", [])}
        planned = {i["name"]: i for i in self.plan["instances"]}
        for rec in state["instances"]:
            pids = session_pids(rec["pid"]) if rec.get("pid") else []
            plan = planned.get(rec["name"], {})
            record(
                self.out,
                phase,
                "memory",
                label=label,
                instance=rec["name"],
                swap_phase=phases.get(rec["name"]),
                nvml_bytes=None if used is None else sum(used.get(p, 0) for p in pids),
                rss_bytes=rss_bytes(pids),
                planned_bytes=plan.get("planned_bytes"),
                asleep_bytes=plan.get("asleep_bytes"),
                host_bytes=plan.get("host_bytes"),
            )

    def complete(self, model: str, max_tokens: int) -> dict[str, Any]:
        body = {
            "model": model,
            "prompt": "Write a long story about a lighthouse keeper.",
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,  # vLLM's extension: every answer is max_tokens long
        }
        t0 = time.monotonic()
        status, headers, data = http("POST", self.gateway + "/v1/completions", body)
        latency = time.monotonic() - t0
        tokens = 0
        if status == 200:
            tokens = int(json.loads(data).get("usage", {}).get("completion_tokens", 0))
        waited = next((v for k, v in headers.items() if k.lower() == WAIT_HEADER.lower()), None)
        return {
            "model": model,
            "status": status,
            "latency_s": round(latency, 4),
            "tokens": tokens,
            "wake_wait_s": None if waited is None else float(waited),
            "error": None if status == 200 else data[:300].decode("utf-8", "replace"),
        }

    def burst(self, phase: str, model: str, label: str) -> dict[str, Any]:
        """--burst concurrent requests for `model`; one record per request and one for the burst."""
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def one() -> None:
            answer = self.complete(model, self.args.max_tokens)
            with lock:
                answers.append(answer)

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(self.args.burst)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        for a in answers:
            record(self.out, phase, "request", label=label, **a)
        tokens = sum(a["tokens"] for a in answers)
        return record(
            self.out,
            phase,
            "burst",
            label=label,
            model=model,
            requests=len(answers),
            ok=sum(a["status"] == 200 for a in answers),
            tokens=tokens,
            wall_s=round(wall, 4),
            tokens_per_s=round(tokens / wall, 2) if wall > 0 else None,
        )

    def alone(self) -> None:
        for model in self.models:
            if self.left() < 30:
                record(self.out, "alone", "skipped", model=model, why=f"{self.left():.0f} s left")
                continue
            t0 = time.monotonic()
            status, _, body = http("POST", f"{self.gateway}/gpushare/wake/{model}?wait_s=300")
            seconds = round(time.monotonic() - t0, 4)
            answer = json.loads(body) if status == 200 else body[:300].decode("utf-8", "replace")
            record(self.out, "alone", "wake", model=model, status=status, seconds=seconds, answer=answer)
            warm = self.complete(model, 8)
            record(self.out, "alone", "warmup", **warm)
            self.memory("alone", f"awake:{model}")
            self.burst("alone", model, "alone")

    def asleep(self) -> None:
        for model in self.models:
            t0 = time.monotonic()
            status, _, _ = http("POST", f"{self.gateway}/gpushare/sleep/{model}")
            record(
                self.out,
                "asleep",
                "sleep",
                model=model,
                status=status,
                seconds=round(time.monotonic() - t0, 4),
            )
        self.memory("asleep", "all-asleep")

    def alternate(self) -> None:
        before = len(swap_view(self.gateway).get("recent_swaps", []))
        per_round = None
        for n in range(self.args.rounds):
            if per_round is not None and self.left() < per_round + 15:
                record(self.out, "alternate", "stopped", round=n, why=f"{self.left():.0f} s left")
                break
            t0 = time.monotonic()
            for model in self.models:
                self.burst("alternate", model, f"round{n}")
            per_round = time.monotonic() - t0
        view = swap_view(self.gateway)
        for swap in view.get("recent_swaps", [])[before:]:
            record(self.out, "alternate", "swap", **swap)
        record(self.out, "alternate", "swap_view", swaps_total=view.get("swaps_total"))

    def restart(self) -> None:
        """Stop one instance and start its command again (what llama-swap does for a swap)."""
        name = self.args.restart or self.models[-1]
        for model in self.models:  # its neighbours asleep, as for its first start
            http("POST", f"{self.gateway}/gpushare/sleep/{model}")
        state = load_state(Path(self.args.state_dir), self.args.profile)
        rec = next(r for r in state["instances"] if r["name"] == name)
        down = subprocess.run(
            [sys.executable, "-m", "gpushare", "down", self.args.profile, name],
            capture_output=True,
            text=True,
            timeout=120,
        )
        record(
            self.out,
            "restart",
            "down",
            instance=name,
            rc=down.returncode,
            output=(down.stdout + down.stderr)[-300:],
        )
        log_path = self.out / f"restart-{name}.log"
        env = {**os.environ, **rec["env"]}
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                rec["argv"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        health_s = first_s = None
        port = rec["port"]
        try:
            while self.left() > 5 and proc.poll() is None:
                if health_s is None:
                    with contextlib.suppress(OSError):
                        if http("GET", f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                            health_s = time.monotonic() - t0
                if health_s is not None:
                    body = {"model": rec["name"], "prompt": "hi", "max_tokens": 16, "temperature": 0}
                    try:
                        if (
                            http("POST", f"http://127.0.0.1:{port}/v1/completions", body, timeout=30)[0]
                            == 200
                        ):
                            first_s = time.monotonic() - t0
                            break
                    except OSError:
                        pass
                time.sleep(0.2)
        finally:
            stop_session(proc.pid)
        record(
            self.out,
            "restart",
            "cold_start",
            instance=name,
            argv=" ".join(rec["argv"]),
            health_s=None if health_s is None else round(health_s, 3),
            first_completion_s=None if first_s is None else round(first_s, 3),
            exit_code=proc.returncode,
        )


def stop_session(sid: int, grace_s: float = 15.0) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in session_pids(sid):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        until = time.monotonic() + wait_s
        while session_pids(sid) and time.monotonic() < until:
            time.sleep(0.2)


# --- the summary ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fmt(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def summary(out: Path, state: dict[str, Any] | None, up_seconds: float | None) -> str:
    rows = read_rows(out)
    lines = ["# On-demand models on one GPU: gpushare's swaps (bench/gpu/run_on_demand.sh)", ""]
    if up_seconds is not None:
        lines.append(f"`gpushare up`: {up_seconds:.1f} s in all")
    if state is not None:
        lines += ["", "| instance | start to ready (s) | first sleep (s) | restarts |", "|---|---|---|---|"]
        for rec in state["instances"]:
            ready = None
            if rec.get("ready_at") and rec.get("started_at"):
                ready = rec["ready_at"] - rec["started_at"]
            first = rec.get("actual", {}).get("first_sleep_s")
            restarts = rec.get("restarts", 0)
            lines.append(f"| {rec['name']} | {fmt(ready, digits=1)} | {fmt(first, digits=2)} | {restarts} |")
    swaps = [r for r in rows if r["kind"] == "swap"]
    held = [r for r in rows if r["kind"] == "request" and r["phase"] == "alternate"]
    waits = [r["wake_wait_s"] for r in held if r.get("wake_wait_s") is not None]
    failed = [r for r in rows if r["kind"] == "request" and r["status"] != 200]
    lines += ["", "| swaps (alternating load) | n | p50 | p99 | max |", "|---|---|---|---|---|"]
    for label, values in (
        ("swap seconds (lock to target awake)", [s["seconds"] for s in swaps]),
        ("  of which drain + sleep", [s["sleep_s"] for s in swaps]),
        ("  of which wake (/wake_up + /is_sleeping)", [s["wake_s"] for s in swaps]),
        ("request wait for the wake", waits),
    ):
        lines.append(
            f"| {label} | {len(values)} | {fmt(pct(values, 0.5))} | {fmt(pct(values, 0.99))} | "
            f"{fmt(max(values) if values else None)} |"
        )
    requests = [r for r in rows if r["kind"] == "request"]
    lines.append("")
    lines.append(
        f"requests: {len(requests)}, failed: {len(failed)}"
        + (f" (first: {failed[0]['error']})" if failed else "")
    )
    bursts = [r for r in rows if r["kind"] == "burst"]
    models = sorted({b["model"] for b in bursts})
    lines += [
        "",
        "| model | tokens/s alone | tokens/s under alternation (bursts incl. swap) | ratio |",
        "|---|---|---|---|",
    ]
    for model in models:
        alone = [b for b in bursts if b["model"] == model and b["phase"] == "alone"]
        alt = [b for b in bursts if b["model"] == model and b["phase"] == "alternate"]
        a = sum(b["tokens"] for b in alone) / sum(b["wall_s"] for b in alone) if alone else None
        t = sum(b["tokens"] for b in alt) / sum(b["wall_s"] for b in alt) if alt else None
        ratio = t / a if a and t else None
        lines.append(f"| {model} | {fmt(a, digits=1)} | {fmt(t, digits=1)} | {fmt(ratio, digits=2)} |")
    mem = [r for r in rows if r["kind"] == "memory"]
    if mem:
        lines += [
            "",
            "| instance | NVML awake (GiB) | planned (GiB) | NVML asleep (GiB) | asleep planned (GiB) | "
            "host RSS asleep (GiB) | host planned (GiB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in sorted({m["instance"] for m in mem}):
            awake = next((m for m in mem if m["instance"] == name and m["label"] == f"awake:{name}"), None)
            asleep = next((m for m in mem if m["instance"] == name and m["label"] == "all-asleep"), None)
            plan = awake or asleep or {}
            lines.append(
                f"| {name} | {gib(awake and awake['nvml_bytes'])} | {gib(plan.get('planned_bytes'))} | "
                f"{gib(asleep and asleep['nvml_bytes'])} | {gib(plan.get('asleep_bytes'))} | "
                f"{gib(asleep and asleep['rss_bytes'])} | {gib(plan.get('host_bytes'))} |"
            )
    cold = [r for r in rows if r["kind"] == "cold_start"]
    if cold:
        c = cold[-1]
        lines += [
            "",
            f"llama-swap's way (stop {c['instance']}, start its command again): /health after "
            f"{fmt(c['health_s'], ' s', 1)}, first completion after {fmt(c['first_completion_s'], ' s', 1)}; "
            f"a swap here: p50 {fmt(pct([s['seconds'] for s in swaps], 0.5), ' s')}",
        ]
    skipped = [r for r in rows if r["kind"] in ("skipped", "stopped")]
    for r in skipped:
        lines.append(f"- {r['phase']}: {r['kind']} ({r.get('why')})")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("phase", choices=("alone", "asleep", "alternate", "restart", "summary"))
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=None, help="epoch seconds")
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--restart", default=None, help="the instance to stop and start again")
    parser.add_argument("--up-seconds", type=float, default=None)
    args = parser.parse_args()
    run = Run(args)
    if args.phase != "summary":
        getattr(run, args.phase)()
    try:
        state = json.loads((run.out / UP_STATE).read_text())
    except (OSError, ValueError):
        state = None
    print(summary(run.out, state, args.up_seconds))


if __name__ == "__main__":
    main()
