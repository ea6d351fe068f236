"""A stand-in for the `pynvml` module, with the functions NvmlInventory calls and NVML's failures.

Devices are described with the numbers a real driver gives (see nvidia_H100_80GB_x1_measured.json):
v2 memory has `reserved` apart; v1 folds it into `used`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - the names pynvml uses
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "Driver Not Loaded"


class NVMLError_NotSupported(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_FunctionNotFound(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "Function Not Found"


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "GPU is lost"


@dataclass
class FakeDevice:
    name: str
    uuid: str
    total: int
    reserved: int
    used: int  # as v2 reports it: without the reservation
    mig: tuple[int, int] | None = (0, 0)  # None: the GPU has no MIG (NotSupported)
    processes: list[tuple[int, int | None]] | None = field(default_factory=list)  # None: NotSupported
    names_as_bytes: bool = False  # nvidia-ml-py < 11.515 returned bytes
    lost: bool = False  # nvmlDeviceGetName (and the utilization query) fail with GpuIsLost
    busy_percent: int = 0  # nvmlDeviceGetUtilizationRates().gpu
    temperature_c: int = 37  # the lent H200 idle (bench/gpu/results/h200-i15/k8s-facts.txt)
    slowdown_c: int | None = 89  # None: the threshold query is NotSupported
    power_mw: int | None = 79_337  # None: NotSupported
    power_limit_mw: int = 700_000
    gpm: bool = True  # nvmlGpmQueryDeviceSupport().isSupportedDevice
    sm_percent: float = 0.0  # what a GPM sample taken now records (the fake's SM_UTIL is the mean of two)

    @property
    def free(self) -> int:
        return self.total - self.reserved - self.used


@dataclass
class FakeGpmSample:
    device: FakeDevice | None = None
    sm_percent: float = 0.0
    freed: bool = False


class FakeGpmMetric:
    def __init__(self) -> None:
        self.metricId = 0
        self.nvmlReturn = 0
        self.value = 0.0


class FakeGpmMetricsGet:
    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: FakeGpmSample | None = None
        self.sample2: FakeGpmSample | None = None
        self.metrics = [FakeGpmMetric() for _ in range(4)]


class FakePynvml:
    """`v2`: "yes" (driver and binding have it), "old-binding" (no version argument),
    "old-driver" (the call fails), "no-constant" (the binding predates nvmlMemory_v2)."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_GPM_METRIC_SM_UTIL = 2
    c_nvmlGpmMetricsGet_t = FakeGpmMetricsGet

    def __init__(
        self, devices: list[FakeDevice], init_error: NVMLError | None = None, v2: str = "yes"
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.v2 = v2
        if v2 != "no-constant":
            self.nvmlMemory_v2 = 0x02000028
        self.initialised = 0
        self.shutdowns = 0
        self.samples: list[FakeGpmSample] = []

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str | bytes:
        if handle.lost:
            raise NVMLError_GpuIsLost()
        return handle.name.encode() if handle.names_as_bytes else handle.name

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str | bytes:
        return handle.uuid.encode() if handle.names_as_bytes else handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice, **kwargs: Any) -> SimpleNamespace:
        if "version" in kwargs:
            if self.v2 == "old-binding":
                raise TypeError("nvmlDeviceGetMemoryInfo() got an unexpected keyword argument 'version'")
            if self.v2 == "old-driver":
                raise NVMLError_FunctionNotFound()
            return SimpleNamespace(
                version=kwargs["version"],
                total=handle.total,
                reserved=handle.reserved,
                free=handle.free,
                used=handle.used,
            )
        return SimpleNamespace(total=handle.total, free=handle.free, used=handle.used + handle.reserved)

    def nvmlDeviceGetMigMode(self, handle: FakeDevice) -> tuple[int, int]:
        if handle.mig is None:
            raise NVMLError_NotSupported()
        return handle.mig

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:
        if handle.lost:
            raise NVMLError_GpuIsLost()
        return SimpleNamespace(gpu=handle.busy_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return handle.temperature_c

    def nvmlDeviceGetTemperatureThreshold(self, handle: FakeDevice, kind: int) -> int:
        assert kind == self.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        if handle.slowdown_c is None:
            raise NVMLError_NotSupported()
        return handle.slowdown_c

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        if handle.power_mw is None:
            raise NVMLError_NotSupported()
        return handle.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeDevice) -> int:
        return handle.power_limit_mw

    def nvmlGpmQueryDeviceSupport(self, handle: FakeDevice) -> SimpleNamespace:
        return SimpleNamespace(version=1, isSupportedDevice=int(handle.gpm))

    def nvmlGpmSampleAlloc(self) -> FakeGpmSample:
        sample = FakeGpmSample()
        self.samples.append(sample)
        return sample

    def nvmlGpmSampleGet(self, handle: FakeDevice, sample: FakeGpmSample) -> FakeGpmSample:
        if not handle.gpm:
            raise NVMLError_NotSupported()
        sample.device, sample.sm_percent = handle, handle.sm_percent
        return sample

    def nvmlGpmSampleFree(self, sample: FakeGpmSample) -> None:
        assert not sample.freed, "a GPM sample freed twice"
        sample.freed = True

    def nvmlGpmMetricsGet(self, query: FakeGpmMetricsGet) -> FakeGpmMetricsGet:
        one, two = query.sample1, query.sample2
        assert one is not None and two is not None and not one.freed and not two.freed
        assert one.device is two.device, "GPM samples of two GPUs"
        for metric in query.metrics[: query.numMetrics]:
            assert metric.metricId == self.NVML_GPM_METRIC_SM_UTIL
            metric.value = (one.sm_percent + two.sm_percent) / 2
        return query

    def live_samples(self) -> int:
        return sum(not s.freed for s in self.samples)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:
        if handle.processes is None:
            raise NVMLError_NotSupported()
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.processes]


H100_TOTAL = 85_520_809_984  # measured, driver 580.159.04
H100_RESERVED = 503_316_480


def h100(index: int = 0, used: int = 0, **kwargs: Any) -> FakeDevice:
    return FakeDevice(
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
        total=H100_TOTAL,
        reserved=H100_RESERVED,
        used=used,
        **kwargs,
    )
