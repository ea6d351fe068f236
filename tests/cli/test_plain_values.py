"""cli/plain_values.py answers as typer does: the same value for every input it takes, typer's own
message for every input it hands on; and `gpushare estimate` runs without pydantic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Annotated, Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from gpushare.cli.plain_values import PlainValues, use_plain_values

pytestmark = pytest.mark.skipif(
    not hasattr(typer.core, "_TyperParameter"), reason="this typer has no pydantic coercion to stand in for"
)

probe = typer.Typer()


@probe.command()
def _probe(
    text: Annotated[str, typer.Option()] = "x",
    count: Annotated[int | None, typer.Option()] = None,
    fraction: Annotated[float | None, typer.Option()] = None,
    tp: Annotated[int, typer.Option(min=1, max=8)] = 1,
    flag: Annotated[bool, typer.Option()] = False,
) -> None:
    """Echo the values."""
    typer.echo(json.dumps([text, count, fraction, tp, flag]))


INPUTS = [
    "0", "8192", "-3", "+4", "007", "1_000", " 5", "5 ", "1.0", "1e3", "abc", "", "٣",
    "0.45", ".5", "5.", "-0.25", "+.5", "1e-3", "inf", "nan", "0x10", "9" * 30,
]  # fmt: skip


def params() -> dict[str, Any]:
    command = typer.main.get_command(probe)
    return {p.name: p for p in command.params}


def typers_answer(param: Any, value: Any) -> tuple[str, Any]:
    from typer._coercion import build_runtime_param

    try:
        return "value", build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=None)
    except Exception as exc:  # typer's BadParameter
        return type(exc).__name__, str(exc)


def ours(param: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", PlainValues(param).coerce(value, param=param, ctx=None)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("name", ["text", "count", "fraction", "tp"])
def test_every_input_gets_typers_answer(name: str) -> None:
    param = params()[name]
    for value in [*INPUTS, None, 1, 0, 2.5]:
        mine, theirs = ours(param, value), typers_answer(param, value)
        assert repr(mine) == repr(theirs), (name, value)  # repr: nan is nan
        if mine[0] == "value":
            assert type(mine[1]) is type(theirs[1]), (name, value)


def test_flags_are_their_own_value() -> None:
    param = params()["flag"]
    for value in (True, False, None, "1", "no"):
        assert ours(param, value) == typers_answer(param, value), value


def test_the_command_line_reads_the_same() -> None:
    command = typer.main.get_command(probe)
    use_plain_values(command.params)
    argv = ["--text", "t", "--count", "12", "--fraction", "0.5", "--tp", "3", "--flag"]
    result = CliRunner().invoke(probe, argv)
    assert json.loads(result.output) == ["t", 12, 0.5, 3, True]
    bad = CliRunner().invoke(probe, ["--tp", "9"])
    assert bad.exit_code == 2 and "less than or equal to 8" in bad.output


def test_estimate_does_not_load_pydantic() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gpushare.cli import app\n"
        "r = CliRunner().invoke(app, ['estimate', 'Qwen/Qwen2.5-7B-Instruct', '--gpu', 'H100',\n"
        "                             '--max-model-len', '8192', '--tp', '1', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('pydantic' in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GPUSHARE_CALIBRATION_FILE": "/nonexistent/none.json"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip().splitlines()[-1] == "False"
