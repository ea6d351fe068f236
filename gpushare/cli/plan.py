"""`gpushare plan PROFILE` and `gpushare check PROFILE`.

Exit codes: 0 everything fits; 1 a model cannot be placed or a GPU is overcommitted; 2 the
profile (or an option) is invalid; 3 the GPUs could not be read (no NVIDIA driver for `gpus: auto`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from gpushare.cli.app import app
from gpushare.devices.base import Gpu, GpuInventory
from gpushare.devices.host import HostRam, PsutilHostRam
from gpushare.devices.nvml import NvmlInventory

# The planner pulls in the solver and pydantic: imported inside the commands so start-up stays fast.
if TYPE_CHECKING:
    from gpushare.planning.build import Strategy
    from gpushare.planning.plan import Plan
    from gpushare.profile import Profile, ProfileValidationError

# Where GPUs come from for `gpus: auto` without --gpus. A module attribute so tests can replace it.
inventory_factory: Callable[[], GpuInventory] = NvmlInventory
# Where the host's memory comes from for on-demand models without host_memory (tests replace it).
host_ram_factory: Callable[[], HostRam] = PsutilHostRam

GPUS_HELP = (
    "GPUs to plan for instead of the profile's: a spec such as 2xH100, A100-80GB,L4 or 24GiB, "
    "or a JSON file that `gpushare gpus --json` wrote."
)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"


def resolve_gpus(profile: Profile, spec: str | None) -> list[Gpu]:
    """--gpus, else the GPUs the profile lists, else NVML's (for `gpus: auto`)."""
    from gpushare.catalog.gpus import parse_gpu_spec
    from gpushare.devices.static import StaticInventory

    if profile.device == "cpu":
        return []
    if spec is not None:
        path = Path(spec)
        if spec.endswith(".json") and path.is_file():
            return StaticInventory.from_json_file(path).gpus()
        return parse_gpu_spec(spec, "--gpus")
    described = profile.described_gpus()
    if described is not None:
        return described
    return inventory_factory().gpus()


def make_plan(
    profile_path: Path, spec: str | None, strategy: Strategy | None, calibrated: bool = True
) -> tuple[Profile, Plan]:
    from gpushare.calibration import stored_lookup
    from gpushare.planning.build import build_plan
    from gpushare.profile import load_profile

    profile = load_profile(profile_path)
    lookup = stored_lookup() if calibrated else None
    gpus = resolve_gpus(profile, spec)
    return profile, build_plan(
        profile, gpus, strategy, calibration=lookup, host_memory_bytes=host_ram_bytes(profile)
    )


def host_ram_bytes(profile: Profile) -> int | None:
    """The host's available memory, asked only when on-demand models need it and the profile does
    not give host_memory."""
    if not profile.has_on_demand or profile.host_memory is not None:
        return None
    return host_ram_factory().available_bytes()


NoCalibration = Annotated[
    bool,
    typer.Option("--no-calibration", help="Ignore `gpushare calibrate` records; use the fitted model only."),
]


@app.command()
def plan(
    profile: Annotated[Path, typer.Argument(help="The profile YAML.", dir_okay=False)],
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    strategy: Annotated[
        str | None, typer.Option(help="pack (fewest GPUs) or spread (most headroom); default: the profile's.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The plan as one JSON object, sizes in bytes.")
    ] = False,
    no_calibration: NoCalibration = False,
) -> None:
    """Place the profile's models on GPUs and print each GPU's memory and the exact vLLM commands.

    Exit 0 when everything fits, 1 when something does not (the output says why and what would
    fit), 2 for an invalid profile.
    """
    chosen = _strategy(strategy)
    _, result = make_plan(profile, gpus, chosen, not no_calibration)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        from gpushare.cli.render_plan import render_plan

        render_plan(result)
    if not result.feasible:
        raise typer.Exit(1)


@app.command()
def check(
    profile: Annotated[Path, typer.Argument(help="The profile YAML.", dir_okay=False)],
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    output: Annotated[
        OutputFormat,
        typer.Option("--format", help="text, json, or github (::error annotations at the model's line)."),
    ] = OutputFormat.text,
    no_calibration: NoCalibration = False,
) -> None:
    """Check that a profile is valid and fits: exit 0 fits, 1 overcommitted or a model does not fit,
    2 invalid profile. For CI: `gpushare check profiles/lab.yaml --format github`."""
    from gpushare.cli.render_plan import check_lines, plan_annotations, problem_annotations
    from gpushare.profile import ProfileValidationError

    try:
        loaded, result = make_plan(profile, gpus, None, not no_calibration)
    except ProfileValidationError as exc:
        if output is OutputFormat.github:
            for line in problem_annotations(exc.file, exc.problems):
                typer.echo(line)
        elif output is OutputFormat.json:
            typer.echo(json.dumps({"ok": False, "valid": False, "errors": _errors_json(exc)}, indent=2))
        else:
            raise
        raise typer.Exit(exc.exit_code) from None
    if output is OutputFormat.json:
        data = {
            "ok": result.feasible,
            "valid": True,
            **result.to_json(),
            "problems": list(result.problems),
        }
        typer.echo(json.dumps(data, indent=2))
    elif output is OutputFormat.github:
        lines = dict(zip((m.name for m in loaded.models), loaded.model_lines, strict=True))
        for line in plan_annotations(result, str(profile), lines):
            typer.echo(line)
        for text in check_lines(result) if result.feasible else []:
            typer.echo(text)
    else:
        console = Console(highlight=False, soft_wrap=True)
        for text in check_lines(result):
            console.print(text, markup=False)
    if not result.feasible:
        raise typer.Exit(1)


def _errors_json(exc: ProfileValidationError) -> Sequence[dict[str, object]]:
    return [{"file": exc.file, "line": p.line, "path": p.path, "message": p.message} for p in exc.problems]


def _strategy(value: str | None) -> Strategy | None:
    if value is None:
        return None
    if value == "pack":
        return "pack"
    if value == "spread":
        return "spread"
    from gpushare.errors import InputError

    raise InputError(f"--strategy {value!r}: use pack or spread")
