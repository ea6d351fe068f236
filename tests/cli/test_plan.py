"""`gpushare plan`, `check` and `profile schema` through the CLI (GPUs described, no NVML)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gpushare.cli.plan as plan_cli
from gpushare.cli import app
from gpushare.devices.base import Gpu, NoGpuDriver
from gpushare.devices.static import StaticInventory, gpu_to_record

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
SHIPPED = sorted(PROFILES.glob("*.yaml"))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def write(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


OVERCOMMITTED = """
gpus: L4
models:
  - name: qwen
    model: Qwen/Qwen2.5-7B-Instruct
    max_model_len: 8192
  - name: llama
    model: meta-llama/Llama-3.1-8B-Instruct
    max_model_len: 16384
    concurrency: 2
"""


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_profiles_check_and_plan(path: Path) -> None:
    code, out = run("check", str(path))
    assert code == 0, out
    assert out.startswith("ok: ")
    code, out = run("plan", str(path))
    assert code == 0, out
    assert "vllm serve" in out and "GPU 0" in out
    code, out = run("plan", str(path), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["feasible"] is True and data["unplaced"] == []


def test_plan_json_shape(tmp_path: Path) -> None:
    code, out = run("plan", str(PROFILES / "classic.yaml"), "--json")
    assert code == 0, out
    data = json.loads(out)
    # The keys `plan --json` always had come first, in their order; the plan file's follow them.
    assert list(data)[:4] == ["feasible", "gpus", "instances", "unplaced"]
    assert data["format"] == 1 and data["profile"] == "classic"
    assert list(data["gpus"][0])[:6] == [
        "index",
        "name",
        "total_bytes",
        "reserved_bytes",
        "free_bytes",
        "instances",
    ]
    inst = data["instances"][0]
    assert list(inst)[:10] == [
        "name", "model", "gpus", "port", "start_order", "gpu_memory_utilization",
        "kv_cache_memory_bytes", "estimate", "argv", "env",
    ]  # fmt: skip
    assert {"weights_bytes", "kv_cache_bytes", "process_bytes", "max_concurrency"} <= set(inst["estimate"])
    assert inst["argv"][:2] == ["vllm", "serve"]


# (case id, profile text, extra args, exit code, fragments expected in the output)
CHECK_CASES: list[tuple[str, str, list[str], int, list[str]]] = [
    (
        "fits",
        "gpus: H100\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192}]\n",
        [],
        0,
        ["ok: lab: 1 instance(s) fit on 1 GPU(s)"],
    ),
    (
        "overcommitted",
        OVERCOMMITTED,
        [],
        1,
        ["does not fit: llama", "short by", "GPU 0 (NVIDIA L4)", "max_model_len: ", "kv_cache_dtype: fp8"],
    ),
    (
        "gpus_option_overrides_profile",
        OVERCOMMITTED,
        ["--gpus", "A100-80GB"],
        0,
        ["ok: lab: 2 instance(s) fit on 1 GPU(s)"],
    ),
    (
        "unknown_field",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    max_len: 2\n",
        [],
        2,
        ["lab.yaml: models[0].max_len: unknown field 'max_len'; did you mean 'max_model_len'?"],
    ),
    (
        "bad_type",
        "gpus: H100\nmodels:\n  - name: a\n    model: Qwen/Qwen2.5-7B-Instruct\n    concurrency: many\n",
        [],
        2,
        ["lab.yaml: models[0].concurrency: expected a whole number, got 'many'"],
    ),
    (
        "max_model_len_above_limit",
        "gpus: H100\nmodels:\n  - name: a\n    model: THUDM/chatglm3-6b\n    max_model_len: 32768\n",
        [],
        2,
        ["lab.yaml: models[0].max_model_len: must be ≤ the model's max_position_embeddings (8192)"],
    ),
    (
        "duplicate_names",
        "gpus: H100\nmodels:\n  - {name: a, model: Qwen/Qwen2.5-7B-Instruct}\n"
        "  - {name: a, model: THUDM/chatglm3-6b}\n",
        [],
        2,
        ["lab.yaml: models[1].name: 'a' is already used by models[0]"],
    ),
    (
        "duplicate_ports",
        "gpus: H100\nmodels:\n  - {name: a, model: Qwen/Qwen2.5-7B-Instruct, port: 9000}\n"
        "  - {name: b, model: THUDM/chatglm3-6b, port: 9000}\n",
        [],
        2,
        ["lab.yaml: models[1].port: port 9000 is already used by models[0]; give each model its own port"],
    ),
    (
        "bad_gpu_option",
        "gpus: H100\nmodels: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n",
        ["--gpus", "H1000"],
        2,
        ["unknown GPU 'H1000'"],
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "extra", "code", "fragments"), CHECK_CASES, ids=[c[0] for c in CHECK_CASES]
)
def test_check_exit_codes(
    case: str, text: str, extra: list[str], code: int, fragments: list[str], tmp_path: Path
) -> None:
    path = write(tmp_path, text)
    got, out = run("check", str(path), *extra)
    assert got == code, out
    flat = " ".join(out.split())
    for fragment in fragments:
        assert " ".join(fragment.split()) in flat, out
    assert "Traceback" not in out


def test_plan_exits_1_and_explains_when_it_does_not_fit(tmp_path: Path) -> None:
    code, out = run("plan", str(write(tmp_path, OVERCOMMITTED)))
    assert code == 1
    assert "does not fit: llama" in out


def test_github_annotations_point_at_the_model_line(tmp_path: Path) -> None:
    path = write(tmp_path, OVERCOMMITTED)
    code, out = run("check", str(path), "--format", "github")
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("::error ")]
    assert len(lines) == 1
    match = re.match(r"::error file=([^,]+),line=(\d+),title=gpushare check::(.*)", lines[0])
    assert match, lines[0]
    assert match.group(1) == str(path).replace(":", "%3A")
    assert int(match.group(2)) == 6  # "- name: llama"
    assert path.read_text().splitlines()[5].strip() == "- name: llama"
    assert "llama does not fit" in match.group(3) and "%0A- " in match.group(3)


def test_github_annotations_for_an_invalid_profile(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        gpus: H100
        models:
          - name: a
            model: Qwen/Qwen2.5-7B-Instruct
          - name: b
            model: THUDM/chatglm3-6b
            max_model_len: 9000
        """,
    )
    code, out = run("check", str(path), "--format", "github")
    assert code == 2
    assert out.strip() == (
        f"::error file={path},line=7,title=invalid profile::models[1].max_model_len: must be ≤ the "
        "model's max_position_embeddings (8192); set it to 8192 or less"
    )


