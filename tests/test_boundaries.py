"""The package's shape: a pure core, thin edges, data modules at the bottom, no import cycle, and a
CLI that starts fast.

The import checks read each module's source (every import statement, those inside functions
included), so a lazy import cannot hide an edge or a cycle; the start-up check runs in a fresh
interpreter so earlier imports in the test session cannot hide one.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gpushare

PACKAGE_DIR = Path(gpushare.__file__).parent
EDGE_ONLY = ["subprocess", "pynvml", "aiohttp", "typer", "rich", "psutil"]
HEAVY = [
    "torch",
    "vllm",
    "transformers",
    "aiohttp",
    "scipy",
    "numpy",
    "highspy",
    "prometheus_client",
    "pynvml",
]

# Every module, by where it sits: the pure core (values in, frozen values out: no subprocess, NVML,
# HTTP, terminal), the edges that touch the world (processes, HTTP, NVML readings, state files,
# the GPU inventory), and the CLI. A new module must be added to one of them.
CORE = {
    "gpushare",
    "gpushare.errors",
    "gpushare.units",
    "gpushare.versions",
    "gpushare.architectures",  # the architectures gpushare sizes, and the refusals
    "gpushare.hfconfig",
    "gpushare.hfrope",
    "gpushare.hfvision",
    "gpushare.weights",
    "gpushare.hub",  # the offline/cache rule and the Hub's interface; huggingface_hub only when asked
    "gpushare.resolve",
    "gpushare.estimate_job",
    "gpushare.calibration",
    "gpushare.catalog.gpus",
    "gpushare.catalog.mig",
    "gpushare.memory",
    "gpushare.memory.activation",
    "gpushare.memory.asleep",
    "gpushare.memory.budget",
    "gpushare.memory.coefficients",
    "gpushare.memory.cudagraphs",
    "gpushare.memory.estimate",
    "gpushare.memory.kv",
    "gpushare.memory.multimodal",
    "gpushare.memory.mxfp4",
    "gpushare.memory.parallel",
    "gpushare.memory.settings",
    "gpushare.memory.vision",
    "gpushare.memory.weights",
    "gpushare.placement",
    "gpushare.placement.greedy",
    "gpushare.placement.highs",
    "gpushare.placement.lp",
    "gpushare.placement.milp",
    "gpushare.placement.model",
    "gpushare.planning",
    "gpushare.planning.build",
    "gpushare.planning.commands",
    "gpushare.planning.cpu",
    "gpushare.planning.needs",
    "gpushare.planning.ondemand",
    "gpushare.planning.plan",
    "gpushare.planning.start",  # the start order, for the planner and the launcher
    "gpushare.planning.suggest",
    "gpushare.profile",
    "gpushare.profile.lines",
    "gpushare.profile.load",
    "gpushare.profile.messages",
    "gpushare.profile.on_demand",
    "gpushare.profile.problems",
    "gpushare.profile.schema",
    "gpushare.vllm",
    "gpushare.vllm.command",
    "gpushare.vllm.log",
    "gpushare.vllm.metrics",
    "gpushare.vllm.processes",
    "gpushare.vllm.sleep",
    "gpushare.mig",
    "gpushare.mig.emit",
    "gpushare.mig.fit",
    "gpushare.mig.geometry",
    "gpushare.export",
    "gpushare.export.k8s",
    "gpushare.export.k8s.dockerfile",
    "gpushare.export.k8s.export",
    "gpushare.export.k8s.gpu",
    "gpushare.export.k8s.meta",
    "gpushare.export.k8s.modes",
    "gpushare.export.k8s.monitoring",
    "gpushare.export.k8s.options",
    "gpushare.export.k8s.render",
    "gpushare.export.k8s.sharing",
    "gpushare.export.k8s.workload",
    # pure modules the runtime owns: its phase vocabulary and the service's rules
    "gpushare.runtime.phase",
    "gpushare.runtime.service.policy",
    "gpushare.runtime.service.routes",
    "gpushare.runtime.service.swap.layout",  # the rooms and which instances to put to sleep
    "gpushare.runtime.service.swap.stats",
    "gpushare.catalog.models",
    "gpushare.planning.bind",
    "gpushare.planning.exposure",
    "gpushare.planning.mig",
    "gpushare.profile.gpus",
    # the GPU description the core plans for (the inventory's interface)
    "gpushare.devices",
    "gpushare.devices.base",
}
EDGE = {
    "gpushare.devices.host",  # host RAM through psutil (on-demand models' level-1 copies)
    "gpushare.devices.nvml",
    "gpushare.devices.static",
    "gpushare.runtime",
    "gpushare.runtime.host",
    "gpushare.runtime.host.clock",
    "gpushare.runtime.host.mps",
    "gpushare.runtime.host.ports",
    "gpushare.runtime.host.probe",
    "gpushare.runtime.host.processes",
    "gpushare.runtime.host.stop",
    "gpushare.runtime.launcher",
    "gpushare.runtime.launcher.calibrate",
    "gpushare.runtime.launcher.down",
    "gpushare.runtime.launcher.edges",
    "gpushare.runtime.launcher.foreground",
    "gpushare.runtime.launcher.preflight",
    "gpushare.runtime.launcher.status",
    "gpushare.runtime.launcher.up",
    "gpushare.runtime.service",
    "gpushare.runtime.service.gateway",
    "gpushare.runtime.service.metrics",
    "gpushare.runtime.service.process",
    "gpushare.runtime.service.supervisor",
    "gpushare.runtime.service.supervisor_edges",
    "gpushare.runtime.service.swap",
    "gpushare.runtime.service.swap.client",
    "gpushare.runtime.service.swap.control",
    "gpushare.runtime.service.swap.endpoint",
    "gpushare.runtime.service.swap.manager",
    "gpushare.runtime.service.swap.metrics",
    "gpushare.runtime.store",
    "gpushare.runtime.store.lock",
    "gpushare.runtime.store.logs",
    "gpushare.runtime.store.service",
    "gpushare.runtime.store.state",
}
CLI = {
    "gpushare.__main__",
    "gpushare.cli",
    "gpushare.cli.app",
    "gpushare.cli.calibrate",
    "gpushare.cli.estimate",
    "gpushare.cli.export",
    "gpushare.cli.gpus",
    "gpushare.cli.launch",
    "gpushare.cli.mig",
    "gpushare.cli.models",
    "gpushare.cli.options",
    "gpushare.cli.term",
    "gpushare.cli.plain_values",
    "gpushare.cli.plan",
    "gpushare.cli.saved_plan",
    "gpushare.cli.profile",
    "gpushare.cli.render",
    "gpushare.cli.render_gpus",
    "gpushare.cli.render_launch",
    "gpushare.cli.render_mig",
    "gpushare.cli.render_plan",
    "gpushare.cli.serve",
    "gpushare.cli.swap",
}


def all_modules() -> list[str]:
    """Every module file of the package (namespace packages such as gpushare.catalog included)."""
    names = []
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def is_edge(module: str) -> bool:
    return module in EDGE or module in CLI


def source_of(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return Path(spec.origin)


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (anywhere in the file), not those under `if TYPE_CHECKING:`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def direct_imports(module: str) -> set[str]:
    """Top-level names a module imports itself (anywhere in the file, lazy imports included)."""
    tree = ast.parse(source_of(module).read_text())
    names = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def gpushare_imports(module: str, known: set[str]) -> set[str]:
    """The gpushare modules that importing `module` executes: each module it imports (a
    `from package import submodule` names the submodule) and each package above it that is not
    also above `module` (Python runs a package's __init__ before its submodules)."""
    tree = ast.parse(source_of(module).read_text())
    targets: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name.startswith("gpushare"))
        elif node.module and node.level == 0 and node.module.startswith("gpushare"):
            targets.add(node.module)
            targets.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
            )
    out: set[str] = set()
    mine = module.split(".")
    for target in targets:
        parts = target.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            if name in known and mine[:n] != parts[:n] and name != module:
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = set(all_modules())
    return {m: gpushare_imports(m, known) for m in sorted(known)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_core_edge_or_cli() -> None:
    # A new module lands in exactly one list; the core list is what the tests below guard.
    assert CORE.isdisjoint(EDGE) and CORE.isdisjoint(CLI) and EDGE.isdisjoint(CLI)
    assert set(all_modules()) == CORE | EDGE | CLI


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_touches_no_edge(module: str) -> None:
    assert direct_imports(module) & set(EDGE_ONLY) == set()
    edges = {m for m in gpushare_imports(module, set(all_modules())) if is_edge(m)}
    # Importing a pure module under runtime/ runs the runtime's package files (docstrings only).
    packages = {"gpushare.runtime", "gpushare.runtime.service"}
    assert edges <= packages, f"{module} imports {sorted(edges - packages)}"


def test_no_import_cycle_in_gpushare() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# Data modules import nothing above them (pip's models/ hold data only).
DATA_MODULES = {
    "gpushare.units": {"gpushare.errors"},
    "gpushare.versions": set(),
    "gpushare.architectures": {"gpushare.errors", "gpushare.versions"},
    "gpushare.hfconfig": {
        "gpushare.errors",
        "gpushare.architectures",
        "gpushare.hfrope",
        "gpushare.hfvision",
        "gpushare.versions",
    },
    "gpushare.hfrope": set(),
    "gpushare.hfvision": {"gpushare.errors"},
    "gpushare.memory.settings": {
        "gpushare.errors",
        "gpushare.hfconfig",
        "gpushare.hfrope",
        "gpushare.hfvision",
        "gpushare.units",
        "gpushare.architectures",
        "gpushare.versions",
    },
    "gpushare.memory.coefficients": {"gpushare.units"},
    "gpushare.memory.budget": set(),
    "gpushare.placement.model": set(),
    "gpushare.vllm.command": set(),
    "gpushare.vllm.sleep": set(),
    "gpushare.planning.plan": {
        "gpushare.memory",
        "gpushare.memory.estimate",
        "gpushare.vllm",
        "gpushare.vllm.command",
        "gpushare.vllm.sleep",
    },
}


@pytest.mark.parametrize("module", sorted(DATA_MODULES))
def test_data_modules_import_nothing_above_them(module: str) -> None:
    assert gpushare_imports(module, set(all_modules())) <= DATA_MODULES[module]


def imported_after(statement: str, watch: list[str]) -> list[str]:
    code = (
        "import sys, json\n"
        f"before = set(sys.modules)\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {watch!r} if m in sys.modules and m not in before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_start_up_imports_nothing_heavy() -> None:
    # `gpushare estimate` must answer in well under 0.5 s: command modules import their
    # runtime (HTTP, solver, metrics, NVML) inside the command, not at start-up.
    assert imported_after("import gpushare.cli", HEAVY) == []


def test_estimate_and_the_plans_data_import_no_solver() -> None:
    # `estimate` needs the memory model only; the launcher reads a plan without the planner.
    solver = ["numpy", "highspy", "scipy", "pydantic"]
    assert imported_after("import gpushare.estimate_job, gpushare.memory", solver) == []
    assert imported_after("import gpushare.planning.plan, gpushare.planning.start", solver) == []


@pytest.mark.parametrize("package", ["gpushare.runtime", "gpushare.runtime.service"])
def test_runtime_packages_import_nothing(package: str) -> None:
    # So that the core modules under them (phase, policy, routes) stay pure when imported.
    assert gpushare_imports(package, set(all_modules())) == set()
    assert direct_imports(package) == set()


@pytest.mark.parametrize("command", ["gpushare.cli.estimate", "gpushare.cli.plan"])
def test_estimate_and_plan_load_no_runtime(command: str) -> None:
    # `estimate` and `plan`/`check` never start, serve or measure anything.
    watch = ["aiohttp", "prometheus_client", "pynvml", "psutil", "huggingface_hub"]
    assert imported_after(f"import {command}", watch) == []


def test_estimate_loads_neither_pydantic_nor_the_solver() -> None:
    watch = ["pydantic", "scipy", "numpy", "highspy"]
    assert imported_after("import gpushare.cli.estimate", watch) == []


def test_the_mig_command_loads_its_catalog_only_when_it_runs() -> None:
    watch = ["gpushare.catalog.mig", "gpushare.mig.fit", "scipy"]
    assert imported_after("import gpushare.cli.mig", watch) == []
