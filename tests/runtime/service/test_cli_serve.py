"""`gpushare supervise` and `gpushare gateway`: the user mistakes, through the CLI."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from gpushare.cli import app
from gpushare.runtime.store.state import ProfileState, profile_paths, save_state


@pytest.mark.parametrize(
    ("case", "args", "code", "message"),
    [
        ("no-state", ["supervise", "lab"], 2, "no instances to supervise"),
        ("stop-not-running", ["supervise", "lab", "--stop"], 0, "not running"),
        ("upstream-no-url", ["gateway", "--upstream", "qwen"], 2, "expected MODEL=http"),
        (
            "upstream-dup",
            ["gateway", "--upstream", "a=http://x:1", "--upstream", "a=http://y:2"],
            2,
            "listed twice",
        ),
        (
            "empty-key-file",
            ["gateway", "--upstream", "a=http://x:1", "--api-key-file", "/dev/null"],
            2,
            "empty",
        ),
    ],
)
def test_user_mistakes(case: str, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output


def test_port_taken_is_an_environment_problem() -> None:
    save_state(profile_paths("lab"), ProfileState("lab"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["supervise", "lab", "--foreground", "--port", str(port)])
    assert result.exit_code == 3, result.output
    assert "cannot listen on 127.0.0.1" in result.output


def test_port_taken_for_a_standalone_gateway() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["gateway", "--upstream", "a=http://x:1", "--port", str(port)])
    assert result.exit_code == 3, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output
