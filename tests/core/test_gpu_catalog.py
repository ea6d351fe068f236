"""The GPU catalog (names, aliases, driver totals) and the `--gpus` spec syntax."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpushare.catalog.gpus import (
    AMBIGUOUS_NAMES,
    GPU_MODELS,
    compute_capability_of,
    find_gpu_model,
    gpu_keys,
    lookup_gpu_model,
    normalize_gpu_name,
    parse_gpu_spec,
)
from gpushare.devices.base import Gpu
from gpushare.errors import InputError
from gpushare.estimate_job import gpu_target
from gpushare.memory import default_batching
from gpushare.units import GiB, MiB, format_bytes

# vLLM's large batch defaults for `vllm serve` (max_num_batched_tokens, max_num_seqs).
LARGE = (8192, 1024)


def test_h100_is_what_nvml_and_torch_report() -> None:
    h100 = lookup_gpu_model("H100")
    assert h100.nvml_name == "NVIDIA H100 80GB HBM3"
    assert h100.total_bytes == 85_520_809_984  # NVML total, measured
    assert h100.cuda_total_bytes == 85_017_493_504  # torch total_memory, measured
    assert format_bytes(h100.cuda_total_bytes) == "79.18 GiB"
    assert h100.compute_capability == (9, 0)


def test_h200_is_what_nvml_and_torch_report() -> None:
    h200 = lookup_gpu_model("h200")
    assert h200.total_bytes == 150_754_820_096
    assert h200.cuda_total_bytes == 150_109_880_320  # torch total_memory, measured


@pytest.mark.parametrize(
    ("case_id", "name", "key"),
    [
        ("short", "h100", "h100-sxm-80gb"),
        ("with-size", "H100-80GB", "h100-sxm-80gb"),
        ("nvml-name", "NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
        ("h100-pcie", "NVIDIA H100 PCIe", "h100-pcie-80gb"),
        ("h100-nvl", "H100 NVL", "h100-nvl-94gb"),
        ("a100-80g", "a100-80g", "a100-sxm-80gb"),
        ("a100-80gb-spaced", "A100 80GB", "a100-sxm-80gb"),
        ("a100-nvml-pcie", "NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("a100-40gb", "A100-40GB", "a100-sxm-40gb"),
        ("a100-nvml-pcie-40", "NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("bare-4090", "4090", "rtx-4090"),
        ("rtx-4090", "RTX 4090", "rtx-4090"),
        ("geforce-4090", "NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("rtx3090", "rtx3090", "rtx-3090"),
        ("rtx-5090", "RTX-5090", "rtx-5090"),
        ("tesla-t4", "Tesla T4", "t4-16gb"),
        ("t4", "T4", "t4-16gb"),
        ("l4", "L4", "l4-24gb"),
        ("l40-is-not-l40s", "L40", "l40-48gb"),
        ("l40s", "l40s", "l40s-48gb"),
        ("a10", "A10", "a10-24gb"),
        ("a10g", "A10G", "a10g-24gb"),
        ("a30", "a30", "a30-24gb"),
        ("a40", "A40", "a40-48gb"),
        ("v100-16", "V100-16GB", "v100-sxm-16gb"),
        ("v100-32-nvml", "Tesla V100-SXM2-32GB", "v100-sxm-32gb"),
        ("a6000", "RTX A6000", "rtx-a6000"),
        ("6000-ada", "RTX 6000 Ada", "rtx-6000-ada"),
        ("6000-ada-nvml", "NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("gh200-nvml", "NVIDIA GH200 480GB", "gh200-96gb"),
        ("gh200-144", "GH200-144GB", "gh200-144gb"),
        ("b200", "B200", "b200-180gb"),
        ("h200", "NVIDIA H200", "h200-141gb"),
        ("key-itself", "rtx-6000-ada", "rtx-6000-ada"),
    ],
)
def test_names_and_aliases(case_id: str, name: str, key: str) -> None:
    assert lookup_gpu_model(name).key == key


@pytest.mark.parametrize("model", GPU_MODELS, ids=lambda m: m.key)
def test_every_entry_is_consistent(model: object) -> None:
    from gpushare.catalog.gpus import GpuModel

    assert isinstance(model, GpuModel)
    assert find_gpu_model(model.nvml_name) is model
    assert model.total_bytes % MiB == 0  # NVML totals are whole MiB (nvidia-smi's figure × 2^20)
    # The driver keeps 0.3–2.5% of the memory on every card we have a figure for.
    assert 0.003 * model.total_bytes < model.reserved_bytes < 0.025 * model.total_bytes
    assert model.source
    assert gpu_target(model.as_gpu(0)).is_a100 is model.key.startswith("a100")


def test_keys_are_unique() -> None:
    assert len(set(gpu_keys())) == len(GPU_MODELS)


@pytest.mark.parametrize(
    ("case_id", "name", "large"),
    [
        ("h100", "NVIDIA H100 80GB HBM3", True),
        ("h200", "NVIDIA H200", True),
        ("b200", "NVIDIA B200", True),
        ("h100-nvl", "NVIDIA H100 NVL", True),
        ("a100-80gb-is-excluded-by-name", "NVIDIA A100-SXM4-80GB", False),
        ("a100-pcie-80gb", "NVIDIA A100 80GB PCIe", False),
        ("l40s-is-below-70gib", "NVIDIA L40S", False),
        ("rtx-6000-ada", "NVIDIA RTX 6000 Ada Generation", False),
    ],
)
def test_vllm_batch_defaults_follow_arg_utils(case_id: str, name: str, large: bool) -> None:
    model = lookup_gpu_model(name)
    assert (default_batching(gpu_target(model.as_gpu(0))) == LARGE) is large


@pytest.mark.parametrize(
    ("case_id", "total", "large"),
    [
        ("exactly-70gib", 70 * GiB, True),
        ("just-below", 70 * GiB - 1, False),
        ("80gb-decimal", 80 * 10**9, True),  # 74.5 GiB
    ],
)
def test_vllm_batch_defaults_threshold_for_unnamed_gpus(case_id: str, total: int, large: bool) -> None:
    target = gpu_target(Gpu(0, "80GB GPU", total))
    assert (default_batching(target) == LARGE) is large


def test_compute_capability_of() -> None:
    assert compute_capability_of("T4") == (7, 5)
    assert compute_capability_of("NVIDIA GeForce RTX 5090") == (12, 0)
    assert compute_capability_of("80GB GPU") == (9, 0)
    assert compute_capability_of("80GB GPU", default=(8, 0)) == (8, 0)


@pytest.mark.parametrize(
    ("case_id", "name", "message"),
    [
        ("typo-suggests", "H1000", "unknown GPU 'H1000'; did you mean"),
        ("near-miss-4080", "RTX 4080", "did you mean rtx-4090"),
        (
            "a100-is-ambiguous",
            "a100",
            "GPU 'a100' is ambiguous: say which one (a100-sxm-40gb, a100-sxm-80gb)",
        ),
        ("v100-is-ambiguous", "V100", "ambiguous"),
        ("gh200-is-ambiguous", "GH200", "ambiguous"),
        ("nonsense", "potato", "unknown GPU 'potato'"),
    ],
)
def test_unknown_and_ambiguous_names(case_id: str, name: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        lookup_gpu_model(name)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    if "unknown" in message:
        assert caught.value.hint is not None and "h100-sxm-80gb" in caught.value.hint


def test_ambiguous_names_are_not_aliases() -> None:
    for name in AMBIGUOUS_NAMES:
        assert find_gpu_model(name) is None


def test_normalize() -> None:
    assert normalize_gpu_name("NVIDIA H100 80GB HBM3") == "h10080ghbm3"
    assert normalize_gpu_name("A100-80g") == normalize_gpu_name("a100 80GB") == "a10080g"


# --- specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "spec", "names", "totals"),
    [
        ("one", "H100", ["NVIDIA H100 80GB HBM3"], [85_520_809_984]),
        ("count-x", "2xH100", ["NVIDIA H100 80GB HBM3"] * 2, [85_520_809_984] * 2),
        ("list", "A100-80GB,L4", ["NVIDIA A100-SXM4-80GB", "NVIDIA L4"], [81920 * MiB, 23034 * MiB]),
        ("spaced-count", "4 x RTX 4090", ["NVIDIA GeForce RTX 4090"] * 4, [24564 * MiB] * 4),
        (
            "star-and-spaces",
            " 3*T4 , L4 ",
            ["Tesla T4"] * 3 + ["NVIDIA L4"],
            [15360 * MiB] * 3 + [23034 * MiB],
        ),
        ("times-sign", "2×L40S", ["NVIDIA L40S"] * 2, [46068 * MiB] * 2),
        ("gib", "24GiB", ["24GiB GPU"], [24 * GiB]),
        ("gb-is-decimal", "80GB", ["80GB GPU"], [80 * 10**9]),
        ("short-unit", "2x24g", ["24g GPU"] * 2, [24 * 10**9] * 2),
        ("size-and-name", "80GiB,H100", ["80GiB GPU", "NVIDIA H100 80GB HBM3"], [80 * GiB, 85_520_809_984]),
    ],
)
def test_gpu_specs(case_id: str, spec: str, names: list[str], totals: list[int]) -> None:
    gpus = parse_gpu_spec(spec)
    assert [g.index for g in gpus] == list(range(len(names)))
    assert [g.name for g in gpus] == names
    assert [g.total_bytes for g in gpus] == totals
    assert all(g.used_bytes == 0 and g.free_bytes == g.cuda_total_bytes for g in gpus)


def test_named_spec_carries_the_reservation_and_a_size_does_not() -> None:
    h100, sized = parse_gpu_spec("H100,80GiB")
    assert h100.reserved_bytes == 480 * MiB
    assert sized.reserved_bytes == 0


@pytest.mark.parametrize(
    ("case_id", "spec", "message"),
    [
        ("empty", "", "--gpus: empty GPU spec ''"),
        ("trailing-comma", "H100,", "--gpus: empty GPU spec 'H100,'"),
        ("zero-count", "0xH100", "--gpus: a GPU count must be at least 1 (got '0xH100')"),
        ("count-only", "2x", "--gpus: '2x' says how many but not which GPU"),
        ("bare-number", "4080", "--gpus: '4080' is neither a GPU name nor a size"),
        ("unknown-name", "2xH1000", "unknown GPU 'H1000'; did you mean"),
        ("zero-size", "0GB", "--gpus: a GPU size must be more than 0 (got '0GB')"),
        ("too-many", "1025xT4", "--gpus: more than 1024 GPUs"),
        ("ambiguous", "2xA100", "ambiguous"),
    ],
)
def test_bad_specs(case_id: str, spec: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_gpu_spec(spec)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_spec_errors_name_where_the_spec_came_from() -> None:
    with pytest.raises(InputError, match=r"^profiles/lab.yaml: gpus: empty GPU spec"):
        parse_gpu_spec(" ", what="profiles/lab.yaml: gpus")


def test_catalog_imports_no_edge() -> None:
    code = (
        "import sys, gpushare.catalog.gpus; "
        "bad = [m for m in ('pynvml', 'psutil', 'typer', 'rich') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
