"""The process-runner interface: start a server in its own session, find it again, signal it.

Real: `SubprocessRunner` (subprocess with `start_new_session=True`, psutil for start times).
Test: `FakeRunner` (scripted processes on a fake clock, for failures that real processes make slow
or impossible to stage, such as a recycled pid).

Identity: an instance is its session leader's (pid, start time). The other processes of that
session (vLLM's EngineCore, workers, the resource tracker) are found by session id, so they are
stopped even when the leader already died, and the supervisor can tell when one of them is gone
(`session_members`: each with its start time and title). A live pid with a different start time
was recycled and is never signalled.

State: psutil's status of each process is mapped once, here (`_state_of`), to a `ProcessState`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from gpushare.errors import EnvironmentProblem

START_TIME_TOLERANCE_S = 0.05
"""psutil derives create_time from boot time + clock ticks (10 ms): equal for one process."""

ProcessState = Literal["running", "stopped"]
"""What gpushare makes of a live process's scheduler state (psutil's status, mapped once in
`_state_of`). running: running, sleeping, waiting on the disk, idle, ...; stopped: `T` or `t` in
`ps` (SIGSTOP, SIGTSTP, a debugger's trace stop): it runs no code, so it answers no request and
acts on no signal but SIGKILL until it is continued."""

PortHolder = Literal["instance", "shared", "other", "nobody"]
"""Who listens on an instance's TCP port, on any address (IPv4 or IPv6). instance: processes of
its session only; shared: its session and another program too (both set SO_REUSEPORT, which vLLM
does with --api-server-count > 1, or they bound different addresses): any connection may reach the
other one; other: only processes outside its session (or ones this user cannot see); nobody: no
listener. Only `instance` lets an answer on the port count as the instance's."""


@dataclass(frozen=True)
class SessionLeader:
    """A process session's leader, as gpushare names an instance (or the gateway/supervisor) it
    started: its pid and its start time (a recycled pid has another start time)."""

    pid: int
    start_time: float


@dataclass(frozen=True)
class SessionMember:
    """One live process of a session: pid, start time, and its title (the command line as /proc
    shows it; vLLM retitles its engine core and workers, vllm/processes.py)."""

    pid: int
    start_time: float
    title: str


@dataclass(frozen=True)
class Completed:
    returncode: int
    output: str


class ProcessRunner(Protocol):
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> SessionLeader:
        """Start `argv` in a new session, stdout+stderr appended to `log_path`, with the current
        environment plus `env`. Raises EnvironmentProblem if the program cannot be executed."""
        ...

    def session_pids(self, pid: int, start_time: float) -> list[int]:
        """Live (not zombie) processes of the session that `pid` leads and that started at
        `start_time`; empty when that process and its session are gone or the pid was recycled."""
        ...

    def session_states(
        self, pid: int, start_time: float, members: Sequence[int] | None = None
    ) -> dict[int, ProcessState]:
        """`session_pids` with the state of each. With `members` (pids an earlier call returned)
        only those are looked at, those still alive and in the session: a check cheap enough for
        every tick, where finding the members takes a pass over every process of the machine."""
        ...

    def session_members(self, pid: int, start_time: float) -> list[SessionMember]:
        """Like `session_pids`, with each process's start time and title (a pass over every
        process of the machine: for once in a while, not every tick)."""
        ...

    def port_holder(self, pid: int, start_time: float, port: int) -> PortHolder:
        """Who listens on `port`: that session alone, it and another program, or others only
        (so an answer on the port is the instance's only when this says `instance`)."""
        ...

    def is_running(self, pid: int, start_time: float) -> bool:
        """The process `pid` (a leader or a member of its session) is alive (not a zombie) and
        has this start time."""
        ...

    def exit_code(self, pid: int) -> int | None:
        """The exit status of a process this runner spawned once it has exited (negative: killed
        by that signal); None while it runs or when this runner did not spawn it."""
        ...

    def signal(self, pids: Sequence[int], sig: int) -> None:
        """Send `sig` to each pid; pids that vanished meanwhile are skipped."""
        ...

    def run(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> Completed:
        """Run a short command to completion (version probes). Raises EnvironmentProblem when the
        program is missing or overruns."""
        ...

    def which(self, program: str) -> str | None:
        """The executable `program` resolves to, or None."""
        ...


def _matches(a: float, b: float) -> bool:
    return abs(a - b) <= START_TIME_TOLERANCE_S


# psutil is imported where it is used: `gpushare estimate` and `plan` never pay for it. Every psutil
# error (gone, zombie, access denied) means the same here: not a process we can vouch for.


def process_start_time(pid: int) -> float | None:
    """When `pid` started (psutil's create_time, seconds since the epoch); None when no such process
    is visible."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def holder_of(listeners: set[int | None], session: set[int]) -> PortHolder:
    """`PortHolder` from the pids listening on a port (None: one this user cannot see) and the
    pids of the instance's session."""
    if not listeners:
        return "nobody"
    ours = {pid for pid in listeners if pid is not None and pid in session}
    if not ours:
        return "other"
    return "instance" if ours == listeners else "shared"


def port_problem(holder: PortHolder, port: int) -> str | None:
    """Why an answer on `port` cannot be taken for the instance's; None when it can."""
    who = f"`ss -ltnp 'sport = :{port}'` names it"
    if holder == "shared":
        return f"another program listens on port {port} beside this instance and may answer for it ({who})"
    if holder in ("other", "nobody"):
        return (
            f"port {port} answers, but not from this instance's processes: another program holds it ({who})"
        )
    return None


def _state_of(status: str) -> ProcessState | None:
    """psutil's status of a process as gpushare reads it; None: not alive (a zombie, dead)."""
    import psutil

    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return None
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return "stopped"
    return "running"


def _live_start_time(pid: int) -> float | None:
    """Like `process_start_time`, but None for a zombie too."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else float(proc.create_time())
    except psutil.Error:
        return None


class SubprocessRunner:
    """Real processes. Keeps its children's Popen objects so their exit codes can be read (and they
    are reaped instead of lingering as zombies)."""

    def __init__(self, base_env: Mapping[str, str] | None = None) -> None:
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> SessionLeader:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**self._base_env, **env},
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise EnvironmentProblem(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        self._children[proc.pid] = proc
        # Exited already: a zombie still has its start time, a reaped one does not (0.0).
        return SessionLeader(proc.pid, process_start_time(proc.pid) or 0.0)

    def _poll(self, pid: int) -> int | None:
        proc = self._children.get(pid)
        return proc.poll() if proc is not None else None

    def is_running(self, pid: int, start_time: float) -> bool:
        if self._poll(pid) is not None:
            return False
        started = _live_start_time(pid)
        return started is not None and _matches(started, start_time)

    def session_pids(self, pid: int, start_time: float) -> list[int]:
        return sorted(self.session_states(pid, start_time))

    def session_states(
        self, pid: int, start_time: float, members: Sequence[int] | None = None
    ) -> dict[int, ProcessState]:
        import psutil

        self._poll(pid)
        leader_started = process_start_time(pid)
        if leader_started is not None and not _matches(leader_started, start_time):
            return {}  # recycled: that session is someone else's
        # (A leader that is gone: its session id cannot be reused while members live.)
        found: dict[int, ProcessState] = {}
        if members is not None:
            for member in members:
                try:
                    state = _state_of(psutil.Process(member).status())
                    in_session = os.getsid(member) == pid
                except (psutil.Error, OSError):
                    continue
                if state is not None and in_session:
                    found[member] = state
            return found
        for proc in psutil.process_iter(["pid", "create_time", "status"]):
            info = proc.info
            state = _state_of(info["status"])
            if state is None:
                continue
            try:
                sid = os.getsid(info["pid"])
            except OSError:
                continue
            if sid == pid and info["create_time"] >= start_time - START_TIME_TOLERANCE_S:
                found[int(info["pid"])] = state
        return dict(sorted(found.items()))

    def session_members(self, pid: int, start_time: float) -> list[SessionMember]:
        import psutil

        self._poll(pid)
        leader_started = process_start_time(pid)
        if leader_started is not None and not _matches(leader_started, start_time):
            return []  # recycled: that session is someone else's
        found: list[SessionMember] = []
        for proc in psutil.process_iter(["pid", "create_time", "status", "cmdline", "name"]):
            info = proc.info
            if _state_of(info["status"]) is None:
                continue
            try:
                sid = os.getsid(info["pid"])
            except OSError:
                continue
            if sid == pid and info["create_time"] >= start_time - START_TIME_TOLERANCE_S:
                # setproctitle pads a retitled process's command line with spaces
                title = " ".join(info["cmdline"] or ()).strip() or str(info["name"] or "")
                found.append(SessionMember(int(info["pid"]), float(info["create_time"]), title))
        return sorted(found, key=lambda m: m.pid)

    def port_holder(self, pid: int, start_time: float, port: int) -> PortHolder:
        import psutil

        # Every TCP socket of the machine (tcp4 and tcp6; a socket of another user has pid None):
        # the one way to see a second listener beside the instance's. About 6 ms with 130
        # processes; asked once per start and every few seconds per serving instance.
        try:
            sockets = psutil.net_connections(kind="tcp")
        except psutil.Error:
            return "other"  # cannot vouch for the port
        listeners = {
            s.pid for s in sockets if s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port
        }
        return holder_of(listeners, set(self.session_pids(pid, start_time)))

    def exit_code(self, pid: int) -> int | None:
        return self._poll(pid)

    def signal(self, pids: Sequence[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        for pid in pids:
            self._poll(pid)

    def run(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> Completed:
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={**self._base_env, **(env or {})},
                check=False,
            )
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"command not found: {argv[0]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise EnvironmentProblem(f"{' '.join(argv[:3])} did not finish within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise EnvironmentProblem(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        return Completed(done.returncode, (done.stdout or "") + (done.stderr or ""))

    def which(self, program: str) -> str | None:
        if os.sep in program:
            return program if os.access(program, os.X_OK) and not os.path.isdir(program) else None
        return shutil.which(program, path=self._base_env.get("PATH"))


# --- test implementation ---------------------------------------------------------------------


@dataclass
class FakeMember:
    """Another process of a fake session (vLLM's EngineCore, a worker)."""

    pid: int
    title: str
    start_time: float
    alive: bool = True
    ignore_sigterm: bool = False
    signals: list[int] = field(default_factory=list)


@dataclass
class FakeProcess:
    argv: tuple[str, ...]
    env: dict[str, str]
    log_path: Path
    start_time: float
    alive: bool = True
    exit_status: int | None = None
    signals: list[int] = field(default_factory=list)
    ignore_sigterm: bool = False
    uninterruptible: bool = False
    """In uninterruptible sleep (D state): not even SIGKILL takes it away."""
    members: list[FakeMember] = field(default_factory=list)
    """The other processes of its session (pids leader × 10 + 1, + 2, ...); one EngineCore by default."""
    orphans_outlive: bool = False
    """Its members keep running when it dies (else they go with it, as vLLM's do)."""
    stopped: bool = False
    """Stopped (`T` state): SIGSTOP sets it, SIGCONT clears it; a SIGTERM waits until then."""
    term_pending: bool = False

    def add_member(self, leader_pid: int, title: str, ignore_sigterm: bool = False) -> FakeMember:
        member = FakeMember(leader_pid * 10 + len(self.members) + 1, title, self.start_time)
        member.ignore_sigterm = ignore_sigterm
        self.members.append(member)
        return member

    def die(self, status: int) -> None:
        self.alive = False
        self.exit_status = status
        if not self.orphans_outlive:
            for member in self.members:
                member.alive = False


FakeBehaviour = Callable[["FakeRunner", int, FakeProcess], None]
"""Called right after a fake spawn, to script it (write its log, make it exit, ...)."""


class FakeRunner:
    """Processes that exist only in this object. `clock()` gives start times. Tests script them:
    `exit(pid, code, log=...)`, `recycle(pid)`, `behaviours[program] = fn`."""

    def __init__(
        self,
        clock: Callable[[], float],
        programs: Mapping[str, str] | None = None,
        versions: Mapping[str, Completed] | None = None,
    ) -> None:
        self._clock = clock
        self.processes: dict[int, FakeProcess] = {}
        self.programs = dict(programs or {})
        """program name -> resolved path; a name not here is 'not found' (absolute paths resolve)."""
        self.versions = dict(versions or {})
        """argv[0] of a `run` -> its result; default: exit 0 printing 0.0.0."""
        self.behaviours: dict[str, FakeBehaviour] = {}
        """keyed by argv[0] (or '*'): called after each spawn of that program."""
        self.runs: list[tuple[str, ...]] = []
        self._next_pid = 40000
        self.recycled: set[int] = set()
        self.foreign_ports: set[int] = set()
        """Ports only another program listens on (`port_holder` says `other`)."""
        self.shared_ports: set[int] = set()
        """Ports another program listens on beside the instance (`port_holder` says `shared`)."""

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> SessionLeader:
        if self.which(argv[0]) is None:
            raise EnvironmentProblem(f"cannot start {argv[0]!r}: No such file or directory")
        self._next_pid += 1
        pid = self._next_pid
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        proc = FakeProcess(tuple(argv), dict(env), log_path, self._clock())
        proc.add_member(pid, "VLLM::EngineCore")
        self.processes[pid] = proc
        behaviour = self.behaviours.get(argv[0]) or self.behaviours.get("*")
        if behaviour is not None:
            behaviour(self, pid, proc)
        return SessionLeader(pid, proc.start_time)

    def write_log(self, pid: int, text: str) -> None:
        with open(self.processes[pid].log_path, "a") as log:
            log.write(text)

    def exit(self, pid: int, code: int, log: str = "") -> None:
        if log:
            self.write_log(pid, log)
        self.processes[pid].die(code)

    def member(self, pid: int) -> FakeMember | None:
        for proc in self.processes.values():
            for member in proc.members:
                if member.pid == pid:
                    return member
        return None

    def recycle(self, pid: int) -> None:
        """The pid now belongs to an unrelated process with another start time."""
        self.processes[pid].alive = False
        self.recycled.add(pid)

    def is_running(self, pid: int, start_time: float) -> bool:
        proc = self.processes.get(pid)
        if proc is None and (member := self.member(pid)) is not None:
            return member.alive and _matches(member.start_time, start_time)
        return proc is not None and proc.alive and _matches(proc.start_time, start_time)

    def session_pids(self, pid: int, start_time: float) -> list[int]:
        return [m.pid for m in self.session_members(pid, start_time)]

    def session_members(self, pid: int, start_time: float) -> list[SessionMember]:
        proc = self.processes.get(pid)
        if proc is None or pid in self.recycled or not _matches(proc.start_time, start_time):
            return []
        leader = [SessionMember(pid, proc.start_time, " ".join(proc.argv))] if proc.alive else []
        others = [SessionMember(m.pid, m.start_time, m.title) for m in proc.members if m.alive]
        return leader + others

    def session_states(
        self, pid: int, start_time: float, members: Sequence[int] | None = None
    ) -> dict[int, ProcessState]:
        proc = self.processes.get(pid)
        state: ProcessState = "stopped" if proc is not None and proc.stopped else "running"
        pids = self.session_pids(pid, start_time)
        return {member: state for member in pids if members is None or member in members}

    def port_holder(self, pid: int, start_time: float, port: int) -> PortHolder:
        own = {pid} if self.session_pids(pid, start_time) else set()
        if port in self.foreign_ports:
            return holder_of({None}, own)
        return holder_of(own | ({None} if port in self.shared_ports else set()), own)

    def exit_code(self, pid: int) -> int | None:
        proc = self.processes.get(pid)
        return proc.exit_status if proc is not None and not proc.alive else None

    def signal(self, pids: Sequence[int], sig: int) -> None:
        for pid in pids:
            proc = self.processes.get(pid)
            if proc is None and (member := self.member(pid)) is not None:
                member.signals.append(sig)
                if sig == signal.SIGKILL or (sig == signal.SIGTERM and not member.ignore_sigterm):
                    member.alive = False
                continue
            if proc is None or pid in self.recycled:
                continue
            proc.signals.append(sig)
            if proc.uninterruptible:
                continue
            if sig == signal.SIGSTOP:
                proc.stopped = True
            elif sig == signal.SIGCONT:
                proc.stopped = False
                if proc.term_pending:
                    self._terminate(proc, signal.SIGTERM)
            elif sig == signal.SIGKILL:
                self._terminate(proc, sig)
            elif sig == signal.SIGTERM and proc.stopped:
                proc.term_pending = True  # the kernel holds it until the process is continued
            elif sig == signal.SIGTERM:
                self._terminate(proc, sig)

    @staticmethod
    def _terminate(proc: FakeProcess, sig: int) -> None:
        if sig == signal.SIGTERM and proc.ignore_sigterm:
            return
        proc.die(-sig)

    def run(self, argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> Completed:
        self.runs.append(tuple(argv))
        if self.which(argv[0]) is None:
            raise EnvironmentProblem(f"command not found: {argv[0]}")
        return self.versions.get(argv[0], Completed(0, "0.0.0\n"))

    def which(self, program: str) -> str | None:
        if program.startswith("/"):
            return program
        return self.programs.get(program)
