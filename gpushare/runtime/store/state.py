"""The state directory and state file: what `up` started, read by down/status/logs and the supervisor.

Layout (root: `$GPUSHARE_STATE_DIR`, else platformdirs `user_state_dir("gpushare")`):

    <root>/<profile>/state.json    this file (written atomically: temp file + os.replace)
    <root>/<profile>/logs/<name>.log   each instance's stdout+stderr (previous run: <name>.log.1)
    <root>/<profile>/lock          flock'd by `up`/`down` (see `lock.py`)
    <root>/<profile>/mps/pipe, mps/log   CUDA MPS directories when this profile runs a daemon

A pid is only trusted together with its start time (`pid_start_time`, seconds since the epoch as
psutil's `create_time()` reports it): a pid whose process started at another time was recycled.

Public API for other modules (gateway, metrics, supervisor): `state_root`, `profile_paths`,
`ProfilePaths`, `list_profiles`, `load_state`, `save_state`, `ProfileState`, `InstanceRecord`,
`MpsRecord`. Records are frozen; change them with `dataclasses.replace` and `ProfileState.with_instance`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpushare.errors import InputError
from gpushare.runtime.phase import InstancePhase
from gpushare.vllm.command import VllmCommand

STATE_VERSION = 1
STATE_DIR_ENV = "GPUSHARE_STATE_DIR"

_PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class InstanceRecord:
    """One instance as started: enough to find, probe, stop and restart it."""

    name: str
    model: str
    port: int
    argv: tuple[str, ...]
    env: dict[str, str]
    """Extra environment on top of gpushare's own (the plan's env plus MPS variables)."""
    log_path: str
    gpus: tuple[int, ...] = ()
    aliases: tuple[str, ...] = ()
    planned_bytes: int = 0
    kv_fixed: bool = False
    pid: int | None = None
    """Process (and process-group/session) leader; vLLM's EngineCore and workers are its children."""
    pid_start_time: float | None = None
    state: InstancePhase = "pending"
    """What `up`, `down` or the supervisor last wrote: pending, starting, ready, backoff, failed or
    stopped. `status` works out the live phase from the process."""
    restarts: int = 0
    started_at: float | None = None
    """Wall-clock time (time.time()) of the latest start."""
    ready_at: float | None = None
    last_start_s: float | None = None
    """How long its latest successful start took, spawn to ready (kept across restarts): the
    gateway's Retry-After while it starts again."""
    exit_code: int | None = None
    error: str | None = None
    actual: dict[str, Any] = field(default_factory=dict)
    """Measured once ready: kv_cache_tokens, kv_cache_bytes, block_size, num_blocks, process_bytes
    (NVML, per GPU), model_load_bytes, ... Keys are optional; readers must use .get()."""

    def command(self) -> VllmCommand:
        """The argv read back (vllm/command.py: the last of a repeated flag wins, as in vLLM)."""
        return VllmCommand.from_argv(self.argv)

    def served_name(self) -> str:
        """The name vLLM serves the instance under, which a completion must ask for: the first
        `--served-model-name`, else the model the argv names, else the record's model."""
        return self.command().name_served() or self.model


@dataclass(frozen=True)
class MpsRecord:
    """A CUDA MPS control daemon this profile uses."""

    pipe_dir: str
    log_dir: str
    started_by_us: bool
    """Only a daemon this profile started is stopped at `down`."""


@dataclass(frozen=True)
class ProfileState:
    profile: str
    instances: tuple[InstanceRecord, ...] = ()
    mps: MpsRecord | None = None
    up_pid: int | None = None
    """The `gpushare up` that wrote this, while it runs (None once it has finished)."""
    swap: dict[str, Any] | None = None
    """The on-demand part of the plan, as runtime/service/swap/layout.py `SwapLayout.to_json`
    writes it (None: every instance is resident). The gateway's swap manager reads it."""
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = STATE_VERSION

    def instance(self, name: str) -> InstanceRecord | None:
        return next((rec for rec in self.instances if rec.name == name), None)

    def with_instance(self, record: InstanceRecord) -> ProfileState:
        """This state with `record` replacing the one of the same name (or appended)."""
        kept = [rec for rec in self.instances if rec.name != record.name]
        order = [rec.name for rec in self.instances]
        if record.name in order:
            kept.insert(order.index(record.name), record)
        else:
            kept.append(record)
        return dataclasses.replace(self, instances=tuple(kept))

    def without_instances(self, names: set[str]) -> ProfileState:
        return dataclasses.replace(self, instances=tuple(r for r in self.instances if r.name not in names))


