"""Calibration: vLLM's accounting read from real GPU logs, records, the store, and the planner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gpushare.calibration import (
    CalibrationKey,
    CalibrationStore,
    RecordLookup,
    key_for,
    measuring_argv,
    record_from_run,
)
from gpushare.devices.base import Gpu
from gpushare.errors import ConfigError
from gpushare.estimate_job import load_model, run_estimate
from gpushare.memory import Estimate, GpuTarget, ServeSettings, estimate
from gpushare.memory.cudagraphs import cudagraphs_in_budget
from gpushare.planning.build import build_plan
from gpushare.planning.plan import PlannedInstance
from gpushare.profile import parse_profile_text
from gpushare.units import GiB
from gpushare.vllm.log import parse_vllm_log


def estimate_of(inst: PlannedInstance) -> Estimate:
    assert inst.estimate is not None, inst.name
    return inst.estimate


LOGS = Path(__file__).parents[1] / "fixtures" / "vllm_logs"
LLAMA_LOG = (LOGS / "h200-vllm0.26.0-llama-3.1-8b.log").read_text()
H200_GPU = Gpu(0, "NVIDIA H200", 150_754_820_096, reserved_bytes=644_939_776)
H200 = GpuTarget("NVIDIA H200", 150_109_880_320, 150_754_820_096)
# The same run's numbers (bench/gpu/results/h200-vllm0.26.0): utilization 0.45, NVML at ready.
REQUESTED = math.ceil(150_109_880_320 * 0.45)
PROCESS = 69_415_731_200


def llama_key() -> CalibrationKey:
    facts = load_model("meta-llama/Llama-3.1-8B-Instruct")
    return key_for(facts, H200, ServeSettings(max_model_len=8192))


def test_calibrated_estimate_reproduces_the_run_and_moves_with_utilization() -> None:
    record = record_from_run(
        llama_key(),
        parse_vllm_log(LLAMA_LOG),
        REQUESTED,
        PROCESS,
        "2026-11-24T20:31:34",
        graphs_in_budget=False,
    )
    arch = load_model("meta-llama/Llama-3.1-8B-Instruct").arch
    same = estimate(
        arch, H200, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.45, measured=record.terms
    )
    assert same.weights_source == "calibration"
    assert abs(same.kv_cache_tokens - 381_552) / 381_552 < 0.005
    assert abs(same.process_bytes - PROCESS) / PROCESS < 0.005
    more = estimate(
        arch, H200, ServeSettings(max_model_len=8192), gpu_memory_utilization=0.6, measured=record.terms
    )
    extra = math.ceil(150_109_880_320 * 0.6) - REQUESTED
    assert abs((more.kv_cache_bytes - same.kv_cache_bytes) - extra) < more.kv_block_bytes
    assert more.process_bytes - same.process_bytes == extra


def test_store_round_trip_newest_wins(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path / "cal.json")
    assert store.load() == {}
    first = record_from_run(
        llama_key(), parse_vllm_log(LLAMA_LOG), REQUESTED, PROCESS, "t1", graphs_in_budget=False
    )
    second = record_from_run(
        llama_key(), parse_vllm_log(LLAMA_LOG), REQUESTED, PROCESS + GiB, "t2", graphs_in_budget=False
    )
    store.save([first])
    store.save([second])
    loaded = store.load()
    assert list(loaded.values()) == [second]


def test_malformed_store_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text('{"records": [{"key": {"gpu": "x"}}]}')
    with pytest.raises(ConfigError, match="cal.json: a calibration record is malformed"):
        CalibrationStore(path).load()


def test_measuring_argv_drops_the_fixed_kv_size() -> None:
    argv = (
        "vllm",
        "serve",
        "m",
        "--kv-cache-memory-bytes",
        "123",
        "--port",
        "1",
        "--kv-cache-memory-bytes=5",
    )
    assert measuring_argv(argv) == ("vllm", "serve", "m", "--port", "1")


PROFILE = """
name: cal
gpus: H200
models:
  - name: llama
    model: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 8192
    concurrency: 16
