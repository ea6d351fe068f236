"""`supervisor.json`: where a profile's background gateway/supervisor runs and listens.

Written by that process once it listens (`service/process.py`), removed when it exits cleanly;
read by `up` (is one running already?), `down` (stop it first), `status` (show it) and `logs`. Its
pid is trusted only together with its start time, as an instance's is (`host/processes.py`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gpushare.runtime.store.state import ProfilePaths

SUPERVISOR_FILE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
SERVICE_NAME = "gateway/supervisor"
"""What messages call the background process."""


@dataclass(frozen=True)
class ServiceInfo:
    """What `supervisor.json` holds."""

    pid: int
    pid_start_time: float
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def info_path(paths: ProfilePaths) -> Path:
    return paths.root / SUPERVISOR_FILE


def service_log(paths: ProfilePaths) -> Path:
    return paths.logs_dir / SUPERVISOR_LOG


def read_info(paths: ProfilePaths) -> ServiceInfo | None:
    try:
        data = json.loads(info_path(paths).read_text())
        return ServiceInfo(
            int(data["pid"]), float(data["pid_start_time"]), str(data["host"]), int(data["port"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_info(paths: ProfilePaths, info: ServiceInfo) -> None:
    """Atomically: a reader sees the old file or the new one."""
    tmp = info_path(paths).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info.__dict__, indent=2) + "\n")
    os.replace(tmp, info_path(paths))
