"""StaticInventory: GPUs given as values or read from JSON (the form `gpushare gpus --json` prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.devices.base import Gpu, GpuInventory, GpuProcess
from gpushare.devices.static import StaticInventory, gpu_from_record, gpu_to_record
from gpushare.errors import InputError
from gpushare.units import GiB, MiB

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpus"


def test_values_in_values_out() -> None:
    gpus = parse_gpu_spec("2xH100")
    inventory: GpuInventory = StaticInventory(gpus, mps=True)
    assert inventory.gpus() == gpus
    assert inventory.gpus() is not inventory.gpus()  # callers may not change ours
    assert inventory.mps_daemon_running() is True
    assert StaticInventory([]).mps_daemon_running() is False


@pytest.mark.parametrize(
    ("case_id", "fixture", "names", "cuda_totals", "used", "mps"),
    [
        (
            "h100-measured",
            "nvidia_H100_80GB_x1_measured.json",
            ["NVIDIA H100 80GB HBM3"],
            [85_017_493_504],
            [0],
            False,
        ),
        (
            "h200-measured-with-a-process",
            "nvidia_H200_x1_measured.json",
            ["NVIDIA H200"],
            [150_109_880_320],
            [1_626_144_768],
            False,
        ),
        (
            "two-h100-one-busy",
            "nvidia_H100_80GB_x2.json",
            ["NVIDIA H100 80GB HBM3"] * 2,
            [85_017_493_504] * 2,
            [36 * GiB, 0],
            False,
        ),
        (
            "catalog-names-sizes-as-strings-mps",
            "mixed_A100_80GB_L4_mps.json",
            ["NVIDIA A100-SXM4-80GB", "NVIDIA L4", "lab card"],
            [(81920 - 669) * MiB, (23034 - 441) * MiB, 24 * GiB],
            [66 * MiB, 0, 0],
            True,
        ),
    ],
)
def test_fixtures(
    case_id: str, fixture: str, names: list[str], cuda_totals: list[int], used: list[int], mps: bool
) -> None:
    inventory = StaticInventory.from_json_file(FIXTURES / fixture)
    gpus = inventory.gpus()
    assert [g.name for g in gpus] == names
    assert [g.cuda_total_bytes for g in gpus] == cuda_totals
    assert [g.used_bytes for g in gpus] == used
    assert [g.index for g in gpus] == list(range(len(names)))
    assert inventory.mps_daemon_running() is mps


def test_measured_h200_process() -> None:
    [gpu] = StaticInventory.from_json_file(FIXTURES / "nvidia_H200_x1_measured.json").gpus()
    assert gpu.processes == (GpuProcess(pid=419, used_bytes=1_616_904_192, name="python3"),)
    # What NVML said: free = total − reserved − used (v2).
    assert gpu.free_bytes == gpu.total_bytes - gpu.reserved_bytes - gpu.used_bytes


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_records_round_trip(fixture: str) -> None:
    inventory = StaticInventory.from_json_file(FIXTURES / fixture)
    mps = inventory.mps_daemon_running()
    records = json.loads(json.dumps([gpu_to_record(g, mps) for g in inventory.gpus()]))
    again = StaticInventory.from_records(records)
    assert again.gpus() == inventory.gpus()
    assert again.mps_daemon_running() is mps


def test_record_shape() -> None:
    gpu = Gpu(0, "NVIDIA L4", 23034 * MiB, 441 * MiB, 5, 6, "GPU-1", True, (GpuProcess(7, 5, "x"),))
    assert gpu_to_record(gpu, mps_daemon_running=True) == {
        "index": 0,
        "name": "NVIDIA L4",
        "uuid": "GPU-1",
        "total_bytes": 23034 * MiB,
        "reserved_bytes": 441 * MiB,
        "used_bytes": 5,
        "free_bytes": 6,
        "mig_enabled": True,
        "processes": [{"pid": 7, "name": "x", "used_bytes": 5}],
        "mig_devices": [],
        "mps_daemon_running": True,
    }


MIG_FIXTURE = FIXTURES / "nvidia_H200_mig_3g_2g_1g_1g.json"


def test_mig_fixture_reads_its_devices() -> None:
    [gpu] = StaticInventory.from_json_file(MIG_FIXTURE).gpus()
    assert gpu.mig_enabled
    assert [(d.label, d.total_bytes >> 20) for d in gpu.mig_devices] == [
        ("2g.35gb@0", 33280),
        ("1g.18gb@2", 16384),
        ("1g.18gb@3", 16384),
        ("3g.71gb@4", 71424),
    ]
    assert all(d.uuid is not None and d.uuid.startswith("MIG-") for d in gpu.mig_devices)


def test_a_mig_device_may_leave_out_its_memory_and_id_for_a_catalog_gpu() -> None:
    gpu = gpu_from_record(
        {"name": "H200", "mig_enabled": True, "mig_devices": [{"profile": "MIG 1g.35gb", "start": 6}]},
        "gpus[0]",
    )
    [device] = gpu.mig_devices
    assert (device.profile, device.start, device.profile_id) == ("1g.35gb", 6, 15)
    assert device.total_bytes == 33024 * MiB  # the catalog's (smallest seen)


MIG_OK = {"name": "H200", "mig_enabled": True}


@pytest.mark.parametrize(
    ("case_id", "record", "reserved"),
    [
        ("catalog-name-only", {"name": "H100"}, 480 * MiB),
        ("catalog-total-keeps-reservation", {"name": "H100", "total_bytes": 85_520_809_984}, 480 * MiB),
        ("other-total-reserves-nothing", {"name": "H100", "total_bytes": "80GiB"}, 0),
        ("explicit-reservation", {"name": "x", "total_bytes": 100, "reserved_bytes": 10}, 10),
    ],
)
def test_reservation_defaults(case_id: str, record: dict[str, Any], reserved: int) -> None:
    assert gpu_from_record(record, "gpus[0]").reserved_bytes == reserved


@pytest.mark.parametrize(
    ("case_id", "data", "message"),
    [
        ("not-a-list", 42, "box.json: expected a list of GPU objects"),
        ("unknown-top-key", {"gpu": []}, "box.json: unknown key 'gpu'"),
        ("gpu-not-object", ["H100"], "box.json: gpus[0]: expected an object"),
        ("unknown-key", [{"name": "H100", "totl_bytes": 1}], "box.json: gpus[0]: unknown key 'totl_bytes'"),
        ("no-name", [{"total_bytes": 1}], "box.json: gpus[0].name: required"),
        ("no-total", [{"name": "Mystery GPU"}], "box.json: gpus[0].total_bytes: required for 'Mystery GPU'"),
        ("bad-size", [{"name": "H100", "used_bytes": "lots"}], "box.json: gpus[0].used_bytes: cannot read"),
        ("float-size", [{"name": "H100", "used_bytes": 1.5}], "box.json: gpus[0].used_bytes: must be bytes"),
        ("bool-size", [{"name": "H100", "used_bytes": True}], "box.json: gpus[0].used_bytes: must be bytes"),
        ("negative-size", [{"name": "H100", "used_bytes": -1}], "size cannot be negative"),
        (
            "reserved-over-total",
            [{"name": "x", "total_bytes": 10, "reserved_bytes": 11}],
            "box.json: gpus[0].reserved_bytes: larger than total_bytes (11 > 10)",
        ),
        ("bad-index", [{"name": "H100", "index": -1}], "box.json: gpus[0].index: must be a non-negative"),
        ("dup-index", [{"name": "H100"}, {"name": "H100", "index": 0}], "two GPUs have the same index"),
        ("bad-mig", [{"name": "H100", "mig_enabled": "yes"}], "gpus[0].mig_enabled: must be true or false"),
        ("bad-mps", {"gpus": [], "mps_daemon_running": 1}, "box.json: mps_daemon_running: must be true"),
        ("bad-uuid", [{"name": "H100", "uuid": 5}], "gpus[0].uuid: must be a string"),
        ("processes-not-list", [{"name": "H100", "processes": {}}], "gpus[0].processes: must be a list"),
        ("process-no-pid", [{"name": "H100", "processes": [{}]}], "gpus[0].processes[0].pid: must be"),
        (
            "process-unknown-key",
            [{"name": "H100", "processes": [{"pid": 1, "mem": 2}]}],
            "gpus[0].processes[0]: unknown key 'mem'",
        ),
        (
            "mig-devices-without-mig",
            [{"name": "H200", "mig_devices": [{"profile": "1g.18gb"}]}],
            "gpus[0].mig_devices: listed but mig_enabled is false",
        ),
        (
            "mig-unknown-profile",
            [{**MIG_OK, "mig_devices": [{"profile": "3g.40gb"}]}],
            "gpus[0].mig_devices[0].profile: h200-141gb has no MIG profile '3g.40gb'",
        ),
        (
            "mig-illegal-start",
            [{**MIG_OK, "mig_devices": [{"profile": "3g.71gb", "start": 2}]}],
            "gpus[0].mig_devices: not a legal MIG geometry on h200-141gb: "
            "3g.71gb@2: 3g.71gb may start only at 0, 4",
        ),
        (
            "mig-overlap",
            [
                {
                    **MIG_OK,
                    "mig_devices": [{"profile": "4g.71gb", "start": 0}, {"profile": "2g.35gb", "start": 2}],
                }
            ],
            "overlaps 4g.71gb@0 on memory unit 2",
        ),
        (
            "mig-unknown-key",
            [{**MIG_OK, "mig_devices": [{"profile": "1g.18gb", "strt": 2}]}],
            "gpus[0].mig_devices[0]: unknown key 'strt'",
        ),
        (
            "mig-no-profile",
            [{**MIG_OK, "mig_devices": [{"start": 0}]}],
            "gpus[0].mig_devices[0].profile: required",
        ),
        (
            "mig-bad-start",
            [{**MIG_OK, "mig_devices": [{"profile": "1g.18gb", "start": 9}]}],
            "memory unit 0..7",
        ),
        (
            "mig-not-object",
            [{**MIG_OK, "mig_devices": ["1g.18gb"]}],
            "mig_devices[0]: expected an object with",
        ),
        (
            "mig-no-memory-off-catalog",
            [{"name": "x", "total_bytes": 10, "mig_enabled": True, "mig_devices": [{"profile": "1g.5gb"}]}],
            "gpus[0].mig_devices[0].total_bytes: required",
        ),
        (
            "mig-same-uuid",
            [{**MIG_OK, "mig_devices": [{"profile": "1g.18gb", "uuid": "MIG-a"}] * 2}],
            "two MIG devices have the same uuid",
        ),
    ],
)
def test_bad_records(case_id: str, data: Any, message: str) -> None:
    with pytest.raises(InputError) as caught:
        StaticInventory.from_records(data, where="box.json")
    assert message in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("case_id", "content", "message"),
    [
        ("missing", None, "no such file"),
        ("not-json", "{oops", "not valid JSON"),
    ],
)
def test_bad_files(tmp_path: Path, case_id: str, content: str | None, message: str) -> None:
    path = tmp_path / "box.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        StaticInventory.from_json_file(path)
    assert caught.value.message.startswith(str(path))


@pytest.mark.parametrize(
    ("case_id", "record", "message"),
    [
        ("unknown-key", {"name": "H100", "foo": 1}, "lab.yaml: gpus[3]: unknown key 'foo'"),
        ("bad-size", {"name": "H100", "used_bytes": 1.5}, "lab.yaml: gpus[3].used_bytes: must be bytes"),
        ("not-object", "H100", "lab.yaml: gpus[3]: expected an object with name and total_bytes"),
        (
            "per-gpu-mps",
            {"name": "H100", "mps_daemon_running": "yes"},
            "lab.yaml: gpus[3].mps_daemon_running: must be",
        ),
    ],
)
def test_one_record_errors_name_the_given_place(case_id: str, record: Any, message: str) -> None:
    with pytest.raises(InputError) as caught:
        gpu_from_record(record, "lab.yaml: gpus[3]")
    assert caught.value.message.startswith(message)


def test_a_typo_is_named_before_what_it_caused() -> None:
    with pytest.raises(InputError) as caught:
        StaticInventory.from_records([{"nme": "H100"}], where="box.json")
    assert caught.value.message == "box.json: gpus[0]: unknown key 'nme'"
    assert caught.value.hint is not None and "name" in caught.value.hint
