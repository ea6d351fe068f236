"""build_plan: placement, leftover shares, start-check-safe utilizations, argv/env, and explained
failures. GPUs are described (no NVML here)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.devices.base import Gpu, GpuProcess
from gpushare.devices.static import StaticInventory
from gpushare.estimate_job import ModelFacts
from gpushare.memory import Estimate, utilization_for
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.commands import command_line
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.profile import Profile, ProfileValidationError, load_profile, parse_profile_text
from gpushare.units import GiB

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
SHIPPED = sorted(PROFILES.glob("*.yaml"))
FACTS: dict[str, ModelFacts] = {}
LOAD = plan_loader(FACTS)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def profile_of(text: str) -> Profile:
    return parse_profile_text(textwrap.dedent(text).lstrip("\n"), "test.yaml")


def plan_of(text: str, gpus: str | list[Gpu] | None = None, **options: object) -> Plan:
    profile = profile_of(text)
    if isinstance(gpus, str):
        listed: list[Gpu] = parse_gpu_spec(gpus)
    elif gpus is None:
        listed = profile.described_gpus() or []
    else:
        listed = gpus
    return build_plan(profile, listed, load=LOAD, **options)  # type: ignore[arg-type]


def estimate_of(inst: PlannedInstance) -> Estimate:
    assert inst.estimate is not None, inst.name
    return inst.estimate


def assert_start_checks_pass(plan: Plan, gpus: list[Gpu]) -> None:
    """For every GPU and every instance in start order: ceil(utilization × total) ≤ the free
    memory the ones before it leave (less other processes and its own context, which exists
    before vLLM's check); and the planned footprints fit in the usable capacity."""
    by_index = {g.index: g for g in gpus}
    for pg in plan.gpus:
        gpu = by_index[pg.index]
        total = gpu.cuda_total_bytes
        here = sorted((i for i in plan.instances if pg.index in i.gpus), key=lambda i: i.start_order)
        assert [i.name for i in here] == list(pg.instances)
        used = pg.other_processes_bytes
        for inst in here:
            context = estimate_of(inst).overhead_bytes - (
                0 if estimate_of(inst).cuda_graph_in_budget else estimate_of(inst).cuda_graph_bytes
            )
            requested = math.ceil(inst.gpu_memory_utilization * total)
            if inst.on_demand:
                # residents up, every other on-demand instance asleep (planning/start.py)
                held = sum(i.asleep_bytes if i.on_demand else i.planned_bytes for i in here if i is not inst)
                assert requested <= total - pg.other_processes_bytes - held - context, inst.name
                continue
            assert requested <= total - used - context, f"{inst.name} on GPU {pg.index}"
            # The budget covers what vLLM allocates inside it.
            e = estimate_of(inst)
            graphs = e.cuda_graph_bytes if e.cuda_graph_in_budget else 0
            inside = e.weights_bytes + e.activation_bytes + e.non_torch_bytes + graphs
            assert requested >= inside + e.kv_cache_bytes, inst.name
            used += inst.planned_bytes
        usable = math.floor(total * (1 - reserve_of(plan, pg.index, gpus))) - pg.other_processes_bytes
        assert sum(by.planned_bytes for by in here if not by.on_demand) <= pg.planned_bytes <= usable
        assert pg.usable_bytes == usable


def reserve_of(plan: Plan, index: int, gpus: list[Gpu]) -> float:
    pg = next(g for g in plan.gpus if g.index == index)
    return pg.reserved_bytes / pg.cuda_total_bytes if pg.cuda_total_bytes else 0.0


# --- shipped profiles ------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
@pytest.mark.parametrize("strategy", ["pack", "spread"])
def test_shipped_profiles_fit(path: Path, strategy: str) -> None:
    profile = load_profile(path, LOAD)
    gpus = profile.described_gpus() or []
    plan = build_plan(profile, gpus, strategy, load=LOAD)  # type: ignore[arg-type]
    assert plan.feasible, (plan.unplaced, plan.problems)
    assert {i.name for i in plan.instances} == {m.name for m in profile.models}
    assert_start_checks_pass(plan, gpus)
    for inst in plan.instances:
        assert inst.kv_cache_memory_bytes is not None
        assert inst.kv_cache_memory_bytes >= inst.kv_target_bytes
        assert inst.kv_cache_memory_bytes % estimate_of(inst).kv_block_bytes == 0


# --- invariants over many situations ---------------------------------------------------------

THREE = """
gpus: A100-80GB
defaults: {reserve: %(reserve)s, kv_sizing: %(sizing)s, vllm_version: "%(version)s"}
models:
  - {name: qwen, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 16384, concurrency: 8}
  - {name: glm, model: THUDM/chatglm3-6b, max_model_len: 8192, concurrency: 8}
  - {name: llama, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 16384, concurrency: 4}
"""

BUSY_H100 = Gpu(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    total_bytes=85_520_809_984,
    reserved_bytes=503_316_480,
    used_bytes=6 * GiB,
    processes=(GpuProcess(pid=4242, used_bytes=6 * GiB, name="python3"),),
)

INVARIANT_CASES: list[tuple[str, str, str | list[Gpu] | None]] = [
    ("fixed_reserve_10", THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"}, None),
    ("fixed_reserve_0", THREE % {"reserve": 0.0, "sizing": "fixed", "version": "0.26.0"}, None),
    ("measured_reserve_0", THREE % {"reserve": 0.0, "sizing": "measured", "version": "0.26.0"}, None),
    ("graphs_in_budget", THREE % {"reserve": 0.0, "sizing": "fixed", "version": "0.33.0"}, None),
    ("measured_graphs_in_budget", THREE % {"reserve": 0.05, "sizing": "measured", "version": "0.33.0"}, None),
    ("other_process_on_gpu", THREE % {"reserve": 0.02, "sizing": "fixed", "version": "0.26.0"}, [BUSY_H100]),
    (
        "mixed_gpus_and_tp",
        """
        defaults: {strategy: spread}
        models:
          - {name: big, model: Qwen/Qwen2.5-32B-Instruct, tensor_parallel_size: 2, max_model_len: 8192}
          - {name: small, model: Qwen/Qwen2.5-3B-Instruct, max_model_len: 8192, concurrency: 4}
          - {name: phi, model: microsoft/Phi-3-mini-4k-instruct, concurrency: 16}
        """,
        "A100-80GB,H100,L4",
    ),
]


@pytest.mark.parametrize(("case", "text", "gpus"), INVARIANT_CASES, ids=[c[0] for c in INVARIANT_CASES])
def test_start_order_and_utilization_invariants(case: str, text: str, gpus: str | list[Gpu] | None) -> None:
    plan = plan_of(text, gpus)
    listed = (
        parse_gpu_spec(gpus) if isinstance(gpus, str) else gpus or (profile_of(text).described_gpus() or [])
    )
    assert plan.feasible, (plan.unplaced, plan.problems)
    assert_start_checks_pass(plan, listed)


def test_memory_left_over_goes_to_kv_caches() -> None:
    plan = plan_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"})
    (gpu,) = plan.gpus
    # Whole blocks: less than one block per instance stays idle.
    idle = gpu.usable_bytes - gpu.planned_bytes
    assert 0 <= idle < sum(estimate_of(i).kv_block_bytes for i in plan.instances)
    assert all(
        i.kv_cache_memory_bytes and i.kv_cache_memory_bytes > i.kv_target_bytes for i in plan.instances
    )


def test_other_processes_shrink_the_bin() -> None:
    free = plan_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"}, "H100")
    busy = plan_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"}, [BUSY_H100])
    assert busy.gpus[0].other_processes_bytes == 6 * GiB
    assert busy.gpus[0].usable_bytes == free.gpus[0].usable_bytes - 6 * GiB
    # Our own processes (being re-planned) do not count against us.
    own = build_plan(
        profile_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"}),
        StaticInventory([BUSY_H100]),
        load=LOAD,
        own_pids=[4242],
    )
    assert own.gpus[0].usable_bytes == free.gpus[0].usable_bytes


# --- argv and env ----------------------------------------------------------------------------


def test_argv_and_env_for_a_fixed_kv_instance() -> None:
    plan = plan_of(
        """
        gpus: 2xH100
        defaults: {kv_cache_dtype: fp8, host: 0.0.0.0, base_port: 9000}
        models:
          - name: qwen
            model: Qwen/Qwen2.5-7B-Instruct
            max_model_len: 8192
            gpus: [1]
            max_num_seqs: 64
            enforce_eager: true
            extra_args: [--swap-space, "4"]
            env: {VLLM_LOGGING_LEVEL: DEBUG}
            mps_thread_percentage: 50
        """
    )
    (inst,) = plan.instances
    assert inst.gpus == (1,)
    assert inst.env == {
        "VLLM_LOGGING_LEVEL": "DEBUG",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "1",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
    }
    util = f"{inst.gpu_memory_utilization:.4f}".rstrip("0").rstrip(".")
    assert inst.argv == (
        "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name", "qwen", "--host", "0.0.0.0", "--port", "9000",
        "--max-model-len", "8192",
        "--gpu-memory-utilization", util,
        "--kv-cache-memory-bytes", str(inst.kv_cache_memory_bytes),
        "--kv-cache-dtype", "fp8", "--max-num-seqs", "64", "--enforce-eager",
        "--swap-space", "4",
    )  # fmt: skip
    assert "CUDA_VISIBLE_DEVICES=1" in command_line(inst)
    assert plan.mps == "off"  # one instance per GPU: no MPS daemon needed


@pytest.mark.parametrize(
    ("case", "command", "head"),
    [
        ("vllm_serve", ["vllm", "serve"], ["vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct"]),
        (
            "api_server_module",
            ["python", "-m", "vllm.entrypoints.openai.api_server"],
            ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-0.5B-Instruct"],
        ),
    ],
)
def test_command_passes_the_model_where_it_expects_it(case: str, command: list[str], head: list[str]) -> None:
    plan = plan_of(
        f"""
        gpus: L4
        defaults: {{command: {command}}}
        models: [{{name: tiny, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 4096}}]
        """
    )
    assert list(plan.instances[0].argv[: len(head)]) == head


def test_measured_sizing_passes_no_kv_size() -> None:
    plan = plan_of(THREE % {"reserve": 0.1, "sizing": "measured", "version": "0.26.0"})
    for inst in plan.instances:
        assert not inst.kv_fixed
        assert inst.kv_cache_memory_bytes is None
        assert "--kv-cache-memory-bytes" not in inst.argv
        assert estimate_of(inst).kv_cache_bytes >= inst.kv_target_bytes
    assert any("one at a time" in n for n in plan.notes)


def test_cpu_device_fixes_kv_and_passes_no_utilization() -> None:
    plan = plan_of(
        """
        device: cpu
        defaults: {dtype: float32}
        models:
          - {name: a, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 1024, concurrency: 2}
          - {name: b, model: Qwen/Qwen3-0.6B, max_model_len: 1024}
        """,
        [],
    )
    assert plan.feasible
    for inst in plan.instances:
        assert inst.gpus == ()
        assert "--gpu-memory-utilization" not in inst.argv
        assert "CUDA_VISIBLE_DEVICES" not in inst.env
        assert inst.kv_fixed
        assert estimate_of(inst).block_size == 128
        assert inst.kv_cache_memory_bytes == inst.kv_target_bytes
        i = inst.argv.index("--kv-cache-memory-bytes")
        assert inst.argv[i + 1] == str(inst.kv_cache_memory_bytes)
        assert "--dtype" in inst.argv and "float32" in inst.argv


def test_tensor_parallel_spans_gpus_with_one_start_group() -> None:
    plan = plan_of(
        """
        gpus: 4xL40S
        models:
          - {name: big, model: Qwen/Qwen2.5-32B-Instruct, tensor_parallel_size: 2, max_model_len: 8192}
          - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, gpus: [0]}
          - {name: b, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, gpus: [3]}
        """
    )
    assert plan.feasible, plan.unplaced
    by_name = {i.name: i for i in plan.instances}
    big = by_name["big"]
    assert len(big.gpus) == 2
    assert "--tensor-parallel-size" in big.argv
    assert big.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, big.gpus))
    if 0 in big.gpus:
        assert by_name["a"].start_group == big.start_group
        assert big.start_order < by_name["a"].start_order  # TP instances start first in a group


