"""Write tests/golden/recorded/ from the current code: python tests/golden/record.py (repo root)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cases import RECORDED, bench_model_folders, cases, run_case  # noqa: E402


def main() -> None:
    os.chdir(Path(__file__).resolve().parents[2])
    RECORDED.mkdir(exist_ok=True)
    bench_model_folders()
    for old in RECORDED.glob("*.txt"):
        old.unlink()
    count = 0
    for case in cases():
        case.path.write_text(run_case(case))
        count += 1
    print(f"recorded {count} cases in {RECORDED}")


if __name__ == "__main__":
    main()
