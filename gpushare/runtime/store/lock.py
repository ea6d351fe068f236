"""One writer per profile: `up`, `down` (and a supervisor's restarts) hold an flock on `<profile>/lock`.

flock is released by the kernel when the holder dies, so a `gpushare up` killed mid-way never
leaves a stale lock behind. The holder's pid is written into the file only to name it in errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from gpushare.errors import EnvironmentProblem
from gpushare.runtime.store.state import ProfilePaths


def _holder(paths: ProfilePaths) -> str:
    try:
        text = paths.lock_file.read_text().strip()
    except OSError:
        return "another gpushare"
    return f"gpushare pid {text}" if text else "another gpushare"


@contextlib.contextmanager
def profile_lock(paths: ProfilePaths, purpose: str = "up", wait_s: float = 0.0) -> Iterator[None]:
    """Hold the profile's lock for the block; raise EnvironmentProblem if another process holds it
    for longer than `wait_s` seconds."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EnvironmentProblem(
                        f"profile {paths.profile!r} is busy: {_holder(paths)} holds its lock"
                        f" ({purpose} refused)",
                        hint="wait for it to finish, or stop it; a killed gpushare releases the lock",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
