"""`gpushare gpus`: the GPUs on this machine (NVML), or those described in a JSON file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from gpushare.cli.app import app
from gpushare.devices.base import GpuInventory, NoGpuDriver
from gpushare.devices.nvml import NvmlInventory
from gpushare.devices.static import StaticInventory, gpu_to_record

# Where the GPUs come from when no --inventory-file is given. A module attribute so that tests
# can put an NvmlInventory over a fake pynvml here.
inventory_factory: Callable[[], GpuInventory] = NvmlInventory

NO_GPU_HINT = "describe GPUs in the profile or with --gpus"


@app.command()
def gpus(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list, one object per GPU, sizes in bytes.")
    ] = False,
    inventory_file: Annotated[
        Path | None,
        typer.Option(
            "--inventory-file",
            help="Read the GPUs from a JSON file (what `gpushare gpus --json` prints) instead of NVML.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """List GPUs: memory (total, driver-reserved, used, free), MIG mode, compute processes, MPS."""
    inventory: GpuInventory = (
        StaticInventory.from_json_file(inventory_file) if inventory_file else inventory_factory()
    )
    try:
        found = inventory.gpus()
    except NoGpuDriver as exc:
        # Not an error: planning works from described GPUs. Say so on stderr; JSON stays a list.
        typer.echo(f"no NVIDIA GPU found: {exc.reason}; {NO_GPU_HINT}", err=as_json)
        if as_json:
            typer.echo("[]")
        return
    mps = inventory.mps_daemon_running()
    if as_json:
        typer.echo(json.dumps([gpu_to_record(gpu, mps) for gpu in found], indent=2))
        return
    if not found:
        typer.echo(f"no NVIDIA GPU found: NVML reports no devices; {NO_GPU_HINT}")
        return
    from gpushare.cli.render_gpus import render_gpus

    render_gpus(found, mps)
