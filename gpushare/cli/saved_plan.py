"""`--plan-file FILE`: a plan `gpushare plan --json` wrote, read back for `up` and `export k8s`."""

from __future__ import annotations

import json
from pathlib import Path

from gpushare.errors import InputError
from gpushare.planning.plan import Plan


def read_plan_file(path: Path) -> Plan:
    """A plan file (`Plan.to_json`): one line naming the file and the field when it is not one."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"--plan-file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"--plan-file {path}: not JSON ({exc})") from exc
    try:
        return Plan.from_json(data)
    except ValueError as exc:
        raise InputError(
            f"--plan-file {path}: {exc}", hint="write one with `gpushare plan PROFILE --json > plan.json`"
        ) from exc