def test_check_json(tmp_path: Path) -> None:
    code, out = run("check", str(write(tmp_path, OVERCOMMITTED)), "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False and data["valid"] is True
    assert [u["name"] for u in data["unplaced"]] == ["llama"]
    assert data["unplaced"][0]["suggestions"]
    code, out = run("check", str(write(tmp_path, "models: 3\n", "bad.yaml")), "--format", "json")
    assert code == 2
    assert json.loads(out)["errors"][0]["path"] == "models"


def test_gpus_from_an_inventory_file(tmp_path: Path) -> None:
    inventory = tmp_path / "gpus.json"
    gpu = Gpu(index=0, name="NVIDIA L40S", total_bytes=48 * 2**30, reserved_bytes=500 * 2**20)
    inventory.write_text(json.dumps([gpu_to_record(gpu, False)]))
    code, out = run("check", str(write(tmp_path, OVERCOMMITTED)), "--gpus", str(inventory))
    assert code == 0, out


@pytest.mark.parametrize(
    ("case", "inventory", "code", "fragment"),
    [
        (
            "nvml_gpus",
            StaticInventory([Gpu(index=0, name="NVIDIA H100 80GB HBM3", total_bytes=85 * 2**30)]),
            0,
            "ok:",
        ),
        ("no_driver", None, 3, "no NVIDIA driver found"),
    ],
)
def test_gpus_auto_asks_the_inventory(
    case: str,
    inventory: StaticInventory | None,
    code: int,
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoDriver:
        def gpus(self) -> list[Gpu]:
            raise NoGpuDriver("libnvidia-ml.so.1 not found")

        def mps_daemon_running(self) -> bool:
            return False

    monkeypatch.setattr(plan_cli, "inventory_factory", (lambda: inventory) if inventory else NoDriver)
    path = write(tmp_path, "models: [{name: a, model: Qwen/Qwen2.5-7B-Instruct, max_model_len: 8192}]\n")
    got, out = run("check", str(path))
    assert got == code, out
    assert fragment in out


def test_profile_schema_prints_json_schema() -> None:
    code, out = run("profile", "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    model = schema["$defs"]["ModelEntry"]
    assert model["additionalProperties"] is False
    assert "served model name" in model["properties"]["name"]["description"]


@pytest.mark.parametrize(
    ("case", "text", "code"),
    [
        ("valid", "models: [{name: a, model: Qwen/Qwen2.5-7B-Instruct}]\n", 0),
        ("invalid", "models: [{name: a}]\n", 2),
    ],
)
def test_profile_validate(case: str, text: str, code: int, tmp_path: Path) -> None:
    got, out = run("profile", "validate", str(write(tmp_path, text)))
    assert got == code, out
