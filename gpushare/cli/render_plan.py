"""Drawing plans: the per-GPU memory bars, the commands, and `check`'s text and GitHub annotations.

Rows and segments are computed by plain functions (tested); only `render_plan` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from gpushare.planning.commands import command_line
from gpushare.planning.plan import Plan, PlannedGpu, PlannedInstance
from gpushare.planning.start import starts_together
from gpushare.profile import ProfileProblem
from gpushare.units import format_bytes

BAR_WIDTH = 60
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


@dataclass(frozen=True)
class Segment:
    label: str
    kind: str  # weights | kv | overhead | others | free
    bytes: int
    color: str


def instance_parts(inst: PlannedInstance) -> tuple[int, int, int]:
    """(weights, KV, overhead) bytes of one instance on one of its GPUs; they sum to planned."""
    return inst.parts()


def gpu_segments(gpu: PlannedGpu, instances: Sequence[PlannedInstance]) -> list[Segment]:
    """The bar of one GPU, left to right: each instance's weights, KV, overhead; other processes;
    free memory (the safety reserve included)."""
    by_name = {i.name: i for i in instances}
    out: list[Segment] = []
    for n, name in enumerate(gpu.instances):
        inst = by_name[name]
        color = COLORS[n % len(COLORS)]
        weights, kv, overhead = instance_parts(inst)
        out += [
            Segment(name, "weights", weights, color),
            Segment(name, "kv", kv, color),
            Segment(name, "overhead", overhead, color),
        ]
    if gpu.other_processes_bytes:
        out.append(Segment("other processes", "others", gpu.other_processes_bytes, "grey50"))
    out.append(Segment("free", "free", max(gpu.free_bytes, 0), "grey35"))
    return out


_GLYPH = {"weights": "█", "kv": "▓", "overhead": "░", "others": "▒", "free": "·"}


def bar_cells(segments: Sequence[Segment], total: int, width: int = BAR_WIDTH) -> list[tuple[str, str]]:
    """(glyph, color) per cell; cell boundaries follow cumulative bytes so rounding never drifts."""
    cells: list[tuple[str, str]] = []
    done = 0
    start = 0
    for seg in segments:
        done += seg.bytes
        end = min(width, round(done / total * width)) if total else 0
        cells += [(_GLYPH[seg.kind], seg.color)] * max(end - start, 0)
        start = max(start, end)
    cells += [(_GLYPH["free"], "grey35")] * (width - len(cells))
    return cells[:width]


def render_plan(plan: Plan, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=True)
    status = "[green]fits[/]" if plan.feasible else "[bold red]does not fit[/]"
    console.print(f"[bold]plan {plan.profile_name}[/]: {status} (strategy {plan.strategy})")
    by_name = {i.name: i for i in plan.instances}
    for gpu in plan.gpus:
        console.print()
        console.print(
            f"[bold]GPU {gpu.index}[/] {gpu.name}: {format_bytes(gpu.cuda_total_bytes)} for CUDA, "
            f"usable {format_bytes(max(gpu.usable_bytes, 0))} (reserve {format_bytes(gpu.reserved_bytes)}"
            + (
                f", other processes {format_bytes(gpu.other_processes_bytes)}"
                if gpu.other_processes_bytes
                else ""
            )
            + f"), planned {format_bytes(gpu.planned_bytes)}, free after start {format_bytes(gpu.free_bytes)}"
        )
        bar = Text("  ")
        for glyph, color in bar_cells(gpu_segments(gpu, plan.instances), gpu.cuda_total_bytes):
            bar.append(glyph, style=color)
        console.print(bar)
        for n, name in enumerate(gpu.instances):
            inst = by_name[name]
            weights, kv, overhead = instance_parts(inst)
            color = COLORS[n % len(COLORS)]
            concurrency = inst.estimate.max_concurrency if inst.estimate is not None else 0
            max_len = inst.estimate.max_model_len if inst.estimate is not None else "?"
            kv_text = (
                "no KV cache (encoder-only)"
                if inst.estimate is not None and not inst.estimate.has_kv_cache
                else f"KV {format_bytes(kv)} ({concurrency}× {max_len} tokens; target {inst.target})"
            )
            console.print(
                f"  [{color}]■[/] #{inst.start_order} [bold]{name}[/] {inst.model}: "
                f"weights {format_bytes(weights)}, {kv_text}, "
                f"overhead {format_bytes(overhead)} = {format_bytes(inst.planned_bytes)}, "
                f"utilization {inst.gpu_memory_utilization}"
            )
    console.print(
        "\n  [dim]█ weights  ▓ KV cache  ░ activation, CUDA graphs, context  ▒ other processes  · free[/]"
    )
    if plan.instances:
        console.print(
            "\n[bold]commands[/] (start in this order"
            + ("; a group may start together" if starts_together(plan.instances) else "")
            + ")"
        )
        for inst in sorted(plan.instances, key=lambda i: (i.start_group, i.start_order, i.name)):
            console.print(f"[dim]# group {inst.start_group}, #{inst.start_order}: {inst.name}[/]")
            console.print(command_line(inst), markup=False)
    for line in unplaced_lines(plan):
        console.print(line, markup=False)
    for problem in plan.overcommitted:
        console.print(f"[bold red]overcommitted:[/] {problem}")
    for note in plan.notes:
        console.print(f"[dim]note:[/] {note}")


def unplaced_lines(plan: Plan) -> list[str]:
    lines: list[str] = []
    for u in plan.unplaced:
        lines.append(f"\ndoes not fit: {u.name}: {u.reason}")
        lines += [f"  - {s}" for s in u.suggestions]
    return lines


def check_lines(plan: Plan) -> list[str]:
    """`gpushare check` text: one line when it fits, else every reason with its suggestions."""
    if plan.feasible:
        used = sum(1 for g in plan.gpus if g.instances)
        where = f"on {used} GPU(s)" if plan.gpus else "on the CPU"
        return [f"ok: {plan.profile_name}: {len(plan.instances)} instance(s) fit {where}"]
    lines = [f"{plan.profile_name}: does not fit"]
    lines += [line.lstrip("\n") for line in unplaced_lines(plan)]
    lines += [f"overcommitted: {p}" for p in plan.problems]
    if not plan.gpus:
        lines += [f"note: {n}" for n in plan.notes]
    return lines


# --- GitHub Actions annotations ----------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(
    file: str, line: int, message: str, level: str = "error", title: str = "gpushare check"
) -> str:
    """`::error file=…,line=…,title=…::message` (workflow-commands escaping)."""
    props = [f"file={_escape_property(file)}"]
    if line > 0:
        props.append(f"line={line}")
    props.append(f"title={_escape_property(title)}")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def plan_annotations(plan: Plan, file: str, model_lines: dict[str, int]) -> list[str]:
    """One annotation per unplaced model (at its entry's line) and per overcommitment."""
    out = []
    for u in plan.unplaced:
        message = f"{u.name} does not fit: {u.reason}"
        if u.suggestions:
            message += "\nWhat would fit:" + "".join(f"\n- {s}" for s in u.suggestions)
        out.append(annotation(file, model_lines.get(u.name, 0), message))
    for problem in plan.overcommitted:
        line = model_lines.get(problem.instance, 0) if problem.instance is not None else 0
        out.append(annotation(file, line, f"overcommitted: {problem}"))
    return out


def problem_annotations(file: str, problems: Sequence[ProfileProblem]) -> list[str]:
    return [
        annotation(file, p.line, f"{p.path}: {p.message}" if p.path else p.message, title="invalid profile")
        for p in problems
    ]
