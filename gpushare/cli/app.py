"""The typer app, lazy command loading, and the CLI's error boundary.

Commands live in their own modules (`gpushare/cli/<module>.py`), which register themselves on `app`
with `@app.command()` when imported. `COMMANDS` names each command's module and the one-line summary
`gpushare --help` lists, so the root help and any one command import only what that command needs:
`gpushare --help` imports no command module, `gpushare estimate` never pays for the HTTP stack, the
solver or NVML (BENCHMARKS.md: start-up). tests/cli/test_app.py keeps each summary equal to its
command's docstring.

The error boundary (`GpushareGroup.invoke`), pip's exit ladder in small: a `GpushareError` prints one
line (plus a hint) and exits with its code (errors.py); a usage error (a bad option value, a missing
argument) prints one line and the command's `--help`, exit 2; a closed output pipe (`gpushare plan
... | head -1`) exits 141 without a word; anything else prints one line naming the command and the
exception, and exits 1; with `--debug` or GPUSHARE_DEBUG=1 it raises on, traceback and all.
`typer.testing.CliRunner` sees the same exit codes as a user.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.text import Text

from gpushare.cli.plain_values import use_plain_values
from gpushare.errors import GpushareError

DEBUG_ENV = "GPUSHARE_DEBUG"
_DEBUG_KEY = "gpushare.debug"


@dataclass(frozen=True)
class CommandEntry:
    module: str
    """gpushare/cli/<module>.py registers the command."""
    summary: str
    """The first paragraph of the command's docstring, as `gpushare --help` lists it."""


COMMANDS: dict[str, CommandEntry] = {
    "estimate": CommandEntry(
        "estimate",
        "Predict weights, KV cache, activation, CUDA graphs and the process footprint of one instance.",
    ),
    "models": CommandEntry(
        "models",
        "List the bundled catalog of model configs: repo id, architecture, size, quantization, source.",
    ),
    "gpus": CommandEntry(
        "gpus", "List GPUs: memory (total, driver-reserved, used, free), MIG mode, compute processes, MPS."
    ),
    "plan": CommandEntry(
        "plan", "Place the profile's models on GPUs and print each GPU's memory and the exact vLLM commands."
    ),
    "check": CommandEntry(
        "plan",
        "Check that a profile is valid and fits: exit 0 fits, 1 overcommitted or a model does not fit,\n"
        "2 invalid profile. For CI: `gpushare check profiles/classic.yaml --format github`.",
    ),
    "profile": CommandEntry("profile", "Profile files: print their JSON Schema, validate one."),
    "mig": CommandEntry("mig", "MIG (hard-isolated GPU slices): the profiles each GPU model offers."),
    "up": CommandEntry(
        "launch", "Plan PROFILE, check the machine, start every instance and wait until each one serves."
    ),
    "down": CommandEntry(
        "launch", "Stop a profile's instances (SIGTERM, then SIGKILL after --timeout). Safe to repeat."
    ),
    "status": CommandEntry(
        "launch", "Per instance: state, memory planned vs actual, KV cache, requests; per GPU: memory."
    ),
    "logs": CommandEntry("launch", "Show an instance's vLLM log."),
    "supervise": CommandEntry(
        "serve", "Run the gateway (one OpenAI endpoint, /metrics) and keep the profile's instances serving."
    ),
    "gateway": CommandEntry(
        "serve", "A gateway only, in the foreground, for servers gpushare did not start (no supervision)."
    ),
    "wake": CommandEntry(
        "swap", "Wake an on-demand model now (putting others of its GPU to sleep if needed)."
    ),
    "sleep": CommandEntry(
        "swap", "Put an on-demand model to sleep now (its requests in flight may finish first)."
    ),
    "export": CommandEntry(
        "export", "Write a profile's plan for another system (today: Kubernetes manifests)."
    ),
    "calibrate": CommandEntry(
        "calibrate",
        "Start each model of PROFILE alone, once, read vLLM's own memory accounting from its log and\n"
        "NVML's process footprint, and store a record per (GPU, vLLM version, model, settings).",
    ),
}

# Signals typer and click use to end a run on purpose (exit codes, usage errors, Ctrl-C at a prompt):
# never "unexpected".
_CONTROL_FLOW = (typer.Exit, typer.Abort, typer.TyperException, EOFError)

