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
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gpushare

PACKAGE_DIR = Path(gpushare.__file__).parent
# The edges: the CLI, the runtime (processes, HTTP, NVML readings, state files) and the GPU inventory.
EDGE_PREFIXES = ("gpushare.cli", "gpushare.runtime", "gpushare.devices", "gpushare.__main__")
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


def all_modules() -> list[str]:
    names = ["gpushare"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="gpushare."):
        names.append(info.name)
    return sorted(names)


def is_edge(module: str) -> bool:
    return module.startswith(EDGE_PREFIXES)


CORE = [m for m in all_modules() if not is_edge(m) and m != "gpushare"]


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


def test_every_module_is_core_or_edge() -> None:
    # A new module lands in one of the two lists; the core list is what the tests below guard.
    for expected in (
        "gpushare.calibration",
        "gpushare.estimate_job",
        "gpushare.resolve",
        "gpushare.memory.budget",
        "gpushare.planning.build",
        "gpushare.planning.plan",
        "gpushare.placement.milp",
        "gpushare.vllm.command",
        "gpushare.vllm.log",
        "gpushare.profile.schema",
    ):
        assert expected in CORE
    assert all(is_edge(m) for m in all_modules() if m not in CORE and m != "gpushare")


@pytest.mark.parametrize("module", CORE)
def test_core_module_touches_no_edge(module: str) -> None:
    assert direct_imports(module) & set(EDGE_ONLY) == set()
    edges = {m for m in gpushare_imports(module, set(all_modules())) if is_edge(m)}
    allowed = {"gpushare.devices", "gpushare.devices.base"}  # the GPU description the core plans for
    assert edges <= allowed, f"{module} imports {sorted(edges - allowed)}"


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
    "gpushare.planning.plan": {"gpushare.memory", "gpushare.memory.estimate"},
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
