"""Issue 11 through the CLI: what is outside the architecture table exits 2 with what is known,
pooling models plan with their runner and task, the origin story's A100 profile, the hints of a
model too big for one GPU."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.cli import app
from gpushare.vllm.command import VllmCommand

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def folder(tmp_path: Path, name: str, config: dict[str, object]) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def qwen_7b_chat(tmp_path: Path) -> Path:
    path = tmp_path / "Qwen-7B-Chat"
    path.mkdir()
    shutil.copy(FIXTURES / "constructed_configs" / "Qwen--Qwen-7B-Chat.json", path / "config.json")
    return path


FROB = {
    "architectures": ["FrobForCausalLM"],
    "model_type": "frobnicator",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
}


def test_frobnicator_exits_2_naming_its_architecture(tmp_path: Path) -> None:
    code, out = run("estimate", str(folder(tmp_path, "frob", FROB)), "--gpu", "H100")
    assert code == 2
    assert "FrobForCausalLM" in out and "registry" in out and "gpushare models" not in out.split("hint")[0]


def test_qwen_7b_chat_is_sized_for_0_23_and_refused_for_0_26(tmp_path: Path) -> None:
    model = str(qwen_7b_chat(tmp_path))
    code, out = run("estimate", model, "--gpu", "A100-80GB", "--vllm-version", "0.23.0", "--json")
    assert code == 0, out
    # 7,721,324,544 bf16 parameters (14.38 GiB) + the rotary cache + allocator tails
    assert 14.38 < json.loads(out)["weights_bytes"] / 2**30 < 14.42
    code, out = run("estimate", model, "--gpu", "A100-80GB")
    assert code == 2
    assert "until 0.23.0" in out and "Qwen2ForCausalLM" in out


# The origin story: the first Qwen beside ChatGLM3 and Llama-3.1 on one A100 80GB (profiles/classic.yaml
# with Qwen-7B-Chat, 3 requests of 8192 tokens, in Qwen2.5-7B's place). Sized with the MLP at the
# config's intermediate_size (gpushare before issue 11) it was "short by 5.98 GiB"; Qwen-7B-Chat is
# MHA, 512 KiB of KV cache per token, so 8 requests would not fit whatever its weights.
ORIGIN = """
gpus: A100-80GB
defaults: {{vllm_version: "{version}"}}
models:
  - {{name: qwen-7b, model: {qwen}, max_model_len: 8192, concurrency: 3, extra_args: [--trust-remote-code]}}
  - {{name: chatglm3-6b, model: THUDM/chatglm3-6b, max_model_len: 8192, concurrency: 8,
      extra_args: [--trust-remote-code]}}
  - {{name: llama-3.1-8b, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 16384, concurrency: 4}}
"""


def test_the_origin_story_profile_fits_under_a_vllm_that_serves_qwen(tmp_path: Path) -> None:
    profile = tmp_path / "origin.yaml"
    qwen = qwen_7b_chat(tmp_path)
    profile.write_text(textwrap.dedent(ORIGIN.format(version="0.23.0", qwen=qwen)))
    code, out = run("check", str(profile))
    assert code == 0, out  # with the MLP at intermediate_size // 2 it fits
    profile.write_text(textwrap.dedent(ORIGIN.format(version="0.26.0", qwen=qwen)))
    code, out = run("check", str(profile))
    assert code == 2 and "models[0]" in out and "until 0.23.0" in out


RAG = """
gpus: H100
models:
  - {name: chat, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 16384, concurrency: 4}
  - {name: embed, model: BAAI/bge-m3}
  - {name: rerank, model: BAAI/bge-reranker-v2-m3, task: rerank}
  - {name: qemb, model: Qwen/Qwen3-Embedding-0.6B, max_model_len: 8192}
  - {name: judge, model: Qwen/Qwen3-0.6B, max_model_len: 8192, task: classify}
"""


def test_a_rag_stack_plans_with_runners_and_tasks(tmp_path: Path) -> None:
    profile = tmp_path / "rag.yaml"
    profile.write_text(RAG)
    code, out = run("plan", str(profile), "--json")
    assert code == 0, out
    argv = {i["name"]: VllmCommand.from_argv(i["argv"]) for i in json.loads(out)["instances"]}
    assert (argv["chat"].runner, argv["chat"].convert) == (None, None)
    # encoder-only: pooling class, no KV size passed (vLLM keeps no KV cache)
    assert (argv["embed"].runner, argv["embed"].convert, argv["embed"].kv_cache_memory_bytes) == (
        "pooling",
        None,
        None,
    )
    assert (argv["rerank"].runner, argv["rerank"].convert) == ("pooling", None)
    # a Sentence-Transformers decoder: pooling, converted to embed, its KV cache sized
    assert (argv["qemb"].runner, argv["qemb"].convert) == ("pooling", "embed")
    assert argv["qemb"].kv_cache_memory_bytes
    assert (argv["judge"].runner, argv["judge"].convert) == ("pooling", "classify")


def test_task_with_the_generate_runner_is_a_profile_error(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text(
        "gpus: H100\nmodels: [{name: a, model: Qwen/Qwen3-0.6B, runner: generate, task: embed}]\n"
    )
    code, out = run("check", str(profile))
    assert code == 2 and "needs runner: pooling" in out


def test_runner_and_convert_round_trip_through_the_command() -> None:
    cmd = VllmCommand(program=("vllm", "serve"), model="m", runner="pooling", convert="embed")
    assert cmd.to_argv()[-4:] == ("--runner", "pooling", "--convert", "embed")
    assert VllmCommand.from_argv(cmd.to_argv()) == cmd


def test_too_big_for_one_gpu_says_what_would_hold_it() -> None:
    code, out = run("estimate", "Qwen/Qwen2.5-72B-Instruct", "--gpu", "H100", "--max-model-len", "8192")
    assert code == 2
    assert "leave no room for a KV cache" in out and "--tp 2: 2 of these GPUs hold it" in out
    code, out = run("estimate", "Qwen/Qwen2.5-32B-Instruct", "--gpu", "L40S", "--max-model-len", "8192")
    assert code == 2 and "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4 (quantized, in the catalog)" in out


def test_estimate_picks_the_pooling_runner_for_an_embedder() -> None:
    code, out = run("estimate", "BAAI/bge-m3", "--gpu", "H200", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["kv_cache_bytes"] == 0 and data["dtype"] == "float16"
    code, out = run("estimate", "BAAI/bge-m3", "--gpu", "H200", "--runner", "generate")
    assert code == 2 and "runner generate" in out
