"""`logs`: find an instance's log file and read or follow it, without gpushare's own polls.

vLLM's HTTP server logs every request it answers, and the supervisor asks each instance for
/health every few seconds (the gateway asks for /metrics at each scrape): hundreds of lines an
hour that say nothing. Those requests carry `?gpushare=poll` (host/probe.py), so exactly their
access-log lines are left out of what `logs` shows; every other line, other clients' /health
included, is kept. `polls=True` shows them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from gpushare.errors import InputError
from gpushare.runtime.host.clock import Clock
from gpushare.runtime.host.probe import OWN_POLL_QUERY, POLLED_PATHS, own_poll
from gpushare.runtime.store.state import list_profiles, load_state, profile_paths
from gpushare.vllm.log import access_log_request

_OWN_POLLS = frozenset(("GET", own_poll(path)) for path in POLLED_PATHS)


def is_own_poll(line: str) -> bool:
    """The access-log line of one of gpushare's own /health or /metrics requests."""
    return OWN_POLL_QUERY in line and access_log_request(line) in _OWN_POLLS


def without_own_polls(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not is_own_poll(line))


def lines_without_own_polls(chunks: Iterable[str]) -> Iterator[str]:
    """`chunks` of a growing log, whole lines at a time, gpushare's own polls left out."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        whole, newline, pending = pending.rpartition("\n")
        if newline:
            kept = without_own_polls(whole + newline)
            if kept:
                yield kept


def find_log(root: Path, name: str, profile: str | None = None) -> Path:
    """The log of instance `name` (in `profile`, or in the one profile that has it)."""
    profiles = [profile] if profile else list_profiles(root)
    hits: list[tuple[str, Path]] = []
    for prof in profiles:
        paths = profile_paths(prof, root)
        state = load_state(paths)
        rec = state.instance(name) if state else None
        if rec is not None:
            hits.append((prof, Path(rec.log_path)))
        elif paths.log_file(name).exists():  # taken down: the log stays
            hits.append((prof, paths.log_file(name)))
    if not hits and profile is None and root.is_dir():
        hits = [(p.parent.parent.name, p) for p in sorted(root.glob(f"*/logs/{name}.log"))]
    if not hits:
        where = f"profile {profile!r}" if profile else "any profile"
        raise InputError(f"no instance {name!r} in {where}", hint="gpushare status lists the instances")
    if len(hits) > 1:
        names = ", ".join(p for p, _ in hits)
        raise InputError(f"instance {name!r} is in several profiles ({names})", hint="pass --profile")
    return hits[0][1]


def tail_lines(path: Path, lines: int, polls: bool = False) -> str:
    """The last `lines` lines (all when lines <= 0), gpushare's own polls left out unless `polls`."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    if not polls:
        text = without_own_polls(text)
    if lines <= 0:
        return text
    kept = text.splitlines(keepends=True)[-lines:]
    return "".join(kept)


def follow(
    path: Path, clock: Clock, keep_going: Callable[[], bool] = lambda: True, poll_s: float = 0.5
) -> Iterator[str]:
    """Yield text appended to `path` from its current end, until `keep_going()` is false. A log
    rotated by a restart (file replaced or truncated) is reopened from its start."""
    handle = open(path, errors="replace")  # noqa: SIM115 - reopened on rotation below
    try:
        handle.seek(0, 2)
        inode = path.stat().st_ino
        while keep_going():
            chunk = handle.read()
            if chunk:
                yield chunk
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                clock.sleep(poll_s)
                continue
            if stat.st_ino != inode or stat.st_size < handle.tell():
                handle.close()
                handle = open(path, errors="replace")  # noqa: SIM115
                inode = stat.st_ino
                continue
            clock.sleep(poll_s)
    finally:
        handle.close()
