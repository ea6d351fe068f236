"""The real GPU inventory: NVML through nvidia-ml-py (`pynvml`). The only module that imports it.

The pynvml module is a constructor argument so that tests run this very code against a fake
module; by default it is imported on first use, so importing this file never needs a driver.

Indices are NVML's, which follow PCI bus order. CUDA numbers GPUs the same way only under
`CUDA_DEVICE_ORDER=PCI_BUS_ID`, which the launcher sets.

MIG: a GPU whose current MIG mode is on lists its MIG devices (`_mig_devices`): NVML's MIG device
handles (`nvmlDeviceGetMigDeviceHandleByIndex` up to `nvmlDeviceGetMaxMigDeviceCount`; an empty
index is NotFound), each with its UUID, its memory read on the MIG handle, its processes, and its
GPU instance's profile and start (`nvmlDeviceGetGpuInstanceById` + `nvmlGpuInstanceGetInfo`).
Where the driver refuses the GPU-instance query (NoPermission for users without root or the
mig/monitor capability), the profile comes from the device's name (`... MIG 3g.71gb`) and the
start is unknown (None). gpushare only reads: it never creates or destroys MIG instances.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from gpushare.catalog.gpus import find_gpu_model
from gpushare.devices.base import Gpu, GpuProcess, GpuTelemetry, MigDevice, NoGpuDriver
from gpushare.errors import EnvironmentProblem

# The MPS control daemon and the server it starts. Linux truncates a process's comm to 15
# characters ("nvidia-cuda-mps"), so that prefix is matched too.
MPS_PROCESS_NAMES = frozenset({"nvidia-cuda-mps-control", "nvidia-cuda-mps-server", "nvidia-cuda-mps"})


def process_name(pid: int) -> str:
    """The executable name of `pid`, or "" when it is gone or belongs to someone we cannot see."""
    import psutil  # here, not at the top: `gpushare plan` imports this module and never asks

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return ""


def running_process_names() -> Iterator[str]:
    """Names of all processes on this machine (those we may read)."""
    import psutil

    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name:
            yield str(name)


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency, but a broken install happens
        raise NoGpuDriver(f"NVML could not load: {exc}") from exc
    return pynvml


def _text(value: str | bytes) -> str:
    # nvidia-ml-py < 11.515 returns bytes for names and UUIDs.
    return value.decode() if isinstance(value, bytes) else value


class NvmlInventory:
    """GPUs as NVML reports them: memory (v2 with the driver's reservation), MIG, processes."""

    def __init__(
        self,
        nvml: Any = None,
        *,
        name_of_pid: Callable[[int], str] = process_name,
        process_names: Callable[[], Iterable[str]] = running_process_names,
    ) -> None:
        """`nvml`: the pynvml module, or an object with the same functions (tests)."""
        self._nvml = nvml
        self._name_of_pid = name_of_pid
        self._process_names = process_names

    @property
    def nvml(self) -> Any:
        if self._nvml is None:
            self._nvml = _import_pynvml()
        return self._nvml

    @contextmanager
    def _session(self) -> Iterator[Any]:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            # LibraryNotFound, DriverNotLoaded, NoPermission...: the same answer for the user.
            raise NoGpuDriver(f"NVML could not load: {exc}") from exc
        try:
            yield nvml
        finally:
            nvml.nvmlShutdown()

    def gpus(self) -> list[Gpu]:
        with self._session() as nvml:
            try:
                count = int(nvml.nvmlDeviceGetCount())
                return [self._read_gpu(nvml, index) for index in range(count)]
            except nvml.NVMLError as exc:
                raise EnvironmentProblem(f"NVML failed while reading the GPUs: {exc}") from exc

    def utilization(self) -> dict[int, float]:
        """GPU busy fraction (0..1) by index: NVML's utilization.gpu over its last sample period."""
        with self._session() as nvml:
            try:
                count = int(nvml.nvmlDeviceGetCount())
                return {
                    i: float(nvml.nvmlDeviceGetUtilizationRates(nvml.nvmlDeviceGetHandleByIndex(i)).gpu) / 100
                    for i in range(count)
                }
            except nvml.NVMLError as exc:
                raise EnvironmentProblem(f"NVML failed while reading GPU utilization: {exc}") from exc

    def mps_daemon_running(self) -> bool:
        return any(name in MPS_PROCESS_NAMES for name in self._process_names())

    def _read_gpu(self, nvml: Any, index: int) -> Gpu:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = _text(nvml.nvmlDeviceGetName(handle))
        total, reserved, used, free = _memory(nvml, handle, name)
        mig = _mig_enabled(nvml, handle)
        return Gpu(
            index=index,
            name=name,
            total_bytes=total,
            reserved_bytes=reserved,
            used_bytes=used,
            free_bytes=free,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            mig_enabled=mig,
            processes=self._processes(nvml, handle),
            mig_devices=self._mig_devices(nvml, handle, name) if mig else (),
        )

    def _mig_devices(self, nvml: Any, handle: Any, gpu_name: str) -> tuple[MigDevice, ...]:
        """The MIG devices of a MIG-enabled GPU (see the module docstring)."""
        not_found = _error_class(nvml, "NVMLError_NotFound")
        try:
            count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except nvml.NVMLError_NotSupported:
            return ()
        found: list[MigDevice] = []
        for i in range(count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except not_found:
                continue  # no MIG device at this index
            found.append(self._mig_device(nvml, handle, mig, gpu_name))
        return tuple(sorted(found, key=lambda d: (d.start is None, d.start or 0, d.uuid or "")))

    def _mig_device(self, nvml: Any, parent: Any, mig: Any, gpu_name: str) -> MigDevice:
        # v1 on the MIG handle: v2 may be NotSupported there, and a slice has no reservation of
        # its own that NVML reports apart; whatever it counts as used stays used.
        info = nvml.nvmlDeviceGetMemoryInfo(mig)
        gi_id = ci_id = profile_id = start = None
        refused = (_error_class(nvml, "NVMLError_NoPermission"), nvml.NVMLError_NotSupported)
        try:
            gi_id = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
            ci_id = int(nvml.nvmlDeviceGetComputeInstanceId(mig))
            gi_info = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(parent, gi_id))
            profile_id, start = int(gi_info.profileId), int(gi_info.placement.start)
        except refused:
            pass  # profile from the name below, start unknown
        return MigDevice(
            uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
            profile=_mig_profile_name(gpu_name, profile_id, _text(nvml.nvmlDeviceGetName(mig))),
            start=start,
            total_bytes=int(info.total),
            used_bytes=int(info.used),
            free_bytes=int(info.free),
            gpu_instance_id=gi_id,
            compute_instance_id=ci_id,
            profile_id=profile_id,
            processes=self._processes(nvml, mig),
        )

    def _processes(self, nvml: Any, handle: Any) -> tuple[GpuProcess, ...]:
        try:
            infos = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError_NotSupported:
            return ()
        processes = []
        for info in infos:
            pid = int(info.pid)
            # usedGpuMemory is None where the driver will not say (some containers, Windows).
            used = int(info.usedGpuMemory) if info.usedGpuMemory is not None else 0
            processes.append(GpuProcess(pid=pid, used_bytes=used, name=self._name_of_pid(pid)))
        return tuple(sorted(processes, key=lambda p: p.pid))


def _memory(nvml: Any, handle: Any, name: str) -> tuple[int, int, int, int]:
    """(total, reserved, used, free) in bytes.

    NVML v2 reports the driver's reservation separately: v2 used = total − free − reserved. The
    v1 struct (old drivers or old nvidia-ml-py) folds it into `used`, so there the catalog's
    reservation for this GPU model stands in for it, and 0 for a model the catalog lacks.
    """
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            return int(info.total), int(info.reserved), int(info.used), int(info.free)
        except (TypeError, nvml.NVMLError):
            pass  # a driver (or binding) without v2: read v1 below
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    total, used, free = int(info.total), int(info.used), int(info.free)
    model = find_gpu_model(name)
    reserved = min(model.reserved_bytes, used) if model is not None else 0
    return total, reserved, used - reserved, free


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:  # NotSupported on GPUs without MIG
        return False
    return bool(current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1))


