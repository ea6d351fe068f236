"""`gpushare estimate` through the CLI: JSON keys, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.cli import app

REQUIRED_KEYS = {
    "weights_bytes",
    "kv_bytes_per_token",
    "kv_block_bytes",
    "activation_bytes",
    "cuda_graph_bytes",
    "overhead_bytes",
    "kv_cache_bytes",
    "kv_cache_tokens",
    "max_concurrency",
    "gpu_memory_utilization",
    "process_bytes",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["estimate", *args])
    return result.exit_code, result.output


def test_json_has_the_keys_the_planner_builds_on() -> None:
    code, out = run("Qwen/Qwen2.5-7B-Instruct", "--gpu", "H100", "--max-model-len", "8192", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data.keys() >= REQUIRED_KEYS
    assert data["kv_bytes_per_token"] == 57344
    assert all(
        isinstance(data[k], int) for k in REQUIRED_KEYS - {"max_concurrency", "gpu_memory_utilization"}
    )


def test_inverse_from_concurrency() -> None:
    code, out = run(
        "meta-llama/Llama-3.1-8B-Instruct",
        "--gpu",
        "A100-80GB",
        "--max-model-len",
        "8192",
        "--concurrency",
        "16",
        "--json",
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["max_concurrency"] >= 16
    assert data["kv_cache_memory_bytes"] == data["kv_cache_bytes"] == 16 * 8192 * 131072


def test_table_for_people() -> None:
    code, out = run("THUDM/chatglm3-6b", "--gpu", "L4", "--max-model-len", "4096")
    assert code == 0, out
    assert "KV per token" in out and "28,672 B" in out


def test_fixed_kv_bytes_accepts_units() -> None:
    code, out = run(
        "meta-llama/Llama-3.1-8B-Instruct",
        "--kv-cache-memory-bytes",
        "10GiB",
        "--max-model-len",
        "8192",
        "--json",
    )
    assert code == 0, out
    assert json.loads(out)["kv_cache_tokens"] == 81920


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        pytest.param(lambda p: write_config(p / "m", "{not json"), [], "not valid JSON", id="malformed-json"),
        pytest.param(
            lambda p: write_config(p / "m", json.dumps({"model_type": "llama", "hidden_size": 64})),
            [],
            "num_hidden_layers",
            id="incomplete-config",
        ),
        pytest.param(
            lambda p: write_config(
                p / "m",
                json.dumps(
                    {
                        "model_type": "llama",
                        "hidden_size": 64,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 2,
                        "vocab_size": 100,
                        "quantization_config": {"quant_method": "hqq"},
                    }
                ),
            ),
            [],
            "quant_method 'hqq'",
            id="unknown-quantization",
        ),
        pytest.param(
            lambda p: "microsoft/Phi-3-mini-4k-instruct",
            ["--max-model-len", "32768"],
            "max_model_len 32768 is above",
            id="max-model-len-above-limit",
        ),
        pytest.param(
            lambda p: "meta-llama/Llama-3.1-8B-Instruct",
            ["--gpu-memory-utilization", "0.22"],
            "cannot hold one request",
            id="kv-cannot-hold-one-request",
        ),
        pytest.param(lambda p: "nobody/nothing", [], "not found", id="unknown-model"),
        pytest.param(lambda p: "Qwen/Qwen2.5-7B-Instruct", ["--gpu", "H1OO-typo"], "H1OO", id="unknown-gpu"),
        pytest.param(
            lambda p: "Qwen/Qwen2.5-7B-Instruct",
            ["--kv-cache-memory-bytes", "10 parsecs"],
            "--kv-cache-memory-bytes",
            id="bad-size",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, make, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    ref = str(make(tmp_path))
    code, out = run(ref, *args)
    assert code == 2, out
    assert "Traceback" not in out
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, out
    assert words in out


def test_not_found_says_where_it_looked() -> None:
    code, out = run("nobody/nothing")
    assert code == 2
    assert "Hugging Face cache" in out and "catalog" in out and "HF_HUB_OFFLINE" in out


def test_inverse_that_cannot_fit_exits_1() -> None:
    code, out = run(
        "Qwen/Qwen2.5-72B-Instruct", "--gpu", "L4", "--concurrency", "1", "--max-model-len", "4096"
    )
    assert code == 1, out
    assert "short by" in out
