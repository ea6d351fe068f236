"""Settings that vLLM refuses are refused with the same words by `estimate` and by a profile
(memory/settings.py SETTING_RULES is the one home of each rule); and a target too large for any
GPU is "does not fit" (exit 1), however large (issue 12, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpushare.cli import app

ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "GPUSHARE_CALIBRATION_FILE": "/nonexistent/calibration.json"}
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=ENV)
    return result.exit_code, result.output


def _profile(tmp_path: Path, defaults: str = "", model: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: p\ngpus: H100\ndefaults:\n  reserve: 0.1\n{defaults}models:\n"
        f"  - name: q\n    model: {MODEL}\n    max_model_len: 4096\n{model}"
    )
    return path


# (case, estimate option, value, profile field (defaults or models[0]), the problem both must state)
BLOCK = "must be a multiple of 16 (vLLM 0.26's attention backends take 16, 32, 48, ...), got"
ONE = "must be 1 or more, got {}; set it to 1 or more"
CASES = [
    ("block 0", "--block-size", "0", "defaults.block_size", f"{BLOCK} 0; use 16"),
    ("block 7", "--block-size", "7", "defaults.block_size", f"{BLOCK} 7; use 16"),
    ("block 40", "--block-size", "40", "defaults.block_size", f"{BLOCK} 40; use 32 or 48"),
    ("seqs 0", "--max-num-seqs", "0", "models[0].max_num_seqs", ONE.format(0)),
    ("batched -5", "--max-num-batched-tokens", "-5", "models[0].max_num_batched_tokens", ONE.format(-5)),
    ("len 0", "--max-model-len", "0", "models[0].max_model_len", ONE.format(0)),
    ("concurrency 0", "--concurrency", "0", "models[0].concurrency", ONE.format(0)),
    (
        "version banana", "--vllm-version", "banana", "defaults.vllm_version",
        "'banana' is not a vLLM version; write it as MAJOR.MINOR.PATCH, e.g. 0.26.0",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "option", "value", "field", "problem"), CASES, ids=[c[0] for c in CASES])
def test_estimate_and_profile_refuse_alike(
    case: str, option: str, value: str, field: str, problem: str, tmp_path: Path
) -> None:
    code, output = _run(["estimate", MODEL, option, value])
    assert (code, output.splitlines()[0]) == (2, f"error: {option} {value}: {problem}")

    section, name = field.split(".")
    yaml_value = f"'{value}'" if not value.lstrip("-").isdigit() else value
    line = f"{name}: {yaml_value}\n"
    profile = (
        _profile(tmp_path, defaults="  " + line)
        if section == "defaults"
        else _profile(tmp_path, model="    " + line)
    )
    if name == "max_model_len":
        profile.write_text(profile.read_text().replace("    max_model_len: 4096\n", ""))
    code, output = _run(["check", str(profile)])
    assert (code, output.splitlines()[0]) == (2, f"error: {profile}: {field}: {problem}")


@pytest.mark.parametrize("field", ["concurrency", "max_num_seqs", "port", "priority"])
def test_a_yaml_boolean_is_not_a_number(field: str, tmp_path: Path) -> None:
    profile = _profile(tmp_path, model=f"    {field}: true\n")
    code, output = _run(["check", str(profile)])
    assert code == 2
    assert output.splitlines()[0] == f"error: {profile}: models[0].{field}: expected a whole number, got True"


@pytest.mark.parametrize("concurrency", [5000, 1_000_000_000, 10**15])
def test_any_target_too_large_does_not_fit(concurrency: int, tmp_path: Path) -> None:
    """The planner sizes needs on a stand-in GPU "as large as needed"; its size never leaks out."""
    profile = _profile(tmp_path, model=f"    concurrency: {concurrency}\n")
    code, output = _run(["plan", str(profile)])
    assert code == 1, output
    assert "does not fit: q: needs " in output and f"for {concurrency} × 4096 tokens" in output
    assert "GPU 0 (NVIDIA H100 80GB HBM3) has 71.26 GiB left of 71.26 GiB usable" in output
    assert "1048576" not in output and "\nerror" not in output
    code, output = _run(["estimate", MODEL, "--max-model-len", "4096", "--concurrency", str(concurrency)])
    assert code == 1 and "but the GPU has 79.18 GiB" in output
