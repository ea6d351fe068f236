"""Drawing for up/down/status/logs. Rows are built by plain functions (tested); rich draws them."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from gpushare.cli import term
from gpushare.runtime.launcher.down import DownResult
from gpushare.runtime.launcher.status import InstanceStatus, StatusReport
from gpushare.runtime.launcher.up import Failure, InstanceProgress, UpResult
from gpushare.units import format_bytes

_STATE_STYLE: dict[str, str] = {  # by InstancePhase (runtime/phase.py)
    "ready": "green",
    "starting": "yellow",
    "pending": "dim",
    "unhealthy": "red",
    "exited": "red",
    "failed": "red",
}


def console(stderr: bool = False) -> Console:
    return term.console(stderr=stderr, soft_wrap=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m{value % 60:02.0f}s"
    return f"{value / 3600:.1f}h"


def _bytes(value: int | None) -> str:
    return format_bytes(value) if value else "-"


def progress_rows(items: Sequence[InstanceProgress]) -> list[tuple[str, str, str, str]]:
    """(name, state, phase, elapsed)."""
    return [
        (p.name, p.state, p.phase or "-", _seconds(p.elapsed_s) if p.elapsed_s is not None else "-")
        for p in items
    ]


def progress_table(items: Sequence[InstanceProgress]) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("instance", "state", "phase", "elapsed"):
        table.add_column(column)
    for name, state, phase, elapsed in progress_rows(items):
        table.add_row(name, Text(state, style=_STATE_STYLE.get(state, "")), phase, elapsed)
    return table


def render_failures(out: Console, failures: Sequence[Failure]) -> None:
    for failure in failures:
        out.print(Text(f"✗ {failure.summary()}", style="bold red"))
        out.print(Text(f"--- last lines of {failure.log_path} ---", style="dim"))
        out.print(Text(failure.tail or "(empty log)"))


def render_up(out: Console, result: UpResult) -> None:
    for note in result.notes:
        out.print(Text(f"note: {note}", style="dim"))
    for command, version in result.versions.items():
        out.print(Text(f"{command}: vLLM {version or 'version unknown'}", style="dim"))
    if result.already_running:
        out.print(f"profile {result.state.profile!r} is already up: {', '.join(result.ready)}")
        return
    for rec in result.state.instances:
        if rec.state != "ready":
            continue
        took = result.start_seconds.get(rec.name)
        kv = rec.actual.get("kv_cache_tokens")
        kv_text = f", KV cache {kv:,} tokens" if isinstance(kv, int) else ""
        out.print(
            Text.assemble(
                ("✓ ", "green"),
                f"{rec.name} ready on port {rec.port} (pid {rec.pid}) after {_seconds(took)}{kv_text}",
            )
        )
    render_failures(out, result.failed)


def render_down(out: Console, results: Sequence[DownResult]) -> None:
    if not results:
        out.print("nothing to stop: no profile has running instances")
    for res in results:
        parts = []
        if res.stopped:
            parts.append(f"stopped {', '.join(res.stopped)}")
        if res.gone:
            parts.append(f"already gone: {', '.join(res.gone)}")
        if res.mps_stopped:
            parts.append("stopped its MPS daemon")
        out.print(f"{res.profile}: {'; '.join(parts) if parts else 'nothing was running'}")


def status_rows(report: StatusReport) -> list[tuple[str, ...]]:
    """One row per instance, as shown."""
    rows: list[tuple[str, ...]] = []
    for s in report.instances:
        rows.append(
            (
                s.profile,
                s.name,
                _short_model(s.model),
                ",".join(map(str, s.gpus)) or "cpu",
                str(s.pid or "-"),
                str(s.port),
                s.state + (f" ({s.phase})" if s.phase else ""),
                _bytes(s.planned_bytes),
                _bytes(s.actual_bytes),
                f"{s.kv_cache_tokens:,}" if s.kv_cache_tokens is not None else "-",
                f"{s.kv_cache_usage * 100:.1f}%" if s.kv_cache_usage is not None else "-",
                _requests(s),
                _seconds(s.uptime_s),
                str(s.restarts),
            )
        )
    return rows


def _short_model(model: str) -> str:
    """A local folder by its name; a Hugging Face id as it is."""
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith(("/", ".", "~")) else model


def _requests(s: InstanceStatus) -> str:
    if s.requests_running is None and s.requests_waiting is None:
        return "-"
    return f"{s.requests_running or 0:.0f}/{s.requests_waiting or 0:.0f}"


STATUS_COLUMNS = (
    "profile",
    "instance",
    "model",
    "gpu",
    "pid",
    "port",
    "state",
    "planned",
    "actual",
    "KV tokens",
    "KV used",
    "req run/wait",
    "uptime",
    "restarts",
)


def status_renderable(report: StatusReport) -> Group | Text:
    if not report.instances and not report.gpus:
        return Text("no profile is up (gpushare up PROFILE starts one)")
    parts: list[Table | Text] = []
    if report.instances:
        table = Table(box=None, pad_edge=False, header_style="bold")
        skip = 1 if len(report.profiles) == 1 else 0  # the profile column says nothing then
        for column in STATUS_COLUMNS[skip:]:
            table.add_column(column, overflow="ellipsis", no_wrap=column != "model")
        for row in status_rows(report):
            cells: list[str | Text] = list(row)
            cells[6] = Text(row[6], style=_STATE_STYLE.get(row[6].split(" ")[0], ""))
            table.add_row(*cells[skip:])
        parts.append(table)
    for s in report.instances:
        if s.error:
            parts.append(Text(f"{s.name}: {s.error}", style="red"))
    for profile in report.up_in_progress:
        parts.append(Text(f"{profile}: `gpushare up` is still starting it", style="yellow"))
    if report.gpus:
        gpu_table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("gpu", "name", "total", "used", "free"):
            gpu_table.add_column(column)
        for g in report.gpus:
            gpu_table.add_row(
                str(g.index), g.name, format_bytes(g.total_bytes), format_bytes(g.used_bytes),
                format_bytes(g.free_bytes),
            )  # fmt: skip
        parts.append(gpu_table)
    return Group(*parts)
