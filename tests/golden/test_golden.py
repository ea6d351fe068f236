"""plan/check/estimate output and bench/gpu/compare.py tables are what was recorded (cases.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cases import ROOT, Case, bench_model_folders, cases, run_case  # noqa: E402

ALL = list(cases())


@pytest.fixture(scope="module", autouse=True)
def _bench_models() -> None:
    bench_model_folders()


def test_every_case_is_recorded() -> None:
    recorded = {p.stem for p in (Path(__file__).parent / "recorded").glob("*.txt")}
    assert recorded == {c.case_id for c in ALL}


@pytest.mark.parametrize("case", ALL, ids=[c.case_id for c in ALL])
def test_output_is_as_recorded(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert run_case(case) == case.path.read_text()
