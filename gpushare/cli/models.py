"""`gpushare models`: the architectures gpushare sizes, or the bundled catalog's models."""

from __future__ import annotations

from typing import Annotated

import typer

from gpushare.cli.app import app


@app.command()
def models(
    catalog: Annotated[
        bool, typer.Option("--catalog", help="List the bundled catalog's models instead.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="The architecture table as the README prints it.")
    ] = False,
) -> None:
    """List the architectures gpushare sizes (from gpushare/architectures.py), or the catalog."""
    from gpushare.architectures import ROWS, markdown_table

    if catalog:
        from gpushare.estimate_job import load_model
        from gpushare.resolve import catalog_entries

        for repo_id in catalog_entries():
            arch = load_model(repo_id).arch
            typer.echo(f"{repo_id}\t{arch.architecture or '?'}")
        return
    if markdown:
        typer.echo(markdown_table(), nl=False)
        return
    for row in ROWS:
        runner = row.runner + (f" ({', '.join(row.tasks)})" if row.tasks else "")
        typer.echo(f"{row.name}\t{runner}\t{row.layout}\tvLLM {row.served.text()}")
