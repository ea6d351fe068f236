"""A plan as Kubernetes objects: `export_plan(plan, options)` → `Export` (the namespace's objects,
the cluster objects an admin applies in `gpu-operator`, a Dockerfile and README.txt), written as a
kustomize directory (`Export.directory()`) or one multi-document stream (`Export.stream()`).

Every mode emits (modes.py decides the pods):
- per model a Service `<profile>-<model>` (ClusterIP, port `http` = the instance's port);
- the gateway: a ConfigMap of routes (`gpushare gateway --routes`), a Deployment and a Service
  (port 80) routing by model name to those Services;
- the workloads: probes on /health (a startup budget for downloads, torch.compile and graphs),
  /dev/shm, the Hugging Face cache volume, HF_TOKEN and the gateway's API key from optional
  Secrets, host CPU/RAM requests (defaults, listed as such), a nodeSelector on the GPU product;
- Prometheus Operator objects: a ServiceMonitor for gpushare's /metrics (gateway, gpu-pod
  supervisors), a PodMonitor for vLLM's own /metrics where vLLM runs alone in its pod, and a
  PrometheusRule with the alerts those sources allow (monitoring.py, the same table as
  examples/prometheus-rules.yml);
- a Dockerfile (FROM the vLLM image of the plan's version, plus gpushare) and README.txt;
- the cluster part (`cluster/`, objects in `gpu-operator` an admin applies): the device plugin's
  sharing config (time-slicing, mps), or in mig mode the mig-parted config for the GPU Operator's
  MIG manager and the device plugin's mixed MIG strategy.

Pure: values in, dicts and text out; the CLI writes the files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpushare import __version__
from gpushare.errors import InputError
from gpushare.export.k8s import gpu as gpu_
from gpushare.export.k8s import monitoring, render, workload
from gpushare.export.k8s.dockerfile import dockerfile, vllm_image
from gpushare.export.k8s.meta import (
    COMPONENT_GATEWAY,
    COMPONENT_GPU_POD,
    COMPONENT_MODEL_SERVER,
    MANAGED_BY,
    AppLabels,
    object_name,
    unique_object_names,
)
from gpushare.export.k8s.modes import ModePlan, PodPlan, plan_for_mode
from gpushare.export.k8s.options import (
    DEFAULT_SHM_BYTES,
    DEFAULT_TP_SHM_BYTES,
    GATEWAY_CPU_MILLICORES,
    GATEWAY_MEMORY_BYTES,
    ExportOptions,
    PvcSpec,
)
from gpushare.planning.plan import Plan
from gpushare.units import format_bytes

GATEWAY_PORT = 8000
"""The port every gpushare gateway listens on in a pod (the central one, and each gpu-pod's)."""
GATEWAY_SERVICE_PORT = 80
PLAN_MOUNT = f"{workload.CONFIG_MOUNT_ROOT}/plan"
ROUTES_MOUNT = f"{workload.CONFIG_MOUNT_ROOT}/routes"
PLAN_KEY = "plan.json"
ROUTES_KEY = "routes.yaml"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
DEVICE_PLUGIN_CONFIGMAP = "gpushare-device-plugin-config"
MIG_DEVICE_PLUGIN_KEY = "gpushare-mig-mixed"
"""mig mode's key in the device plugin's ConfigMap: the same config for every profile."""
MIG_PARTED_CONFIGMAP = "gpushare-mig-parted-config"
MIG_PARTED_KEY = "config.yaml"
"""The key the GPU Operator's MIG manager reads (its values.yaml: "ConfigMap MUST have a key named
config.yaml")."""
SHARING_STRATEGY_LABEL = "nvidia.com/gpu.sharing-strategy"
CHECKSUM_ANNOTATION = "gpushare.io/config-sha256"
GATEWAY_STARTUP_S = 120
VLLM_GRACE_S = 60
GPU_POD_GRACE_S = 90
"""The in-pod `up --foreground` stops the gateway, then every instance: SIGTERM, SIGKILL after
30 s (runtime/launcher/edges.py DEFAULT_STOP_TIMEOUT_S), with time to spare."""


@dataclass(frozen=True)
class Export:
    mode: ModePlan
    options: ExportOptions
    objects: tuple[dict[str, Any], ...]
    """Objects of the export's namespace, in apply order."""
    cluster_objects: tuple[dict[str, Any], ...]
    """Objects an admin applies in `gpu-operator`: the device plugin's config, the mig-parted config."""
    files: Mapping[str, str]
    """Dockerfile and README.txt."""

    def directory(self) -> dict[str, str]:
        """File name → text: a kustomize directory, the cluster objects under `cluster/` with a
        kustomization of their own (kustomize's `namespace:` would move them otherwise)."""
        files = render.kustomize_directory(
            self.objects, namespace=self.options.namespace, extra_files=self.files
        )
        if self.cluster_objects:
            for name, text in render.kustomize_directory(self.cluster_objects).items():
                files[f"cluster/{name}"] = text
        return files

    def stream(self) -> str:
        """Every object as one `---`-separated stream, the cluster objects last."""
        return render.multi_document([*self.objects, *self.cluster_objects])


def export_plan(plan: Plan, options: ExportOptions | None = None) -> Export:
    opts = options or ExportOptions()
    mode = plan_for_mode(plan, opts.mode, opts.replicas)
    return _Builder(plan, mode, opts).build()


class _Builder:
    def __init__(self, plan: Plan, mode: ModePlan, options: ExportOptions) -> None:
        self.plan = plan
        self.mode = mode
        self.opts = options
        self.profile = plan.profile_name
        self.ns = options.namespace
        self.model_names = unique_object_names(self.profile, [i.name for i in plan.instances])
        self.gateway_name = object_name(self.profile, "gateway")
        self.pod_names = {
            p.key: (self.model_names[p.key] if p.sub_plan is None else object_name(self.profile, p.key))
            for p in mode.pods
        }
        self._check_names()
        self.hf_claim = object_name(self.profile, "hf-cache")

    def _check_names(self) -> None:
        taken = {self.gateway_name: "the gateway"}
        for pod in self.mode.pods:
            if pod.sub_plan is not None:
                taken[self.pod_names[pod.key]] = f"the pod of GPU(s) {', '.join(map(str, pod.gpus))}"
        for model, name in self.model_names.items():
            if name in taken:
                raise InputError(
                    f"model {model!r} becomes the Kubernetes name {name!r}, which {taken[name]} uses",
                    hint="rename the model in the profile",
                )

    # -- the pieces ---------------------------------------------------------------------------

    def build(self) -> Export:
        objects: list[dict[str, Any]] = []
        if isinstance(self.opts.hf_cache, PvcSpec):
            objects.append(
                workload.hf_cache_pvc(
                    self.hf_claim,
                    self.opts.hf_cache.size_bytes,
                    namespace=self.ns,
                    labels=self._owner_labels(),
                    storage_class=self.opts.hf_cache.storage_class,
                )
            )
        for pod in self.mode.pods:
            objects += self._gpu_pod(pod) if pod.sub_plan is not None else self._vllm_pod(pod)
        objects += self._model_services()
        objects += self._gateway()
        if self.opts.monitoring:
            objects += self._monitoring()
        cluster = self._cluster_objects()
        files = {
            "Dockerfile": dockerfile(self.mode.vllm_version),
            "README.txt": self._readme(),
        }
        return Export(self.mode, self.opts, tuple(objects), tuple(cluster), files)

    def _labels(self, name: str, instance: str, component: str, version: str | None = None) -> AppLabels:
        return AppLabels(
            name=name,
            instance=instance,
            component=component,
            part_of=self.profile,
            version=self.mode.vllm_version if version is None else version,
        )

    def _owner_labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/part-of": self.profile, "app.kubernetes.io/managed-by": MANAGED_BY}

    def _hf_cache(self) -> workload.HfCache | None:
        choice = self.opts.hf_cache
        if isinstance(choice, PvcSpec):
            return workload.PvcCache(self.hf_claim)
        return choice

    def _shm(self, pod: PodPlan) -> int:
        if self.opts.shm_bytes is not None:
            return self.opts.shm_bytes
        return sum(DEFAULT_TP_SHM_BYTES if len(i.gpus) > 1 else DEFAULT_SHM_BYTES for i in pod.instances)

    def _node_selector(self, pod: PodPlan) -> dict[str, str]:
        if isinstance(pod.gpu, gpu_.MigDevice):
            # The slice's profile on the planned GPU model (GFD's mixed-strategy label), once the
            # MIG manager has made the node's geometry: not while it is pending or failed.
            key, product = gpu_.mig_product_label(pod.gpu_name, pod.gpu.profile)
            return {key: product, gpu_.MIG_CONFIG_STATE_LABEL: "success"}
        selector = {gpu_.PRODUCT_LABEL: gpu_.gpu_product_label(pod.gpu_name)}
        if pod.sub_plan is not None:
            # A node whose device plugin time-slices or runs MPS hands out replicas, not GPUs.
            selector[SHARING_STRATEGY_LABEL] = "none"
        return selector

    def _vllm_pod(self, pod: PodPlan) -> list[dict[str, Any]]:
        (inst,) = pod.instances
        name = self.pod_names[pod.key]
        spec = workload.WorkloadSpec(
            labels=self._labels("vllm", name, COMPONENT_MODEL_SERVER),
            namespace=self.ns,
            container=workload.ContainerSpec(
                name="vllm",
                image=self.opts.image,
                argv=pod.vllm_argv,
                ports=(workload.Port("http", inst.port),),
                env=pod.env,
                secret_env=(workload.HF_TOKEN,),
                cpu_millicores=self.opts.cpu_millicores,
                memory_bytes=self.opts.memory_bytes,
                gpu=pod.gpu,
                probes=workload.Probes(port="http"),
            ),
            node_selector=self._node_selector(pod),
            hf_cache=self._hf_cache(),
            shm_bytes=self._shm(pod),
            termination_grace_s=VLLM_GRACE_S,
            pod_annotations=pod.pod_annotations,
        )
        return [workload.deployment(spec)]

    def _gpu_pod(self, pod: PodPlan) -> list[dict[str, Any]]:
        assert pod.sub_plan is not None
        name = self.pod_names[pod.key]
        plan_map = object_name(name, "plan")
        plan_text = json.dumps(pod.sub_plan.to_json(), indent=2) + "\n"
        labels = self._labels("gpushare", name, COMPONENT_GPU_POD)
        n = len(pod.instances)
        argv = (
            "gpushare", "up", "--plan-file", f"{PLAN_MOUNT}/{PLAN_KEY}", "--foreground",
            "--gateway-host", "0.0.0.0", "--gateway-port", str(GATEWAY_PORT),
            "--timeout", str(workload.DEFAULT_STARTUP_BUDGET_S),
        )  # fmt: skip
        ports = (
            workload.Port("http", GATEWAY_PORT),
            *(workload.Port(_vllm_port_name(i.port), i.port) for i in pod.instances),
        )
        spec = workload.WorkloadSpec(
            labels=labels,
            namespace=self.ns,
            container=workload.ContainerSpec(
                name="gpushare",
                image=self.opts.image,
                argv=argv,
                ports=ports,
                secret_env=(workload.HF_TOKEN, workload.API_KEY),
                cpu_millicores=self.opts.cpu_millicores * n,
                memory_bytes=self.opts.memory_bytes * n,
                gpu=pod.gpu,
                # The in-pod gateway opens once every instance serves: one budget per start step.
                probes=workload.Probes(
                    port="http", startup_budget_s=workload.DEFAULT_STARTUP_BUDGET_S * pod.sequential_starts
                ),
            ),
            node_selector=self._node_selector(pod),
            hf_cache=self._hf_cache(),
            shm_bytes=self._shm(pod),
            config_mounts=(workload.ConfigMount(plan_map, PLAN_MOUNT),),
            termination_grace_s=GPU_POD_GRACE_S,
            pod_annotations={CHECKSUM_ANNOTATION: _sha256(plan_text)},
            share_process_namespace=True,
        )
        return [
            workload.config_map(plan_map, {PLAN_KEY: plan_text}, namespace=self.ns, labels=labels.labels()),
            workload.deployment(spec),
            workload.service(
                labels,
                labels.selector(),
                [workload.ServicePort(GATEWAY_PORT, "http")],
                namespace=self.ns,
            ),
        ]

    def _pod_of(self, instance: str) -> PodPlan:
        return next(p for p in self.mode.pods if any(i.name == instance for i in p.instances))

    def _model_services(self) -> list[dict[str, Any]]:
        out = []
        for inst in self.plan.instances:
            pod = self._pod_of(inst.name)
            pod_name = self.pod_names[pod.key]
            if pod.sub_plan is not None:
                selector = self._labels("gpushare", pod_name, COMPONENT_GPU_POD).selector()
                target: int | str = _vllm_port_name(inst.port)
            else:
                selector = self._labels("vllm", pod_name, COMPONENT_MODEL_SERVER).selector()
                target = "http"
            name = self.model_names[inst.name]
            out.append(
                workload.service(
                    self._labels("vllm", name, COMPONENT_MODEL_SERVER),
                    selector,
                    [workload.ServicePort(inst.port, target)],
                    namespace=self.ns,
                )
            )
        return out

    def routes_text(self) -> str:
        """The gateway's routes file (runtime/service/routes.py `routes_from_document` reads it)."""
        routes = [
            {
                "model": inst.name,
                **({"aliases": list(inst.aliases)} if inst.aliases else {}),
                "url": f"http://{self.model_names[inst.name]}:{inst.port}",
            }
            for inst in self.plan.instances
        ]
        return render.to_yaml({"routes": routes})

    def _gateway(self) -> list[dict[str, Any]]:
        name = self.gateway_name
        labels = self._labels("gpushare", name, COMPONENT_GATEWAY, version=__version__)
        routes_map = object_name(name, "routes")
        routes = self.routes_text()
        spec = workload.WorkloadSpec(
            labels=labels,
            namespace=self.ns,
            container=workload.ContainerSpec(
                name="gateway",
                image=self.opts.image,
                argv=(
                    "gpushare",
                    "gateway",
                    "--routes",
                    f"{ROUTES_MOUNT}/{ROUTES_KEY}",
                    "--host",
                    "0.0.0.0",
                    "--port",
                    str(GATEWAY_PORT),
                ),  # fmt: skip
                ports=(workload.Port("http", GATEWAY_PORT),),
                secret_env=(workload.API_KEY,),
                cpu_millicores=GATEWAY_CPU_MILLICORES,
                memory_bytes=GATEWAY_MEMORY_BYTES,
                probes=workload.Probes(port="http", startup_budget_s=GATEWAY_STARTUP_S),
            ),
            config_mounts=(workload.ConfigMount(routes_map, ROUTES_MOUNT),),
            termination_grace_s=30,
            pod_annotations={CHECKSUM_ANNOTATION: _sha256(routes)},
        )
        return [
            workload.config_map(routes_map, {ROUTES_KEY: routes}, namespace=self.ns, labels=labels.labels()),
            workload.deployment(spec),
            workload.service(
                labels,
                labels.selector(),
                [workload.ServicePort(GATEWAY_SERVICE_PORT, "http")],
                namespace=self.ns,
            ),
        ]

    def _sources(self) -> tuple[monitoring.Source, ...]:
        """gpushare's supervisors where a pod runs gpushare, vLLM's own /metrics where vLLM runs
        alone in its pod (mig mode has both when the plan has whole-GPU instances)."""
        supervised = any(p.sub_plan is not None for p in self.mode.pods)
        alone = any(p.sub_plan is None for p in self.mode.pods)
        sources: list[monitoring.Source] = ["supervisor"] if supervised else []
        sources.append("gateway")
        if alone:
            sources.append("vllm-pods")
        sources.append("kube-state-metrics")
        return tuple(sources)

    def _containers(self) -> tuple[str, ...]:
        names = ["gateway"]
        if any(p.sub_plan is not None for p in self.mode.pods):
            names.append("gpushare")
        if any(p.sub_plan is None for p in self.mode.pods):
            names.append("vllm")
        return tuple(names)

    def _monitoring(self) -> list[dict[str, Any]]:
        labels = dict(self.opts.prometheus_labels)
        part_of = {"app.kubernetes.io/part-of": self.profile}
        out = [
            monitoring.service_monitor(
                object_name(self.profile, "gpushare"),
                part_of,
                components=(COMPONENT_GATEWAY, COMPONENT_GPU_POD),
                namespace=self.ns,
                labels=labels,
            )
        ]
        if "vllm-pods" in self._sources():
            out.append(
                monitoring.pod_monitor(
                    object_name(self.profile, "vllm"),
                    part_of,
                    components=(COMPONENT_MODEL_SERVER,),
                    namespace=self.ns,
                    labels=labels,
                )
            )
        scope = monitoring.RuleScope(
            matchers={monitoring.PART_OF_TARGET_LABEL: self.profile},
            namespace=self.ns,
            containers=self._containers(),
        )
        rules = monitoring.alert_rules(self._sources(), scope)
        out.append(
            monitoring.prometheus_rule(
                object_name(self.profile, "alerts"), rules, namespace=self.ns, labels=labels
            )
        )
        return out

    def _cluster_objects(self) -> list[dict[str, Any]]:
        mig = self.mode.mig
        if mig is not None:
            return [
                workload.config_map(
                    MIG_PARTED_CONFIGMAP,
                    {MIG_PARTED_KEY: render.to_yaml(gpu_.mig_manager_config(mig.mig_parted))},
                    namespace=GPU_OPERATOR_NAMESPACE,
                    labels=self._owner_labels(),
                ),
                workload.config_map(
                    DEVICE_PLUGIN_CONFIGMAP,
                    {MIG_DEVICE_PLUGIN_KEY: render.to_yaml(gpu_.mig_device_plugin_config("mixed"))},
                    namespace=GPU_OPERATOR_NAMESPACE,
                    labels=self._owner_labels(),
                ),
            ]
        if not self.mode.sharing:
            return []
        data = {s.key: render.to_yaml(s.config) for s in self.mode.sharing}
        return [
            workload.config_map(
                DEVICE_PLUGIN_CONFIGMAP,
                data,
                namespace=GPU_OPERATOR_NAMESPACE,
                labels=self._owner_labels(),
            )
        ]

    # -- README.txt ---------------------------------------------------------------------------

    def _readme(self) -> str:
        o, m = self.opts, self.mode
        lines = [
            f"gpushare export k8s: profile {self.profile!r}, mode {o.mode}, namespace {self.ns}",
            f"vLLM {m.vllm_version} (image base {vllm_image(m.vllm_version)}), gpushare {__version__}",
            "",
            "Planned (the same numbers as `gpushare plan`):",
            *(f"  {line}" for line in m.summary_lines()),
            "",
            "Not planned (defaults or flags; gpushare does not model them):",
            f"  image: {o.image}  (build it: docker build -f Dockerfile -t {o.image} <gpushare checkout>)",
            f"  CPU request per vLLM instance: {o.cpu_millicores / 1000:g} cores (--cpu)",
            f"  RAM request per vLLM instance: {format_bytes(o.memory_bytes)} (--memory)",
            "  /dev/shm per pod: "
            + (
                format_bytes(o.shm_bytes)
                if o.shm_bytes is not None
                else f"{format_bytes(DEFAULT_SHM_BYTES)} per instance, "
                f"{format_bytes(DEFAULT_TP_SHM_BYTES)} per tensor-parallel instance"
            )
            + " (--shm)",
            "  Hugging Face cache: " + _hf_text(o) + " (--hf-cache)",
            f"  gateway: {GATEWAY_CPU_MILLICORES}m CPU, {format_bytes(GATEWAY_MEMORY_BYTES)} RAM",
            "",
            "Before applying:",
            f"  kubectl -n {self.ns} create secret generic hf-token --from-literal=token=hf_...   "
            "(gated models; optional)",
            f"  kubectl -n {self.ns} create secret generic gpushare-api-key --from-literal=key=...   "
            "(clients then send it as a Bearer token; optional)",
            *self._cluster_steps(),
            "",
            f"Apply:  kubectl apply -k .     Then: kubectl -n {self.ns} port-forward svc/{self.gateway_name} "
            f"8000:{GATEWAY_SERVICE_PORT}",
        ]
        if m.notes:
            lines += ["", "Notes (what this mode changes or cannot keep):", *(f"  - {n}" for n in m.notes)]
        return "\n".join(lines).rstrip() + "\n"

    def _cluster_steps(self) -> list[str]:
        steps = []
        mode = self.opts.mode
        if mode == "gpu-pod":
            steps.append(
                "  nodes: NVIDIA's device plugin handing out whole GPUs (GPU Operator, or k8s-device-plugin"
                " with GPU feature discovery, v0.15+ for the nvidia.com/gpu.sharing-strategy label)"
            )
        elif mode == "hami":
            steps.append("  nodes: HAMi installed (its scheduler, device plugin and HAMi-core)")
        elif mode == "mig":
            steps += self._mig_steps()
        else:
            steps.append(
                f"  as an admin: kubectl apply -k cluster/   (ConfigMap {DEVICE_PLUGIN_CONFIGMAP} in "
                f"{GPU_OPERATOR_NAMESPACE}; point the GPU Operator's devicePlugin.config.name, or the "
                "device plugin's Helm value config.name, at it)"
            )
            for s in self.mode.sharing:
                steps.append(
                    f"  for each {s.product} node: kubectl label node NODE "
                    f"{gpu_.DEVICE_PLUGIN_CONFIG_LABEL}={s.key} --overwrite"
                )
        if self.opts.monitoring:
            steps.append(
                "  Prometheus Operator CRDs (kube-prometheus-stack); without them run with --no-monitoring"
            )
        return steps

    def _mig_steps(self) -> list[str]:
        mig = self.mode.mig
        assert mig is not None
        steps = [
            f"  as an admin: kubectl apply -k cluster/   (ConfigMap {MIG_PARTED_CONFIGMAP} in "
            f"{GPU_OPERATOR_NAMESPACE}: the mig-parted config {mig.name}, plus "
            f"{gpu_.MIG_MANAGER_DEFAULT_CONFIG} that the operator labels other MIG nodes with; it replaces "
            "the operator's generated configs, so merge in any others your nodes use)",
            "  the NVIDIA GPU Operator with its MIG manager reading that config, and the mixed MIG strategy "
            "(the slice pods ask for nvidia.com/mig-<profile>, which only the mixed strategy advertises), "
            "e.g. for a release named gpu-operator:",
            f"    helm upgrade gpu-operator nvidia/gpu-operator -n {GPU_OPERATOR_NAMESPACE} --reuse-values "
            f"--set mig.strategy=mixed --set migManager.config.name={MIG_PARTED_CONFIGMAP}",
            f"  for each node of the plan's GPUs: kubectl label node NODE {gpu_.MIG_CONFIG_LABEL}={mig.name} "
            f"--overwrite   (the MIG manager repartitions its GPUs, which must be free of workloads; the "
            f"pods wait for {gpu_.MIG_CONFIG_STATE_LABEL}=success)",
            f"  without the GPU Operator: the device plugin's config {MIG_DEVICE_PLUGIN_KEY} in "
            f"{DEVICE_PLUGIN_CONFIGMAP} sets migStrategy mixed (the operator's mig.strategy overrides it), "
            f"and a MIG manager must set the node's {gpu_.MIG_CONFIG_STATE_LABEL}",
        ]
        if mig.from_devices:
            steps.append(
                "  the plan was made onto existing MIG devices; the config describes them (a node that "
                "already has these slices needs only the label)"
            )
        return steps


def _vllm_port_name(port: int) -> str:
    return f"vllm-{port}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hf_text(options: ExportOptions) -> str:
    choice = options.hf_cache
    if isinstance(choice, PvcSpec):
        size = format_bytes(choice.size_bytes) + ("" if choice.size_given else " (default)")
        where = choice.storage_class or "the default storage class"
        return f"PVC of {size}, ReadWriteMany, {where}"
    if isinstance(choice, workload.HostPathCache):
        return f"hostPath {choice.path} on each node"
    return "none (every start downloads the model again)"
