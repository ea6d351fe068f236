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


def profile_record(p: MigProfile, table: MigTable | None = None) -> dict[str, Any]:
    """One profile as `--json` prints it; memory in bytes, null where not sourced.
    `memory_bytes_seen`: the larger values other sources reported, by source (MIG-SOURCES.md)."""
    seen: dict[str, int] = {}
    for reading in table.readings if table is not None else ():
        value = reading.of(p.name)
        if value is not None:
            seen[reading.source] = value
    return {
        "name": p.name,
        "profile_id": p.profile_id,
        "slices": p.slices,
        "memory_bytes": p.memory_bytes,
        "sms": p.sms,
        "max_count": p.max_count,
        "starts": list(p.starts),
        "memory_units": p.size,
        "memory_bytes_seen": seen,
    }


def columns(table: MigTable) -> tuple[str, ...]:
    """PROFILE_COLUMNS with one column per other reading after `memory`."""
    at = PROFILE_COLUMNS.index("memory") + 1
    return (*PROFILE_COLUMNS[:at], *(r.label for r in table.readings), *PROFILE_COLUMNS[at:])


def profile_rows(table: MigTable) -> list[tuple[str, ...]]:
    """One row of strings per profile, in `columns(table)` order."""

    def size(value: int | None) -> str:
        return NOT_SOURCED if value is None else format_bytes(value)

    return [
        (
            p.name,
            str(p.profile_id),
            str(p.slices),
            size(p.memory_bytes),
            *(size(r.of(p.name)) for r in table.readings),
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
        "memory: what the planner uses when it proposes slices, the smallest value NVML reported "
        "in any source, so a proposed geometry fits under every driver seen; names are nominal",
    ]
    for r in table.readings:
        notes.append(
            f"{r.label}: as {r.what} reported it ({r.source}); drivers differ by up to a few hundred MiB"
        )
    notes += [
        "on a machine with MIG devices, `gpushare gpus` shows each one's own memory and plans onto "
        "existing slices use that",
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
    text_columns = ("profile", "starts")
    for column in columns(table):
        out.add_column(column, justify="left" if column in text_columns else "right")
    for row in profile_rows(table):
        out.add_row(*row)
    return out


def render_profiles(table: MigTable, console: Console | None = None) -> None:
    console = console or term.console()
    console.print(profiles_table(table))
    for note in table_notes(table):
        console.print(f"[dim]note:[/] {note}")