class _NeverRaised(Exception):
    """Stands in for an NVML error class an old binding lacks, in `except` clauses."""


def _error_class(nvml: Any, name: str) -> type[Exception]:
    found = getattr(nvml, name, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else _NeverRaised


def _mig_profile_name(gpu_name: str, profile_id: int | None, device_name: str) -> str:
    """The GPU-instance profile's name: from the catalog by profile id, else from the MIG device's
    name (NVML names it `NVIDIA H200 MIG 3g.71gb`), else `unknown`."""
    from gpushare.catalog.mig import find_mig_table

    table = find_mig_table(gpu_name)
    if table is not None and profile_id is not None:
        for p in table.profiles:
            if p.profile_id == profile_id:
                return p.name
    _, marker, suffix = device_name.rpartition("MIG ")
    if marker and suffix.strip():
        return suffix.strip()
    return "unknown" if profile_id is None else f"profile {profile_id}"


class NvmlTelemetry:
    """`TelemetrySource` over NVML: temperature and its slowdown threshold, power draw and the
    enforced limit, and GPM's SM utilization (Hopper and later) over the time since the previous
    call, so a Prometheus scrape every 15 s reads the SM use of those 15 s without waiting.

    NVML stays initialised while this object lives (GPM samples are valid within one session;
    `nvmlInit` counts references, so `NvmlInventory`'s own sessions nest inside): `close()` ends it.
    A reading the GPU refuses is None; a GPU without GPM support is not asked again.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._open = False
        self._previous: dict[int, Any] = {}
        self._no_gpm: set[int] = set()

    def _session(self) -> Any:
        nvml = self._nvml if self._nvml is not None else _import_pynvml()
        self._nvml = nvml
        if not self._open:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise NoGpuDriver(f"NVML could not load: {exc}") from exc
            self._open = True
        return nvml

    def telemetry(self) -> dict[int, GpuTelemetry]:
        nvml = self._session()
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nvml.NVMLError as exc:
            raise EnvironmentProblem(f"NVML failed while reading the GPUs: {exc}") from exc
        out: dict[int, GpuTelemetry] = {}
        for index, handle in enumerate(handles):
            temperature = _reading(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            slowdown = _reading(
                nvml,
                nvml.nvmlDeviceGetTemperatureThreshold,
                handle,
                nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
            )
            power = _reading(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
            limit = _reading(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            out[index] = GpuTelemetry(
                temperature_c=temperature,
                slowdown_temperature_c=slowdown,
                power_w=None if power is None else power / 1000,  # NVML reports milliwatts
                power_limit_w=None if limit is None else limit / 1000,
                sm_utilization=self._sm_utilization(nvml, index, handle),
            )
        return out

    def _sm_utilization(self, nvml: Any, index: int, handle: Any) -> float | None:
        """SM_UTIL between the previous sample of this GPU and one taken now (NVML's GPM API:
        nvmlGpmSampleGet twice, nvmlGpmMetricsGet over the pair; values in percent)."""
        if index in self._no_gpm:
            return None
        try:
            if index not in self._previous and not nvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
                self._no_gpm.add(index)
                return None
            sample = nvml.nvmlGpmSampleAlloc()
            nvml.nvmlGpmSampleGet(handle, sample)
        except (nvml.NVMLError, AttributeError):  # an old driver or binding: no GPM
            self._no_gpm.add(index)
            return None
        previous = self._previous.pop(index, None)
        self._previous[index] = sample
        if previous is None:
            return None
        try:
            query = nvml.c_nvmlGpmMetricsGet_t()
            query.version = nvml.NVML_GPM_METRICS_GET_VERSION
            query.numMetrics = 1
            query.sample1 = previous
            query.sample2 = sample
            query.metrics[0].metricId = nvml.NVML_GPM_METRIC_SM_UTIL
            nvml.nvmlGpmMetricsGet(query)
            metric = query.metrics[0]
            value = float(metric.value) / 100 if int(metric.nvmlReturn) == 0 else None
        except nvml.NVMLError:
            value = None
        finally:
            nvml.nvmlGpmSampleFree(previous)
        return None if value is None else min(max(value, 0.0), 1.0)

    def close(self) -> None:
        if not self._open:
            return
        nvml = self._nvml
        for sample in self._previous.values():
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlGpmSampleFree(sample)
        self._previous.clear()
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
        self._open = False


def _reading(nvml: Any, read: Callable[..., Any], *args: Any) -> float | None:
    try:
        return float(read(*args))
    except nvml.NVMLError:
        return None
