"""The GPU inventory interface. Real: NVML (`nvml.py`). Static: a described set (`static.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gpushare.errors import EnvironmentProblem


class NoGpuDriver(EnvironmentProblem):
    """No NVIDIA driver (or no NVML library) on this machine. Callers that can do without GPUs
    (`gpushare gpus`, planning from a described inventory) catch this one and carry on."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"no NVIDIA driver found ({reason})", hint="describe GPUs in the profile or with --gpus"
        )
        self.reason = reason


@dataclass(frozen=True)
class GpuProcess:
    """A compute process holding memory on a GPU, as NVML reports it."""

    pid: int
    used_bytes: int
    name: str = ""


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a GPU instance with its compute instance) of a MIG-enabled GPU, as NVML
    reports it. A process selects it with `CUDA_VISIBLE_DEVICES=<uuid>`.

    `start` is the first memory unit of its GPU instance (`nvmlGpuInstanceGetInfo`'s placement);
    None where the driver refused the GPU-instance query (NoPermission without root or the
    mig/monitor capability). `total_bytes` is the device's own memory (NVML on the MIG handle);
    no driver reservation comes off it.
    """

    uuid: str | None
    """`MIG-...` (drivers from R470 on)."""
    profile: str
    """The GPU-instance profile's name: `3g.71gb`."""
    start: int | None
    total_bytes: int
    used_bytes: int = 0
    free_bytes: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    profile_id: int | None = None
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        """`3g.71gb@4`, or `3g.71gb@?` when the start is not known."""
        return f"{self.profile}@{'?' if self.start is None else self.start}"


@dataclass(frozen=True)
class Gpu:
    """One GPU as the driver reports it.

    `total_bytes` is NVML's total (the H100 80GB HBM3 reports 85,520,809,984). `reserved_bytes` is
    what the driver keeps for itself (NVML v2 `reserved`); CUDA and so vLLM see
    `total_bytes - reserved_bytes` as the device total (79.18 GiB on that H100).
    """

    index: int
    name: str
    total_bytes: int
    reserved_bytes: int = 0
    used_bytes: int = 0
    free_bytes: int | None = None
    uuid: str | None = None
    mig_enabled: bool = False
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)
    mig_devices: tuple[MigDevice, ...] = field(default_factory=tuple)
    """Its MIG devices, by start (then UUID), when MIG is enabled."""

    @property
    def cuda_total_bytes(self) -> int:
        """The total that `torch.cuda.mem_get_info` and vLLM see."""
        return self.total_bytes - self.reserved_bytes


class GpuInventory(Protocol):
    """Where GPUs come from: NVML on a real machine, a description in tests and profiles."""

    def gpus(self) -> list[Gpu]:
        """The GPUs, by NVML index. Raises NoGpuDriver where there is no driver to ask."""
        ...

    def mps_daemon_running(self) -> bool: ...


@dataclass(frozen=True)
class GpuTelemetry:
    """One GPU's sensors as NVML reports them at one moment; None where the GPU or driver does
    not say (a reading it refuses, GPM on a GPU older than Hopper, the first SM reading)."""

    temperature_c: float | None = None
    slowdown_temperature_c: float | None = None
    """Where the GPU starts to slow its clocks (NVML_TEMPERATURE_THRESHOLD_SLOWDOWN; 89 C on the
    H200, bench/gpu/results/h200-i15/k8s-facts.txt)."""
    power_w: float | None = None
    power_limit_w: float | None = None
    """The enforced power limit (nvmlDeviceGetEnforcedPowerLimit)."""
    sm_utilization: float | None = None
    """Fraction of SMs busy (0..1) since the previous reading (GPM NVML_GPM_METRIC_SM_UTIL):
    unlike `utilization.gpu`, which counts time with any kernel running, this counts SMs."""


class TelemetrySource(Protocol):
    """GPU sensors by index, for /metrics. `close()` releases what the source holds open."""

    def telemetry(self) -> dict[int, GpuTelemetry]: ...

    def close(self) -> None: ...
