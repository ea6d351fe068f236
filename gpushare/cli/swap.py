"""`gpushare wake NAME` and `gpushare sleep NAME`: swap an on-demand model in or out from a script
(a nightly batch job wakes its model first), through the running gateway's control endpoint
(runtime/service/swap/endpoint.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.cli.serve import KeyFile
from gpushare.cli.serve import _api_key as api_key_from
from gpushare.errors import GpushareError, InputError
from gpushare.runtime.service.swap.client import Action, ControlAnswer, call_control, find_gateway

NameArg = Annotated[str, typer.Argument(help="The model (served name or alias) or instance.")]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="The profile serving it (when several have that name).")
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="The gateway, e.g. http://127.0.0.1:8000 (default: the profile's own)."),
]
WAKE_WAIT_S = 120.0


class SwapFailed(GpushareError):
    """The gateway could not wake it or put it to sleep (exit 1)."""


SLEEP_TIMEOUT_S = 3700.0
"""A sleep drains first, for the model's drain_s (at most 3600 s)."""


def _run(
    action: Action,
    name: str,
    profile: str | None,
    url: str | None,
    key_file: Path | None,
    wait_s: float | None,
) -> ControlAnswer:
    gateway = url or find_gateway(name, profile)
    answer = call_control(
        gateway,
        action,
        name,
        api_key=api_key_from(key_file),
        wait_s=wait_s,
        timeout_s=wait_s + 30 if wait_s is not None else SLEEP_TIMEOUT_S,
    )
    if answer.status == 401:
        raise InputError(answer.message, hint="set GPUSHARE_API_KEY or --api-key-file to the gateway's key")
    if answer.status in (400, 404):
        raise InputError(answer.message)
    if answer.status == 503:
        raise SwapFailed(answer.message, hint=f"`gpushare status` and `gpushare logs {name}` say more")
    if answer.status not in (200, 409):
        raise SwapFailed(f"the gateway at {gateway} answered {answer.status}: {answer.message}")
    return answer


def _done(answer: ControlAnswer, past: str, already: str) -> None:
    body = answer.body
    who = body.get("instance")
    text = (
        f"{who}: {past} in {float(body.get('seconds', 0.0)):.2f} s"
        if body.get("changed")
        else f"{who}: {already}"
    )
    term.console().print(text)


@app.command()
def wake(
    name: NameArg,
    profile: ProfileOpt = None,
    url: UrlOpt = None,
    api_key_file: KeyFile = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0.1, max=3600, help="Seconds to wait for the wake before exit 1.")
    ] = WAKE_WAIT_S,
) -> None:
    """Wake an on-demand model now (putting others of its GPU to sleep if needed)."""
    answer = _run("wake", name, profile, url, api_key_file, wait)
    if answer.status == 409:
        raise InputError(answer.message, hint="only models with residency: on-demand sleep and wake")
    _done(answer, "awake", "already awake")


@app.command()
def sleep(
    name: NameArg,
    profile: ProfileOpt = None,
    url: UrlOpt = None,
    api_key_file: KeyFile = None,
) -> None:
    """Put an on-demand model to sleep now (its requests in flight may finish first)."""
    answer = _run("sleep", name, profile, url, api_key_file, None)
    if answer.status == 409:
        raise InputError(answer.message, hint="only models with residency: on-demand sleep and wake")
    _done(answer, "asleep", "already asleep")
