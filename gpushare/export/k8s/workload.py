"""Deployments, Services, ConfigMaps and the PVC, built from small typed inputs.

Pure: every function returns the object as a dict (`apiVersion`, `kind`, `metadata`, `spec`), for
`render` to write. The inputs say what one container runs (its whole argv, ports, environment,
host CPU/RAM and GPU resource) and where its pod goes; an adapter turns a plan into them.

Choices every workload shares, and why:
- `replicas: 1` and `strategy: Recreate`: the old pod must free its GPU memory before the new one
  starts, or the new vLLM finds less free memory than planned and refuses to start (or worse,
  sizes its KV cache from what is left).
- `enableServiceLinks: false`: otherwise the kubelet injects `<SERVICE>_PORT=tcp://...` for every
  Service of the namespace, and a Service named `vllm` sets `VLLM_PORT=tcp://...`, which vLLM reads
  as its own setting and refuses (vllm/envs.py `get_vllm_port`: "appears to be a URI. This may be
  caused by a Kubernetes service discovery issue").
- `/dev/shm` as a memory-backed emptyDir: the container runtime's default is 64 MiB, too small for
  PyTorch/NCCL shared memory (vLLM's Docker guide runs with `--ipc=host` or `--shm-size`).
- The Hugging Face cache as a volume mounted at `HF_HOME`, so a restart does not download again.
- `HF_TOKEN` from a Secret key, optional, so public models need no Secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpushare.errors import InputError
from gpushare.export.k8s.gpu import GpuRequest
from gpushare.export.k8s.meta import (
    AppLabels,
    check_labels,
    check_name,
    is_dns1123_label,
    is_port_name,
    object_meta,
)
from gpushare.units import GiB, MiB

HF_CACHE_MOUNT = "/root/.cache/huggingface"
"""Where the Hugging Face cache is mounted; `HF_HOME` points there (the vLLM image runs as root)."""

CONFIG_MOUNT_ROOT = "/etc/gpushare"

GPU_TAINT_KEY = "nvidia.com/gpu"

# vLLM's start can take many minutes: download, load, torch.compile, CUDA-graph capture. The
# startup probe holds liveness off until /health answers, so a slow start is not a crash loop.
DEFAULT_STARTUP_BUDGET_S = 30 * 60


@dataclass(frozen=True)
class Port:
    """A named container port (`name` an IANA service name: at most 15 of [a-z0-9-])."""

    name: str
    container_port: int


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable read from a key of a Secret."""

    env: str
    secret: str
    key: str
    optional: bool = True


HF_TOKEN = SecretEnv(env="HF_TOKEN", secret="hf-token", key="token")
"""Create it with `kubectl create secret generic hf-token --from-literal=token=hf_...`."""

API_KEY = SecretEnv(env="GPUSHARE_API_KEY", secret="gpushare-api-key", key="key")
"""The key a gpushare gateway asks clients for (its `$GPUSHARE_API_KEY`, cli/serve.py); create it with
`kubectl create secret generic gpushare-api-key --from-literal=key=...`. Optional: no Secret, no key."""


