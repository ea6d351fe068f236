"""The package's shape: a pure core, thin edges, and a CLI that starts fast.

Each check runs in a fresh interpreter so earlier imports in the test session cannot hide one.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = [
    "gpushare.units",
    "gpushare.errors",
    "gpushare.hfconfig",
    "gpushare.weights",
    "gpushare.memory",
    "gpushare.placement",
    "gpushare.plan",
    "gpushare.profile",
    "gpushare.catalog.gpus",
]
EDGE_ONLY = ["subprocess", "pynvml", "aiohttp", "typer", "rich", "psutil"]
HEAVY = ["torch", "vllm", "transformers", "aiohttp", "scipy", "prometheus_client", "pynvml"]


def imported_after(statement: str, watch: list[str]) -> list[str]:
    code = (
        "import sys, json\n"
        f"before = set(sys.modules)\n{statement}\n"
        f"print(json.dumps(sorted(m for m in {watch!r} if m in sys.modules and m not in before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def direct_imports(module: str) -> set[str]:
    """Top-level names a module imports itself (anywhere in the file, lazy imports included)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_touches_no_edge(module: str) -> None:
    assert direct_imports(module) & set(EDGE_ONLY) == set()


def test_cli_start_up_imports_nothing_heavy() -> None:
    # `gpushare estimate` must answer in well under 0.5 s: command modules import their
    # runtime (HTTP, solver, metrics, NVML) inside the command, not at start-up.
    assert imported_after("import gpushare.cli", HEAVY) == []
