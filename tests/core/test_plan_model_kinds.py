"""Issue 11's model kinds (vision towers, pooling and encoder-only models, gpt-oss) through the
planning paths that other issues added: a plan file (`Plan.to_json` / `from_json`) and the
calibration key read back from it, MIG slices, on-demand instances and `export k8s`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gpushare.calibration import key_from_planned
from gpushare.catalog.gpus import parse_gpu_spec
from gpushare.export.k8s.modes import plan_for_mode
from gpushare.memory import Estimate
from gpushare.memory.asleep import ASLEEP_NOTE
from gpushare.planning.build import build_plan, plan_loader
from gpushare.planning.plan import Plan, PlannedInstance
from gpushare.profile import parse_profile_text
from gpushare.vllm.command import VllmCommand

LOAD = plan_loader({})

# A RAG stack beside a vision model and gpt-oss on one H200: the chat model on vLLM's V1 runner
# (its CUDA-graph estimate inside the budget), a vision tower with limits, two encoder-only pooling
# models (no KV cache) and a decoder embedder.
RAG = """
name: rag
gpus: %(gpus)s
models:
  - {name: chat, model: openai/gpt-oss-20b, max_model_len: 8192, concurrency: 4}
  - {name: vision, model: Qwen/Qwen2.5-VL-7B-Instruct, max_model_len: 8192, concurrency: 2,
     modalities: {image: 2, video: 0}}
  - {name: embed, model: BAAI/bge-m3, max_model_len: 8192, concurrency: 1}
  - {name: rerank, model: BAAI/bge-reranker-v2-m3, max_model_len: 8192, concurrency: 1}
  - {name: qembed, model: Qwen/Qwen3-Embedding-0.6B, max_model_len: 8192, concurrency: 4}
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def plan_of(text: str, gpus: str | None = None) -> Plan:
    profile = parse_profile_text(textwrap.dedent(text).lstrip("\n"), "test.yaml")
    listed = parse_gpu_spec(gpus) if gpus else profile.described_gpus() or []
    return build_plan(profile, listed, load=LOAD)


def by_name(plan: Plan) -> dict[str, PlannedInstance]:
    return {i.name: i for i in plan.instances}


def rag(gpus: str = "H200") -> Plan:
    plan = plan_of(RAG % {"gpus": gpus})
    assert plan.feasible, (plan.unplaced, plan.problems)
    return plan


# --- a plan file --------------------------------------------------------------------------------


def test_the_plan_file_reads_back_every_kind() -> None:
    plan = rag()
    text = json.dumps(plan.to_json())
    back = Plan.from_json(json.loads(text))
    assert back == plan
    assert json.dumps(back.to_json()) == text


def test_the_v1_runners_graph_estimate_reads_back() -> None:
    """gpt-oss on the V1 runner: vLLM subtracts its own CUDA-graph estimate, not the graphs' size
    (Budget.cuda_graph_estimate_bytes). The plan file carries it, so a plan read back keeps the
    budget (and `export k8s` recomputes utilizations from the same numbers)."""
    chat = by_name(rag())["chat"]
    assert chat.estimate is not None
    budget = chat.estimate.budget
    assert budget.cuda_graph_in_budget and budget.cuda_graph_estimate_bytes is not None
    assert budget.cuda_graph_estimate_bytes != budget.cuda_graph_bytes
    data = chat.estimate.to_json()
    assert data["cuda_graph_estimate_bytes"] == budget.cuda_graph_estimate_bytes
    assert Estimate.from_json(json.loads(json.dumps(data))) == chat.estimate
    # the other estimates keep the keys they had
    vision = by_name(rag())["vision"].estimate
    assert vision is not None and "cuda_graph_estimate_bytes" not in vision.to_json()


def test_calibration_keys_read_back_from_the_plan_file() -> None:
    plan = rag()
    back = by_name(Plan.from_json(json.loads(json.dumps(plan.to_json()))))
    for inst in plan.instances:
        assert key_from_planned(back[inst.name]) == key_from_planned(inst), inst.name
    keys = {i.name: key_from_planned(i) for i in plan.instances}
    assert (keys["vision"].runner, keys["vision"].modalities) == ("generate", '{"image":2,"video":0}')
    assert {keys[n].runner for n in ("embed", "rerank", "qembed")} == {"pooling"}


# --- MIG slices ---------------------------------------------------------------------------------

MIG = """
name: rag-mig
gpus:
  - gpu: H200
    mig: "3g.71gb:0,2g.35gb:4,1g.18gb:6"
models:
  - {name: vision, model: Qwen/Qwen2.5-VL-7B-Instruct, max_model_len: 8192, concurrency: 2,
     modalities: {image: 2, video: 0}}
  - {name: embed, model: BAAI/bge-m3, max_model_len: 8192, concurrency: 1}
  - {name: qembed, model: Qwen/Qwen3-Embedding-0.6B, max_model_len: 8192, concurrency: 4}
"""