def test_mps_auto_when_instances_share_a_gpu() -> None:
    plan = plan_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"})
    assert plan.mps == "auto"


# --- does not fit ----------------------------------------------------------------------------

# (case id, profile, GPUs, fragment expected among the suggestions)
OVERCOMMITTED: list[tuple[str, str, str, str]] = [
    (
        "shorter_context",
        "models: [{name: llama, model: meta-llama/Llama-3.1-8B-Instruct, concurrency: 2}]",
        "L4",
        "max_model_len: ",
    ),
    (
        "fp8_kv_cache",
        "models: [{name: llama, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 16384, "
        "concurrency: 2}]",
        "A10",
        "kv_cache_dtype: fp8",
    ),
    (
        "fewer_requests",
        "models: [{name: qwen, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 64}]",
        "A100-40GB",
        "concurrency: ",
    ),
    (
        "quantized_variant",
        "models: [{name: qwen32, model: Qwen/Qwen2.5-32B-Instruct, max_model_len: 4096}]",
        "L40S",
        "model: Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4",
    ),
    (
        "larger_gpu",
        "models: [{name: qwen72, model: Qwen/Qwen2.5-72B-Instruct, max_model_len: 4096}]",
        "H100",
        "a larger GPU: an NVIDIA B200",
    ),
    (
        "tensor_parallel",
        "models: [{name: qwen32, model: Qwen/Qwen2.5-32B-Instruct, max_model_len: 4096}]",
        "2xA100-40GB",
        "tensor_parallel_size: 2",
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "gpus", "fragment"), OVERCOMMITTED, ids=[c[0] for c in OVERCOMMITTED]
)
def test_unplaced_models_explain_themselves(case: str, text: str, gpus: str, fragment: str) -> None:
    plan = plan_of(text, gpus)
    assert not plan.feasible
    (u,) = plan.unplaced
    assert u.short_by_bytes > 0
    assert u.gpus, "names the GPU it came closest on"
    assert "short by" in u.reason and "GPU" in u.reason
    assert any(fragment in s for s in u.suggestions), u.suggestions


