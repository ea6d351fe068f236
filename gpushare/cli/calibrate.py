"""`gpushare calibrate PROFILE`: measure each model once on this machine's GPU, store the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpushare.cli import term
from gpushare.cli.app import app
from gpushare.errors import EnvironmentProblem, InputError
from gpushare.units import GiB


def _pair(predicted: int, measured: int) -> str:
    return f"{predicted / GiB:.2f} / {measured / GiB:.2f}"


def _error(predicted: int | None, actual: int | None) -> str:
    if not predicted or not actual:
        return "-"
    return f"{(predicted - actual) / actual:+.2%}"


@app.command()
def calibrate(
    profile: Annotated[Path, typer.Argument(help="The profile whose models to measure.", dir_okay=False)],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only these instances (repeatable).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds each start may take to serve.")] = 900.0,
    store: Annotated[
        Path | None,
        typer.Option(help="Calibration file (default: $GPUSHARE_CALIBRATION_FILE or the data dir)."),
    ] = None,
) -> None:
    """Start each model of PROFILE alone, once, read vLLM's own memory accounting from its log and
    NVML's process footprint, and store a record per (GPU, vLLM version, model, settings).

    `plan`, `check` and `up` then use a matching record instead of the fitted model (and say so);
    `--no-calibration` ignores the records. Needs the GPUs free: it starts one instance at a time.
    """
    from gpushare.calibration import CalibrationStore, default_store_path, settings_from_planned
    from gpushare.cli.launch import edges_factory, inventory_factory
    from gpushare.estimate_job import gpu_target, load_model, run_estimate
    from gpushare.planning.build import build_plan
    from gpushare.profile import load_profile
    from gpushare.runtime.launcher.calibrate import calibrate_plan
    from gpushare.runtime.store.state import profile_paths, state_root

    loaded = load_profile(profile)
    if loaded.device == "cpu":
        raise InputError(
            f"{profile}: device is cpu: calibration measures GPU memory", hint="use a CUDA profile"
        )
    inventory = inventory_factory()
    gpus = inventory.gpus()
    if not gpus:
        raise EnvironmentProblem(
            "no NVIDIA GPU found", hint="run gpushare calibrate on the machine with the GPUs"
        )
    plan = build_plan(loaded, gpus)
    names = tuple(only or ())
    unknown = sorted(set(names) - {i.name for i in plan.instances})
    if unknown:
        raise InputError(f"--only {', '.join(unknown)}: not a planned instance of {profile}")
    console = term.console()
    runs = calibrate_plan(
        plan,
        profile_paths(f"{plan.profile_name}-calibrate", state_root()),
        edges_factory(inventory),
        timeout,
        names,
        on_start=lambda inst, why: console.print(
            f"measuring {inst.name} alone on GPU {inst.gpus}" + (f": {why}" if why else " ...")
        ),
    )
    by_index = {g.index: g for g in gpus}
    table = Table(title="predicted (uncalibrated) vs measured")
    for column in (
        "instance",
        "weights GiB",
        "activation GiB",
        "graphs GiB",
        "KV tokens",
        "err",
        "process GiB",
        "err",
    ):
        table.add_column(column, justify="right")
    for run in runs:
        inst, rec = run.instance, run.record
        facts = load_model(inst.model)
        predicted = run_estimate(
            facts,
            gpu_target(by_index[inst.gpus[0]]),
            settings_from_planned(inst),
            gpu_memory_utilization=inst.gpu_memory_utilization,
        )
        table.add_row(
            inst.name,
            _pair(predicted.weights_bytes, rec.terms.weights_bytes),
            _pair(predicted.activation_bytes, rec.terms.activation_bytes),
            _pair(predicted.cuda_graph_bytes, rec.terms.cuda_graph_bytes),
            f"{predicted.kv_cache_tokens:,} / {rec.kv_cache_tokens or 0:,}",
            _error(predicted.kv_cache_tokens, rec.kv_cache_tokens),
            _pair(predicted.process_bytes, rec.process_bytes),
            _error(predicted.process_bytes, rec.process_bytes),
        )
    console.print(table)
    path = store or default_store_path()
    CalibrationStore(path).save([run.record for run in runs])
    console.print(
        f"stored {len(runs)} record(s) in {path}; plan/check/up use them (--no-calibration to ignore)"
    )
