"""The README's list of supported architectures is the one scripts/readme_architectures.py writes
from gpushare/architectures.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_architectures import README, with_table  # noqa: E402


def test_readme_architecture_table_is_generated_from_the_table() -> None:
    text = README.read_text()
    assert text == with_table(text), "run: PYTHONPATH=. python scripts/readme_architectures.py"
