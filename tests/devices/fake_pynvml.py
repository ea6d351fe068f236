"""A stand-in for the `pynvml` module, with the functions NvmlInventory calls and NVML's failures.

Devices are described with the numbers a real driver gives (see nvidia_H100_80GB_x1_measured.json):
v2 memory has `reserved` apart; v1 folds it into `used`.

MIG: a `FakeDevice` with MIG on holds `mig_slots`, NVML's MIG device indices (None: an empty
index, NotFound as the driver answers). `h200_mig("3g.71gb:4,2g.35gb:0")` builds an H200 with
those MIG devices from the catalog (each device's memory is the lent H200's driver's, which the
catalog's `measured-h200` reading holds). `gi_permission=False` makes the GPU-instance queries
answer NoPermission, as for a user without root or the mig/monitor capability.
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


class NVMLError_NotFound(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "Not Found"


class NVMLError_NoPermission(NVMLError):  # noqa: N801
    def __str__(self) -> str:
        return "Insufficient Permissions"


@dataclass
class FakeMigDevice:
    """One MIG device: its GPU instance (id, profile id, start, size) and compute instance."""

    uuid: str
    parent_name: str
    profile: str
    profile_id: int
    start: int
    size: int
    gpu_instance_id: int
    compute_instance_id: int
    total: int
    used: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def free(self) -> int:
        return self.total - self.used


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
    mig_slots: list[FakeMigDevice | None] = field(default_factory=list)  # by NVML MIG index
    gi_permission: bool = True  # False: GPU-instance queries answer NoPermission
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
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_NoPermission = NVMLError_NoPermission
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

    def nvmlDeviceGetName(self, handle: FakeDevice | FakeMigDevice) -> str | bytes:
        if isinstance(handle, FakeMigDevice):
            return f"{handle.parent_name} MIG {handle.profile}"
        if handle.lost:
            raise NVMLError_GpuIsLost()
        return handle.name.encode() if handle.names_as_bytes else handle.name

    def nvmlDeviceGetUUID(self, handle: FakeDevice | FakeMigDevice) -> str | bytes:
        if isinstance(handle, FakeMigDevice):
            return handle.uuid
        return handle.uuid.encode() if handle.names_as_bytes else handle.uuid

    # --- MIG -------------------------------------------------------------------------------------

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeDevice) -> int:
        if handle.mig is None:
            raise NVMLError_NotSupported()
        return len(handle.mig_slots) if handle.mig[0] == 1 else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeDevice, index: int) -> FakeMigDevice:
        if handle.mig is None or handle.mig[0] != 1:
            raise NVMLError_NotSupported()
        slot = handle.mig_slots[index] if index < len(handle.mig_slots) else None
        if slot is None:
            raise NVMLError_NotFound()
        return slot

    def _parent(self, mig: FakeMigDevice) -> FakeDevice:
        return next(d for d in self.devices if mig in d.mig_slots)

    def nvmlDeviceGetGpuInstanceId(self, handle: FakeMigDevice) -> int:
        if not self._parent(handle).gi_permission:
            raise NVMLError_NoPermission()
        return handle.gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, handle: FakeMigDevice) -> int:
        if not self._parent(handle).gi_permission:
            raise NVMLError_NoPermission()
        return handle.compute_instance_id

    def nvmlDeviceGetGpuInstanceById(self, handle: FakeDevice, gpu_instance_id: int) -> FakeMigDevice:
        if not handle.gi_permission:
            raise NVMLError_NoPermission()
        for slot in handle.mig_slots:
            if slot is not None and slot.gpu_instance_id == gpu_instance_id:
                return slot
        raise NVMLError_NotFound()

    def nvmlGpuInstanceGetInfo(self, gpu_instance: FakeMigDevice) -> SimpleNamespace:
        return SimpleNamespace(
            id=gpu_instance.gpu_instance_id,
            profileId=gpu_instance.profile_id,
            placement=SimpleNamespace(start=gpu_instance.start, size=gpu_instance.size),
        )

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice | FakeMigDevice, **kwargs: Any) -> SimpleNamespace:
        if isinstance(handle, FakeMigDevice):
            if "version" in kwargs:
                raise NVMLError_NotSupported()
            return SimpleNamespace(total=handle.total, free=handle.free, used=handle.used)
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

    def nvmlDeviceGetComputeRunningProcesses(
        self, handle: FakeDevice | FakeMigDevice
    ) -> list[SimpleNamespace]:
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


H200_TOTAL = 150_754_820_096  # measured, driver 580.159.04
H200_RESERVED = 644_939_776


def mig_uuid(gpu: int, position: int) -> str:
    return f"MIG-{gpu:08d}-{position:04d}-0000-0000-000000000000"


def h200_mig(geometry: str, index: int = 0, empty_slots: int = 0, **kwargs: Any) -> FakeDevice:
    """An H200 with MIG on and the MIG devices of `geometry` (`-cgi` syntax, catalog names), each
    with the lent H200's memory for its profile; `empty_slots` empty NVML indices come first."""
    from gpushare.catalog.mig import lookup_mig_table
    from gpushare.mig.geometry import parse_geometry

    table = lookup_mig_table("H200")
    [lent] = table.readings
    slots: list[FakeMigDevice | None] = [None] * empty_slots
    for n, s in enumerate(parse_geometry(table, geometry).slices if geometry else ()):
        memory = lent.of(s.profile.name)
        assert memory is not None
        slots.append(
            FakeMigDevice(
                uuid=mig_uuid(index, n),
                parent_name="NVIDIA H200",
                profile=s.profile.name,
                profile_id=s.profile.profile_id,
                start=s.start,
                size=s.profile.size,
                gpu_instance_id=n + 1,
                compute_instance_id=0,
                total=memory,
            )
        )
    return FakeDevice(
        name="NVIDIA H200",
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000200",
        total=H200_TOTAL,
        reserved=H200_RESERVED,
        used=0,
        mig=(1, 1),
        mig_slots=slots,
        **kwargs,
    )