@dataclass(frozen=True)
class Probes:
    """startupProbe, then readiness and liveness, all GET `path` on `port` (a name or number).

    The startup probe allows `startup_budget_s` (failureThreshold × period) before the kubelet
    gives up; liveness restarts the container after `live_failures` failures in a row once started.
    """

    port: str | int = "http"
    path: str = "/health"
    startup_budget_s: int = DEFAULT_STARTUP_BUDGET_S
    startup_period_s: int = 10
    ready_period_s: int = 5
    ready_failures: int = 3
    live_period_s: int = 10
    live_failures: int = 6
    timeout_s: int = 5

    def _get(self) -> dict[str, Any]:
        return {"path": self.path, "port": self.port}

    def to_container(self) -> dict[str, Any]:
        if self.startup_budget_s < self.startup_period_s:
            raise InputError(
                f"startup budget {self.startup_budget_s}s is shorter than its period {self.startup_period_s}s"
            )
        return {
            "startupProbe": {
                "httpGet": self._get(),
                "periodSeconds": self.startup_period_s,
                "timeoutSeconds": self.timeout_s,
                "failureThreshold": -(-self.startup_budget_s // self.startup_period_s),
            },
            "readinessProbe": {
                "httpGet": self._get(),
                "periodSeconds": self.ready_period_s,
                "timeoutSeconds": self.timeout_s,
                "failureThreshold": self.ready_failures,
            },
            "livenessProbe": {
                "httpGet": self._get(),
                "periodSeconds": self.live_period_s,
                "timeoutSeconds": self.timeout_s,
                "failureThreshold": self.live_failures,
            },
        }


@dataclass(frozen=True)
class PvcCache:
    """The Hugging Face cache on a PersistentVolumeClaim named `claim` (see `hf_cache_pvc`)."""

    claim: str


@dataclass(frozen=True)
class HostPathCache:
    """The Hugging Face cache in a directory of the node (created when missing)."""

    path: str


HfCache = PvcCache | HostPathCache


@dataclass(frozen=True)
class ConfigMount:
    """A ConfigMap mounted read-only as files under `mount_path`."""

    configmap: str
    mount_path: str


@dataclass(frozen=True)
class ContainerSpec:
    """The one container of a workload.

    `argv` is the whole command line (argv[0] the program), set as the container's `command` so the
    image's entrypoint cannot add to it. `cpu_millicores` / `memory_bytes` are host requests (0: not
    set); `memory_limit_bytes` a RAM limit (None: none, since loading weights peaks above steady
    use). `gpu` is the mode's extended resource, set as request and limit alike.
    """

    name: str
    image: str
    argv: tuple[str, ...]
    ports: tuple[Port, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnv, ...] = ()
    cpu_millicores: int = 0
    memory_bytes: int = 0
    memory_limit_bytes: int | None = None
    gpu: GpuRequest | None = None
    probes: Probes | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


@dataclass(frozen=True)
class WorkloadSpec:
    """One Deployment: its labels (`labels.instance` is its name), container and pod placement.

    `node_selector` e.g. `{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}`; `shm_bytes` the
    size of /dev/shm (None: no shm volume); `tolerate_gpu_taint` adds a toleration for the
    `nvidia.com/gpu` taint that GPU node pools commonly carry (only when the pod asks for a GPU).
    `annotations` go on the Deployment, `pod_annotations` on its pods (a config checksum that rolls
    them when the config changes; HAMi's `nvidia.com/use-gputype`). `share_process_namespace`: the
    pod's pause container becomes PID 1 and reaps orphaned processes (a supervisor whose children
    spawn their own, as vLLM's EngineCore and workers do).
    """

    labels: AppLabels
    container: ContainerSpec
    namespace: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    hf_cache: HfCache | None = None
    shm_bytes: int | None = None
    config_mounts: tuple[ConfigMount, ...] = ()
    termination_grace_s: int = 60
    tolerate_gpu_taint: bool = True
    annotations: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    share_process_namespace: bool = False


def memory_quantity(n_bytes: int) -> str:
    """A memory quantity: `16Gi` or `512Mi` when exact, else the number of bytes."""
    if n_bytes < 0:
        raise InputError(f"a memory size cannot be negative ({n_bytes})")
    if n_bytes and n_bytes % GiB == 0:
        return f"{n_bytes // GiB}Gi"
    if n_bytes and n_bytes % MiB == 0:
        return f"{n_bytes // MiB}Mi"
    return str(n_bytes)


def cpu_quantity(millicores: int) -> str:
    if millicores <= 0:
        raise InputError(f"a CPU request must be positive, got {millicores}m")
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def _resources(spec: ContainerSpec) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.cpu_millicores:
        requests["cpu"] = cpu_quantity(spec.cpu_millicores)
    if spec.memory_bytes:
        requests["memory"] = memory_quantity(spec.memory_bytes)
    if spec.memory_limit_bytes is not None:
        if spec.memory_limit_bytes < spec.memory_bytes:
            raise InputError(
                f"container {spec.name!r}: memory limit {spec.memory_limit_bytes} is below its request"
            )
        limits["memory"] = memory_quantity(spec.memory_limit_bytes)
    if spec.gpu is not None:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        gpu = spec.gpu.resources()
        requests.update(gpu)
        limits.update(gpu)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env(spec: ContainerSpec, extra: Mapping[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, value in [*spec.env.items(), *extra.items()]:
        if name in seen:
            raise InputError(f"container {spec.name!r}: environment variable {name} is set twice")
        seen.add(name)
        env.append({"name": name, "value": value})
    for ref in spec.secret_env:
        if ref.env in seen:
            raise InputError(f"container {spec.name!r}: environment variable {ref.env} is set twice")
        seen.add(ref.env)
        check_name(ref.secret, f"secret of {ref.env}")
        env.append(
            {
                "name": ref.env,
                "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key, "optional": ref.optional}},
            }
        )
    return env


def _ports(spec: ContainerSpec) -> list[dict[str, Any]]:
    names: set[str] = set()
    numbers: set[int] = set()
    out = []
    for port in spec.ports:
        if not is_port_name(port.name):
            raise InputError(
                f"container {spec.name!r}: port name {port.name!r} is not valid "
                "(at most 15 of a-z, 0-9 and '-', with a letter)"
            )
        if not 1 <= port.container_port <= 65535:
            raise InputError(f"container {spec.name!r}: port {port.container_port} is out of range")
        if port.name in names or port.container_port in numbers:
            raise InputError(
                f"container {spec.name!r}: port {port.name}/{port.container_port} is listed twice"
            )
        names.add(port.name)
        numbers.add(port.container_port)
        out.append({"name": port.name, "containerPort": port.container_port, "protocol": "TCP"})
    return out


def container(spec: ContainerSpec, *, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    if not is_dns1123_label(spec.name):
        raise InputError(f"container name {spec.name!r} must be a DNS-1123 label")
    if not spec.argv:
        raise InputError(f"container {spec.name!r}: no command to run")
    if not spec.image:
        raise InputError(f"container {spec.name!r}: no image")
    out: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(spec.argv),
    }
    env = _env(spec, extra_env or {})
    if env:
        out["env"] = env
    ports = _ports(spec)
    if ports:
        out["ports"] = ports
    resources = _resources(spec)
    if resources:
        out["resources"] = resources
    if spec.probes is not None:
        port = spec.probes.port
        if isinstance(port, str) and port not in {p.name for p in spec.ports}:
            raise InputError(f"container {spec.name!r}: probes use port {port!r}, which it does not declare")
        out.update(spec.probes.to_container())
    return out


def _volumes(spec: WorkloadSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    if spec.hf_cache is not None:
        if isinstance(spec.hf_cache, PvcCache):
            source: dict[str, Any] = {
                "persistentVolumeClaim": {"claimName": check_name(spec.hf_cache.claim, "PVC")}
            }
        else:
            if not spec.hf_cache.path.startswith("/"):
                raise InputError(f"hostPath {spec.hf_cache.path!r} must be an absolute path")
            source = {"hostPath": {"path": spec.hf_cache.path, "type": "DirectoryOrCreate"}}
        volumes.append({"name": "hf-cache", **source})
        mounts.append({"name": "hf-cache", "mountPath": HF_CACHE_MOUNT})
        env["HF_HOME"] = HF_CACHE_MOUNT
    if spec.shm_bytes is not None:
        volumes.append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": memory_quantity(spec.shm_bytes)}}
        )
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    for i, mount in enumerate(spec.config_mounts):
        name = f"config-{i}"
        volumes.append({"name": name, "configMap": {"name": check_name(mount.configmap, "ConfigMap")}})
        mounts.append({"name": name, "mountPath": mount.mount_path, "readOnly": True})
    return volumes, mounts, env


def deployment(spec: WorkloadSpec) -> dict[str, Any]:
    """A Deployment of one pod (`replicas: 1`, `strategy: Recreate`) running `spec.container`."""
    labels = spec.labels.labels()
    volumes, mounts, volume_env = _volumes(spec)
    main = container(spec.container, extra_env=volume_env)
    if mounts:
        main["volumeMounts"] = mounts
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "containers": [main],
    }
    if spec.share_process_namespace:
        pod["shareProcessNamespace"] = True
    if spec.node_selector:
        pod["nodeSelector"] = check_labels(spec.node_selector, f"nodeSelector of {spec.labels.instance!r}")
    if spec.tolerate_gpu_taint and spec.container.gpu is not None:
        pod["tolerations"] = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    if volumes:
        pod["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(
            spec.labels.instance, namespace=spec.namespace, labels=labels, annotations=spec.annotations
        ),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": spec.labels.selector()},
            "template": {"metadata": _pod_meta(labels, spec.pod_annotations), "spec": pod},
        },
    }


