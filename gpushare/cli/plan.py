"""`gpushare plan PROFILE` and `gpushare check PROFILE`.

Exit codes: 0 everything fits; 1 a model cannot be placed or a GPU is overcommitted; 2 the
profile (or an option) is invalid; 3 the GPUs could not be read (no NVIDIA driver for `gpus: auto`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.devices.base import Gpu, GpuInventory
from gpushare.devices.host import HostRam, PsutilHostRam
from gpushare.devices.nvml import NvmlInventory

# The planner pulls in the solver and pydantic: imported inside the commands so start-up stays fast.
if TYPE_CHECKING:
    from gpushare.planning.build import Strategy
    from gpushare.planning.mig import MigOverride
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


class CheckTarget(StrEnum):
    host = "host"
    k8s = "k8s"


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
        if spec.endswith(".json") or "/" in spec:  # a file, as `gpushare gpus --json` wrote it
            if not path.is_file():
                from gpushare.errors import InputError

                what = "is a directory" if path.is_dir() else "no such file"
                raise InputError(f"--gpus {spec}: {what}", hint="give a GPU spec (2xH100) or a JSON file")
            return StaticInventory.from_json_file(path).gpus()
        return parse_gpu_spec(spec, "--gpus")
    described = profile.described_gpus()
    if described is not None:
        return described
    return inventory_factory().gpus()


def make_plan(
    profile_path: Path,
    spec: str | None,
    strategy: Strategy | None,
    calibrated: bool = True,
    mig: MigOverride | None = None,
) -> tuple[Profile, Plan]:
    from gpushare.calibration import stored_lookup
    from gpushare.planning.build import build_plan
    from gpushare.profile import load_profile

    profile = load_profile(profile_path)
    lookup = stored_lookup() if calibrated else None
    # The profile's per-GPU MIG settings describe its own GPUs, not those of --gpus.
    settings: dict[int, str] | None = {} if spec is not None else None
    gpus = resolve_gpus(profile, spec)
    return profile, build_plan(
        profile,
        gpus,
        strategy,
        calibration=lookup,
        mig=mig,
        mig_settings=settings,
        host_memory_bytes=host_ram_bytes(profile),
    )


def host_ram_bytes(profile: Profile) -> int | None:
    """The host's available memory, asked only when on-demand models need it and the profile does
    not give host_memory."""
    if not profile.has_on_demand or profile.host_memory is not None:
        return None
    return host_ram_factory().available_bytes()


class MigChoice(StrEnum):
    auto = "auto"
    off = "off"


MigOption = Annotated[
    MigChoice | None,
    typer.Option(
        "--mig",
        help="MIG on every MIG-capable GPU: auto (choose a geometry per GPU and print what creates "
        "it) or off (whole GPUs); default: each GPU's `mig:` in the profile, else the MIG devices "
        "a MIG-enabled GPU has.",
    ),
]


def mig_override(value: MigChoice | None) -> MigOverride | None:
    if value is None:
        return None
    return "auto" if value is MigChoice.auto else "off"


NoCalibration = Annotated[
    bool,
    typer.Option("--no-calibration", help="Ignore `gpushare calibrate` records; use the fitted model only."),
]


@app.command()
def plan(
    profile: Annotated[Path, typer.Argument(help="The profile YAML.")],
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    strategy: Annotated[
        str | None, typer.Option(help="pack (fewest GPUs) or spread (most headroom); default: the profile's.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The plan as one JSON object, sizes in bytes.")
    ] = False,
    no_calibration: NoCalibration = False,
    mig: MigOption = None,
) -> None:
    """Place the profile's models on GPUs and print each GPU's memory and the exact vLLM commands.

    Exit 0 when everything fits, 1 when something does not (the output says why and what would
    fit), 2 for an invalid profile. With MIG slices to create, it also prints the `nvidia-smi`
    commands and the mig-parted config that create them (never runs them).
    """
    chosen = _strategy(strategy)
    _, result = make_plan(profile, gpus, chosen, not no_calibration, mig_override(mig))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        from gpushare.cli.render_plan import render_plan
        from gpushare.planning.exposure import instance_warnings

        render_plan(result, warnings=instance_warnings(result.instances, os.environ))
    if not result.feasible:
        raise typer.Exit(1)


@app.command()
def check(
    profile: Annotated[Path, typer.Argument(help="The profile YAML.")],
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    output: Annotated[
        OutputFormat,
        typer.Option("--format", help="text, json, or github (::error annotations at the model's line)."),
    ] = OutputFormat.text,
    no_calibration: NoCalibration = False,
    mig: MigOption = None,
    target: Annotated[
        CheckTarget,
        typer.Option("--target", help="host (this machine's `up`), or k8s: can --mode hold the plan too?"),
    ] = CheckTarget.host,
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="With --target k8s: gpu-pod (default), mig, hami, time-slicing or mps."),
    ] = None,
) -> None:
    """Check that a profile is valid and fits: exit 0 fits, 1 overcommitted or a model does not fit,
    2 invalid profile. For CI: `gpushare check profiles/classic.yaml --format github`."""
    from gpushare.cli.render_plan import check_lines, plan_annotations, problem_annotations
    from gpushare.profile import ProfileValidationError

    if mode is not None and target is not CheckTarget.k8s:
        from gpushare.errors import InputError

        raise InputError("--mode is for --target k8s", hint="gpushare check PROFILE --target k8s --mode hami")

    try:
        loaded, result = make_plan(profile, gpus, None, not no_calibration, mig_override(mig))
    except ProfileValidationError as exc:
        if output is OutputFormat.github:
            for line in problem_annotations(exc.file, exc.problems):
                typer.echo(line)
        elif output is OutputFormat.json:
            typer.echo(json.dumps({"ok": False, "valid": False, "errors": _errors_json(exc)}, indent=2))
        else:
            raise
        raise typer.Exit(exc.exit_code) from None
    k8s = _k8s_check(result, mode) if target is CheckTarget.k8s and result.feasible else None
    if output is OutputFormat.json:
        data = {
            "ok": result.feasible and (k8s is None or k8s.ok),
            "valid": True,
            **result.to_json(),
            "problems": list(result.problems),
        }
        if k8s is not None:
            data["k8s"] = k8s.to_json()
        typer.echo(json.dumps(data, indent=2))
    elif output is OutputFormat.github:
        lines = dict(zip((m.name for m in loaded.models), loaded.model_lines, strict=True))
        for line in plan_annotations(result, str(profile), lines):
            typer.echo(line)
        for text in check_lines(result) if result.feasible else []:
            typer.echo(text)
        if k8s is not None and not k8s.ok:
            typer.echo(f"::error file={profile}::{k8s.line()}")
    else:
        console = term.console(soft_wrap=True)
        for text in check_lines(result):
            console.print(text, markup=False)
        for text in k8s.lines() if k8s is not None else []:
            console.print(text, markup=False)
    if not result.feasible:
        raise typer.Exit(1)
    if k8s is not None and not k8s.ok:
        raise typer.Exit(k8s.exit_code)


@dataclass(frozen=True)
class K8sCheck:
    """Whether a Kubernetes mode holds the plan (export/k8s/modes.py), as `check` reports it."""

    mode: str
    summary: tuple[str, ...] = ()
    problem: str | None = None
    hint: str | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        if self.ok:
            return f"ok: k8s --mode {self.mode} holds the plan"
        return f"k8s --mode {self.mode}: {self.problem}" + (f"; {self.hint}" if self.hint else "")

    def lines(self) -> list[str]:
        return [self.line(), *(f"  {s}" for s in self.summary)]

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "ok": self.ok,
            "pods": list(self.summary),
            "problem": self.problem,
            "hint": self.hint,
        }


def _k8s_check(result: Plan, mode_text: str | None) -> K8sCheck:
    from gpushare.errors import GpushareError
    from gpushare.export.k8s.modes import plan_for_mode
    from gpushare.export.k8s.options import parse_mode

    mode = parse_mode(mode_text or "gpu-pod")
    try:
        planned = plan_for_mode(result, mode)
    except GpushareError as exc:
        return K8sCheck(mode, problem=exc.message, hint=exc.hint, exit_code=exc.exit_code)
    return K8sCheck(mode, tuple(planned.summary_lines()))


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
