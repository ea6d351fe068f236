"""The supervisor's own edges: the profile's state file and where alerts go, each a Protocol with its
real implementation and its test fake side by side.

(Processes, probes and the clock are the host's interfaces, `runtime/host/`, shared with the
launcher.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from gpushare.errors import EnvironmentProblem
from gpushare.runtime.store.lock import profile_lock
from gpushare.runtime.store.state import ProfilePaths, ProfileState, load_state, save_state

log = logging.getLogger("gpushare.supervisor")


# --- the state file --------------------------------------------------------------------------------


class StateStore(Protocol):
    """The profile's state file. `try_lock` yields whether the profile lock was taken (never waits)."""

    def load(self) -> ProfileState | None: ...

    def save(self, state: ProfileState) -> None: ...

    def try_lock(self) -> AbstractContextManager[bool]: ...


class FileStateStore:
    """The profile's `state.json` and its lock (`store/lock.py`), never waited for."""

    def __init__(self, paths: ProfilePaths) -> None:
        self.paths = paths

    def load(self) -> ProfileState | None:
        return load_state(self.paths)

    def save(self, state: ProfileState) -> None:
        save_state(self.paths, state)

    @contextlib.contextmanager
    def try_lock(self) -> Iterator[bool]:
        try:
            with profile_lock(self.paths, purpose="supervisor restart", wait_s=0.0):
                yield True
        except EnvironmentProblem:
            yield False


@dataclass
class MemoryStateStore:
    """Test fake: a state file in memory. `busy` plays another `up`/`down` holding the profile lock."""

    state: ProfileState | None = None
    busy: bool = False
    saves: int = 0

    def load(self) -> ProfileState | None:
        return self.state

    def save(self, state: ProfileState) -> None:
        self.state = state
        self.saves += 1

    @contextlib.contextmanager
    def try_lock(self) -> Iterator[bool]:
        yield not self.busy


# --- alerts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    instance: str
    model: str
    kind: str
    """memory_over_plan, crash_loop, restarted"""
    message: str
    details: Mapping[str, str] = field(default_factory=dict)


class AlertSink(Protocol):
    def alert(self, alert: Alert) -> None: ...


class HookAlertSink:
    """Every alert is a WARNING log line; with `command`, also a hook run as
    `sh -c COMMAND` with GPUSHARE_ALERT_KIND, GPUSHARE_INSTANCE, GPUSHARE_MODEL, GPUSHARE_MESSAGE and
    GPUSHARE_ALERT_<DETAIL> in its environment (e.g. `notify-send`, `curl` to a webhook). It does not
    wait for the hook; finished hooks are reaped at the next alert."""

    def __init__(self, command: str | None = None, log_path: Path | None = None) -> None:
        self.command = command
        self.log_path = log_path
        self._running: list[subprocess.Popen[bytes]] = []

    def alert(self, alert: Alert) -> None:
        level = logging.INFO if alert.kind == "restarted" else logging.WARNING
        log.log(
            level, "ALERT %s instance=%s model=%s: %s", alert.kind, alert.instance, alert.model, alert.message
        )
        self._running = [proc for proc in self._running if proc.poll() is None]
        if self.command is None:
            return
        env = {
            **os.environ,
            "GPUSHARE_ALERT_KIND": alert.kind,
            "GPUSHARE_INSTANCE": alert.instance,
            "GPUSHARE_MODEL": alert.model,
            "GPUSHARE_MESSAGE": alert.message,
            **{f"GPUSHARE_ALERT_{key.upper()}": value for key, value in alert.details.items()},
        }
        out: int | IO[bytes] = subprocess.DEVNULL
        handle = None
        try:
            if self.log_path is not None:
                handle = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it, we close ours below
                out = handle
            self._running.append(
                subprocess.Popen(
                    ["/bin/sh", "-c", self.command],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        except OSError as exc:
            log.error("alert hook %s could not start: %s", shlex.quote(self.command), exc)
        finally:
            if handle is not None:
                handle.close()


@dataclass
class RecordingAlertSink:
    """Test fake: keeps every alert."""

    alerts: list[Alert] = field(default_factory=list)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def kinds(self) -> list[str]:
        return [a.kind for a in self.alerts]
