"""`down`: stop a profile's instances (all, or some), and its MPS daemon once none is left.

SIGTERM each instance's process session, SIGKILL after a timeout (`host/stop.py`), only for pids
whose start time matches the state file. Idempotent, and safe after a killed `up`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpushare.errors import LaunchError
from gpushare.runtime.launcher.edges import DEFAULT_STOP_TIMEOUT_S, Edges, record_alive, stop_records
from gpushare.runtime.store.lock import profile_lock
from gpushare.runtime.store.state import ProfilePaths, load_state, remove_state, save_state


@dataclass(frozen=True)
class DownResult:
    profile: str
    stopped: tuple[str, ...]
    """Instances that had processes, now stopped."""
    gone: tuple[str, ...]
    """Instances already not running (nothing signalled)."""
    mps_stopped: bool = False


def down(
    paths: ProfilePaths,
    edges: Edges,
    names: Sequence[str] = (),
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    lock_wait_s: float = 5.0,
) -> DownResult:
    """Stop the profile's instances (all, or `names`). Safe to repeat; safe after a killed `up`."""
    with profile_lock(paths, "down", wait_s=lock_wait_s):
        state = load_state(paths)
        if state is None:
            if names:
                raise LaunchError(
                    f"profile {paths.profile!r} has no instances running", hint="gpushare status"
                )
            return DownResult(paths.profile, (), ())
        known = {rec.name for rec in state.instances}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LaunchError(
                f"profile {paths.profile!r} has no instance {', '.join(unknown)}",
                hint=f"its instances: {', '.join(sorted(known))}",
            )
        chosen = [rec for rec in state.instances if not names or rec.name in names]
        stopped = stop_records(chosen, edges.runner, edges.clock, timeout_s)
        gone = tuple(rec.name for rec in chosen if rec.name not in stopped)
        state = state.without_instances({rec.name for rec in chosen})
        mps_stopped = False
        remaining_alive = [rec for rec in state.instances if record_alive(rec, edges.runner)]
        if not remaining_alive:
            if state.mps is not None and state.mps.started_by_us:
                edges.mps.stop(Path(state.mps.pipe_dir), Path(state.mps.log_dir))
                mps_stopped = True
            remove_state(paths)
        else:
            save_state(paths, state, now=edges.clock.time())
        return DownResult(paths.profile, tuple(stopped), gone, mps_stopped)