PIPE_CLOSED_EXIT = 141
"""Exit code when whoever reads the output went away (`gpushare plan ... | head -1`): 128 + SIGPIPE,
what `cat`, `grep` or `git log` report there (they die of the signal; Python ignores SIGPIPE, and
must, because the gateway writes to sockets). Not 0 or 1: a cut-off answer is neither "fits" nor
"does not fit"."""


def _console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(exc: GpushareError) -> None:
    console = _console()
    console.print(f"[bold red]error:[/] {exc.message}", markup=True)
    if exc.hint:
        console.print(f"[dim]hint:[/] {exc.hint}", markup=True)


def print_unexpected(exc: Exception, command: str) -> None:
    """One line for an error gpushare did not anticipate (a bug), and how to see more."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    sub = command.removeprefix("gpushare ")
    console = _console()
    console.print(Text.assemble(("error:", "bold red"), f" `{command}` failed unexpectedly: {what}"))
    console.print(
        Text.assemble(
            ("hint:", "dim"),
            f" a bug in gpushare; `gpushare --debug {sub} ...` (or {DEBUG_ENV}=1) shows the traceback",
        )
    )


def _is_usage_error(exc: BaseException) -> bool:
    """click's ClickException (typer vendors click, so match it by name across typer releases)."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def print_usage_error(exc: Any) -> None:
    """One line for a bad option or argument, and where the command's help is (not typer's box)."""
    console = _console()
    console.print(Text.assemble(("error:", "bold red"), f" {exc.format_message()}"))
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        console.print(Text.assemble(("hint:", "dim"), f" {_command_name(ctx, subcommand=False)} --help"))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again on the closed
    pipe ("Exception ignored ... BrokenPipeError", exit 120); Python's documented remedy."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (CliRunner's buffer): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _command_name(ctx: Any, subcommand: bool = True) -> str:
    names: list[str] = []
    current = ctx
    while current.parent is not None:
        names.append(current.info_name or "")
        current = current.parent
    names.reverse()
    if subcommand and ctx.invoked_subcommand:
        names.append(ctx.invoked_subcommand)
    return " ".join(["gpushare", *names])


class GpushareGroup(typer.core.TyperGroup):
    """A command group with gpushare's error boundary, whose own parameters and whose commands'
    take plain values without pydantic (plain_values.py)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        use_plain_values(self.get_params(ctx))
        return list(super().parse_args(ctx, args))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            use_plain_values(command.get_params(ctx))
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except GpushareError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(PIPE_CLOSED_EXIT) from None
        except _CONTROL_FLOW as exc:
            if _is_usage_error(exc):
                print_usage_error(exc)
                raise typer.Exit(getattr(exc, "exit_code", 2)) from None
            raise
        except Exception as exc:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            print_unexpected(exc, _command_name(ctx))
            raise typer.Exit(1) from None


def _summary_command(name: str, summary: str) -> typer.core.TyperCommand:
    """What `gpushare --help` lists for a command whose module is not imported: its name and summary."""
    return typer.core.TyperCommand(name=name, help=summary)


class LazyGroup(GpushareGroup):
    """The root group: a command's module is imported only when that command runs (or its own
    --help is asked for); the root --help lists `COMMANDS`' summaries without importing any."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            return _summary_command(cmd_name, COMMANDS[cmd_name].summary)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in COMMANDS:
            self.load(args[0])
        return super().resolve_command(ctx, args)

    def load(self, name: str) -> Any:
        """Import the module of command `name` and add its click command here."""
        command = self.commands.get(name)
        if command is None:
            importlib.import_module(f"gpushare.cli.{COMMANDS[name].module}")
            # The module registered its command on `app`; build the click command for it.
            command = typer.main.get_group(app).commands.get(name)
            if command is not None:
                self.add_command(command, name)
        return command


app = typer.Typer(
    name="gpushare",
    cls=LazyGroup,
    help="Plan and run several vLLM instances on shared GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help="On an unexpected error, show its traceback instead of one line.",
        ),
    ] = False,
) -> None:
    """Plan and run several vLLM instances on shared GPUs."""
    ctx.meta[_DEBUG_KEY] = debug
