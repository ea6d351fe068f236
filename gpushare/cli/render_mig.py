"""Drawing `gpushare mig profiles` for people. Rows are built apart from the drawing so tests read them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from gpushare.catalog.mig import MigProfile, MigTable
from gpushare.cli import term
from gpushare.units import format_bytes

PROFILE_COLUMNS = ("profile", "id", "slices", "memory", "SMs", "max", "starts", "units")
NOT_SOURCED = "not sourced"


def profile_record(p: MigProfile) -> dict[str, Any]:
    """One profile as `--json` prints it; memory in bytes, null where not sourced."""
    return {
        "name": p.name,
        "profile_id": p.profile_id,
        "slices": p.slices,
        "memory_bytes": p.memory_bytes,
        "sms": p.sms,
        "max_count": p.max_count,
        "starts": list(p.starts),
        "memory_units": p.size,
    }


def profile_rows(table: MigTable) -> list[tuple[str, ...]]:
    """One row of strings per profile, in PROFILE_COLUMNS order."""
    return [
        (
            p.name,
            str(p.profile_id),
            str(p.slices),
            NOT_SOURCED if p.memory_bytes is None else format_bytes(p.memory_bytes),
            NOT_SOURCED if p.sms is None else str(p.sms),
            str(p.max_count),
            ",".join(map(str, p.starts)),
            str(p.size),
        )
        for p in table.profiles
    ]


def table_notes(table: MigTable) -> list[str]:
    """What the reader must know about the numbers: where they come from and what is missing."""
    notes = [
        "memory is what NVML reports (the smallest value seen across drivers); names are nominal",
        f"sources: {', '.join(table.sources)} (gpushare/catalog/MIG-SOURCES.md)",
    ]
    if table.placements_inferred:
        notes.append(
            "starts inferred: no `nvidia-smi mig -lgipp` output was found for this GPU; "
            "they are those of every 7-slice GPU that has one"
        )
    notes.extend(table.notes)
    return notes


def profiles_table(table: MigTable) -> Table:
    out = Table(title=f"MIG profiles of {table.gpu_key} ({table.nvml_name})")
    for column in PROFILE_COLUMNS:
        numeric = column in ("id", "slices", "memory", "SMs", "max", "units")
        out.add_column(column, justify="right" if numeric else "left")
    for row in profile_rows(table):
        out.add_row(*row)
    return out


def render_profiles(table: MigTable, console: Console | None = None) -> None:
    console = console or term.console()
    console.print(profiles_table(table))
    for note in table_notes(table):
        console.print(f"[dim]note:[/] {note}")
