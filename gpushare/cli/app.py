"""The typer app, lazy command loading, and the one place where GpushareError becomes a message
and an exit code.

Commands live in their own modules (`gpushare/cli/<module>.py`), which register themselves on `app`
with `@app.command()` when imported. `COMMANDS` maps each command name to its module, and
`GpushareGroup` imports a module only when its command runs, so `gpushare estimate` never pays for
the HTTP stack, the solver or NVML (BENCHMARKS.md: estimate start-up).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.core
import typer.main
from rich.console import Console

from gpushare.errors import GpushareError

COMMANDS = {
    "estimate": "estimate",
    "gpus": "gpus",
    "plan": "plan",
    "check": "plan",
    "profile": "profile",
    "up": "launch",
    "down": "launch",
    "status": "launch",
    "logs": "launch",
    "supervise": "serve",
    "gateway": "serve",
    "calibrate": "calibrate",
}


def print_error(exc: GpushareError) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {exc.message}", markup=True)
    if exc.hint:
        console.print(f"[dim]hint:[/] {exc.hint}", markup=True)


def load_command_module(name: str) -> bool:
    """Import the module that defines command `name`; False when there is none (yet)."""
    module = COMMANDS.get(name)
    if module is None:
        return False
    try:
        importlib.import_module(f"gpushare.cli.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"gpushare.cli.{module}":
            raise
        return False
    return True


class GpushareGroup(typer.core.TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {n for n in COMMANDS if self.get_command(ctx, n)})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and load_command_module(cmd_name):
            # The module registered its command on `app`; build the click command for it.
            command = typer.main.get_group(app).commands.get(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return command

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
