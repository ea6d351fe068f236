"""gpushare.vllm.command: a `vllm serve` command line as a value, written and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushare.planning.build import build_plan, plan_loader
from gpushare.profile import MANAGED_FLAGS, load_profile
from gpushare.vllm.command import FLAG_OF, FLAGS, VllmCommand, canonical_flag, format_utilization

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
LOAD = plan_loader()


def words(text: str) -> list[str]:
    return text.split(" ")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


FULL = VllmCommand(
    program=("vllm", "serve"),
    model="Qwen/Qwen2.5-7B-Instruct",
    served_name=("qwen",),
    host="127.0.0.1",
    port=8001,
    max_model_len=8192,
    gpu_memory_utilization=0.3125,
    kv_cache_memory_bytes=10_737_418_240,
    tensor_parallel_size=2,
    dtype="float16",
    kv_cache_dtype="fp8",
    block_size=32,
    max_num_seqs=64,
    max_num_batched_tokens=2048,
    quantization="fp8",
    enforce_eager=True,
    enable_sleep_mode=True,
    language_model_only=True,
    limit_mm_per_prompt=(("image", 2), ("video", 0)),
    mm_encoder_tp_mode="data",
    extra_args=("--trust-remote-code", "--seed", "1"),
)
FULL_ARGV = [
    *("vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "qwen", "--host", "127.0.0.1"),
    *("--port", "8001", "--max-model-len", "8192", "--gpu-memory-utilization", "0.3125"),
    *("--kv-cache-memory-bytes", "10737418240", "--tensor-parallel-size", "2", "--dtype", "float16"),
    *("--kv-cache-dtype", "fp8", "--block-size", "32", "--max-num-seqs", "64"),
    *("--max-num-batched-tokens", "2048", "--quantization", "fp8", "--enforce-eager"),
    "--enable-sleep-mode",
    *("--language-model-only", "--limit-mm-per-prompt", '{"image":2,"video":0}'),
    *("--mm-encoder-tp-mode", "data", "--trust-remote-code", "--seed", "1"),
]


def test_every_field_has_its_flag_in_the_table_order() -> None:
    assert list(FULL.to_argv()) == FULL_ARGV


@pytest.mark.parametrize(
    ("case", "command", "argv"),
    [
        (
            "serve takes the model positionally",
            VllmCommand(("vllm", "serve"), model="m"),
            ["vllm", "serve", "m"],
        ),
        (
            "another program gets --model",
            VllmCommand(("python", "-m", "vllm.entrypoints.openai.api_server"), model="m", port=1),
            ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--port", "1"],
        ),
        (
            "vLLM's defaults are not passed",
            VllmCommand(
                ("vllm", "serve"), model="m", tensor_parallel_size=1, dtype="auto", kv_cache_dtype="auto"
            ),
            ["vllm", "serve", "m"],
        ),
        (
            "several served names",
            VllmCommand(("vllm", "serve"), model="m", served_name=("a", "b")),
            ["vllm", "serve", "m", "--served-model-name", "a", "b"],
        ),
    ],
)
def test_to_argv(case: str, command: VllmCommand, argv: list[str]) -> None:
    assert list(command.to_argv()) == argv


@pytest.mark.parametrize(
    ("util", "text"), [(0.5, "0.5"), (0.3125, "0.3125"), (0.9, "0.9"), (1.0, "1"), (0.00012, "0.0001")]
)
def test_utilization_is_written_with_four_decimals_at_most(util: float, text: str) -> None:
    assert format_utilization(util) == text


SERVE = ["vllm", "serve", "m"]
MM = "--limit-mm-per-prompt"
MM_OPTIONS = '{"image":{"count":1}}'


def test_full_command_reads_back() -> None:
    assert VllmCommand.from_argv(FULL_ARGV) == FULL


@pytest.mark.parametrize(
    ("case", "argv", "field", "value"),
    [
        # The served name, as the supervisor and the gateway need it (InstanceRecord.served_name).
        ("served names", words("vllm serve m --served-model-name a b"), "served_name", ("a", "b")),
        ("served name, = form", words("python -m x --model=/m --served-model-name=a"), "served_name", ("a",)),
        ("model flag", words("python -m x --model /m"), "model", "/m"),
        ("model flag, = form", words("python -m x --model=/m"), "model", "/m"),
        # The model, as pre-flight needs it (runtime/preflight.py today).
        ("positional model", words("vllm serve org/m --port 8001"), "model", "org/m"),
        ("--model beats the positional", words("vllm serve a --model b"), "model", "b"),
        ("no model", words("vllm serve --port 8001"), "model", None),
        # The host, as the supervisor needs it (runtime/supervisor.py today).
        ("host", words("vllm serve m --host 10.0.0.2"), "host", "10.0.0.2"),
        ("host, = form", words("vllm serve m --host=::1"), "host", "::1"),
        ("the last host wins, as in argparse", words("vllm serve m --host a --host b"), "host", "b"),
        # Spellings vLLM's parser accepts.
        ("underscores", words("vllm serve m --max_model_len=4096"), "max_model_len", 4096),
        ("short tp", words("vllm serve m -tp 2"), "tensor_parallel_size", 2),
        ("short quantization", words("vllm serve m -q fp8"), "quantization", "fp8"),
        ("utilization", words("vllm serve m --gpu-memory-utilization .45"), "gpu_memory_utilization", 0.45),
        ("switch", words("vllm serve m --enforce-eager"), "enforce_eager", True),
        ("sleep mode", words("vllm serve m --enable_sleep_mode"), "enable_sleep_mode", True),
        # Multimodal limits: vLLM's JSON form (its per-item options form stays an extra argument).
        ("mm limits", [*SERVE, MM, '{"image":1}'], "limit_mm_per_prompt", (("image", 1),)),
        ("mm limits, = form", [*SERVE, MM + '={"video":0}'], "limit_mm_per_prompt", (("video", 0),)),
        ("mm options stay extra", [*SERVE, MM, MM_OPTIONS], "extra_args", (MM, MM_OPTIONS)),
        ("text only", words("vllm serve m --language-model-only"), "language_model_only", True),
        ("encoder tp mode", words("vllm serve m --mm-encoder-tp-mode data"), "mm_encoder_tp_mode", "data"),
        ("program without serve", words("/opt/wrapper.sh --model m"), "program", ("/opt/wrapper.sh",)),
    ],
)  # fmt: skip
def test_from_argv_reads_every_form(case: str, argv: list[str], field: str, value: object) -> None:
    assert getattr(VllmCommand.from_argv(argv), field) == value


def test_name_served_is_the_first_served_name_else_the_model() -> None:
    assert VllmCommand.from_argv(["vllm", "serve", "m", "--served-model-name", "a", "b"]).name_served() == "a"
    assert VllmCommand.from_argv(["vllm", "serve", "m"]).name_served() == "m"
    assert VllmCommand.from_argv(["python", "-m", "x", "--model", "/m"]).name_served() == "/m"
    assert VllmCommand.from_argv(["vllm", "serve"]).name_served() is None


@pytest.mark.parametrize(
    ("case", "argv", "extra"),
    [
        ("unknown flags, in order", words("vllm serve m --seed 1 --x"), ("--seed", "1", "--x")),
        ("a value that is not a number", words("vllm serve m --port http"), ("--port", "http")),
        ("a flag without its value", words("vllm serve m --port"), ("--port",)),
        ("no served name", words("vllm serve m --served-model-name --port 1"), ("--served-model-name",)),
    ],
)  # fmt: skip
def test_what_is_not_a_known_setting_stays_in_extra_args(
    case: str, argv: list[str], extra: tuple[str, ...]
) -> None:
    assert VllmCommand.from_argv(argv).extra_args == extra


def test_without_puts_fields_back_at_vllms_defaults() -> None:
    argv = FULL.without("kv_cache_memory_bytes", "enforce_eager").to_argv()
    assert "--kv-cache-memory-bytes" not in argv and "--enforce-eager" not in argv
    assert "--gpu-memory-utilization" in argv


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_planned_command_reads_back_to_itself(path: Path) -> None:
    profile = load_profile(path, LOAD)
    plan = build_plan(profile, profile.described_gpus() or [], load=LOAD)
    assert plan.instances
    for inst in plan.instances:
        command = VllmCommand.from_argv(inst.argv)
        assert command.to_argv() == inst.argv, inst.name
        assert command.name_served() == inst.name
        assert command.port == inst.port
        assert command.model == inst.model


def test_the_profiles_managed_flags_are_the_tables() -> None:
    assert set(MANAGED_FLAGS) == set(FLAG_OF.values()) == {"--model", *(f.flag for f in FLAGS)}
    assert canonical_flag("--max_model_len=4") == "--max-model-len"
    assert canonical_flag("-tp") == "--tensor-parallel-size"
    assert canonical_flag("model") is None
