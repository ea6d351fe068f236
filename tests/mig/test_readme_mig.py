"""The README's MIG numbers are the catalog's: each row of its cost table, recomputed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushare.catalog.gpus import lookup_gpu_model
from gpushare.catalog.mig import lookup_mig_table
from gpushare.mig.geometry import parse_geometry
from gpushare.units import format_bytes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(
    ("case_id", "gpu", "label", "geometry", "first"),
    [
        ("h200-7x1g", "H200", "7 × 1g.18gb", "1g.18gb,1g.18gb,1g.18gb,1g.18gb,1g.18gb,1g.18gb,1g.18gb", True),
        ("h200-4x1g-double", "H200", "4 × 1g.35gb", "1g.35gb,1g.35gb,1g.35gb,1g.35gb", False),
        ("h200-3-2-1-1", "H200", "3g.71gb + 2g.35gb + 2 × 1g.18gb", "3g.71gb,2g.35gb,1g.18gb,1g.18gb", False),
        ("h200-4-3", "H200", "4g.71gb + 3g.71gb", "4g.71gb,3g.71gb", False),
        ("h100-7x1g", "H100", "7 × 1g.10gb", "1g.10gb,1g.10gb,1g.10gb,1g.10gb,1g.10gb,1g.10gb,1g.10gb", True),
        ("h100-4-3", "H100", "4g.40gb + 3g.40gb", "4g.40gb,3g.40gb", False),
    ],
)
def test_cost_table_rows_are_the_catalogs(
    case_id: str, gpu: str, label: str, geometry: str, first: bool
) -> None:
    table = lookup_mig_table(gpu)
    model = lookup_gpu_model(gpu)
    slices = parse_geometry(table, geometry).slices
    memory = sum(s.profile.memory_bytes or 0 for s in slices)
    sms = sum(s.profile.sms or 0 for s in slices)
    share = f"{memory / model.cuda_total_bytes:.0%}"
    name = {"H200": "H200", "H100": "H100 SXM"}[gpu]
    if first:
        whole = table.profiles[-1]  # the 7g profile: every SM
        name = f"{name} ({format_bytes(model.cuda_total_bytes)}, {whole.sms} SMs)"
    row = f"| {name} | {label} | {format_bytes(memory)} | {share} | {sms} |"
    assert row in README


def test_the_readme_quotes_the_lent_h200s_reading_and_the_tables() -> None:
    table = lookup_mig_table("H200")
    [lent] = table.readings
    planned = table.profile("1g.35gb").memory_bytes
    seen = lent.of("1g.35gb")
    assert planned is not None and seen is not None
    assert (
        f"reports {format_bytes(seen).removesuffix(' GiB')} GiB for `1g.35gb` where the table plans with"
        in README
    )
    assert f"plans with {format_bytes(planned).removesuffix(' GiB')}" in README
