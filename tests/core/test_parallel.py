"""What tensor parallelism adds per GPU (memory/parallel.py): NCCL, custom all-reduce and symmetric
memory, outside vLLM's budget. The numbers are worked out by hand from vLLM 0.26.0's and NCCL
v2.28.9-1's source (the module's docstrings); no GPU measured them yet."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gpushare.hfconfig import ModelArch, parse_config
from gpushare.memory import Coefficients, GpuTarget, MeasuredTerms, ServeSettings, estimate
from gpushare.memory.activation import sampler_warmup_bytes
from gpushare.memory.parallel import (
    nccl_communicator_bytes,
    nccl_connection_bytes,
    parallel_terms,
)
from gpushare.units import GiB, MiB

HF_CONFIGS = Path(__file__).parents[1] / "fixtures" / "hf_configs"
H200 = GpuTarget("NVIDIA H200", cuda_total_bytes=150_109_880_320, nvml_total_bytes=150_754_820_096)
A100_80 = GpuTarget(
    "NVIDIA A100-SXM4-80GB",
    cuda_total_bytes=int(79.15 * GiB),
    nvml_total_bytes=85_899_345_920,
    is_a100=True,
    compute_capability=(8, 0),
)


def arch_of(repo_id: str) -> ModelArch:
    cfg = json.loads((HF_CONFIGS / (repo_id.replace("/", "--", 1) + ".json")).read_text())
    return parse_config(cfg, repo_id)


DENSE = "Qwen/Qwen2.5-72B-Instruct"
MOE = "Qwen/Qwen3-30B-A3B-Thinking-2507-FP8"


def test_one_nccl_connection_is_a_10_mib_receive_buffer_and_a_2_mib_send_header() -> None:
    # receive: 4 KiB header + LL 512 KiB + LL128 4,915,200 B + Simple 4 MiB = 9,637,888 B -> 10 MiB
    assert nccl_connection_bytes() == 10 * MiB + 2 * MiB


def test_one_communicator_on_nvlink() -> None:
    # 32 p2p channels x 3 allocations x 2 MiB + 2 x 2 MiB + 24 collective channels x 12 MiB
    assert nccl_communicator_bytes(Coefficients()) == (192 + 4 + 288) * MiB
    fewer = Coefficients(nccl_coll_channels=4, nccl_p2p_channels=4)
    assert nccl_communicator_bytes(fewer) == (24 + 4 + 48) * MiB


# case id, model, tp, compute capability, communicators, NCCL, custom all-reduce, symmetric memory
TERMS = [
    ("dense-tp2-hopper", DENSE, 2, (9, 0), 1, 484, 38, 66),
    ("dense-tp4-hopper", DENSE, 4, (9, 0), 1, 484, 38, 34),
    ("dense-tp8-hopper", DENSE, 8, (9, 0), 1, 484, 38, 66),
    ("dense-tp2-ampere", DENSE, 2, (8, 0), 1, 484, 38, 0),  # no symmetric-memory table for sm80
    ("dense-tp2-blackwell", DENSE, 2, (10, 0), 1, 484, 38, 10),
    ("dense-tp7-hopper", "Qwen/Qwen2.5-0.5B-Instruct", 7, (9, 0), 1, 484, 0, 0),  # no custom AR
    ("moe-tp2-hopper", MOE, 2, (9, 0), 2, 968, 38, 66),  # + the EP group's communicator
    ("dense-tp1", DENSE, 1, (9, 0), 0, 0, 0, 0),
]


@pytest.mark.parametrize(
    ("case", "repo", "tp", "cc", "comms", "nccl", "custom_ar", "symm"), TERMS, ids=[t[0] for t in TERMS]
)
def test_parallel_terms(
    case: str, repo: str, tp: int, cc: tuple[int, int], comms: int, nccl: int, custom_ar: int, symm: int
) -> None:
    terms = parallel_terms(arch_of(repo), tp, cc, Coefficients())
    assert terms.nccl_communicators == comms
    assert (terms.nccl_bytes, terms.custom_all_reduce_bytes, terms.symm_mem_bytes) == (
        nccl * MiB,
        custom_ar * MiB,
        symm * MiB,
    )
    assert terms.outside_bytes == (nccl + custom_ar + symm) * MiB


def test_tp_buffers_sit_outside_the_budget() -> None:
    """vLLM sizes its KV cache from a snapshot taken after NCCL and the all-reduce buffers exist:
    they raise the footprint, never shrink the KV cache."""
    arch = arch_of(DENSE)
    settings = ServeSettings(max_model_len=8192, tensor_parallel_size=2)
    e = estimate(arch, H200, settings)
    assert e.budget.parallel_bytes == 588 * MiB
    assert e.kv_cache_bytes <= e.requested_bytes - e.budget.overhead_bytes
    assert e.budget.overhead_bytes == e.weights_bytes + e.activation_bytes + e.non_torch_bytes
    assert e.non_torch_bytes == Coefficients().non_torch_bytes  # TP adds nothing inside
    assert e.process_bytes == e.requested_bytes + e.budget.outside_bytes
    assert e.budget.outside_bytes == e.budget.context_bytes + 588 * MiB + e.cuda_graph_bytes

    more_channels = estimate(arch, H200, settings, coeff=Coefficients(nccl_coll_channels=32))
    assert more_channels.kv_cache_tokens == e.kv_cache_tokens
    assert more_channels.process_bytes - e.process_bytes == 8 * 12 * MiB


def test_tp_note_names_the_buffers_and_that_they_are_not_measured() -> None:
    arch = arch_of(DENSE)
    e = estimate(arch, H200, ServeSettings(max_model_len=8192, tensor_parallel_size=2))
    (note,) = [n for n in e.notes if n.startswith("tensor parallel")]
    assert "588.00 MiB per GPU" in note and "not yet measured" in note
    assert e.to_json()["parallel_bytes"] == 588 * MiB
    single = estimate(arch_of("Qwen/Qwen2.5-7B-Instruct"), H200, ServeSettings(max_model_len=8192))
    assert single.budget.parallel_bytes == 0 and single.to_json()["parallel_bytes"] == 0
    assert not any(n.startswith("tensor parallel") for n in single.notes)


def test_a100_has_no_symmetric_memory_buffer() -> None:
    e = estimate(arch_of(DENSE), A100_80, ServeSettings(max_model_len=4096, tensor_parallel_size=4))
    assert e.budget.parallel_bytes == (484 + 38) * MiB


def test_sampler_warmup_holds_the_whole_vocabulary_on_every_rank() -> None:
    """The logits are all-gathered before sampling (logits_processor.py), so the warm-up's
    buffers do not shrink with TP."""
    arch = arch_of(DENSE)
    coeff = Coefficients()
    rows = 1024
    expected = int(coeff.sampler_base_bytes + rows * arch.vocab_size * coeff.sampler_bytes_per_logit)
    assert sampler_warmup_bytes(arch, 8192, rows, coeff) == expected


def test_a_calibration_with_measured_outside_bytes_already_holds_the_tp_buffers() -> None:
    arch = arch_of(DENSE)
    settings = ServeSettings(max_model_len=8192, tensor_parallel_size=2)
    measured = MeasuredTerms(
        weights_bytes=68 * GiB,
        activation_bytes=GiB,
        non_torch_bytes=GiB // 4,
        cuda_graph_bytes=GiB,
        outside_bytes=2 * GiB,
    )
    e = estimate(arch, H200, settings, measured=measured)
    assert e.budget.parallel_bytes == 0
    assert e.budget.outside_bytes == 2 * GiB + GiB  # measured outside + graphs (not in budget here)
    no_nvml = dataclasses.replace(measured, outside_bytes=None)
    assert estimate(arch, H200, settings, measured=no_nvml).budget.parallel_bytes == 588 * MiB


def test_the_start_check_counts_the_tp_buffers_as_held() -> None:
    """vLLM's init snapshot comes after the distributed setup (gpu_worker.py::init_device), so the
    free memory it checks the request against is already short of the TP buffers."""
    e = estimate(arch_of(DENSE), H200, ServeSettings(max_model_len=8192, tensor_parallel_size=2))
    b, util, total = e.budget, e.gpu_memory_utilization, H200.cuda_total_bytes
    just = e.requested_bytes + b.context_bytes + b.parallel_bytes
    assert b.start_deficit_bytes(util, total, just) == 0
    assert b.start_deficit_bytes(util, total, just - MiB) == MiB
    without = dataclasses.replace(b, parallel_bytes=0)
    assert without.start_deficit_bytes(util, total, just) == -588 * MiB