def test_pooling_and_vision_models_on_mig_slices() -> None:
    """One instance per slice with a fixed KV size and the batching limits written out, except
    that an encoder-only model keeps no KV cache: no --kv-cache-memory-bytes (the plan on a whole
    GPU passes none either), and its batch is raised to max_model_len as vLLM does without
    chunked prefill (memory/settings.py with_batching_defaults)."""
    plan = plan_of(MIG)
    assert plan.feasible and plan.uses_mig, (plan.unplaced, plan.problems)
    insts = by_name(plan)
    assert all(i.mig_slice is not None for i in plan.instances)
    embed = VllmCommand.from_argv(insts["embed"].argv)
    assert embed.kv_cache_memory_bytes is None and not insts["embed"].kv_fixed
    assert embed.runner == "pooling"
    assert embed.max_num_batched_tokens is not None and embed.max_num_batched_tokens >= 8192
    assert embed.max_num_seqs is not None
    for name in ("vision", "qembed"):
        command = VllmCommand.from_argv(insts[name].argv)
        assert command.kv_cache_memory_bytes == insts[name].kv_cache_memory_bytes is not None
        assert command.max_num_seqs is not None and command.max_num_batched_tokens is not None
    vision = VllmCommand.from_argv(insts["vision"].argv)
    assert vision.limit_mm_per_prompt == (("image", 2), ("video", 0))
    assert insts["embed"].env["CUDA_VISIBLE_DEVICES"].startswith("MIG-")
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


# --- on-demand ----------------------------------------------------------------------------------

ON_DEMAND = """
name: rag-on-demand
gpus: H200
host_memory: 256GiB
models:
  - {name: chat, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192, concurrency: 8}
  - {name: vision, model: Qwen/Qwen2.5-VL-7B-Instruct, max_model_len: 8192, concurrency: 2,
     residency: on-demand}
  - {name: text-only, model: google/gemma-3-4b-it, max_model_len: 8192, concurrency: 2,
     modalities: off, residency: on-demand}
  - {name: embed, model: BAAI/bge-m3, max_model_len: 8192, concurrency: 1, residency: on-demand}
"""


def test_on_demand_vision_and_pooling_models_say_what_is_not_modelled() -> None:
    plan = plan_of(ON_DEMAND)
    assert plan.feasible, (plan.unplaced, plan.problems)
    insts = by_name(plan)
    vision_notes = [n for n in plan.notes if n.startswith("vision: ")]
    assert f"vision: {ASLEEP_NOTE}" in vision_notes
    assert any("vision tower: not measured" in n and "M-RoPE" in n for n in vision_notes)
    # Gemma-3 with `modalities: off` sleeps as a text model; its asleep terms were still fitted on
    # other models' kind only when it is one (it is not: dense, generate, one GPU)
    assert not [n for n in plan.notes if n.startswith("text-only: ") and "asleep" in n]
    assert f"embed: {ASLEEP_NOTE}" in plan.notes
    embed = insts["embed"]
    assert embed.asleep_bytes > 0 and embed.kv_cache_memory_bytes is None
    assert "--enable-sleep-mode" in embed.argv
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


# --- export k8s ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gpu-pod", "hami", "time-slicing"])
def test_export_keeps_each_kinds_flags(mode: str) -> None:
    """Each pod runs the plan's command: the vision limits, --runner pooling and --convert, and no
    --kv-cache-memory-bytes for an encoder-only model (which the modes that recompute the KV flag
    must not add: `--kv-cache-memory-bytes 0`)."""
    plan = rag()
    exported = plan_for_mode(plan, mode)  # type: ignore[arg-type]
    commands = {}
    for pod in exported.pods:
        if pod.vllm_argv:
            commands[pod.key] = VllmCommand.from_argv(pod.vllm_argv)
        else:  # gpu-pod: gpushare runs the group's sub-plan
            commands.update({i.name: i.command for i in pod.instances})
    assert set(commands) == {i.name for i in plan.instances}
    for name in ("embed", "rerank"):
        assert commands[name].kv_cache_memory_bytes is None, (mode, name)
        assert commands[name].runner == "pooling"
    assert (commands["qembed"].runner, commands["qembed"].convert) == ("pooling", "embed")
    assert commands["qembed"].kv_cache_memory_bytes is not None
    assert commands["vision"].limit_mm_per_prompt == (("image", 2), ("video", 0))
    assert not [n for n in exported.notes if "embed" in n or "rerank" in n]
