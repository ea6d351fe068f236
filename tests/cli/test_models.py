"""`gpushare models`: the bundled catalog, as text (fitted to the width) and as JSON, each model
read as `gpushare estimate` reads it; `--architectures`: the table of architectures gpushare sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.architectures import ROWS
from gpushare.catalog.models import CATALOG_DIR, catalog_models
from gpushare.cli import app

PUBLISHED = json.loads((Path(__file__).parents[1] / "fixtures" / "published_params.json").read_text())


def test_every_bundled_config_is_listed_with_its_source() -> None:
    listed = {m.file: m for m in catalog_models()}
    assert set(listed) == {p.name for p in CATALOG_DIR.glob("*--*.json")}
    for model in listed.values():
        assert model.source is not None, f"{model.file} has no row in hf_configs/SOURCES.md"
        assert model.problem is None and model.parameters and model.runner and model.layout
        # a size is left out only with a note that says where to get it
        assert model.weights_bytes or (model.note and "gpushare estimate" in model.note), model.repo_id


def test_sizes_are_the_published_ones() -> None:
    listed = {m.repo_id: m for m in catalog_models()}
    # Sizes are what the runner `--runner auto` picks loads: Qwen3-Embedding (a Sentence-Transformers
    # repo) is served as a pooling model, without the LM head its checkpoint does not hold either.
    checked = [
        repo
        for repo, published in PUBLISHED.items()
        if repo in listed and published.get("dtype") == listed[repo].dtype
    ]
    assert len(checked) >= 4 and "Qwen/Qwen3-Embedding-8B" in checked
    for repo in checked:
        assert listed[repo].parameters == PUBLISHED[repo]["params"], repo
        if repo != "Qwen/Qwen3-Embedding-8B":  # vLLM pads its 151,665-row vocabulary to 151,680
            assert listed[repo].weights_bytes == PUBLISHED[repo]["weight_bytes"], repo


def test_each_model_is_read_for_vllms_defaults() -> None:
    """The catalog sizes what `gpushare estimate REPO` sizes (issue 11's silent wrong numbers):
    the vision tower vLLM builds by default, the pooling runner and its fp16 for fp32 embedders."""
    listed = {m.repo_id: m for m in catalog_models()}
    # Qwen3-VL-8B's safetensors hold 8,767,123,696 parameters (SOURCES.md), the tower included
    assert listed["Qwen/Qwen3-VL-8B-Instruct"].parameters == 8_767_123_696
    vl, text = listed["Qwen/Qwen2.5-VL-7B-Instruct"], listed["Qwen/Qwen2.5-7B-Instruct"]
    assert vl.weights_bytes and text.weights_bytes
    # the same Qwen2 text model plus the tower's 676,550,144 parameters in bf16
    # (tests/core/test_multimodal.py); the published total is checked above
    assert vl.weights_bytes - text.weights_bytes == 676_550_144 * 2
    assert (listed["BAAI/bge-m3"].runner, listed["BAAI/bge-m3"].dtype) == ("pooling (embed)", "float16")
    assert listed["BAAI/bge-reranker-v2-m3"].runner == "pooling (classify)"
    assert listed["Qwen/Qwen3-Embedding-0.6B"].runner == "pooling (embed)"
    assert listed["Qwen/Qwen3-8B"].runner == "generate"
    oss = listed["openai/gpt-oss-20b"]
    assert oss.weights_bytes is None and oss.note and "--gpu" in oss.note
    assert oss.quantization == "mxfp4 4-bit"


def test_json() -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    data = {m["repo_id"]: m for m in json.loads(result.output)}
    gptq = data["Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4"]
    assert (gptq["architecture"], gptq["quantization"], gptq["dtype"]) == (
        "Qwen2ForCausalLM",
        "gptq 4-bit",
        "float16",
    )
    assert gptq["source_status"].startswith("NOT verified exact") and gptq["copied_from"]


def test_text_fits_80_columns_and_keeps_every_name_whole() -> None:
    narrow = CliRunner().invoke(app, ["models"], env={"COLUMNS": "80"}).output.splitlines()
    assert max(map(len, narrow)) <= 80
    names = [m.repo_id for m in catalog_models()]
    assert [line.split()[0] for line in narrow[1 : len(names) + 1]] == names
    left_out = " ".join(narrow[len(names) + 1 : len(names) + 3])
    assert (
        left_out == "(left out at 80 columns: architecture, runner, dtype, context, config copy; see --json)"
    )
    piped = CliRunner().invoke(app, ["models"], env={"COLUMNS": ""}).output.splitlines()
    headers = ["repo", "id", "architecture", "runner", "parameters", "weights", "dtype", "quantization"]
    assert piped[0].split() == [*headers, "context", "config", "copy"]
    notes = [m for m in catalog_models() if m.note]
    assert len(piped) == len(names) + 1 + len(notes)  # nothing left out off a terminal
    assert piped[len(names) + 1 :] == [f"{m.repo_id}: {m.note}" for m in notes]


def test_architectures_lists_the_table() -> None:
    piped = CliRunner().invoke(app, ["models", "--architectures"], env={"COLUMNS": ""})
    assert piped.exit_code == 0
    lines = piped.output.splitlines()
    assert lines[0].split() == ["architecture", "vLLM", "class", "runner", "layout", "vLLM", "releases"]
    assert [line.split()[0] for line in lines[1:]] == [row.name for row in ROWS]
    qwen = next(line for line in lines if line.startswith("QWenLMHeadModel "))
    assert qwen.rstrip().endswith("≤ 0.23.0")  # dropped after vLLM 0.23.0
    narrow = CliRunner().invoke(app, ["models", "--architectures"], env={"COLUMNS": "80"}).output
    assert max(map(len, narrow.splitlines())) <= 80


def test_architectures_json() -> None:
    result = CliRunner().invoke(app, ["models", "--architectures", "--json"])
    assert result.exit_code == 0
    rows = {r["architecture"]: r for r in json.loads(result.output)}
    assert list(rows) == [row.name for row in ROWS]
    assert rows["XLMRobertaForSequenceClassification"]["tasks"] == ["classify"]
    assert rows["QWenLMHeadModel"]["vllm_until"] == "0.23.0"
    assert rows["QWenLMHeadModel"]["successors"] == ["Qwen2ForCausalLM", "Qwen3ForCausalLM"]


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("markdown of the catalog", ["--markdown"], "--markdown: applies to --architectures"),
        ("markdown and json", ["--architectures", "--markdown", "--json"], "give one of them"),
    ],
)
def test_markdown_only_for_the_architectures(case: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["models", *args])
    assert result.exit_code == 2 and message in result.output
