"""`gpushare gpus` through CliRunner: described inventories, JSON, and a machine without a driver."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import gpushare.cli.gpus as gpus_command
from gpushare.cli import app
from gpushare.devices.base import Gpu
from gpushare.devices.nvml import NvmlInventory
from gpushare.devices.static import StaticInventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpus"
H100_X2 = FIXTURES / "nvidia_H100_80GB_x2.json"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width


class _NoDriver(Exception):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class _NoDriverNvml:
    """The part of pynvml a machine without libnvidia-ml shows: nvmlInit fails."""

    NVMLError = _NoDriver

    def nvmlInit(self) -> None:
        raise _NoDriver()


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["gpus", *args])


def test_table_from_an_inventory_file() -> None:
    result = run("--inventory-file", str(H100_X2))
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("NVIDIA H100 80GB HBM3") == 2
    assert "GPU-00000000-0000-0000-0000-000000000000" in out
    assert "79.65 GiB" in out  # NVML total
    assert "480.00 MiB reserved" in out
    assert "36.00 GiB" in out  # used on GPU 0
    assert "51234 python3 18.00 GiB" in out
    assert "MPS daemon: no" in out


def test_json_is_a_list_in_bytes() -> None:
    result = run("--json", "--inventory-file", str(H100_X2))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d | {"mig_devices": []} for d in json.loads(H100_X2.read_text())] == data
    assert [set(d) for d in data] == [
        {
            "mig_devices",
            "index",
            "name",
            "uuid",
            "total_bytes",
            "reserved_bytes",
            "used_bytes",
            "free_bytes",
            "mig_enabled",
            "processes",
            "mps_daemon_running",
        }
    ] * 2


def test_the_default_inventory_is_injectable(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [Gpu(0, "NVIDIA L4", 23034 << 20, 441 << 20, free_bytes=(23034 - 441) << 20)]
    monkeypatch.setattr(gpus_command, "inventory_factory", lambda: StaticInventory(gpus, mps=True))
    result = run()
    assert result.exit_code == 0, result.output
    assert "NVIDIA L4" in result.output
    assert "MPS daemon: yes" in result.output


def test_no_driver_is_a_note_and_exit_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus_command, "inventory_factory", lambda: NvmlInventory(_NoDriverNvml()))
    result = run()
    assert result.exit_code == 0
    assert result.output == (
        "no NVIDIA GPU found: NVML could not load: NVML Shared Library Not Found; "
        "describe GPUs in the profile or with --gpus\n"
    )


def test_no_driver_json_is_an_empty_list_and_the_note_goes_to_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpus_command, "inventory_factory", lambda: NvmlInventory(_NoDriverNvml()))
    result = run("--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert result.stderr.startswith("no NVIDIA GPU found: NVML could not load")


def test_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus_command, "inventory_factory", lambda: StaticInventory([]))
    result = run()
    assert result.exit_code == 0
    assert result.output.startswith("no NVIDIA GPU found: NVML reports no devices;")


@pytest.mark.parametrize(
    ("case_id", "content", "message"),
    [
        ("missing", None, "no such file"),
        ("bad-json", "[", "not valid JSON"),
        ("bad-record", '[{"name": "Mystery"}]', "gpus[0].total_bytes: required for 'Mystery'"),
    ],
)
def test_bad_inventory_file_is_one_line_and_exit_2(
    tmp_path: Path, case_id: str, content: str | None, message: str
) -> None:
    path = tmp_path / "box.json"
    if content is not None:
        path.write_text(content)
    result = run("--inventory-file", str(path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


MIG = FIXTURES / "nvidia_H200_mig_3g_2g_1g_1g.json"


def test_mig_devices_are_rows_under_their_gpu() -> None:
    result = run("--inventory-file", str(MIG))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    gpu_line = next(i for i, line in enumerate(lines) if "NVIDIA H200" in line)
    slice_lines = [i for i, line in enumerate(lines) if "MIG 3g.71gb" in line or "MIG 1g.18gb" in line]
    assert slice_lines and min(slice_lines) > gpu_line
    assert "0/3g.71gb@4" in result.output and "MIG-00000000-0003" in result.output
    assert "69.75 GiB" in result.output  # the 3g.71gb device's own memory


def test_mig_devices_in_json_round_trip() -> None:
    result = run("--json", "--inventory-file", str(MIG))
    assert result.exit_code == 0, result.output
    [gpu] = json.loads(result.stdout)
    assert [(d["profile"], d["start"]) for d in gpu["mig_devices"]] == [
        ("2g.35gb", 0),
        ("1g.18gb", 2),
        ("1g.18gb", 3),
        ("3g.71gb", 4),
    ]
    assert [gpu] == json.loads(MIG.read_text())


def test_mig_from_nvml_without_gpu_instance_permission_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devices"))
    from fake_pynvml import FakePynvml, h200_mig

    fake = FakePynvml([h200_mig("4g.71gb:0,3g.71gb:4", gi_permission=False)])
    inventory = NvmlInventory(fake, name_of_pid=lambda pid: "", process_names=lambda: [])
    monkeypatch.setattr(gpus_command, "inventory_factory", lambda: inventory)
    result = run()
    assert result.exit_code == 0, result.output
    assert "0/4g.71gb@?" in result.output
    assert "needs root or the mig/monitor capability" in result.output
