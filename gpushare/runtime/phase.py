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
unhealthy  the process runs but /health stopped answering after it had been ready, or it is
           stopped (`T` state); the gateway sends it nothing
stopping   the supervisor is stopping it to restart it
backoff    it exited; the supervisor restarts it after a delay
failed     no process of its session is left and nothing will restart it: it failed during `up`,
           the supervisor gave up on it (a crash loop, or `--no-restart`), or it exited while no
           supervisor ran
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

NO_PROCESS: Final[InstancePhase] = "failed"
"""What `status` and the state file call an instance none of whose processes is left and that
nothing will restart: the supervisor's and the gateway's word for a crash loop too. (`status`
shows `backoff` instead while a running supervisor is about to restart it.)"""

SERVES: Final[tuple[InstancePhase, ...]] = ("ready",)
"""The gateway routes to these only: an unhealthy instance gets a 503 with Retry-After at once,
never a request that would hang on it."""

RUNNING: Final[tuple[InstancePhase, ...]] = ("starting", "ready", "unhealthy")
"""Phases in which the supervisor expects the process to be alive and probes it."""

ServiceState = Literal["running", "not answering", "not running"]
"""A profile's background gateway/supervisor, as `status` shows it. running: its process (pid and
start time) runs and its /health answers (or it listens where `status` cannot ask); not
answering: its process runs but /health does not answer; not running: no such process (never
started, `--no-gateway`, stopped, or killed): nothing restarts the instances and no gateway
routes to them."""
