"""What the gateway costs: requests/s and added latency against calling the upstream directly.

Three processes on loopback: a fast aiohttp upstream that answers POST /v1/completions with a fixed
small JSON body (so vLLM's speed cannot hide the gateway's), the gateway in front of it, and this
client. Two measurements, each against the upstream directly and through the gateway:

- latency: one request at a time, direct and gateway requests alternating in blocks of 100 (so drift
  hits both alike); p50/p99 of each and the difference;
- throughput: `--concurrency` requests in flight over one pooled session, for `--seconds` or
  `--requests`, whichever ends first; with the gateway's CPU time (user + system, psutil) per
  request over that run, which the client and upstream sharing the cores do not skew as much.

`--loop asyncio` runs the gateway on asyncio's own loop instead of uvloop (what `supervise`,
`gateway` and `up --foreground` use when uvloop is installed: gpushare/runtime/service/process.py).

Usage: .venv/bin/python bench/gateway.py [--latency-requests 3000] [--requests 40000] [--seconds 8]
       [--concurrency 32] [--loop uvloop|asyncio] [--json]
Bounded in count and time; listens on 127.0.0.1 only; leaves no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

ANSWER = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "text": " hello world", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
).encode()
REQUEST = json.dumps({"model": "bench", "prompt": "hi there", "max_tokens": 2, "temperature": 0}).encode()
HEADERS = {"Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]], loop: str = "uvloop") -> None:
    if loop == "asyncio":
        asyncio.run(main())
        return
    from gpushare.runtime.service.process import run_event_loop

    run_event_loop(main())


def _serve_upstream(port: int) -> None:
    async def completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    _run_loop(main)


def _serve_gateway(port: int, upstream_port: int, loop: str) -> None:
    from gpushare.runtime.service.gateway import Gateway, GatewayConfig
    from gpushare.runtime.service.routes import RouteTable, Upstream

    async def main() -> None:
        table = RouteTable([Upstream("bench", "bench", f"http://127.0.0.1:{upstream_port}")])
        gateway = Gateway(table, GatewayConfig(port=port))
        await gateway.start()
        await asyncio.Event().wait()

    _run_loop(main, loop)


async def _wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def _one(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, data=REQUEST, headers=HEADERS) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")


async def _latency(
    session: aiohttp.ClientSession, urls: dict[str, str], count: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in urls}
    block = 100
    for _ in range(max(1, count // block)):
        for name, url in urls.items():
            for _ in range(block):
                start = time.perf_counter()
                await _one(session, url)
                samples[name].append(time.perf_counter() - start)
    return samples


async def _throughput(
    session: aiohttp.ClientSession, url: str, concurrency: int, max_requests: int, seconds: float
) -> tuple[int, float]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while done < max_requests and time.perf_counter() < deadline:
            done += 1
            await _one(session, url)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _measure(
    args: argparse.Namespace, upstream_port: int, gateway_port: int, pids: dict[str, int]
) -> dict[str, Any]:
    await _wait_listening(upstream_port)
    await _wait_listening(gateway_port)
    urls = {
        "direct": f"http://127.0.0.1:{upstream_port}/v1/completions",
        "gateway": f"http://127.0.0.1:{gateway_port}/v1/completions",
    }
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in urls.values():  # warm up: connections, caches
            for _ in range(200):
                await _one(session, url)
        lat = await _latency(session, urls, args.latency_requests)
        result: dict[str, Any] = {"latency_requests_each": len(lat["direct"])}
        for name, values in lat.items():
            result[f"{name}_p50_ms"] = _pct(values, 0.50) * 1e3
            result[f"{name}_p99_ms"] = _pct(values, 0.99) * 1e3
            result[f"{name}_mean_ms"] = statistics.fmean(values) * 1e3
        for name, url in urls.items():
            cpu_before = {who: _cpu_s(pid) for who, pid in pids.items()}
            done, elapsed = await _throughput(session, url, args.concurrency, args.requests, args.seconds)
            result[f"{name}_requests"] = done
            result[f"{name}_rps"] = done / elapsed
            if name == "gateway":
                used = _cpu_s(pids["gateway"]) - cpu_before["gateway"]
                result["gateway_cpu_us_per_request"] = used / done * 1e6
            used = _cpu_s(pids["upstream"]) - cpu_before["upstream"]
            result[f"{name}_upstream_cpu_us_per_request"] = used / done * 1e6
    result["added_p50_ms"] = result["gateway_p50_ms"] - result["direct_p50_ms"]
    result["added_p99_ms"] = result["gateway_p99_ms"] - result["direct_p99_ms"]
    return result


def _table(r: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        f"| path | p50 (ms) | p99 (ms) | req/s at concurrency {args.concurrency} |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, label in (("direct", "direct to upstream"), ("gateway", "through the gateway")):
        p50, p99, rps = r[f"{name}_p50_ms"], r[f"{name}_p99_ms"], r[f"{name}_rps"]
        rows.append(f"| {label} | {p50:.3f} | {p99:.3f} | {rps:,.0f} |")
    rows.append(f"| added by the gateway | {r['added_p50_ms']:.3f} | {r['added_p99_ms']:.3f} | |")
    rows.append(
        f"\ngateway CPU per request at concurrency {args.concurrency}: "
        f"{r['gateway_cpu_us_per_request']:.0f} µs "
        f"(the upstream's: {r['gateway_upstream_cpu_us_per_request']:.0f} µs); "
        f"gateway loop: {args.loop}"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency-requests", type=int, default=3000, help="sequential requests per path")
    parser.add_argument("--requests", type=int, default=40000, help="cap on throughput requests per path")
    parser.add_argument("--seconds", type=float, default=8.0, help="cap on each throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the gateway's loop")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args(argv)

    upstream_port, gateway_port = _free_port(), _free_port()
    ctx = multiprocessing.get_context("spawn")
    upstream = ctx.Process(target=_serve_upstream, args=(upstream_port,), daemon=True)
    gateway = ctx.Process(target=_serve_gateway, args=(gateway_port, upstream_port, args.loop), daemon=True)
    upstream.start()
    gateway.start()
    try:
        result: dict[str, Any] = {}

        async def run() -> None:
            pids = {"gateway": gateway.pid or 0, "upstream": upstream.pid or 0}
            measured = _measure(args, upstream_port, gateway_port, pids)
            result.update(await asyncio.wait_for(measured, timeout=300))

        _run_loop(run)
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    cpu = platform.processor() or platform.machine()
    result["machine"] = f"{cpu}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    result["gateway_loop"] = args.loop
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(result, args))
        each = result["latency_requests_each"]
        print(f"\n{result['machine']}; {each} sequential requests per path for latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
