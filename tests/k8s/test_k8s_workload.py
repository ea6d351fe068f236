"""Workload builders: every object validates (both Kubernetes versions, strict), and carries the
choices the plan depends on."""

from __future__ import annotations

import dataclasses
from typing import Any

import k8s_samples
import k8s_validate
import pytest

from gpushare.errors import InputError
from gpushare.export.k8s import gpu, meta, workload
from gpushare.units import GiB, MiB


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_every_sample_object_validates() -> None:
    objects = k8s_samples.every_object()
    assert k8s_validate.validate_all(objects) == len(objects)
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        "Deployment",
        "Service",
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    }


@pytest.mark.parametrize("mode", sorted(k8s_samples.REQUESTS))
def test_model_deployment_keeps_the_plan(mode: str) -> None:
    objects = k8s_samples.model_objects(mode, workload.PvcCache("hf-cache"))
    k8s_validate.validate_all(objects)
    deployment = objects[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    container = _container(deployment)
    name, model, port, kv = k8s_samples.MODELS[0]
    assert container["command"] == list(k8s_samples.vllm_argv(name, model, port, kv))
    assert "--kv-cache-memory-bytes" in container["command"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    gpu_resources = k8s_samples.REQUESTS[mode][0].resources()
    for key, value in gpu_resources.items():
        assert requests[key] == limits[key] == value
    assert requests["cpu"] == "4" and requests["memory"] == "32Gi"
    assert "memory" not in limits  # no RAM limit unless asked: loading weights peaks above steady use


def test_gpu_resources_per_mode() -> None:
    assert gpu.WholeGpus(2).resources() == {"nvidia.com/gpu": "2"}
    assert gpu.MigDevice("3g.40gb").resources() == {"nvidia.com/mig-3g.40gb": "1"}
    # internal/rm/rm.go writes `+` as `.` in the resource name
    assert gpu.MigDevice("1g.10gb+me").resources() == {"nvidia.com/mig-1g.10gb.me": "1"}
    share = gpu.HamiShare(memory_bytes=30 * GiB + 1)
    assert share.resources() == {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(30 * 1024 + 1)}
    assert gpu.HamiShare(memory_bytes=20 * GiB, count=2, cores_percent=40).resources() == {
        "nvidia.com/gpu": "2",
        "nvidia.com/gpumem": "20480",
        "nvidia.com/gpucores": "40",
    }
    assert gpu.SharedReplica().resources() == {"nvidia.com/gpu": "1"}
    assert gpu.SharedReplica(renamed=True).resources() == {"nvidia.com/gpu.shared": "1"}


@pytest.mark.parametrize(
    ("case", "request_"),
    [
        ("zero-gpus", gpu.WholeGpus(0)),
        ("bad-mig-profile", gpu.MigDevice("3g40gb")),
        ("hami-no-memory", gpu.HamiShare(memory_bytes=0)),
        ("hami-cores-over-100", gpu.HamiShare(memory_bytes=GiB, cores_percent=101)),
    ],
)
def test_gpu_requests_refuse_what_no_plugin_accepts(case: str, request_: gpu.GpuRequest) -> None:
    with pytest.raises(InputError):
        request_.resources()


def test_probes_give_vllm_minutes_to_start() -> None:
    container = _container(k8s_samples.model_objects("mig", workload.PvcCache("c"))[0])
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    probes = workload.Probes(startup_budget_s=95, startup_period_s=10).to_container()
    assert probes["startupProbe"]["failureThreshold"] == 10  # rounded up, never shorter than asked


def test_probe_port_must_be_declared() -> None:
    spec = k8s_samples.model_workload(*k8s_samples.MODELS[0], gpu.WholeGpus(1), hf=workload.PvcCache("c"))
    broken = dataclasses.replace(spec.container, probes=workload.Probes(port="metrics"))
    with pytest.raises(InputError, match="metrics"):
        workload.container(broken)


def test_volumes_hf_cache_and_shm() -> None:
    pvc = k8s_samples.model_objects("mig", workload.PvcCache("hf-cache"))[0]
    host = k8s_samples.model_objects("hami", workload.HostPathCache("/data/hf"))[0]
    for deployment, source in (
        (pvc, {"persistentVolumeClaim": {"claimName": "hf-cache"}}),
        (host, {"hostPath": {"path": "/data/hf", "type": "DirectoryOrCreate"}}),
    ):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["hf-cache"] == {"name": "hf-cache", **source}
        assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
        container = _container(deployment)
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"hf-cache": workload.HF_CACHE_MOUNT, "dshm": "/dev/shm"}
        env = {e["name"]: e for e in container["env"]}
        assert env["HF_HOME"]["value"] == workload.HF_CACHE_MOUNT
        assert env["HF_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}
        }
    with pytest.raises(InputError, match="absolute"):
        workload.deployment(
            dataclasses.replace(
                k8s_samples.model_workload(
                    *k8s_samples.MODELS[0], gpu.WholeGpus(1), hf=workload.PvcCache("c")
                ),
                hf_cache=workload.HostPathCache("data/hf"),
            )
        )


def test_gpu_taint_toleration_only_for_gpu_pods() -> None:
    model = k8s_samples.model_objects("mig", workload.PvcCache("c"))[0]
    assert model["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    gateway = workload.deployment(k8s_samples.gateway_workload())
    assert "tolerations" not in gateway["spec"]["template"]["spec"]
    assert "nodeSelector" not in gateway["spec"]["template"]["spec"]


def test_service_routes_http_to_its_pods() -> None:
    objects = k8s_samples.model_objects("hami", workload.PvcCache("c"))
    deployment, service = objects[0], objects[1]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8001, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    labels = meta.AppLabels("vllm", "m", meta.COMPONENT_MODEL_SERVER, "p")
    with pytest.raises(InputError, match="empty selector"):
        workload.service(labels, {}, [workload.ServicePort(80, 8000)])
    with pytest.raises(InputError, match="DNS-1035"):
        workload.service(
            meta.AppLabels("vllm", "7b", meta.COMPONENT_MODEL_SERVER, "p"),
            {"a": "b"},
            [workload.ServicePort(80, 1)],
        )


def test_quantities() -> None:
    assert workload.memory_quantity(16 * GiB) == "16Gi"
    assert workload.memory_quantity(512 * MiB) == "512Mi"
    assert workload.memory_quantity(GiB + 1) == str(GiB + 1)
    assert workload.cpu_quantity(4000) == "4"
    assert workload.cpu_quantity(500) == "500m"
    with pytest.raises(InputError):
        workload.cpu_quantity(0)


@pytest.mark.parametrize(
    ("case", "change", "needle"),
    [
        ("duplicate-env", {"env": {"HF_HOME": "/x"}}, "HF_HOME is set twice"),
        ("bad-port-name", {"ports": (workload.Port("vllm_http", 8001),)}, "port name"),
        ("long-port-name", {"ports": (workload.Port("a-very-long-port-name", 8001),)}, "port name"),
        ("port-twice", {"ports": (workload.Port("http", 8001), workload.Port("http2", 8001))}, "twice"),
        ("no-argv", {"argv": ()}, "no command"),
        ("no-image", {"image": ""}, "no image"),
        ("bad-container-name", {"name": "vLLM"}, "DNS-1123"),
        ("ram-limit-below-request", {"memory_limit_bytes": GiB}, "below its request"),
    ],
)
def test_container_refuses(case: str, change: dict[str, Any], needle: str) -> None:
    spec = k8s_samples.model_workload(*k8s_samples.MODELS[0], gpu.WholeGpus(1), hf=workload.PvcCache("c"))
    spec = dataclasses.replace(spec, container=dataclasses.replace(spec.container, **change))
    with pytest.raises(InputError, match=needle):
        workload.deployment(spec)


def test_config_map_and_pvc() -> None:
    cm = workload.config_map("plan", {"plan.json": "{}\n"}, namespace="llm")
    assert cm["data"] == {"plan.json": "{}\n"}
    with pytest.raises(InputError, match="key"):
        workload.config_map("plan", {"a/b": ""})
    pvc = workload.hf_cache_pvc("hf-cache", 200 * GiB)
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "200Gi"}}}
    k8s_validate.validate_all([cm, pvc])
