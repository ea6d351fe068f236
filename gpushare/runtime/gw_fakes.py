"""Test implementations of the supervisor's own edges (see `gw_system.py` for the real ones)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from gpushare.runtime.state import ProfileState
from gpushare.runtime.supervisor import Alert


@dataclass
class MemoryStateStore:
    """A state file in memory. `busy` plays another `up`/`down` holding the profile lock."""

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


@dataclass
class RecordingAlertSink:
    alerts: list[Alert] = field(default_factory=list)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def kinds(self) -> list[str]:
        return [a.kind for a in self.alerts]
