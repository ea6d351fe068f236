"""Drawing for up/down/status/logs. Rows are built by plain functions (tested); rich draws them."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpushare.cli import term
from gpushare.cli.options import DEFAULT_GATEWAY_HOST, DEFAULT_GATEWAY_PORT
from gpushare.runtime.launcher.down import DownResult
from gpushare.runtime.launcher.status import InstanceStatus, ServiceStatus, StatusReport
from gpushare.runtime.launcher.up import Failure, InstanceProgress, UpResult
from gpushare.units import format_bytes

_STATE_STYLE: dict[str, str] = {  # by InstancePhase (runtime/phase.py)
    "ready": "green",
    "starting": "yellow",
    "pending": "dim",
    "unhealthy": "red",
    "backoff": "yellow",
    "failed": "red",
    "stopped": "dim",
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
    if result.adopted:
        out.print(f"running already (adopted, not started again): {', '.join(result.adopted)}")
    for rec in result.state.instances:
        if rec.state != "ready" or rec.name in result.adopted:
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
                s.state + (f" ({s.phase})" if s.phase else "") + (f" ({s.sleep})" if s.sleep else ""),
                _bytes(s.planned_bytes) + (" each" if len(s.gpus) > 1 and s.planned_bytes else ""),
                _actual(s),
                f"{s.kv_cache_tokens:,}" if s.kv_cache_tokens is not None else "-",
                f"{s.kv_cache_usage * 100:.1f}%" if s.kv_cache_usage is not None else "-",
                _requests(s),
                _seconds(s.uptime_s),
                str(s.restarts),
            )
        )
    return rows


def _actual(s: InstanceStatus) -> str:
    """One figure per GPU, in the order of its GPUs (a tensor-parallel instance: one per worker's
    GPU), so each reads against the per-GPU plan."""
    if len(s.gpus) > 1 and any(s.actual_bytes_per_gpu.values()):
        return " / ".join(_bytes(s.actual_bytes_per_gpu.get(g)) for g in s.gpus)
    return _bytes(s.actual_bytes)


def _short_model(model: str) -> str:
    """A local folder by its name; a Hugging Face id as it is."""
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith(("/", ".", "~")) else model


def _requests(s: InstanceStatus) -> str:
    if s.requests_running is None and s.requests_waiting is None:
        return "-"
    return f"{s.requests_running or 0:.0f}/{s.requests_waiting or 0:.0f}"


STATUS_COLUMNS = (
    term.Column("profile", keep=2),
    term.Column("instance"),
    term.Column("model", keep=7),
    term.Column("gpu", keep=4),
    term.Column("pid", keep=8),
    term.Column("port", keep=3),
    term.Column("state"),
    term.Column("planned", keep=5, right=True),
    term.Column("actual", keep=1, right=True),
    term.Column("KV tokens", keep=9, right=True),
    term.Column("KV used", keep=2, right=True),
    term.Column("req run/wait", keep=3, right=True),
    term.Column("uptime", keep=6, right=True),
    term.Column("restarts", keep=4, right=True),
)
"""Left out when the width is short, highest `keep` first: the instance and its state never."""
GPU_COLUMNS = (
    term.Column("gpu"),
    term.Column("name", keep=1),
    term.Column("total", right=True),
    term.Column("used", right=True),
    term.Column("free", right=True),
)


def service_lines(service: ServiceStatus, name_profile: bool, width: int | None) -> list[Text]:
    """The profile's gateway/supervisor: where it listens, or what its absence means and the
    command that starts it (on a line of its own, whole, to copy)."""
    who = f"{service.profile}: gateway/supervisor" if name_profile else "gateway/supervisor"
    style = {"running": "green", "not answering": "red"}.get(service.state, "yellow")
    if service.state != "not running":
        return term.fold_words(
            f"{who}: {service.state}, {service.url}/v1 (pid {service.pid})", width, style=style
        )
    what = f"{who}: not running: nothing restarts these instances and no gateway routes to them; start it:"
    command = f"gpushare supervise {service.profile}"
    if service.host is not None and service.host != DEFAULT_GATEWAY_HOST:
        command += f" --host {service.host}"
    if service.port is not None and service.port != DEFAULT_GATEWAY_PORT:
        command += f" --port {service.port}"
    return [*term.fold_words(what, width, style=style), Text(f"  {command}")]


def status_lines(report: StatusReport, width: int | None) -> list[Text]:
    """`gpushare status`, line by line, fitted to `width` by leaving columns out (never by cutting
    a name short); None (off a terminal): every column."""
    if not report.instances and not report.gpus:
        return [Text("no profile is up (gpushare up PROFILE starts one)")]
    lines: list[Text] = []
    if report.instances:
        skip = 1 if len(report.profiles) == 1 else 0  # the profile column says nothing then
        rows: list[list[term.Cell]] = []
        for row in status_rows(report):
            cells: list[term.Cell] = list(row)
            cells[6] = (row[6], _STATE_STYLE.get(row[6].split(" ")[0], ""))
            rows.append(cells[skip:])
        lines += term.table_lines(STATUS_COLUMNS[skip:], rows, width)
    for s in report.instances:
        if s.error:
            lines += term.fold_words(f"{s.name}: {s.error}", width, style="red")
    for profile, swaps in report.swaps_total.items():
        lines.append(Text(f"{profile}: {swaps} swap(s) of on-demand models since its gateway started"))
    for profile in report.up_in_progress:
        lines.append(Text(f"{profile}: `gpushare up` is still starting it", style="yellow"))
    for service in report.services:
        lines += service_lines(service, len(report.profiles) > 1, width)
    if report.gpus:
        gpu_rows: list[list[term.Cell]] = [
            [
                str(g.index),
                g.name,
                format_bytes(g.total_bytes),
                format_bytes(g.used_bytes),
                format_bytes(g.free_bytes),
            ]
            for g in report.gpus
        ]
        if report.instances:
            lines.append(Text())
        lines += term.table_lines(GPU_COLUMNS, gpu_rows, width)
    return lines
