"""The CLI's frame: lazy commands (the root --help imports none of them) and the error boundary's
last branch (an unexpected error is one line and exit 1; --debug or GPUSHARE_DEBUG=1 raises it)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import gpushare.cli.gpus as gpus_command
from gpushare.cli import app
from gpushare.cli.app import COMMANDS
from gpushare.errors import EnvironmentProblem

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["aiohttp", "prometheus_client", "pynvml", "psutil", "scipy", "numpy", "huggingface_hub", "pydantic"]


def _all_commands() -> dict[str, object]:
    for entry in COMMANDS.values():
        importlib.import_module(f"gpushare.cli.{entry.module}")
    return dict(typer.main.get_group(app).commands)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_summary_is_the_commands_docstring(name: str) -> None:
    command = _all_commands()[name]
    help_text = inspect.cleandoc(command.help or "")  # type: ignore[attr-defined]
    assert COMMANDS[name].summary == help_text.split("\n\n")[0]


def test_every_registered_command_is_listed() -> None:
    assert set(_all_commands()) == set(COMMANDS)


def _fresh(code: str) -> str:
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout


def test_root_help_imports_no_command_and_reads_as_with_all_of_them() -> None:
    lazy = _fresh(
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from gpushare.cli import app\n"
        "out = CliRunner().invoke(app, ['--help']).output\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "mods = sorted(m for m in sys.modules if m.startswith('gpushare.') and m.count('.') >= 1)\n"
        "print(json.dumps([out, heavy, mods]))"
    )
    out, heavy, modules = json.loads(lazy)
    assert heavy == []
    assert modules == ["gpushare.cli", "gpushare.cli.app", "gpushare.cli.plain_values", "gpushare.errors"]
    eager = _fresh(
        "import importlib, json\n"
        "from typer.testing import CliRunner\n"
        "from gpushare.cli import app\n"
        "from gpushare.cli.app import COMMANDS\n"
        "for e in COMMANDS.values(): importlib.import_module('gpushare.cli.' + e.module)\n"
        "print(json.dumps(CliRunner().invoke(app, ['--help']).output))"
    )
    assert out == json.loads(eager)
    assert all(f"│ {name} " in out for name in COMMANDS)


def test_a_command_loads_its_module_only() -> None:
    out = _fresh(
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gpushare.cli import app\n"
        "CliRunner().invoke(app, ['logs', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('gpushare.cli.')))"
    )
    assert "gpushare.cli.launch" in out and "gpushare.cli.serve" not in out and "gpushare.cli.plan" not in out


def test_profile_group_lists_its_own_commands_only() -> None:
    result = CliRunner().invoke(app, ["profile", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    listed = {name for name in [*COMMANDS, "schema", "validate"] if f"│ {name} " in result.output}
    assert listed == {"schema", "validate"}  # its own commands, none of the top level's
    wrong = CliRunner().invoke(app, ["profile", "estimate", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert wrong.exit_code == 2 and wrong.output.startswith("error: No such command 'estimate'")


class Exploded(RuntimeError):
    pass


def _explode() -> object:
    raise Exploded("the driver said something odd\nsecond line")


@pytest.mark.parametrize(
    ("case", "args", "env", "debug"),
    [
        ("plain", ["gpus"], {}, False),
        ("--debug", ["--debug", "gpus"], {}, True),
        ("GPUSHARE_DEBUG=1", ["gpus"], {"GPUSHARE_DEBUG": "1"}, True),
        ("GPUSHARE_DEBUG=0", ["gpus"], {"GPUSHARE_DEBUG": "0"}, False),
    ],
)
def test_unexpected_error(
    case: str, args: list[str], env: dict[str, str], debug: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpus_command, "inventory_factory", _explode)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    assert result.exit_code == 1
    if debug:
        assert isinstance(result.exception, Exploded)  # raised on: Python prints the traceback
        assert result.stderr == ""
        return
    assert not isinstance(result.exception, Exploded)
    assert result.stderr.splitlines() == [
        "error: `gpushare gpus` failed unexpectedly: Exploded: the driver said something odd",
        "hint: a bug in gpushare; `gpushare --debug gpus ...` (or GPUSHARE_DEBUG=1) shows the traceback",
    ]
    assert "Traceback" not in result.output


def test_gpushare_errors_keep_their_line_and_code_under_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def busy() -> object:
        raise EnvironmentProblem("NVML is busy", hint="try again")

    monkeypatch.setattr(gpus_command, "inventory_factory", busy)
    result = CliRunner().invoke(app, ["--debug", "gpus"], env={"COLUMNS": "200"})
    assert result.exit_code == 3
    assert result.stderr.splitlines() == ["error: NVML is busy", "hint: try again"]


def test_debug_shows_the_traceback_in_a_real_process() -> None:
    """Outside CliRunner: the traceback reaches stderr, the exit code is 1."""
    code = (
        "import sys\n"
        "import gpushare.cli.gpus as g\n"
        "def boom(): raise RuntimeError('injected')\n"
        "g.inventory_factory = boom\n"
        "from gpushare.cli import main\n"
        "sys.argv = ['gpushare'] + sys.argv[1:]\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run([sys.executable, "-c", code, "gpus"], capture_output=True, text=True, env=env)
    debug = subprocess.run(
        [sys.executable, "-c", code, "--debug", "gpus"], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert "failed unexpectedly: RuntimeError: injected" in plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "RuntimeError: injected" in debug.stderr


@pytest.mark.parametrize(
    ("case", "args"),
    [
        ("estimate", ["estimate", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "H100"]),
        ("plan that fits", ["plan", "profiles/classic.yaml"]),
        ("plan that does not fit", ["plan", "profiles/classic.yaml", "--gpus", "L4"]),
        ("estimate --json", ["estimate", "Qwen/Qwen2.5-0.5B-Instruct", "--json"]),
    ],
)
def test_a_closed_pipe_is_not_an_answer(case: str, args: list[str]) -> None:
    """`gpushare plan ... | head -1`: the reader went away. Exit 141 (128 + SIGPIPE, what coreutils'
    tools report), never 0/1 (an answer) and no traceback or "Exception ignored" on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the first write gets EPIPE
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gpushare", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_usage_error_is_one_line() -> None:
    result = CliRunner().invoke(app, ["estimate", "Qwen/Qwen2.5-0.5B-Instruct", "--max-num-seqs", "many"])
    assert result.exit_code == 2
    first, hint = result.stderr.splitlines()  # one line, then where the help is: not typer's box
    assert first.startswith("error: Invalid value for '--max-num-seqs': ") and "many" not in hint
    assert hint == "hint: gpushare estimate --help"