def test_suggested_context_length_really_fits() -> None:
    text = "models: [{name: llama, model: meta-llama/Llama-3.1-8B-Instruct, concurrency: 2}]"
    plan = plan_of(text, "L4")
    suggestion = next(s for s in plan.unplaced[0].suggestions if s.startswith("max_model_len: "))
    length = int(suggestion.split()[1])
    fixed = plan_of(text.replace("concurrency: 2", f"concurrency: 2, max_model_len: {length}"), "L4")
    assert fixed.feasible, fixed.unplaced


def test_priority_decides_who_is_left_out() -> None:
    text = """
    models:
      - {name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, priority: %s}
      - {name: b, model: meta-llama/Llama-3.1-8B-Instruct, max_model_len: 8192, priority: %s}
    """
    assert [u.name for u in plan_of(text % (0, 1), "A10").unplaced] == ["a"]
    assert [u.name for u in plan_of(text % (1, 0), "A10").unplaced] == ["b"]


def test_more_than_64_instances_report_the_lp_bound() -> None:
    models = "\n".join(
        f"  - {{name: m{i}, model: Qwen/Qwen2.5-0.5B-Instruct, max_model_len: 2048}}" for i in range(70)
    )
    plan = plan_of(f"models:\n{models}\n", "8xH100")
    assert plan.method == "heuristic"
    assert plan.lp_bound is not None
    assert any("LP bound" in n and "70 instances" in n for n in plan.notes)


