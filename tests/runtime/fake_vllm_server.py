"""A stand-in for `vllm serve` that starts in a fraction of a second, for the launcher's fault tests.

It prints vLLM's phase lines, then serves /health, /v1/completions and /metrics on --port.
Faults: --crash MSG (exit 1 after logging MSG as vLLM does), --never-ready (runs, never listens),
--ignore-sigterm, --child (a second process in its session, like vLLM's EngineCore),
--delay S (before it listens), --broken-engine (/health 200 but completions 500).
--replay-log FILE prints a real vLLM log first (e.g. a GPU start's memory accounting).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{name}"}} 0.0
vllm:num_requests_waiting{{engine="0",model_name="{name}"}} 0.0
vllm:kv_cache_usage_perc{{engine="0",model_name="{name}"}} 0.25
vllm:cache_config_info{{block_size="128",engine="0",kv_cache_memory_bytes="67108864",\
kv_cache_size_tokens="131072",num_gpu_blocks="1024"}} 1.0
"""


def log(msg: str, who: str = "APIServer") -> None:
    print(f"({who} pid=1) INFO 11-24 20:24:12 [fake.py:1] {msg}", flush=True)


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
    args, _ = parser.parse_known_args()
    name = args.served_model_name or args.model

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

        def do_GET(self) -> None:
            path = self.path.split("?")[0]  # a query it does not know is ignored, as by vLLM's routes
            if path == "/health":
                self._send(200, "")
            elif path == "/metrics":
                self._send(200, METRICS.format(name=name), "text/plain")
            else:
                self._send(404, "{}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if broken:
                self._send(500, json.dumps({"error": {"message": "EngineCore encountered an issue."}}))
            elif self.path == "/v1/completions" and body.get("model") == name:
                self._send(200, json.dumps({"choices": [{"index": 0, "text": "x"}]}))
            else:
                self._send(404, json.dumps({"error": {"message": f"model {body.get('model')} not found"}}))

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
    log(f"Starting vLLM server on http://0.0.0.0:{args.port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
