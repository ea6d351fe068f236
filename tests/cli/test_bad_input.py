"""Bad input through the CLI: one line naming what to fix, exit 2, nothing written (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.cli import app

ROOT = Path(__file__).resolve().parents[2]
ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=ENV)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("gateway port", ["gateway", "--upstream", "a=http://127.0.0.1:9", "--port", "70000"], "--port"),
        ("supervise port", ["supervise", "lab", "--port", "70000"], "--port"),
        ("up gateway port", ["up", "profiles/classic.yaml", "--gateway-port", "70000"], "--gateway-port"),
        (
            "gateway negative port",
            ["gateway", "--upstream", "a=http://127.0.0.1:9", "--port", "-1"],
            "--port",
        ),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(case: str, args: list[str], expected: str) -> None:
    code, output = _run(args)
    assert code == 2, output
    first, hint = output.splitlines()
    assert first.startswith(f"error: Invalid value for '{expected}'")
    assert hint.startswith("hint: gpushare ") and hint.endswith(" --help")
    assert "Traceback" not in output and "Unclosed" not in output


@pytest.mark.parametrize("command", ["plan", "check"])
def test_gpus_file_that_does_not_exist(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.json"
    code, output = _run([command, "profiles/classic.yaml", "--gpus", str(missing)])
    assert code == 2
    assert output.splitlines()[0] == f"error: --gpus {missing}: no such file"


def test_estimate_names_its_own_flag() -> None:
    code, output = _run(["estimate", "Qwen/Qwen2.5-0.5B-Instruct", "--gpu", "80"])
    assert code == 2
    assert output.startswith("error: --gpu: '80' is neither a GPU name nor a size")


@pytest.mark.parametrize(
    "args",
    [["plan", "{dir}"], ["check", "{dir}"], ["profile", "validate", "{dir}"], ["up", "{dir}"]],
    ids=["plan", "check", "profile validate", "up"],
)
def test_a_directory_as_profile_is_one_line(args: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "lab.yaml"
    folder.mkdir()
    code, output = _run([a.format(dir=folder) for a in args])
    assert code == 2
    assert output.splitlines() == [f"error: {folder}: is a directory; give the profile's YAML file"]


@pytest.fixture
def lab_is_up(isolated_env: Path) -> Path:
    """A profile `lab` with a state file (no live instance needed: these commands only look)."""
    from gpushare.runtime.store.state import ProfileState, profile_paths, save_state

    save_state(profile_paths("lab", isolated_env), ProfileState("lab"))
    return isolated_env


@pytest.mark.parametrize(
    "args",
    [
        ["down", "nosuch"],
        ["status", "nosuch"],
        ["status", "nosuch", "--json"],
        ["logs", "x", "--profile", "nosuch"],
    ],
    ids=["down", "status", "status --json", "logs --profile"],
)
def test_a_profile_name_that_is_not_there(args: list[str], lab_is_up: Path) -> None:
    before = sorted(p.relative_to(lab_is_up) for p in lab_is_up.rglob("*"))
    code, output = _run(args)
    assert code == 2, output
    assert output.splitlines() == [
        f"error: no profile 'nosuch' in {lab_is_up}",
        "hint: profiles there: lab (up)",
    ]
    assert sorted(p.relative_to(lab_is_up) for p in lab_is_up.rglob("*")) == before  # nothing written


def test_a_profile_name_when_none_was_ever_up(isolated_env: Path) -> None:
    code, output = _run(["down", "nosuch"])
    assert code == 2
    assert output.splitlines()[1] == "hint: no profile has run here yet; gpushare up PROFILE starts one"
    assert not isolated_env.exists()


def test_down_of_a_profile_file_that_is_not_up_writes_nothing(lab_is_up: Path) -> None:
    code, output = _run(["down", "profiles/classic.yaml"])
    assert (code, output) == (0, "classic: nothing was running\n")
    assert not (lab_is_up / "classic").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["up", "profiles/classic.yaml", "--read-timeout", "soon"],
        ["supervise", "lab", "--read-timeout", "qwen=0"],
        ["gateway", "--upstream", "a=http://127.0.0.1:9", "--read-timeout", "=5"],
    ],
)
def test_a_bad_read_timeout_is_one_line_before_anything_starts(args: list[str], isolated_env: Path) -> None:
    code, output = _run(args)
    assert code == 2, output
    assert output.startswith(f"error: --read-timeout {args[-1]!r}: expected SECONDS or MODEL=SECONDS")
    assert not list(isolated_env.rglob("lock"))
