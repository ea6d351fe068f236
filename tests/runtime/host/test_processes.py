"""SubprocessRunner's psutil edge: every psutil error means "no process we can vouch for"."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from gpushare.runtime.host.processes import SubprocessRunner, process_start_time


def test_start_time_of_a_live_and_of_a_missing_process() -> None:
    started = process_start_time(os.getpid())
    assert started is not None and started <= time.time()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert process_start_time(int(done.stdout)) is None  # exited and reaped


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # another's child: this runner cannot reap it
    started = process_start_time(child.pid)
    assert started is not None
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie now
    assert process_start_time(child.pid) is not None  # a zombie still has its start time
    assert not SubprocessRunner().is_running(child.pid, started)
    child.wait()
