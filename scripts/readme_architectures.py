"""Rewrite the README's list of supported architectures from gpushare/architectures.py.

    python scripts/readme_architectures.py          (from the repo root; PYTHONPATH=.)

The block sits between architectures.README_BEGIN and README_END; tests/test_readme.py fails
when it differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gpushare.architectures import README_BEGIN, README_END, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def with_table(text: str) -> str:
    start, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    return text[:start] + "\n" + markdown_table() + text[end:]


if __name__ == "__main__":
    old = README.read_text()
    new = with_table(old)
    README.write_text(new)
    print("README.md: architecture table " + ("rewritten" if new != old else "unchanged"))
    sys.exit(0)
