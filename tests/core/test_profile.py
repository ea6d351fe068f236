"""Profiles: the schema, loading with line numbers, and errors that name the file, path and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gpushare.profile import (
    MANAGED_FLAGS,
    Profile,
    ProfileValidationError,
    format_path,
    load_profile,
    managed_flag,
    parse_profile_text,
    profile_json_schema,
)

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
SHIPPED = sorted(PROFILES.glob("*.yaml"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


GOOD = """
gpus: A100-80GB
models:
  - name: qwen
    model: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
    concurrency: 4
  - name: llama
    model: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 8192
"""


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_profiles_load(path: Path) -> None:
    profile = load_profile(path)
    assert profile.models
    assert all(line > 0 for line in profile.model_lines)
    assert profile.described_gpus(), "shipped profiles list their GPUs so they can be checked anywhere"


def test_shipped_profiles_exist() -> None:
    assert {p.stem for p in SHIPPED} >= {"classic", "quantized", "workstation"}


# (case id, profile text, expected path, text the message must contain, expected line)
BAD_PROFILES: list[tuple[str, str, str, str, int]] = [
    (
        "unknown_top_level_field",
        "gpus: H100\nmodel: x\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        "model",
        "unknown field 'model'; did you mean 'models'?",
        2,
    ),
    (
        "unknown_field_in_defaults",
        "gpus: H100\ndefaults:\n  reserv: 0.2\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        "defaults.reserv",
        "did you mean 'reserve'?",
        3,
    ),
    (
        "unknown_field_in_model",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    max_len: 4096\n",
        "models[0].max_len",
        "unknown field 'max_len'",
        5,
    ),
    (
        "bad_type",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    max_model_len: long\n",
        "models[0].max_model_len",
        "expected a whole number, got 'long'",
        5,
    ),
    (
        "bad_choice",
        "gpus: H100\ndefaults:\n  strategy: tight\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        "defaults.strategy",
        "'tight' is not allowed; use 'pack' or 'spread'",
        3,
    ),
    (
        "reserve_out_of_bounds",
        "gpus: H100\ndefaults:\n  reserve: 1.5\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        "defaults.reserve",
        "less than 1",
        3,
    ),
    (
        "missing_model",
        "gpus: H100\nmodels:\n  - name: a\n    max_model_len: 4096\n",
        "models[0].model",
        "required field missing",
        3,
    ),
    (
        "no_models",
        "gpus: H100\nmodels: []\n",
        "models",
        "at least 1 item",
        2,
    ),
    (
        "duplicate_names",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "  - name: a\n    model: THUDM/chatglm3-6b\n",
        "models[1].name",
        "'a' is already used by models[0]",
        5,
    ),
    (
        "alias_collides_with_name",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "  - name: b\n    model: THUDM/chatglm3-6b\n    aliases: [a]\n",
        "models[1].aliases",
        "'a' is already used by models[0]",
        7,
    ),
    (
        "duplicate_ports",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    port: 9000\n"
        "  - name: b\n    model: THUDM/chatglm3-6b\n    port: 9000\n",
        "models[1].port",
        "port 9000 is already used by models[0]",
        8,
    ),
    (
        "bad_served_name",
        "gpus: H100\nmodels:\n  - name: my model\n    model: Qwen/Qwen2.5-7B-Instruct\n",
        "models[0].name",
        "'my model' is not allowed",
        3,
    ),
    (
        "both_targets",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "    concurrency: 2\n    kv_tokens: 1000\n",
        "models[0]",
        "give concurrency or kv_tokens, not both",
        3,
    ),
    (
        "managed_flag_in_extra_args",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "    extra_args: [--max_model_len=4096]\n",
        "models[0].extra_args",
        "use models[].max_model_len instead",
        5,
    ),
    (
        "cuda_visible_devices_in_env",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "    env: {CUDA_VISIBLE_DEVICES: '1'}\n",
        "models[0].env",
        "pin GPUs with `gpus`",
        5,
    ),
    (
        "cuda_visible_devices_in_defaults_env",
        "gpus: H100\ndefaults:\n  env: {CUDA_VISIBLE_DEVICES: '1'}\n"
        "models:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n",
        "defaults.env",
        "pin GPUs with `gpus`",
        3,
    ),
    (
        "bad_name_in_defaults_env",
        "gpus: H100\ndefaults:\n  env: {1NCCL: '0'}\n"
        "models:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n",
        "defaults.env",
        "is not an environment variable name",
        3,
    ),
    (
        "pin_beyond_gpus",
        "gpus: 2xH100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    gpus: [0, 2]\n",
        "models[0].gpus[1]",
        "GPU 2 is not in the profile's 2 GPU(s)",
        5,
    ),
    (
        "pin_smaller_than_tp",
        "gpus: 2xH100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "    tensor_parallel_size: 2\n    gpus: [1]\n",
        "models[0]",
        "pin at least that many",
        3,
    ),
    (
        "unknown_gpu",
        "gpus: H1000\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        "gpus",
        "unknown GPU 'H1000'; did you mean",
        1,
    ),
    (
        "cpu_with_pin",
        "device: cpu\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    gpus: [0]\n",
        "models[0].gpus",
        "device is cpu",
        5,
    ),
    (
        "yaml_syntax_error",
        "gpus: H100\nmodels:\n  - name: a\n    model: [Qwen\n  - name: b\n",
        "",
        "YAML syntax error",
        5,
    ),
    (
        "yaml_duplicate_key",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    name: b\n",
        "models[0].name",
        "appears twice",
        5,
    ),
    (
        "not_a_mapping",
        "- just\n- a list\n",
        "",
        "expected a mapping with `models:`",
        1,
    ),
    # needs the model's config
    (
        "max_model_len_above_model_limit",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    concurrency: 1\n"
        "    max_model_len: 65536\n",
        "models[0].max_model_len",
        "must be ≤ the model's max_position_embeddings (32768)",
        6,
    ),
    (
        "unknown_model",
        "gpus: H100\nmodels:\n  - name: a\n    model: nobody/no-such-model\n",
        "models[0].model",
        "not found",
        4,
    ),
    (
        "tp_does_not_divide_heads",
        "gpus: 4xH100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n"
        "    tensor_parallel_size: 3\n",
        "models[0].tensor_parallel_size",
        "28 attention heads do not split over 3 GPUs",
        5,
    ),
    (
        "awq_on_unquantized_model",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    quantization: awq\n",
        "models[0].quantization",
        "needs a AWQ checkpoint",
        5,
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "path", "fragment", "line"), BAD_PROFILES, ids=[c[0] for c in BAD_PROFILES]
)
def test_bad_profiles_name_file_path_and_fix(
    case: str, text: str, path: str, fragment: str, line: int, tmp_path: Path
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ProfileValidationError) as caught:
        load_profile(file)
    error = caught.value
    assert error.exit_code == 2
    assert error.file == str(file)
    matching = [p for p in error.problems if p.path == path]
    assert matching, f"{case}: no problem at {path!r} in {error.problems}"
    problem = matching[0]
    assert fragment in problem.message, problem.message
    assert problem.line == line
    rendered = f"{file}: {path}: " if path else f"{file}: "
    assert rendered in error.message


def test_error_message_has_the_documented_form(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        """
        gpus: H100
        models:
          - name: a
            model: Qwen/Qwen2.5-7B-Instruct
          - name: b
            model: THUDM/chatglm3-6b
          - name: c
            model: Qwen/Qwen2.5-7B-Instruct
            max_model_len: 40000
        """,
    )
    with pytest.raises(ProfileValidationError) as caught:
        load_profile(file)
    assert caught.value.message.startswith(
        f"{file}: models[2].max_model_len: must be ≤ the model's max_position_embeddings (32768)"
    )


@pytest.mark.parametrize(
    ("case", "yaml_value", "expected"),
    [
        ("bare_off_is_a_yaml_boolean", "off", "off"),
        ("bare_on_is_a_yaml_boolean", "on", "on"),
        ("quoted", "'auto'", "auto"),
    ],
)
def test_mps_accepts_yaml_booleans(case: str, yaml_value: str, expected: str) -> None:
    profile = parse_profile_text(f"defaults:\n  mps: {yaml_value}\nmodels: [{{name: a, model: x}}]\n")
    assert profile.defaults.mps == expected


def test_model_lines_point_at_each_entry(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "# comment\n" + textwrap.dedent(GOOD).lstrip("\n")))
    assert profile.model_lines == (4, 8)
    assert profile.line_of(("models", 1, "max_model_len")) == 10


@pytest.mark.parametrize(
    ("case", "ports", "base", "expected"),
    [
        ("all_from_base", [None, None, None], 8001, [8001, 8002, 8003]),
        ("skips_explicit", [None, 8002, None], 8001, [8001, 8002, 8003]),
        ("explicit_only", [9000, 9001, 9002], 8001, [9000, 9001, 9002]),
    ],
)
def test_ports(case: str, ports: list[int | None], base: int, expected: list[int]) -> None:
    models = [{"name": f"m{i}", "model": "x", **({"port": p} if p else {})} for i, p in enumerate(ports)]
    profile = Profile.model_validate({"defaults": {"base_port": base}, "models": models})
    assert list(profile.ports().values()) == expected


@pytest.mark.parametrize(
    ("case", "spec", "count"),
    [
        ("one_name", "A100-80GB", 1),
        ("count_times_name", "2xH100", 2),
        ("list", ["H100", "24GiB", "2 x L4"], 4),
        ("auto", "auto", 0),
    ],
)
def test_gpu_specs(case: str, spec: Any, count: int) -> None:
    profile = Profile.model_validate({"gpus": spec, "models": [{"name": "a", "model": "x"}]})
    assert len(profile.described_gpus() or []) == count


@pytest.mark.parametrize(
    ("case", "arg", "flag"),
    [
        ("plain", "--port", "--port"),
        ("with_value", "--max-model-len=4096", "--max-model-len"),
        ("underscores", "--gpu_memory_utilization", "--gpu-memory-utilization"),
        ("short_tp", "-tp", "--tensor-parallel-size"),
        ("free_flag", "--swap-space", None),
        ("a_value", "4", None),
    ],
)
def test_managed_flags(case: str, arg: str, flag: str | None) -> None:
    assert managed_flag(arg) == flag
    if flag:
        assert flag in MANAGED_FLAGS


def test_schema_describes_every_field() -> None:
    schema = profile_json_schema()
    assert schema["title"] == "Profile"
    assert schema["additionalProperties"] is False
    undocumented = []
    for owner, definition in [("Profile", schema), *schema.get("$defs", {}).items()]:
        for field, prop in definition.get("properties", {}).items():
            if not prop.get("description"):
                undocumented.append(f"{owner}.{field}")
    assert undocumented == []


@pytest.mark.parametrize(
    ("case", "loc", "text"),
    [
        ("field", ("gpus",), "gpus"),
        ("nested", ("models", 2, "max_model_len"), "models[2].max_model_len"),
        ("index_last", ("models", 0, "gpus", 1), "models[0].gpus[1]"),
    ],
)
def test_format_path(case: str, loc: tuple[str | int, ...], text: str) -> None:
    assert format_path(loc) == text