@dataclass(frozen=True)
class ProfilePaths:
    """Where one profile's files live."""

    root: Path

    @property
    def profile(self) -> str:
        return self.root.name

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def mps_pipe_dir(self) -> Path:
        return self.root / "mps" / "pipe"

    @property
    def mps_log_dir(self) -> Path:
        return self.root / "mps" / "log"

    def log_file(self, instance: str) -> Path:
        return self.logs_dir / f"{instance}.log"

    def ensure(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)


def state_root(environ: Mapping[str, str] | None = None) -> Path:
    """`$GPUSHARE_STATE_DIR`, else the XDG state directory (`~/.local/state/gpushare` on Linux)."""
    env = os.environ if environ is None else environ
    override = env.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("gpushare", appauthor=False))


def check_profile_name(profile: str) -> str:
    if not _PROFILE_NAME_RE.match(profile):
        raise InputError(
            f"profile name {profile!r} cannot name a state folder",
            hint="use letters, digits, '.', '_' and '-' only",
        )
    return profile


def profile_paths(profile: str, root: Path | None = None) -> ProfilePaths:
    return ProfilePaths((root if root is not None else state_root()) / check_profile_name(profile))


def list_profiles(root: Path | None = None) -> list[str]:
    """Profiles that have a state file, sorted."""
    base = root if root is not None else state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "state.json").is_file())


# --- serialization -------------------------------------------------------------------------------


def _record_to_json(rec: InstanceRecord) -> dict[str, Any]:
    data = dataclasses.asdict(rec)
    data["argv"] = list(rec.argv)
    data["gpus"] = list(rec.gpus)
    data["aliases"] = list(rec.aliases)
    return data


def state_to_json(state: ProfileState) -> dict[str, Any]:
    return {
        "version": state.version,
        "profile": state.profile,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "up_pid": state.up_pid,
        "swap": state.swap,
        "mps": dataclasses.asdict(state.mps) if state.mps else None,
        "instances": [_record_to_json(rec) for rec in state.instances],
    }


def _known(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys of `data` that are fields of `cls` (newer writers may add keys; older readers skip them)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _record_from_json(data: Mapping[str, Any]) -> InstanceRecord:
    values = _known(InstanceRecord, data)
    for key in ("argv", "gpus", "aliases"):
        if key in values:
            values[key] = tuple(values[key])
    values["env"] = {str(k): str(v) for k, v in dict(values.get("env") or {}).items()}
    values["actual"] = dict(values.get("actual") or {})
    return InstanceRecord(**values)


def state_from_json(data: Mapping[str, Any]) -> ProfileState:
    mps = data.get("mps")
    return ProfileState(
        profile=str(data["profile"]),
        instances=tuple(_record_from_json(r) for r in data.get("instances", [])),
        mps=MpsRecord(**_known(MpsRecord, mps)) if mps else None,
        up_pid=data.get("up_pid"),
        swap=dict(data["swap"]) if isinstance(data.get("swap"), dict) else None,
        created_at=float(data.get("created_at", 0.0)),
        updated_at=float(data.get("updated_at", 0.0)),
        version=int(data.get("version", STATE_VERSION)),
    )


def load_state(paths: ProfilePaths) -> ProfileState | None:
    """The profile's state, or None when it has none (never started, or fully taken down)."""
    try:
        text = paths.state_file.read_text()
    except FileNotFoundError:
        return None
    try:
        return state_from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{paths.state_file}: unreadable state file ({exc})",
            hint="stop its processes by hand if any still run, then delete the file",
        ) from exc


def save_state(paths: ProfilePaths, state: ProfileState, now: float | None = None) -> ProfileState:
    """Write atomically (a reader sees the old or the new file, never half of one); returns what was
    written, with `updated_at` (and `created_at` the first time) filled in."""
    stamp = time.time() if now is None else now
    state = dataclasses.replace(state, updated_at=stamp, created_at=state.created_at or stamp)
    paths.root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".json", dir=paths.root)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state_to_json(state), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, paths.state_file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return state


def remove_state(paths: ProfilePaths) -> None:
    """Forget the profile's processes (after `down`); logs stay."""
    with contextlib.suppress(FileNotFoundError):
        paths.state_file.unlink()
