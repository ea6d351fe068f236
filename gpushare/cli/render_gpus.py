"""Drawing `gpushare gpus` for people. The rows are built apart from the drawing so tests read them."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gpushare.cli import term
from gpushare.devices.base import Gpu, MigDevice
from gpushare.units import format_bytes

GPU_COLUMNS = ("GPU", "name", "UUID", "total", "used", "free", "MIG", "processes")


def _process_lines(gpu: Gpu | MigDevice) -> str:
    if not gpu.processes:
        return "-"
    return "\n".join(f"{p.pid} {p.name or '?'} {format_bytes(p.used_bytes)}" for p in gpu.processes)


def mig_rows(gpu: Gpu) -> list[tuple[str, ...]]:
    """One row per MIG device of `gpu`, under its GPU's row: `0/3g.71gb@4` in the GPU column."""
    return [
        (
            f"{gpu.index}/{d.label}",
            f"MIG {d.profile}",
            d.uuid or "-",
            format_bytes(d.total_bytes),
            format_bytes(d.used_bytes),
            "-" if d.free_bytes is None else format_bytes(d.free_bytes),
            "slice",
            _process_lines(d),
        )
        for d in gpu.mig_devices
    ]


def gpu_rows(gpus: list[Gpu]) -> list[tuple[str, ...]]:
    """One row of strings per GPU, in GPU_COLUMNS order."""
    rows: list[tuple[str, ...]] = []
    for gpu in gpus:
        total = format_bytes(gpu.total_bytes)
        if gpu.reserved_bytes:
            total += f"\n({format_bytes(gpu.reserved_bytes)} reserved)"
        rows.append(
            (
                str(gpu.index),
                gpu.name,
                gpu.uuid or "-",
                total,
                format_bytes(gpu.used_bytes),
                "-" if gpu.free_bytes is None else format_bytes(gpu.free_bytes),
                ("on" if gpu.mig_devices else "on, no devices") if gpu.mig_enabled else "off",
                _process_lines(gpu),
            )
        )
        rows.extend(mig_rows(gpu))
    return rows


def gpus_table(gpus: list[Gpu]) -> Table:
    table = Table(title=None, show_lines=len(gpus) > 1 or any(g.mig_devices for g in gpus))
    for column in GPU_COLUMNS:
        numeric = column in ("GPU", "total", "used", "free")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in gpu_rows(gpus):
        table.add_row(*row)
    return table


def render_gpus(gpus: list[Gpu], mps_daemon_running: bool, console: Console | None = None) -> None:
    console = console or term.console()
    if gpus:
        console.print(gpus_table(gpus))
    else:
        console.print("no GPUs")
    console.print(f"MPS daemon: {'yes' if mps_daemon_running else 'no'}")
    if any(d.start is None for g in gpus for d in g.mig_devices):
        console.print(
            "MIG: the driver did not give the slices' starts (`@?`): reading GPU instances needs "
            "root or the mig/monitor capability"
        )
