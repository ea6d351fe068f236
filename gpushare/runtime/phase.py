"""An instance's phase: the one vocabulary that `up`, the state file, `status`, the supervisor, the
gateway's 503 bodies and `/metrics` all speak.

Each of them shows only some of the phases (named below), but every phase string is written once:
here, or for the four a vLLM log shows, in `vllm/log.py`'s `LogPhase`, which this vocabulary
includes. The rest of the package imports `InstancePhase` and these groups.
"""

from __future__ import annotations

from typing import Final, Literal

from gpushare.vllm.log import LogPhase

InstancePhase = Literal[
    "pending",
    LogPhase,  # starting, loading, compiling, serving: how far a start got, by its log (vllm/log.py)
    "ready",
    "unhealthy",
    "stopping",
    "backoff",
    "failed",
    "exited",
    "stopped",
]
"""
pending    planned by `up`, not started yet
starting   the process runs; vLLM parses its config (or, for `status` and the supervisor: anything
           before the first successful answer)
loading    vLLM's log says it loads the weights
compiling  profiling, torch.compile, CUDA graphs, KV cache allocation
serving    the HTTP server listens, no real completion answered yet
ready      it answered a real completion (`up`), or answers /health after that (status, supervisor)
unhealthy  the process runs but /health stopped answering after it had been ready
stopping   the supervisor sent SIGTERM to restart it
backoff    it exited; the supervisor restarts it after a delay
failed     given up on: failed during `up`, or a crash loop (the supervisor does not restart it)
exited     no process of its session is left (`status`; the supervisor's record while it backs off)
stopped    `down` or a failed `up` stopped it
"""

SUPERVISOR_PHASES: Final[tuple[InstancePhase, ...]] = (
    "starting",
    "ready",
    "unhealthy",
    "stopping",
    "backoff",
    "failed",
    "stopped",
)
"""What the supervisor tracks; `gpushare_instance_state` has one series per phase, in this order."""

NO_PROCESS: Final[InstancePhase] = "exited"
"""What `status` and the state file call an instance none of whose processes is left (issue 12
makes this "failed", the supervisor's and the gateway's word: change it here)."""

SERVES: Final[tuple[InstancePhase, ...]] = ("ready", "unhealthy")
"""The gateway routes to these; one missed health check is not down yet."""

RUNNING: Final[tuple[InstancePhase, ...]] = ("starting", "ready", "unhealthy")
"""Phases in which the supervisor expects the process to be alive and probes it."""
