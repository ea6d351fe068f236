"""vLLM's `/metrics` text: the few gauges `gpushare status` and `up` read (Prometheus text format,
vllm/v1/metrics/loggers.py names them). Pure: a function over the text; nothing here opens a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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
