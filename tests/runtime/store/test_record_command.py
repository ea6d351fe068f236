"""What the runtime reads back from an instance's stored argv (`InstanceRecord.command()`, through
vllm/command.py): the name completions ask for and the model pre-flight checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpushare.planning.plan import PlannedInstance
from gpushare.runtime.launcher.preflight import model_reference
from gpushare.runtime.store.state import InstanceRecord


def record(argv: list[str], model: str = "record-model") -> InstanceRecord:
    return InstanceRecord(name="inst", model=model, port=9000, argv=tuple(argv), env={}, log_path="x")


@pytest.mark.parametrize(
    ("case", "argv", "served"),
    [
        ("served names: the first", ["vllm", "serve", "m", "--served-model-name", "small", "alias"], "small"),
        ("equals form", ["python", "-m", "x", "--model=/m", "--served-model-name=small"], "small"),
        ("underscore spelling", ["vllm", "serve", "m", "--served_model_name", "small"], "small"),
        ("repeated: the last, as vLLM's parser", ["vllm", "serve", "m", "--served-model-name", "a",
                                                  "--served-model-name", "b"], "b"),
        ("model flag", ["python", "-m", "x", "--model", "/m"], "/m"),
        # vLLM serves under the positional model when no name is given (the old reader fell back to
        # the record's model here; gpushare's own argv always names the served model)
        ("positional model", ["vllm", "serve", "m"], "m"),
        ("nothing named", ["/opt/wrapper.sh"], "record-model"),
    ],
)  # fmt: skip
def test_served_name(case: str, argv: list[str], served: str) -> None:
    assert record(argv).served_name() == served


def planned(argv: tuple[str, ...]) -> PlannedInstance:
    return PlannedInstance(
        name="inst", model="plan-model", gpus=(0,), port=9000, start_order=0,
        gpu_memory_utilization=0.5, kv_cache_memory_bytes=None, kv_fixed=False,
        argv=argv, env={}, planned_bytes=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "argv", "model"),
    [
        ("positional", ("vllm", "serve", "/models/a", "--port", "1"), "/models/a"),
        ("model flag", ("python", "-m", "vllm.entrypoints.openai.api_server", "--model", "org/b"), "org/b"),
        ("model flag, = form", ("python", "-m", "x", "--model=org/c"), "org/c"),
        ("none in the argv", ("/opt/wrapper.sh", "--port", "1"), "plan-model"),
    ],
)
def test_preflight_checks_the_model_the_argv_serves(case: str, argv: tuple[str, ...], model: str) -> None:
    assert model_reference(planned(argv)) == model


RECORDED = Path(__file__).parents[2] / "golden" / "recorded"


def recorded_instances() -> Iterator[dict[str, object]]:
    for path in sorted(RECORDED.glob("plan-*-json.txt")):
        text = path.read_text()  # "exit N", the JSON, then what went to stderr
        plan, _ = json.JSONDecoder().raw_decode(text, text.index("{"))
        yield from plan["instances"]


def test_every_recorded_plan_reads_back_the_same() -> None:
    """The argv gpushare writes always names the served model once and the model as the
    positional: what the gateway and pre-flight read from it is the instance's name and model, as
    before the readers moved to vllm/command.py."""
    instances = list(recorded_instances())
    assert len(instances) > 100
    for inst in instances:
        argv = [str(a) for a in inst["argv"]]  # type: ignore[attr-defined]
        rec = record(argv, model=str(inst["model"]))
        assert rec.served_name() == inst["name"]
        assert rec.command().model == inst["model"]
