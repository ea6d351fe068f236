"""`gpushare models`: the bundled catalog, as text (fitted to the width) and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gpushare.catalog.models import CATALOG_DIR, catalog_models
from gpushare.cli import app

PUBLISHED = json.loads((Path(__file__).parents[1] / "fixtures" / "published_params.json").read_text())


def test_every_bundled_config_is_listed_with_its_source() -> None:
    listed = {m.file: m for m in catalog_models()}
    assert set(listed) == {p.name for p in CATALOG_DIR.glob("*--*.json")}
    for model in listed.values():
        assert model.source is not None, f"{model.file} has no row in hf_configs/SOURCES.md"
        assert model.problem is None and model.parameters and model.weights_bytes


def test_sizes_are_the_published_ones() -> None:
    listed = {m.repo_id: m for m in catalog_models()}
    # Sizes are what the generate runner loads: an embedding checkpoint without its LM head (served
    # with --runner pooling) is published smaller.
    checked = [
        repo
        for repo, published in PUBLISHED.items()
        if repo in listed and published.get("dtype") == listed[repo].dtype and "Embedding" not in repo
    ]
    assert len(checked) >= 3
    for repo in checked:
        assert listed[repo].parameters == PUBLISHED[repo]["params"], repo
        assert listed[repo].weights_bytes == PUBLISHED[repo]["weight_bytes"], repo


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
    assert narrow[-1] == "(left out at 80 columns: architecture, dtype, context, config copy; see --json)"
    piped = CliRunner().invoke(app, ["models"], env={"COLUMNS": ""}).output.splitlines()
    headers = ["repo", "id", "architecture", "parameters", "weights", "dtype", "quantization", "context"]
    assert piped[0].split() == [*headers, "config", "copy"]
    assert len(piped) == len(names) + 1  # nothing left out off a terminal
