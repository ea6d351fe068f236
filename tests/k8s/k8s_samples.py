"""Objects built with every builder, in every GPU mode, for the validation tests.

The inputs look like what the adapter will hand over for profiles/classic.yaml (three models on an
A100 80GB) but are written out here: these tests are about the manifests, not the plan.
"""

from __future__ import annotations

from typing import Any

from gpushare.export.k8s import gpu, meta, monitoring, workload
from gpushare.units import GiB, MiB

PROFILE = "classic"
NAMESPACE = "llm"
IMAGE = "registry.example/gpushare:0.1.0"
VLLM_VERSION = "0.26.0"
PRODUCT = gpu.gpu_product_label("NVIDIA A100-SXM4-80GB")


def vllm_argv(name: str, model: str, port: int, kv_bytes: int) -> tuple[str, ...]:
    return (
        "vllm",
        "serve",
        model,
        "--served-model-name",
        name,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--max-model-len",
        "16384",
        "--gpu-memory-utilization",
        "0.3",
        "--kv-cache-memory-bytes",
        str(kv_bytes),
    )


MODELS = (
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 8001, 7 * GiB),
    ("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 8002, 5 * GiB),
)


def model_workload(
    name: str,
    model: str,
    port: int,
    kv_bytes: int,
    request: gpu.GpuRequest,
    *,
    hf: workload.HfCache,
    tag: str = "",
) -> workload.WorkloadSpec:
    labels = meta.AppLabels(
        name="vllm",
        instance=meta.object_name(PROFILE, *([tag] if tag else []), name),
        component=meta.COMPONENT_MODEL_SERVER,
        part_of=PROFILE,
        version=VLLM_VERSION,
    )
    return workload.WorkloadSpec(
        labels=labels,
        namespace=NAMESPACE,
        container=workload.ContainerSpec(
            name="vllm",
            image=IMAGE,
            argv=vllm_argv(name, model, port, kv_bytes),
            ports=(workload.Port("http", port),),
            env={"VLLM_NO_USAGE_STATS": "1"},
            secret_env=(workload.HF_TOKEN,),
            cpu_millicores=4000,
            memory_bytes=32 * GiB,
            gpu=request,
            probes=workload.Probes(port="http"),
        ),
        node_selector={gpu.PRODUCT_LABEL: PRODUCT},
        hf_cache=hf,
        shm_bytes=2 * GiB,
        annotations={"gpushare.io/model": model},
    )


def gpu_pod_workload() -> workload.WorkloadSpec:
    labels = meta.AppLabels(
        name="gpushare",
        instance=meta.object_name(PROFILE, "gpu0"),
        component=meta.COMPONENT_GPU_POD,
        part_of=PROFILE,
        version=VLLM_VERSION,
    )
    ports = tuple(workload.Port(f"vllm-{i}", port) for i, (_, _, port, _) in enumerate(MODELS))
    return workload.WorkloadSpec(
        labels=labels,
        namespace=NAMESPACE,
        container=workload.ContainerSpec(
            name="gpushare",
            image=IMAGE,
            argv=("gpushare", "up", "/etc/gpushare/plan/plan.json", "--foreground"),
            ports=(workload.Port("http", 8000), *ports),
            secret_env=(workload.HF_TOKEN,),
            cpu_millicores=8000,
            memory_bytes=64 * GiB,
            memory_limit_bytes=96 * GiB,
            gpu=gpu.WholeGpus(1),
            probes=workload.Probes(port="http", startup_budget_s=3 * 30 * 60),
        ),
        node_selector={gpu.PRODUCT_LABEL: PRODUCT},
        hf_cache=workload.HostPathCache("/var/cache/huggingface"),
        shm_bytes=8 * GiB,
        config_mounts=(workload.ConfigMount("classic-gpu0-plan", "/etc/gpushare/plan"),),
        termination_grace_s=120,
    )


def gateway_workload() -> workload.WorkloadSpec:
    labels = meta.AppLabels(
        name="gpushare-gateway",
        instance=meta.object_name(PROFILE, "gateway"),
        component=meta.COMPONENT_GATEWAY,
        part_of=PROFILE,
    )
    upstreams = [
        f"--upstream={name}=http://{meta.object_name(PROFILE, name)}:{port}" for name, _, port, _ in MODELS
    ]
    return workload.WorkloadSpec(
        labels=labels,
        namespace=NAMESPACE,
        container=workload.ContainerSpec(
            name="gateway",
            image=IMAGE,
            argv=("gpushare", "gateway", "--host", "0.0.0.0", "--port", "8000", *upstreams),
            ports=(workload.Port("http", 8000),),
            secret_env=(workload.SecretEnv("GPUSHARE_API_KEY", "gpushare-api-key", "key"),),
            cpu_millicores=500,
            memory_bytes=512 * MiB,
            probes=workload.Probes(port="http", startup_budget_s=60),
        ),
    )


