"""The one phase vocabulary: every group is part of it, and the words users see do not move."""

from __future__ import annotations

from typing import get_args

import pytest

from gpushare.runtime import phase
from gpushare.vllm.log import LogPhase, phase_from_log

ALL = set(get_args(phase.InstancePhase))


@pytest.mark.parametrize("group", ["SUPERVISOR_PHASES", "SERVES", "RUNNING"])
def test_groups_use_the_vocabulary(group: str) -> None:
    assert set(getattr(phase, group)) <= ALL


def test_words_users_see() -> None:
    # `gpushare_instance_state{state=...}` series, in this order (dashboards select on them).
    assert phase.SUPERVISOR_PHASES == (
        "starting",
        "ready",
        "unhealthy",
        "stopping",
        "backoff",
        "failed",
        "stopped",
    )
    # `status`, the supervisor and the gateway: one word for an instance with no process left
    # that nothing restarts (issue 12: status said "exited" where the others said "failed").
    assert phase.NO_PROCESS == "failed"
    assert phase.NO_PROCESS in phase.SUPERVISOR_PHASES
    assert "exited" not in ALL
    # The gateway routes to a ready instance only: not to an unhealthy one (issue 12).
    assert phase.SERVES == ("ready",)


def test_the_log_phases_are_instance_phases() -> None:
    # vllm/log.py's LogPhase is part of the vocabulary: what phase_from_log says fits every field
    # typed InstancePhase (up's progress, status, the state file).
    assert set(get_args(LogPhase)) == {"starting", "loading", "compiling", "serving"}
    assert set(get_args(LogPhase)) <= ALL
    assert phase_from_log("") == "starting"