"""


def test_plan_uses_a_matching_record_and_says_so() -> None:
    profile = parse_profile_text(PROFILE)
    plain = build_plan(profile, [H200_GPU])
    record = record_from_run(
        llama_key(),
        parse_vllm_log(LLAMA_LOG),
        REQUESTED,
        PROCESS + 2 * GiB,
        "2026-11-24T20:31:34",
        graphs_in_budget=False,
    )
    lookup = RecordLookup({record.key: record})
    calibrated = build_plan(profile, [H200_GPU], calibration=lookup)
    assert estimate_of(plain.instances[0]).weights_source == "config"
    assert estimate_of(calibrated.instances[0]).weights_source == "calibration"
    assert any("calibrated" in note and "llama" in note for note in calibrated.notes)
    assert not any("calibrated" in note for note in plain.notes)
    # The record's larger footprint (2 GiB more outside the budget) leaves less for the KV cache
    # once the instance is given the rest of the GPU.
    plain_kv = plain.instances[0].kv_cache_memory_bytes
    calibrated_kv = calibrated.instances[0].kv_cache_memory_bytes
    assert plain_kv is not None and calibrated_kv is not None and calibrated_kv < plain_kv - GiB


def test_a_record_for_other_settings_is_not_used() -> None:
    record = record_from_run(
        llama_key(), parse_vllm_log(LLAMA_LOG), REQUESTED, PROCESS, "t", graphs_in_budget=False
    )
    profile = parse_profile_text(
        PROFILE.replace("concurrency: 16", "concurrency: 16\n    enforce_eager: true")
    )
    plan = build_plan(profile, [H200_GPU], calibration=RecordLookup({record.key: record}))
    assert estimate_of(plan.instances[0]).weights_source == "config"


def test_record_json_is_plain(tmp_path: Path) -> None:
    record = record_from_run(
        llama_key(), parse_vllm_log(LLAMA_LOG), REQUESTED, PROCESS, "t", graphs_in_budget=False
    )
    CalibrationStore(tmp_path / "c.json").save([record])
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["records"][0]["key"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert data["records"][0]["process_bytes"] == PROCESS


def test_a_calibrated_inverse_estimate_uses_the_record() -> None:
    facts = load_model("meta-llama/Llama-3.1-8B-Instruct")
    settings = ServeSettings(max_model_len=8192)
    record = record_from_run(
        llama_key(), parse_vllm_log(LLAMA_LOG), REQUESTED, PROCESS, "t", graphs_in_budget=False
    )
    for target in ({"concurrency": 16}, {"kv_tokens": 100_000}):
        plain = run_estimate(facts, H200, settings, **target)  # type: ignore[arg-type]
        calibrated = run_estimate(facts, H200, settings, measured=record.terms, **target)  # type: ignore[arg-type]
        assert plain.weights_source != "calibration"
        assert calibrated.weights_source == "calibration"
        assert calibrated.budget.weights_bytes == record.terms.weights_bytes
        assert calibrated.budget.activation_bytes == record.terms.activation_bytes
        # The same KV target, the measured terms around it: the footprint follows the record.
        assert calibrated.kv_cache_bytes == plain.kv_cache_bytes
        forward = run_estimate(
            facts,
            H200,
            settings,
            gpu_memory_utilization=calibrated.gpu_memory_utilization,
            measured=record.terms,
        )
        assert forward.kv_cache_bytes >= calibrated.kv_cache_bytes


# Qwen3-30B-A3B-FP8 on an H100 (bench/gpu/results/h100-vllm0.26.0): MoE on the V1 runner, whose
# profiler estimates the CUDA graphs inside the budget ("Estimated CUDA graph memory: 0.74 GiB").
MOE_LOG = (LOGS / "h100-vllm0.26.0-qwen3-30b-a3b-fp8.log").read_text()
H100 = GpuTarget("NVIDIA H100 80GB HBM3", 85_017_493_504, 85_520_809_984)
MOE_REQUESTED = math.ceil(85_017_493_504 * 0.6)
MOE_CONTEXT = 1536 << 20  # NVML gave no reading in that run: any context above the graphs shows the rule


def test_graphs_inside_the_budget_are_not_taken_from_outside_it() -> None:
    facts = load_model("Qwen/Qwen3-30B-A3B-Thinking-2507-FP8")
    settings = ServeSettings(max_model_len=8192)
    assert cudagraphs_in_budget(settings, facts.arch)  # the rule this model is under
    accounting = parse_vllm_log(MOE_LOG)
    assert accounting.cuda_graph_bytes == round(0.82 * GiB)
    # vLLM filled its request, graphs included: the process is the request plus the context.
    process = MOE_REQUESTED + MOE_CONTEXT
    record = record_from_run(
        key_for(facts, H100, settings), accounting, MOE_REQUESTED, process, "t", graphs_in_budget=True
    )
    assert record.terms.outside_bytes == MOE_CONTEXT
    again = estimate(facts.arch, H100, settings, gpu_memory_utilization=0.6, measured=record.terms)
    assert again.cuda_graph_in_budget
    assert abs(again.process_bytes - process) < 1 << 20
    # The same run read as if the graphs were outside: their bytes vanish from the footprint.
    wrong = record_from_run(
        key_for(facts, H100, settings), accounting, MOE_REQUESTED, process, "t", graphs_in_budget=False
    )
    assert wrong.terms.outside_bytes == MOE_CONTEXT - accounting.cuda_graph_bytes


def test_graphs_outside_the_budget_are_taken_from_outside_it() -> None:
    # Llama-3.1-8B on vLLM 0.26 (V2 runner): the graphs come on top of the request.
    assert not cudagraphs_in_budget(
        ServeSettings(max_model_len=8192), load_model("meta-llama/Llama-3.1-8B-Instruct").arch
    )
    accounting = parse_vllm_log(LLAMA_LOG)
    record = record_from_run(llama_key(), accounting, REQUESTED, PROCESS, "t", graphs_in_budget=False)
    assert record.terms.outside_bytes == PROCESS - REQUESTED - accounting.cuda_graph_bytes
