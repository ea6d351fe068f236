"""`gpushare models`: the bundled catalog of model configs (what works offline)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.units import format_bytes


def _parameters(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


@app.command("models")
def models(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list, one object per model, sizes in bytes.")
    ] = False,
) -> None:
    """List the bundled catalog of model configs: repo id, architecture, size, quantization, source.

    These configs (published config.json files, gpushare/catalog/hf_configs) let `gpushare
    estimate` and `plan` work offline; SOURCES.md there says where each copy came from. Weights are
    the checkpoint's tensors at the dtype vLLM serves it in, on one GPU.
    """
    from gpushare.catalog.models import catalog_models

    listed = catalog_models()
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in listed], indent=2))
        return
    columns = [
        term.Column("repo id"),
        term.Column("architecture", keep=3),
        term.Column("parameters", keep=1, right=True),
        term.Column("weights", keep=1, right=True),
        term.Column("dtype", keep=4),
        term.Column("quantization", keep=2),
        term.Column("context", keep=3, right=True),
        term.Column("config copy", keep=5),
    ]
    rows: list[list[term.Cell]] = [
        [
            m.repo_id,
            m.architecture,
            _parameters(m.parameters),
            format_bytes(m.weights_bytes) if m.weights_bytes is not None else "-",
            m.dtype or "-",
            m.quantization or "-",
            f"{m.max_position_embeddings:,}" if m.max_position_embeddings else "-",
            m.source.check if m.source is not None else "not in SOURCES.md",
        ]
        for m in listed
    ]
    out = term.console(soft_wrap=True)
    for line in term.table_lines(columns, rows, term.output_width(out)):
        out.print(line)
    for m in listed:
        if m.problem:
            out.print(f"{m.repo_id}: {m.problem}", style="yellow", markup=False)