def test_memory_model_rejections_are_profile_errors() -> None:
    profile = profile_of("models: [{name: a, model: Qwen/Qwen2.5-7B-Instruct, kv_tokens: 1}]")
    facts = {"Qwen/Qwen2.5-7B-Instruct": LOAD("Qwen/Qwen2.5-7B-Instruct")}
    plan = build_plan(profile, parse_gpu_spec("H100"), models=facts)
    assert plan.feasible  # one request of max_model_len is the floor, not an error
    with pytest.raises(ProfileValidationError):
        build_plan(profile_of("models: [{name: a, model: nobody/none}]"), parse_gpu_spec("H100"))


def test_json_shape() -> None:
    # `plan --json` keeps its first keys in their order and adds what a plan file needs after them.
    data = plan_of(THREE % {"reserve": 0.1, "sizing": "fixed", "version": "0.26.0"}).to_json()
    assert list(data)[:4] == ["feasible", "gpus", "instances", "unplaced"]
    assert set(data) == {
        "feasible", "gpus", "instances", "unplaced", "format", "profile", "mps", "notes", "strategy",
        "method", "optimal", "lp_bound", "overcommitted",
    }  # fmt: skip
    first_gpu_keys = ["index", "name", "total_bytes", "reserved_bytes", "free_bytes", "instances"]
    assert list(data["gpus"][0])[:6] == first_gpu_keys
    assert list(data["instances"][0])[:10] == [
        "name", "model", "gpus", "port", "start_order", "gpu_memory_utilization",
        "kv_cache_memory_bytes", "estimate", "argv", "env",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "budget", "total"),
    [("exact", 40 * GiB, 80 * GiB), ("odd", 12_345_678_901, 85_017_493_504), ("tiny", 1, 24 * GiB)],
)
def test_utilization_for_is_the_least_that_covers(case: str, budget: int, total: int) -> None:
    util = utilization_for(budget, total)
    assert math.ceil(total * util) >= budget
    assert math.ceil(total * round(util - 0.0001, 4)) < budget or util <= 0.0001