def _pod_meta(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


@dataclass(frozen=True)
class ServicePort:
    """A Service port: clients use `port`; traffic goes to `target_port` (a number or a port name)."""

    port: int
    target_port: int | str
    name: str = "http"


def service(
    labels: AppLabels,
    selector: Mapping[str, str],
    ports: Sequence[ServicePort],
    *,
    namespace: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ClusterIP Service named `labels.instance` routing `ports` to the pods `selector` matches."""
    if not ports:
        raise InputError(f"Service {labels.instance!r}: no port")
    if not selector:
        raise InputError(f"Service {labels.instance!r}: an empty selector would match every pod")
    for port in ports:
        if not is_port_name(port.name):
            raise InputError(f"Service {labels.instance!r}: port name {port.name!r} is not valid")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(
            labels.instance,
            namespace=namespace,
            labels=labels.labels(),
            annotations=annotations,
            dns1035=True,
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": check_labels(selector, f"selector of Service {labels.instance!r}"),
            "ports": [
                {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": "TCP"}
                for p in ports
            ],
        },
    }


def config_map(
    name: str,
    data: Mapping[str, str],
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ConfigMap of text files (`data` maps a key, the file name, to its content)."""
    for key in data:
        if not key or len(key) > 253 or not all(c.isalnum() or c in "-._" for c in key):
            raise InputError(f"ConfigMap {name!r}: key {key!r} must be of letters, digits, '-', '_' and '.'")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(name, namespace=namespace, labels=labels),
        "data": dict(data),
    }


def hf_cache_pvc(
    name: str,
    size_bytes: int,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    storage_class: str | None = None,
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = "ReadWriteMany",
) -> dict[str, Any]:
    """The PVC that holds the Hugging Face cache, shared by every pod of the export.

    ReadWriteMany by default: the pods may land on different nodes; ReadWriteOnce serves pods of
    one node only.
    """
    if size_bytes <= 0:
        raise InputError(f"PVC {name!r}: size must be positive")
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": memory_quantity(size_bytes)}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(name, namespace=namespace, labels=labels),
        "spec": spec,
    }
