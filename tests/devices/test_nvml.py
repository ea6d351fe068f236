"""NvmlInventory's own code run against a fake pynvml: memory v2 and its v1 fallback, MIG,
processes, the no-driver error, and MPS detection."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from fake_pynvml import (
    H100_RESERVED,
    H100_TOTAL,
    FakeDevice,
    FakePynvml,
    NVMLError,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    h100,
    h200_mig,
    mig_uuid,
)

from gpushare.devices.base import Gpu, GpuProcess, MigDevice, NoGpuDriver
from gpushare.devices.nvml import NvmlInventory, process_name, running_process_names
from gpushare.errors import EnvironmentProblem
from gpushare.units import GiB, MiB

NAMES = {51234: "python3", 51377: "vllm"}


def inventory(fake: FakePynvml, **kwargs: Any) -> NvmlInventory:
    return NvmlInventory(fake, name_of_pid=lambda pid: NAMES.get(pid, ""), **kwargs)


def test_measured_h100_reads_as_the_driver_reported_it() -> None:
    fake = FakePynvml([h100()])
    [gpu] = inventory(fake).gpus()
    assert gpu == Gpu(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        total_bytes=85_520_809_984,
        reserved_bytes=503_316_480,
        used_bytes=0,
        free_bytes=85_017_493_504,
        uuid="GPU-00000000-0000-0000-0000-000000000000",
    )
    assert gpu.cuda_total_bytes == 85_017_493_504  # torch's total_memory on that H100
    assert (fake.initialised, fake.shutdowns) == (1, 1)


V1_USED = H100_RESERVED + 3 * GiB  # what v1 says: the reservation folded into used


@pytest.mark.parametrize(
    ("case_id", "v2", "device", "reserved", "used"),
    [
        ("v2", "yes", h100(used=3 * GiB), H100_RESERVED, 3 * GiB),
        # v1: the catalog's reservation for the model (480 MiB for the H100) stands in.
        ("binding-without-version-arg", "old-binding", h100(used=3 * GiB), 480 * MiB, 3 * GiB),
        ("driver-without-v2", "old-driver", h100(used=3 * GiB), 480 * MiB, 3 * GiB),
        ("binding-without-v2-constant", "no-constant", h100(used=3 * GiB), 480 * MiB, 3 * GiB),
        (
            "v1-model-not-in-catalog",
            "old-driver",
            FakeDevice("NVIDIA Future GPU", "GPU-f", 100 * GiB, 1 * GiB, 2 * GiB),
            0,
            3 * GiB,
        ),
        (
            "v1-used-below-the-catalog-reservation",
            "old-driver",
            FakeDevice("NVIDIA H100 80GB HBM3", "GPU-x", H100_TOTAL, 100 * MiB, 0),
            100 * MiB,
            0,
        ),
    ],
)
def test_memory_v2_and_v1_fallback(
    case_id: str, v2: str, device: FakeDevice, reserved: int, used: int
) -> None:
    [gpu] = inventory(FakePynvml([device], v2=v2)).gpus()
    assert (gpu.total_bytes, gpu.reserved_bytes, gpu.used_bytes) == (device.total, reserved, used)
    assert gpu.free_bytes == device.free  # free is the same in both structs


@pytest.mark.parametrize(
    ("case_id", "mig", "enabled"),
    [
        ("no-mig-on-this-gpu", None, False),
        ("mig-off", (0, 0), False),
        ("mig-on", (1, 1), True),
        ("mig-pending-on-reboot", (0, 1), False),
    ],
)
def test_mig_mode(case_id: str, mig: tuple[int, int] | None, enabled: bool) -> None:
    [gpu] = inventory(FakePynvml([h100(mig=mig)])).gpus()
    assert gpu.mig_enabled is enabled


@pytest.mark.parametrize(
    ("case_id", "processes", "expected"),
    [
        ("none", [], ()),
        ("not-supported", None, ()),
        (
            "two-sorted-by-pid-with-names",
            [(51377, 18 * GiB), (51234, 20 * GiB)],
            (GpuProcess(51234, 20 * GiB, "python3"), GpuProcess(51377, 18 * GiB, "vllm")),
        ),
        ("memory-not-reported", [(99, None)], (GpuProcess(99, 0, ""),)),
    ],
)
def test_compute_processes(
    case_id: str, processes: list[tuple[int, int | None]] | None, expected: tuple[GpuProcess, ...]
) -> None:
    [gpu] = inventory(FakePynvml([h100(processes=processes)])).gpus()
    assert gpu.processes == expected


def test_several_gpus_keep_nvml_order_and_old_bindings_bytes_names() -> None:
    devices = [h100(0), h100(1, used=GiB, names_as_bytes=True)]
    gpus = inventory(FakePynvml(devices)).gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].name == "NVIDIA H100 80GB HBM3"
    assert gpus[1].uuid == "GPU-00000001-0000-0000-0000-000000000000"


def test_no_gpus_is_an_empty_list() -> None:
    assert inventory(FakePynvml([])).gpus() == []


@pytest.mark.parametrize(
    ("case_id", "error", "reason"),
    [
        ("no-library", NVMLError_LibraryNotFound(), "NVML Shared Library Not Found"),
        ("driver-not-loaded", NVMLError_DriverNotLoaded(), "Driver Not Loaded"),
    ],
)
def test_no_driver_is_one_clear_error(case_id: str, error: NVMLError, reason: str) -> None:
    fake = FakePynvml([h100()], init_error=error)
    with pytest.raises(NoGpuDriver) as caught:
        inventory(fake).gpus()
    assert caught.value.message == f"no NVIDIA driver found (NVML could not load: {reason})"
    assert caught.value.reason == f"NVML could not load: {reason}"
    assert caught.value.exit_code == 3
    assert fake.shutdowns == 0  # nothing to shut down


def test_nvml_failing_mid_read_is_an_environment_problem_and_still_shuts_down() -> None:
    fake = FakePynvml([h100(0), h100(1, lost=True)])
    with pytest.raises(EnvironmentProblem, match="NVML failed while reading the GPUs: GPU is lost"):
        inventory(fake).gpus()
    assert fake.shutdowns == 1


def test_the_real_pynvml_without_a_driver_says_so() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(NoGpuDriver, match=r"^no NVIDIA driver found \(NVML could not load: "):
        NvmlInventory().gpus()


@pytest.mark.parametrize(
    ("case_id", "names", "running"),
    [
        ("nothing", [], False),
        ("unrelated", ["bash", "python3", "nvidia-persistenced"], False),
        ("control-daemon", ["bash", "nvidia-cuda-mps-control"], True),
        ("server-only", ["nvidia-cuda-mps-server"], True),
        ("comm-truncated-to-15", ["nvidia-cuda-mps"], True),
    ],
)
def test_mps_daemon_detection(case_id: str, names: list[str], running: bool) -> None:
    inv = NvmlInventory(FakePynvml([]), process_names=lambda: iter(names))
    assert inv.mps_daemon_running() is running


def test_process_helpers_read_this_machine() -> None:
    me = process_name(os.getpid())
    assert me
    assert me in set(running_process_names())
    assert process_name(2**22 + 12345) == ""  # above Linux's pid_max: never a process


def test_importing_the_nvml_module_does_not_import_pynvml() -> None:
    code = "import sys, gpushare.devices.nvml; sys.exit('pynvml' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_utilization_is_a_fraction_per_gpu() -> None:
    fake = FakePynvml([h100(0, busy_percent=37), h100(1, busy_percent=100)])
    assert inventory(fake).utilization() == {0: 0.37, 1: 1.0}
    assert (fake.initialised, fake.shutdowns) == (1, 1)


def test_utilization_maps_nvml_errors() -> None:
    with pytest.raises(NoGpuDriver):
        inventory(FakePynvml([], init_error=NVMLError_DriverNotLoaded())).utilization()
    with pytest.raises(EnvironmentProblem, match="NVML failed while reading GPU utilization: GPU is lost"):
        inventory(FakePynvml([h100(lost=True)])).utilization()


# --- MIG ---------------------------------------------------------------------------------------


def test_mig_devices_with_profile_start_memory_and_processes() -> None:
    device = h200_mig("3g.71gb:4,2g.35gb:0,1g.18gb:2,1g.18gb:3", empty_slots=2)
    holder = device.mig_slots[2]  # after the two empty indices: 2g.35gb@0, the lowest start
    assert holder is not None
    holder.used = 3 * GiB
    holder.processes = [(51377, 3 * GiB)]
    [gpu] = inventory(FakePynvml([device])).gpus()
    assert gpu.mig_enabled
    assert [d.label for d in gpu.mig_devices] == ["2g.35gb@0", "1g.18gb@2", "1g.18gb@3", "3g.71gb@4"]
    first = gpu.mig_devices[0]
    assert first == MigDevice(
        uuid=mig_uuid(0, 0),
        profile="2g.35gb",
        start=0,
        total_bytes=33280 * MiB,  # the lent H200's driver
        used_bytes=3 * GiB,
        free_bytes=33280 * MiB - 3 * GiB,
        gpu_instance_id=1,
        compute_instance_id=0,
        profile_id=14,
        processes=(GpuProcess(pid=51377, used_bytes=3 * GiB, name="vllm"),),
    )
    assert gpu.mig_devices[-1].total_bytes == 71424 * MiB


def test_mig_without_permission_for_gpu_instances_reads_the_profile_from_the_name() -> None:
    device = h200_mig("3g.71gb:4,4g.71gb:0", gi_permission=False)
    [gpu] = inventory(FakePynvml([device])).gpus()
    assert {d.label for d in gpu.mig_devices} == {"3g.71gb@?", "4g.71gb@?"}
    assert all(d.gpu_instance_id is None and d.profile_id is None for d in gpu.mig_devices)


@pytest.mark.parametrize(
    ("case_id", "device"),
    [
        ("mig-off", h100()),
        ("no-mig-at-all", h100(mig=None)),
        ("mig-on-no-devices", h200_mig("")),
    ],
)
def test_no_mig_devices(case_id: str, device: FakeDevice) -> None:
    [gpu] = inventory(FakePynvml([device])).gpus()
    assert gpu.mig_devices == ()


# -- telemetry (NvmlTelemetry) ----------------------------------------------------------------


def test_telemetry_reads_sensors_and_sm_use_between_calls() -> None:
    from gpushare.devices.base import GpuTelemetry
    from gpushare.devices.nvml import NvmlTelemetry

    hot = h100(0, temperature_c=84, power_mw=650_000, sm_percent=40.0)
    old = h100(1, gpm=False, slowdown_c=None, power_mw=None)
    fake = FakePynvml([hot, old])
    telemetry = NvmlTelemetry(fake)
    first = telemetry.telemetry()
    assert first[0] == GpuTelemetry(84.0, 89.0, 650.0, 700.0, None)  # no SM reading before a pair
    assert first[1] == GpuTelemetry(37.0, None, None, 700.0, None)
    hot.sm_percent = 80.0
    assert telemetry.telemetry()[0].sm_utilization == pytest.approx(0.6)  # the pair (40, 80)
    hot.sm_percent = 100.0
    assert telemetry.telemetry()[0].sm_utilization == pytest.approx(0.9)  # (80, 100): the last one kept
    assert telemetry.telemetry()[1].sm_utilization is None
    assert fake.live_samples() == 1  # every sample but the one kept for the next call is freed
    assert fake.initialised == 1 and fake.shutdowns == 0  # one NVML session across calls
    telemetry.close()
    assert fake.live_samples() == 0 and fake.shutdowns == 1
    telemetry.close()
    assert fake.shutdowns == 1


def test_telemetry_without_a_driver_is_no_gpu_driver() -> None:
    from gpushare.devices.nvml import NvmlTelemetry

    with pytest.raises(NoGpuDriver):
        NvmlTelemetry(FakePynvml([], init_error=NVMLError_DriverNotLoaded())).telemetry()
