"""The MIG modules keep the package's shape: the catalog and the geometry, emit and fit modules are
core (no NVML, subprocess, terminal or HTTP), and the CLI module loads its data only when it runs."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

MIG_CORE = [
    "gpushare.catalog.mig",
    "gpushare.mig",
    "gpushare.mig.geometry",
    "gpushare.mig.emit",
    "gpushare.mig.fit",
]
EDGE_ONLY = {"subprocess", "pynvml", "aiohttp", "typer", "rich", "psutil"}


def imports_of(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", MIG_CORE)
def test_mig_core_touches_no_edge(module: str) -> None:
    assert imports_of(module) & EDGE_ONLY == set()


def test_importing_the_cli_module_loads_no_catalog_or_solver() -> None:
    code = (
        "import sys, json\nimport gpushare.cli.mig\n"
        "watch = ('gpushare.catalog.mig', 'gpushare.mig.fit', 'scipy')\n"
        "print(json.dumps([m for m in watch if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
