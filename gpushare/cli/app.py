"""The typer app and the one place where GpushareError becomes a message and an exit code."""

from __future__ import annotations

from typing import Any

import typer
import typer.core
from rich.console import Console

from gpushare.errors import GpushareError


def print_error(exc: GpushareError) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {exc.message}", markup=True)
    if exc.hint:
        console.print(f"[dim]hint:[/] {exc.hint}", markup=True)


class GpushareGroup(typer.core.TyperGroup):
    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except GpushareError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="gpushare",
    cls=GpushareGroup,
    help="Plan and run several vLLM instances on shared GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Plan and run several vLLM instances on shared GPUs."""
