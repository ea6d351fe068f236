"""`gpushare export k8s PROFILE`: the plan as Kubernetes manifests (gpushare/export/k8s/).

Exit codes as `check`: 0 written; 1 the plan does not fit, or the mode cannot hold it (the
numbers say why, and which mode would); 2 an invalid profile or option.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpushare.cli.app import app
from gpushare.cli.plan import GPUS_HELP, MigOption, NoCalibration, make_plan, mig_override
from gpushare.cli.saved_plan import read_plan_file
from gpushare.errors import InputError
from gpushare.export.k8s.options import (
    DEFAULT_CPU_MILLICORES,
    DEFAULT_IMAGE,
    DEFAULT_MEMORY_BYTES,
    DEFAULT_NAMESPACE,
    ExportOptions,
    parse_hf_cache,
    parse_label,
    parse_mode,
)
from gpushare.units import format_bytes, parse_bytes

export_app = typer.Typer(
    name="export",
    help="Write a profile's plan for another system (today: Kubernetes manifests).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(export_app, name="export")

README_MARK = "gpushare export k8s:"
"""The first words of an export's README.txt: how `--out` knows a directory is one to replace."""

MODE_HELP = (
    "gpu-pod (default: gpushare runs the plan in a pod per GPU group, every number kept), mig (a pod "
    "per planned MIG slice, nvidia.com/mig-<profile>, and the mig-parted config), hami (HAMi gpumem "
    "limits), time-slicing or mps (the device plugin's equal replicas; refused when they cannot hold "
    "the plan)."
)


@export_app.command("k8s")
def k8s(
    profile: Annotated[Path | None, typer.Argument(help="The profile YAML.", dir_okay=False)] = None,
    mode: Annotated[str, typer.Option("--mode", help=MODE_HELP)] = "gpu-pod",
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    mig: MigOption = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan-file",
            dir_okay=False,
            help="Export this plan (what `gpushare plan --json` writes) instead of planning PROFILE.",
        ),
    ] = None,
    image: Annotated[
        str, typer.Option(help="The gpushare image (build it from the Dockerfile the export writes).")
    ] = DEFAULT_IMAGE,
    namespace: Annotated[str, typer.Option(help="Namespace of every object.")] = DEFAULT_NAMESPACE,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Directory to write (kustomize), or - for one YAML stream on stdout."),
    ] = None,
    hf_cache: Annotated[
        str,
        typer.Option(
            help="Hugging Face cache: pvc[:SIZE[:CLASS]] (default pvc:200Gi), hostpath:/PATH or none."
        ),
    ] = "pvc",
    cpu: Annotated[
        float, typer.Option(min=0.1, help="CPU cores requested per vLLM instance (not planned).")
    ] = DEFAULT_CPU_MILLICORES / 1000,
    memory: Annotated[
        str, typer.Option(help="Host RAM requested per vLLM instance (not planned).")
    ] = format_bytes(DEFAULT_MEMORY_BYTES, 0).replace(" ", ""),
    shm: Annotated[
        str | None,
        typer.Option(help="/dev/shm per pod (default 2GiB per instance, 8GiB for tensor parallel)."),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=2, help="time-slicing/mps: replicas per GPU (default: the fewest that fit)."),
    ] = None,
    monitoring: Annotated[
        bool, typer.Option(help="Emit ServiceMonitor, PodMonitor and PrometheusRule (Prometheus Operator).")
    ] = True,
    prometheus_label: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE on the monitoring objects, e.g. release=kube-prometheus-stack. Repeatable."
        ),
    ] = None,
    no_calibration: NoCalibration = False,
) -> None:
    """Write PROFILE's plan as Kubernetes manifests: a kustomize directory, or one YAML stream.

    The same plan as `gpushare plan` (same --gpus and --mig, same numbers), or a plan it wrote
    (--plan-file). Exit 1 when the plan does not fit or the mode cannot hold it (the message gives
    the numbers and a mode that would), 2 for an invalid profile or option.
    """
    from gpushare.export.k8s.export import export_plan

    if (profile is None) == (plan_file is None):
        raise InputError(
            "give a profile YAML or --plan-file FILE (one of them)", hint="gpushare export k8s PROFILE"
        )
    if plan_file is not None and (gpus is not None or mig is not None or no_calibration):
        raise InputError(
            "--gpus, --mig and --no-calibration choose how PROFILE is planned; "
            "a --plan-file is planned already",
            hint=f"gpushare export k8s --plan-file {plan_file} --mode {mode}",
        )

    options = ExportOptions(
        mode=parse_mode(mode),
        image=image,
        namespace=namespace,
        hf_cache=parse_hf_cache(hf_cache),
        cpu_millicores=round(cpu * 1000),
        memory_bytes=parse_bytes(memory, "--memory"),
        shm_bytes=parse_bytes(shm, "--shm") if shm is not None else None,
        replicas=replicas,
        monitoring=monitoring,
        prometheus_labels=dict(parse_label(text, "--prometheus-label") for text in prometheus_label or []),
    )
    if plan_file is not None:
        plan = read_plan_file(plan_file)
    else:
        assert profile is not None
        _, plan = make_plan(profile, gpus, None, not no_calibration, mig_override(mig))
    export = export_plan(plan, options)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if out == "-":
        sys.stdout.write(export.stream())
        sys.stdout.flush()
        err.print(
            f"{plan.profile_name}: {options.mode}, "
            f"{len(export.objects) + len(export.cluster_objects)} objects"
        )
        return
    target = Path(out) if out is not None else Path(f"k8s-{plan.profile_name}")
    files = export.directory()
    write_directory(target, files)
    err.print(f"wrote {len(files)} files to {target}/ ({options.mode}); read {target}/README.txt, then:")
    err.print(f"  kubectl apply -k {target}")
    for line in export.mode.summary_lines():
        err.print(f"  {line}", markup=False)


def write_directory(target: Path, files: dict[str, str]) -> None:
    """Write an export into `target`, replacing an earlier export there (and only one)."""
    if target.exists():
        if not target.is_dir():
            raise InputError(f"--out {target}: not a directory")
        readme = target / "README.txt"
        earlier = readme.is_file() and readme.read_text(errors="replace").startswith(README_MARK)
        if any(target.iterdir()) and not earlier:
            raise InputError(
                f"--out {target}: the directory is not empty and holds no earlier export",
                hint="choose a new directory, or an earlier export's to replace it",
            )
        for child in target.iterdir():  # an earlier export: its objects may be gone from this one
            if child.is_dir() and child.name == "cluster":
                shutil.rmtree(child)
            elif child.suffix == ".yaml" or child.name in ("Dockerfile", "README.txt"):
                child.unlink()
    for name, text in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
