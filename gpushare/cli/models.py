"""`gpushare models`: the bundled catalog of model configs (what works offline), or with
`--architectures` the architectures gpushare sizes (gpushare/architectures.py), as a table, JSON
or the README's markdown."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gpushare.architectures import LAYOUTS, ROWS, Architecture
from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.errors import InputError
from gpushare.units import format_bytes


def _parameters(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def _runner(row: Architecture) -> str:
    return row.runner + (f" ({', '.join(row.tasks)})" if row.tasks else "")


def architecture_json(row: Architecture) -> dict[str, Any]:
    return {
        "architecture": row.name,
        "vllm_class": row.vllm_class,
        "model_types": list(row.model_types),
        "runner": row.runner,
        "tasks": list(row.tasks),
        "layout": row.layout,
        "vllm_since": row.served.since,
        "vllm_until": row.served.until,
        "vllm_releases": row.served.text(),
        "successors": list(row.successors),
        "detail": row.detail,
    }


def architectures_markdown() -> str:
    """The README's list of supported architectures (`gpushare models --architectures
    --markdown`; tests/docs checks the README's copy), written from ROWS so it cannot drift."""
    lines = [
        "| architecture (config.json) | vLLM class | runner | layout | vLLM releases | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        notes = row.detail
        if row.successors:
            notes += f"; use instead: {', '.join(row.successors)}"
        cells = [f"`{row.name}`", f"`{row.vllm_class}`", _runner(row), row.layout, row.served.text(), notes]
        lines.append("| " + " | ".join(cells) + " |")
    layouts = "\n".join(f"- **{name}**: {text}" for name, text in LAYOUTS.items())
    return "\n".join(lines) + "\n\nLayouts:\n" + layouts + "\n"


def _print_architectures() -> None:
    columns = [
        term.Column("architecture"),
        term.Column("vLLM class", keep=4),
        term.Column("runner", keep=3),
        term.Column("layout", keep=1),
        term.Column("vLLM releases", keep=2),
    ]
    rows: list[list[term.Cell]] = [
        [row.name, row.vllm_class, _runner(row), row.layout, row.served.text()] for row in ROWS
    ]
    out = term.console(soft_wrap=True)
    for line in term.table_lines(columns, rows, term.output_width(out)):
        out.print(line)


def _print_catalog() -> None:
    from gpushare.catalog.models import catalog_models

    listed = catalog_models()
    columns = [
        term.Column("repo id"),
        term.Column("architecture", keep=4),
        term.Column("runner", keep=3),
        term.Column("parameters", keep=1, right=True),
        term.Column("weights", keep=1, right=True),
        term.Column("dtype", keep=5),
        term.Column("quantization", keep=2),
        term.Column("context", keep=3, right=True),
        term.Column("config copy", keep=6),
    ]
    rows: list[list[term.Cell]] = [
        [
            m.repo_id,
            m.architecture,
            m.runner or "-",
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
    width = term.output_width(out)
    for line in term.table_lines(columns, rows, width):
        out.print(line)
    for m in listed:
        if m.problem:
            out.print(f"{m.repo_id}: {m.problem}", style="yellow", markup=False)
        if m.note:
            for line in term.fold_words(f"{m.repo_id}: {m.note}", width, hang="  "):
                out.print(line)


@app.command("models")
def models(
    architectures: Annotated[
        bool,
        typer.Option(
            "--architectures",
            help="List the architectures gpushare sizes (gpushare/architectures.py) instead of the catalog.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="A JSON list, one object per model (or architecture), sizes in bytes."),
    ] = False,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown", help="With --architectures: the table as the README prints it (markdown)."
        ),
    ] = False,
) -> None:
    """List the bundled catalog of model configs: repo id, architecture, size, quantization, source.

    These configs (published config.json files, gpushare/catalog/hf_configs) let `gpushare
    estimate` and `plan` work offline; SOURCES.md there says where each copy came from. Each is
    read as `gpushare estimate` reads it for vLLM's defaults: the runner `--runner auto` gives it,
    the dtype it is served in, weights on one GPU with a vision tower when vLLM builds one.
    `--architectures` lists the table of architectures gpushare sizes instead (anything else is
    refused): vLLM class, runner, layout and the vLLM releases that serve each.
    """
    if markdown and not architectures:
        raise InputError(
            "--markdown: applies to --architectures", hint="gpushare models --architectures --markdown"
        )
    if markdown and as_json:
        raise InputError("--markdown and --json: give one of them")
    if architectures:
        if as_json:
            typer.echo(json.dumps([architecture_json(row) for row in ROWS], indent=2))
        elif markdown:
            typer.echo(architectures_markdown(), nl=False)
        else:
            _print_architectures()
        return
    if as_json:
        from gpushare.catalog.models import catalog_models

        typer.echo(json.dumps([m.to_json() for m in catalog_models()], indent=2))
        return
    _print_catalog()
