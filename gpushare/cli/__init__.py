"""The command line. Only this package imports typer and rich.

Each command lives in its own module (`gpushare/cli/<name>.py`) that does
`from gpushare.cli.app import app` and decorates its function with `@app.command()`.
Errors: a command raises `GpushareError`; `GpushareGroup` prints one line (plus a hint) and exits
with the error's code, so `typer.testing.CliRunner` sees the same exit codes as a user.
"""

from __future__ import annotations

import importlib

from gpushare.cli.app import app

COMMAND_MODULES = ("estimate", "gpus", "profile", "plan", "launch", "calibrate", "serve")


def _register() -> None:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(f"gpushare.cli.{module}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != f"gpushare.cli.{module}":
                raise


_register()


def main() -> None:
    """Console entry point."""
    app()


__all__ = ["app", "main"]