REQUESTS: dict[str, tuple[gpu.GpuRequest, gpu.GpuRequest]] = {
    "mig": (gpu.MigDevice("3g.40gb"), gpu.MigDevice("1g.10gb+me")),
    "hami": (
        gpu.HamiShare(memory_bytes=30 * GiB + 1),
        gpu.HamiShare(memory_bytes=20 * GiB, cores_percent=40),
    ),
    "time-slicing": (gpu.SharedReplica(), gpu.SharedReplica()),
    "mps": (gpu.SharedReplica(renamed=True), gpu.SharedReplica(renamed=True)),
}


def model_objects(mode: str, hf: workload.HfCache, *, tag: bool = False) -> list[dict[str, Any]]:
    """A Deployment and a Service per model in `mode`; `tag` puts the mode in the names, so that
    every mode's objects can sit in one directory."""
    objects = []
    for (name, model, port, kv), request in zip(MODELS, REQUESTS[mode], strict=True):
        spec = model_workload(name, model, port, kv, request, hf=hf, tag=mode if tag else "")
        objects.append(workload.deployment(spec))
        objects.append(
            workload.service(
                spec.labels,
                spec.labels.selector(),
                [workload.ServicePort(port=port, target_port="http")],
                namespace=NAMESPACE,
            )
        )
    return objects


def monitoring_objects(sources: tuple[monitoring.Source, ...]) -> list[dict[str, Any]]:
    part_of = {"app.kubernetes.io/part-of": PROFILE}
    scope = monitoring.RuleScope(
        matchers={monitoring.PART_OF_TARGET_LABEL: PROFILE},
        namespace=NAMESPACE,
        containers=("vllm", "gateway"),
    )
    release = {"release": "kube-prometheus-stack"}
    return [
        monitoring.service_monitor(
            f"{PROFILE}-gpushare",
            part_of,
            components=(meta.COMPONENT_GATEWAY, meta.COMPONENT_GPU_POD),
            namespace=NAMESPACE,
            labels=release,
        ),
        monitoring.pod_monitor(
            f"{PROFILE}-vllm",
            part_of,
            components=(meta.COMPONENT_MODEL_SERVER,),
            namespace=NAMESPACE,
            labels=release,
        ),
        monitoring.prometheus_rule(
            f"{PROFILE}-alerts", monitoring.alert_rules(sources, scope), namespace=NAMESPACE, labels=release
        ),
    ]


ALL_SOURCES: tuple[monitoring.Source, ...] = ("supervisor", "gateway", "vllm-pods", "kube-state-metrics")


def every_object() -> list[dict[str, Any]]:
    """One of everything: every mode's model workloads, the gpu-pod, the gateway, ConfigMaps, the
    PVC and the monitoring objects."""
    pvc = workload.PvcCache("hf-cache")
    objects: list[dict[str, Any]] = []
    for mode in REQUESTS:
        objects += model_objects(
            mode, pvc if mode != "hami" else workload.HostPathCache("/data/hf"), tag=True
        )
    gpu_pod = gpu_pod_workload()
    gateway = gateway_workload()
    objects += [
        workload.deployment(gpu_pod),
        workload.service(
            meta.AppLabels("gpushare", "classic-gpu0-supervisor", meta.COMPONENT_GPU_POD, PROFILE),
            gpu_pod.labels.selector(),
            [workload.ServicePort(8000, "http")],
            namespace=NAMESPACE,
        ),
        workload.config_map(
            "classic-gpu0-plan", {"plan.json": '{"profile": "classic"}\n'}, namespace=NAMESPACE
        ),
        workload.deployment(gateway),
        workload.service(
            gateway.labels, gateway.labels.selector(), [workload.ServicePort(80, "http")], namespace=NAMESPACE
        ),
        workload.hf_cache_pvc("hf-cache", 500 * GiB, namespace=NAMESPACE, storage_class="standard"),
        workload.config_map(
            "gpushare-device-plugin",
            {"time-slicing": "version: v1\n", "mps": "version: v1\n"},
            namespace="gpu-operator",
        ),
        workload.config_map(
            "gpushare-mig-parted",
            {"config.yaml": "version: v1\n"},
            namespace="gpu-operator",
        ),
    ]
    objects += monitoring_objects(ALL_SOURCES)
    return objects
