"""Read what a vLLM server says about itself: its log (phase, KV cache size, the error that killed
it) and its `/metrics` text. Pure functions over strings; nothing here touches a process or socket.

Log lines matched here come from vLLM 0.26-0.33 (paths relative to `vllm/`):
  "Starting to load model %s..."              v1/worker/gpu_model_runner.py, cpu_model_runner.py
  "Loading weights took %.2f seconds"         model_executor/model_loader/default_loader.py
  "Model loading took %s GiB memory and ..."  v1/worker/gpu_model_runner.py
  "Available KV cache memory: %s GiB"         v1/worker/gpu_worker.py
  "%s KV cache size: %s tokens, ..."          v1/core/kv_cache_utils.py ("GPU" or "CPU")
  "Starting vLLM server on %s"                entrypoints/launchers/api_server/entry.py
  "Application startup complete."             uvicorn
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpushare.runtime.phase import InstancePhase

# The furthest start-up phase a log shows (`phase.py` says what each means), first match wins.
_PHASE_MARKERS: tuple[tuple[InstancePhase, tuple[str, ...]], ...] = (
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

_KV_TOKENS_RE = re.compile(r"\b(GPU|CPU|XPU|TPU)? ?KV cache size: ([\d,]+) tokens")
_CONCURRENCY_RE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_MODEL_LOAD_RE = re.compile(r"Model loading took ([\d.]+) ?GiB")
_AVAILABLE_KV_RE = re.compile(r"Available KV cache memory: ([\d.]+) ?GiB")
_EXPLICIT_KV_RE = re.compile(r"Explicitly set \(([\d.]+)/([\d.]+)\) GiB for KV cache")
_VLLM_PREFIX_RE = re.compile(
    r"^(?:\([^)]*pid=\d+\)\s+)?(?:[A-Z]+\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s+)?"
)
_EXCEPTION_RE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit|Interrupt)\b[^:]*: .+")
GIB = 1 << 30


def strip_vllm_prefix(line: str) -> str:
    """'(EngineCore pid=5) ERROR 11-24 20:24:41 [core.py:1512] ValueError: x' -> 'ValueError: x'."""
    return _VLLM_PREFIX_RE.sub("", line.rstrip("\n"), count=1)


def phase_from_log(text: str) -> InstancePhase:
    """The furthest phase the log shows: starting, loading, compiling or serving (never 'ready':
    that needs a completion)."""
    for phase, markers in _PHASE_MARKERS:
        if any(marker in text for marker in markers):
            return phase
    return "starting"


def error_line(text: str) -> str | None:
    """The line that best says why vLLM stopped: the last Python exception line (`ValueError: ...`),
    else the last line logged at ERROR or CRITICAL level, else None."""
    last_exception: str | None = None
    last_error: str | None = None
    for raw in text.splitlines():
        line = strip_vllm_prefix(raw).strip()
        if not line or line.startswith(("File ", "Traceback", "^")):
            continue
        if _EXCEPTION_RE.match(line):
            last_exception = line
        elif " ERROR " in raw or " CRITICAL " in raw or raw.startswith(("ERROR", "CRITICAL")):
            last_error = line
    return last_exception or last_error


def log_tail(text: str, lines: int = 20) -> str:
    """The last `lines` lines, for an error message."""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class LogFacts:
    """Numbers vLLM logs about its memory once started (None where the log did not say)."""

    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    model_load_bytes: int | None = None
    available_kv_bytes: int | None = None

    def as_dict(self) -> dict[str, int | float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _gib(text: str) -> int:
    return int(round(float(text) * GIB))


def facts_from_log(text: str) -> LogFacts:
    """The last value of each fact in the log (a restarted server logs them again)."""
    kv_tokens = [int(m.group(2).replace(",", "")) for m in _KV_TOKENS_RE.finditer(text)]
    concurrency = [float(m.group(2)) for m in _CONCURRENCY_RE.finditer(text)]
    load = [_gib(m.group(1)) for m in _MODEL_LOAD_RE.finditer(text)]
    # GPU workers log "Available KV cache memory", CPU workers "Explicitly set (x/y) GiB": the later wins.
    found = [(m.start(), m.group(1)) for r in (_AVAILABLE_KV_RE, _EXPLICIT_KV_RE) for m in r.finditer(text)]
    available = [_gib(value) for _, value in sorted(found)]
    return LogFacts(
        kv_cache_tokens=kv_tokens[-1] if kv_tokens else None,
        max_concurrency=concurrency[-1] if concurrency else None,
        model_load_bytes=load[-1] if load else None,
        available_kv_bytes=available[-1] if available else None,
    )


# --- /metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerMetrics:
    """The few gauges `status` shows, from vLLM's Prometheus text."""

    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage: float | None = None
    """Fraction 0..1 of KV blocks in use (`vllm:kv_cache_usage_perc`, older `gpu_cache_usage_perc`)."""
    cache_config: dict[str, str] | None = None
    """Labels of `vllm:cache_config_info` (block_size, num_gpu_blocks, kv_cache_memory_bytes, ...)."""

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            continue
        name, _, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(_LABEL_RE.findall(labels_text or ""))
        out.append((name, labels, value))
    return out


def parse_metrics(text: str) -> ServerMetrics:
    """Sum the gauges over engines (data parallel reports one series per engine)."""
    sums: dict[str, float] = {}
    usage: list[float] = []
    cache_config: dict[str, str] | None = None
    for name, labels, value in _samples(text):
        if name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            sums[name] = sums.get(name, 0.0) + value
        elif name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            usage.append(value)
        elif name == "vllm:cache_config_info" and cache_config is None:
            cache_config = {k: v for k, v in labels.items() if k != "engine"}
    return ServerMetrics(
        requests_running=sums.get("vllm:num_requests_running"),
        requests_waiting=sums.get("vllm:num_requests_waiting"),
        kv_cache_usage=max(usage) if usage else None,
        cache_config=cache_config,
    )
