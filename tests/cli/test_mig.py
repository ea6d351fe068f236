"""`gpushare mig profiles` through CliRunner, through the real app (the lazy loader finds the `mig`
group) and through an app built here from the module's `register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gpushare.catalog.mig import MIG_TABLES
from gpushare.cli import app as gpushare_app
from gpushare.cli.app import GpushareGroup
from gpushare.cli.mig import mig_app, register
from gpushare.cli.render_mig import columns, profile_rows


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")


def make_app() -> typer.Typer:
    app = typer.Typer(cls=GpushareGroup, add_completion=False)

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def run(*args: str) -> Any:
    return CliRunner().invoke(gpushare_app, ["mig", *args])


def test_register_adds_the_group_to_any_app() -> None:
    result = CliRunner().invoke(make_app(), ["mig", "profiles", "H100", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["name"] == "1g.10gb"


def test_text_table_for_h200() -> None:
    result = run("profiles", "H200")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "MIG profiles of h200-141gb (NVIDIA H200)" in out
    for name in ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"):
        assert name in out
    assert "139.75 GiB" in out  # 7g, the smallest value seen
    # ... and what the lent H200's driver reported, in its own column, said in a note
    assert "lent H200" in out and "140.00 GiB" in out and "32.50 GiB" in out
    assert "driver 580.159.04" in out
    assert "0,1,2,3,4,5,6" in out
    assert "names are nominal" in out
    assert "starts inferred" not in out  # the H200's -lgipp was read


def test_json_lists_every_profile_in_bytes() -> None:
    result = run("profiles", "NVIDIA H100 80GB HBM3", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["name"] for r in records] == [p.name for p in MIG_TABLES["h100-sxm-80gb"].profiles]
    assert records[0] == {
        "name": "1g.10gb",
        "profile_id": 19,
        "slices": 1,
        "memory_bytes": 9984 * 2**20,
        "sms": 16,
        "max_count": 7,
        "starts": [0, 1, 2, 3, 4, 5, 6],
        "memory_units": 1,
        "memory_bytes_seen": {},
    }
    assert records[-1]["starts"] == [0] and records[-1]["memory_units"] == 8


def test_json_carries_the_other_readings_by_source() -> None:
    records = {r["name"]: r for r in json.loads(run("profiles", "H200", "--json").output)}
    assert records["1g.35gb"]["memory_bytes"] == 33024 * 2**20  # the smallest seen: 32.25 GiB
    assert records["1g.35gb"]["memory_bytes_seen"] == {"measured-h200": 33280 * 2**20}  # 32.50


def test_unsourced_values_are_null_in_json_and_said_in_text() -> None:
    records = {r["name"]: r for r in json.loads(run("profiles", "B200", "--json").output)}
    assert records["3g.90gb"]["memory_bytes"] is None and records["3g.90gb"]["sms"] is None
    assert records["2g.45gb"]["memory_bytes"] == 45312 * 2**20
    text = run("profiles", "B200").output
    assert "not sourced" in text
    assert "starts inferred" in text
    assert "3g/4g/7g memory and SMs not sourced" in text


def test_rows_match_the_table() -> None:
    assert columns(MIG_TABLES["h200-141gb"])[3:5] == ("memory", "lent H200")
    assert profile_rows(MIG_TABLES["h200-141gb"])[2][3:5] == ("32.25 GiB", "32.50 GiB")
    rows = profile_rows(MIG_TABLES["a100-sxm-40gb"])
    assert rows[0] == ("1g.5gb", "19", "1", "4.75 GiB", "14", "7", "0,1,2,3,4,5,6", "1")
    assert rows[4] == ("3g.20gb", "9", "3", "19.50 GiB", "42", "2", "0,4", "4")


@pytest.mark.parametrize(
    ("case_id", "gpu", "message"),
    [
        ("no-mig", "L4", "l4-24gb (NVIDIA L4) has no MIG"),
        ("ambiguous", "A100", "is ambiguous"),
        ("unknown", "H2000", "unknown GPU 'H2000'"),
    ],
)
def test_bad_gpu_is_one_line_and_exit_2(case_id: str, gpu: str, message: str) -> None:
    result = run("profiles", gpu)
    assert result.exit_code == 2
    assert message in result.output
    assert "GPUs with MIG:" in result.output
    assert "Traceback" not in result.output


def test_group_without_a_command_shows_help() -> None:
    result = CliRunner().invoke(mig_app, [])
    assert "profiles" in result.output
