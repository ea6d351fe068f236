"""CUDA MPS control behind an interface.

Real: `NvidiaMpsControl` runs `nvidia-cuda-mps-control -d` with CUDA_MPS_PIPE_DIRECTORY and
CUDA_MPS_LOG_DIRECTORY pointing under the profile's state directory, so each profile has its own
daemon and never touches a system-wide one; `echo quit | nvidia-cuda-mps-control` stops it.
Test: `FakeMpsControl`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gpushare.errors import EnvironmentProblem

MPS_CONTROL = "nvidia-cuda-mps-control"


def mps_env(pipe_dir: Path, log_dir: Path) -> dict[str, str]:
    """What a client (and the daemon) needs to find this daemon."""
    return {"CUDA_MPS_PIPE_DIRECTORY": str(pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}


class MpsControl(Protocol):
    def available(self) -> bool:
        """The control program exists on this machine."""
        ...

    def running(self, pipe_dir: Path) -> bool:
        """A daemon answers on this pipe directory."""
        ...

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        """Start a daemon on these directories; raises EnvironmentProblem if it does not come up."""
        ...

    def stop(self, pipe_dir: Path, log_dir: Path) -> None:
        """Ask the daemon on this pipe directory to quit (no-op when none runs)."""
        ...


class NvidiaMpsControl:
    def __init__(self, program: str = MPS_CONTROL, timeout_s: float = 30.0) -> None:
        self.program = program
        self.timeout_s = timeout_s

    def _path(self) -> str | None:
        return shutil.which(self.program)

    def available(self) -> bool:
        return self._path() is not None

    def _control(self, pipe_dir: Path, log_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
        path = self._path()
        if path is None:
            raise EnvironmentProblem(f"{self.program} not found", hint="install the NVIDIA driver utilities")
        return subprocess.run(
            [path],
            input=command + "\n",
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            env={**os.environ, **mps_env(pipe_dir, log_dir)},
            check=False,
        )

    def running(self, pipe_dir: Path) -> bool:
        if self._path() is None or not (pipe_dir / "control").exists():
            return False
        try:
            done = self._control(pipe_dir, pipe_dir.parent / "log", "get_server_list")
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        path = self._path()
        if path is None:
            raise EnvironmentProblem(f"{self.program} not found", hint="set mps: off, or install it")
        pipe_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [path, "-d"],
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            env={**os.environ, **mps_env(pipe_dir, log_dir)},
            check=False,
        )
        if done.returncode != 0:
            log = log_dir / "control.log"
            tail = log.read_text(errors="replace").splitlines()[-3:] if log.exists() else []
            raise EnvironmentProblem(
                f"cannot start the MPS daemon: {(done.stderr or done.stdout).strip() or done.returncode}",
                hint=" | ".join(tail) or f"see {log}",
            )

    def stop(self, pipe_dir: Path, log_dir: Path) -> None:
        if not self.running(pipe_dir):
            return
        self._control(pipe_dir, log_dir, "quit")


@dataclass
class FakeMpsControl:
    """`installed` says whether the program exists; `daemons` holds the pipe dirs with a daemon."""

    installed: bool = True
    daemons: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    fail_start: str | None = None

    def available(self) -> bool:
        return self.installed

    def running(self, pipe_dir: Path) -> bool:
        return str(pipe_dir) in self.daemons

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        self.calls.append(f"start {pipe_dir}")
        if not self.installed:
            raise EnvironmentProblem(f"{MPS_CONTROL} not found")
        if self.fail_start:
            raise EnvironmentProblem(f"cannot start the MPS daemon: {self.fail_start}")
        self.daemons.add(str(pipe_dir))

    def stop(self, pipe_dir: Path, log_dir: Path) -> None:
        self.calls.append(f"stop {pipe_dir}")
        self.daemons.discard(str(pipe_dir))
