"""What `gpushare export k8s` takes besides the plan: the mode, and the settings the plan does not
model (host CPU and RAM, /dev/shm, the Hugging Face cache's volume, the image, names).

Everything here that is not from the plan has a stated default, and the export's README.txt lists
each value it used under "not planned", so a default is never shown as a planned number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from gpushare import __version__
from gpushare.errors import InputError
from gpushare.export.k8s.meta import check_labels, is_dns1123_label
from gpushare.export.k8s.workload import HostPathCache
from gpushare.units import GiB, parse_bytes

Mode = Literal["gpu-pod", "mig", "hami", "time-slicing", "mps"]
"""How pods get GPU memory (README "Kubernetes"): gpu-pod keeps the plan as it is (gpushare runs it
in a pod per GPU group), mig runs one vLLM per planned MIG slice (and the plan's whole-GPU groups as
gpu-pod does), the others run one vLLM per pod under the cluster's GPU sharing."""
MODES: tuple[Mode, ...] = get_args(Mode)

DEFAULT_IMAGE = f"gpushare:{__version__}"
DEFAULT_NAMESPACE = "default"
DEFAULT_CPU_MILLICORES = 4000
"""Host CPU request per vLLM instance: its API server, tokenizer and scheduler threads."""
DEFAULT_MEMORY_BYTES = 16 * GiB
"""Host RAM request per instance (weights pass through host memory while loading)."""
DEFAULT_SHM_BYTES = 2 * GiB
"""/dev/shm per instance; a tensor-parallel instance gets `DEFAULT_TP_SHM_BYTES` (NCCL's buffers)."""
DEFAULT_TP_SHM_BYTES = 8 * GiB
DEFAULT_PVC_BYTES = 200 * GiB
"""The Hugging Face cache's PVC when --hf-cache pvc gives no size."""
GATEWAY_CPU_MILLICORES = 500
GATEWAY_MEMORY_BYTES = 512 * 1024 * 1024


def parse_mode(value: str) -> Mode:
    """`--mode VALUE` as a Mode, or one line naming the choices."""
    for mode in MODES:
        if value == mode:
            return mode
    raise InputError(f"--mode {value!r}: choose one of {', '.join(MODES)}")


@dataclass(frozen=True)
class PvcSpec:
    """`--hf-cache pvc[:SIZE[:CLASS]]`: a ReadWriteMany claim made by the export."""

    size_bytes: int = DEFAULT_PVC_BYTES
    storage_class: str | None = None
    size_given: bool = False


HfCacheChoice = PvcSpec | HostPathCache | None


def parse_hf_cache(spec: str) -> HfCacheChoice:
    """`pvc`, `pvc:500Gi`, `pvc:500Gi:fast-rwx`, `hostpath:/var/lib/hf` or `none`."""
    kind, _, rest = spec.partition(":")
    if kind == "none" and not rest:
        return None
    if kind == "hostpath":
        if not rest.startswith("/"):
            raise InputError(
                f"--hf-cache {spec!r}: hostpath needs an absolute path, e.g. hostpath:/var/lib/hf"
            )
        return HostPathCache(rest)
    if kind == "pvc":
        size_text, _, storage_class = rest.partition(":")
        size = parse_bytes(size_text, "--hf-cache") if size_text else DEFAULT_PVC_BYTES
        if storage_class and not is_dns1123_label(storage_class.split(".")[0]):
            raise InputError(f"--hf-cache {spec!r}: {storage_class!r} is not a storage class name")
        return PvcSpec(size, storage_class or None, size_given=bool(size_text))
    raise InputError(
        f"--hf-cache {spec!r}: expected pvc[:SIZE[:CLASS]], hostpath:/PATH or none",
        hint="e.g. --hf-cache pvc:500Gi or --hf-cache hostpath:/var/lib/huggingface",
    )


def parse_label(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InputError(f"{flag} {text!r}: expected KEY=VALUE, e.g. release=kube-prometheus-stack")
    check_labels({key: value}, flag)
    return key, value


@dataclass(frozen=True)
class ExportOptions:
    mode: Mode = "gpu-pod"
    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    hf_cache: HfCacheChoice = field(default_factory=PvcSpec)
    cpu_millicores: int = DEFAULT_CPU_MILLICORES
    """Per instance (a gpu-pod pod asks for this times its instances)."""
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    shm_bytes: int | None = None
    """Per pod; None: `DEFAULT_SHM_BYTES` per instance (`DEFAULT_TP_SHM_BYTES` for tensor parallel)."""
    replicas: int | None = None
    """time-slicing / mps: the device plugin's replicas; None: the fewest that hold the plan."""
    monitoring: bool = True
    """Emit the Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule."""
    prometheus_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels the Prometheus selects its monitors and rules by (kube-prometheus-stack: release=...)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not is_dns1123_label(self.namespace):
            raise InputError(f"--namespace {self.namespace!r} is not a valid Kubernetes namespace")
        if self.cpu_millicores <= 0 or self.memory_bytes <= 0:
            raise InputError("--cpu and --memory must be positive")
        if self.replicas is not None and self.mode not in ("time-slicing", "mps"):
            raise InputError(f"--replicas is for --mode time-slicing or mps, not {self.mode}")
