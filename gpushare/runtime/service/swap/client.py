"""The client side of the control endpoint (endpoint.py), for `gpushare wake` / `gpushare sleep`:
find the running gateway of the profile that serves a model, and call it.

The gateway is found through the state directory: the profile whose state file lists the name (an
instance, its served name or an alias), and that profile's `supervisor.json` (where the background
gateway/supervisor listens, process.py). `--url` skips the search.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gpushare.errors import EnvironmentProblem, InputError
from gpushare.runtime.service.swap.endpoint import CONTROL_PREFIX
from gpushare.runtime.store.service import read_info
from gpushare.runtime.store.state import list_profiles, load_state, profile_paths

Action = Literal["wake", "sleep"]


@dataclass(frozen=True)
class ControlAnswer:
    status: int
    body: dict[str, Any]

    @property
    def message(self) -> str:
        error = self.body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        return json.dumps(self.body)[:300]


def find_gateway(name: str, profile: str | None = None, root: Path | None = None) -> str:
    """The URL of the running gateway whose profile serves `name`. Raises InputError (no such
    model, or in several profiles) and EnvironmentProblem (its gateway is not running)."""
    searched = [profile] if profile is not None else list_profiles(root)
    found = []
    for candidate in searched:
        paths = profile_paths(candidate, root)
        state = load_state(paths)
        if state is None:
            if profile is not None:
                raise InputError(f"profile {profile!r} has no instances", hint=f"gpushare up {profile}")
            continue
        if any(name in (rec.name, rec.served_name(), *rec.aliases) for rec in state.instances):
            found.append(candidate)
    if not found:
        where = (
            f"profile {profile!r}" if profile is not None else f"{len(searched)} profile(s) with a state file"
        )
        raise InputError(f"no model or instance {name!r} in {where}", hint="`gpushare status` lists them")
    if len(found) > 1:
        raise InputError(f"{name!r} is in profiles {', '.join(found)}", hint="give --profile PROFILE")
    info = read_info(profile_paths(found[0], root))
    if info is None:
        raise EnvironmentProblem(
            f"profile {found[0]!r} has no gateway running to wake or put to sleep its models",
            hint=f"gpushare supervise {found[0]}",
        )
    return info.url


def call_control(
    url: str, action: Action, name: str, *, api_key: str | None, wait_s: float | None, timeout_s: float
) -> ControlAnswer:
    """POST {url}/gpushare/{action}/{name}. Raises EnvironmentProblem when nothing answers."""
    query = f"?wait_s={wait_s:g}" if wait_s is not None else ""
    target = f"{url.rstrip('/')}{CONTROL_PREFIX}/{action}/{urllib.parse.quote(name, safe='')}{query}"
    request = urllib.request.Request(target, data=b"", method="POST")
    if api_key is not None:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return ControlAnswer(int(answer.status), _json(answer.read()))
    except urllib.error.HTTPError as exc:
        return ControlAnswer(int(exc.code), _json(exc.read()))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnvironmentProblem(
            f"the gateway at {url} did not answer: {reason}", hint="is `gpushare supervise PROFILE` running?"
        ) from None


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {"error": {"message": data.decode("utf-8", "replace")[:300]}}
    return value if isinstance(value, dict) else {"value": value}
