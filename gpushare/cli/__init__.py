"""The command line. Only this package imports typer and rich.

Each command lives in its own module (`gpushare/cli/<name>.py`) that does
`from gpushare.cli.app import app` and decorates its function with `@app.command()`; `COMMANDS` in
`app.py` maps command names to modules (and the summary `--help` lists), which are imported when
their command runs. Errors: a command raises `GpushareError`; `GpushareGroup` prints one line (plus
a hint) and exits with the error's code; anything else is one line and exit 1 (`--debug`: the
traceback). `typer.testing.CliRunner` sees the same exit codes as a user.
"""

from __future__ import annotations

from gpushare.cli.app import app


def main() -> None:
    """Console entry point."""
    app()


__all__ = ["app", "main"]
