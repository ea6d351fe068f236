"""The one Hugging Face rule (offline mode, the cache's place), checked per variable and value,
against huggingface_hub itself, and as both of its users see it: model resolution and `up`'s
pre-flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gpushare.hub import HubEnv, HubRequest, MockHub, find_cached
from gpushare.resolve import CATALOG_DIR, resolve_model
from gpushare.runtime.launcher.preflight import check_model
from gpushare.weights import HeaderTensor

HF_VARIABLES = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
)
LLAMA_CFG = json.loads((CATALOG_DIR / "meta-llama--Llama-3.1-8B-Instruct.json").read_text())

OFFLINE_CASES: list[tuple[str, dict[str, str], str | None]] = [
    ("nothing set", {}, None),
    *[
        (f"HF_HUB_OFFLINE={v}", {"HF_HUB_OFFLINE": v}, "HF_HUB_OFFLINE")
        for v in ("1", "true", "TRUE", "yes", "on", "ON")
    ],
    *[
        (f"HF_HUB_OFFLINE={v!r}", {"HF_HUB_OFFLINE": v}, None)
        for v in ("0", "false", "no", "off", "", "2", " 1")
    ],
    *[
        (f"TRANSFORMERS_OFFLINE={v}", {"TRANSFORMERS_OFFLINE": v}, "TRANSFORMERS_OFFLINE")
        for v in ("1", "on", "Yes")
    ],
    ("TRANSFORMERS_OFFLINE=0", {"TRANSFORMERS_OFFLINE": "0"}, None),
    ("a set HF_HUB_OFFLINE wins", {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, None),
    (
        "an empty HF_HUB_OFFLINE does not",
        {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"},
        "TRANSFORMERS_OFFLINE",
    ),
    ("both on", {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
]

CACHE_CASES: list[tuple[str, dict[str, str], str]] = [
    ("nothing set", {}, "{home}/.cache/huggingface/hub"),
    ("XDG_CACHE_HOME", {"XDG_CACHE_HOME": "/x"}, "/x/huggingface/hub"),
    ("HF_HOME over XDG", {"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}, "/h/hub"),
    ("HF_HOME with ~", {"HF_HOME": "~/hf"}, "{home}/hf/hub"),
    ("legacy HUGGINGFACE_HUB_CACHE over HF_HOME", {"HUGGINGFACE_HUB_CACHE": "/l", "HF_HOME": "/h"}, "/l"),
    ("legacy with ~", {"HUGGINGFACE_HUB_CACHE": "~/l"}, "{home}/l"),
    (
        "HF_HUB_CACHE over everything",
        {"HF_HUB_CACHE": "/c", "HUGGINGFACE_HUB_CACHE": "/l", "HF_HOME": "/h"},
        "/c",
    ),
    ("HF_HUB_CACHE with $VAR", {"HF_HUB_CACHE": "$GPUSHARE_TEST_ROOT/c"}, "/r/c"),
]


@pytest.fixture(autouse=True)
def clean_hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPUSHARE_TEST_ROOT", "/r")
    return Path(os.environ["HOME"])


@pytest.mark.parametrize(("case", "env", "offline_by"), OFFLINE_CASES)
def test_offline(case: str, env: dict[str, str], offline_by: str | None) -> None:
    hub = HubEnv.from_environ(env)
    assert hub.offline_by == offline_by
    assert hub.offline is (offline_by is not None)


@pytest.mark.parametrize(("case", "env", "expected"), CACHE_CASES)
def test_cache_dir(case: str, env: dict[str, str], expected: str, clean_hf_env: Path) -> None:
    assert HubEnv.from_environ(env).cache_dir == Path(expected.format(home=clean_hf_env))


_HF_SAYS = """
import importlib, json, os, sys
import huggingface_hub.constants as constants
answers = []
for env in json.loads(sys.argv[1]):
    for name in {names!r}:
        os.environ.pop(name, None)
    os.environ.update(env)
    importlib.reload(constants)
    answers.append([constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE])
print(json.dumps(answers))
"""


def test_the_rule_is_huggingface_hubs(clean_hf_env: Path) -> None:
    """huggingface_hub (what vLLM obeys) reads every case the same way."""
    envs = [env for _, env, _ in OFFLINE_CASES] + [env for _, env, _ in CACHE_CASES]
    script = _HF_SAYS.format(names=HF_VARIABLES)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(envs)], capture_output=True, text=True, check=True
    )
    theirs = json.loads(done.stdout)
    ours = [[HubEnv.from_environ(env).offline, str(HubEnv.from_environ(env).cache_dir)] for env in envs]
    assert ours == theirs


def write_cached(cache: Path, repo_id: str) -> Path:
    """A snapshot as huggingface_hub lays it out: refs/main names the snapshot holding config.json."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text(json.dumps(LLAMA_CFG))
    return snapshot


def hub_answering(configs: Mapping[str, Mapping[str, Any]]) -> MockHub:
    def handler(request: HubRequest) -> Mapping[str, Any] | list[HeaderTensor] | None:
        if request.file == "safetensors":
            return [HeaderTensor("model.embed_tokens.weight", "BF16", (128256, 4096))]
        if request.repo_id not in configs:
            raise OSError(f"404 Client Error for {request.repo_id}")
        return configs[request.repo_id]

    return MockHub(handler)


@pytest.mark.parametrize(("case", "env", "offline_by"), OFFLINE_CASES)
def test_resolution_and_preflight_agree_on_offline(
    case: str, env: dict[str, str], offline_by: str | None, tmp_path: Path
) -> None:
    env = {**env, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    hub = hub_answering({"acme/remote": LLAMA_CFG})
    problem = check_model("acme/remote", env)
    if offline_by is None:
        assert resolve_model("acme/remote", hub=hub, environ=env).location == "Hugging Face Hub"
        assert hub.requests == [
            HubRequest("acme/remote", "config.json"),
            HubRequest("acme/remote", "safetensors"),
        ]
        assert problem is None
    else:
        with pytest.raises(Exception, match=f"Hub not asked \\({offline_by} is set\\)") as info:
            resolve_model("acme/remote", hub=hub, environ=env)
        assert hub.requests == []
        assert getattr(info.value, "hint", "").endswith(f"or unset {offline_by}")
        assert problem == f"model acme/remote is not in the Hugging Face cache and {offline_by} is set"


@pytest.mark.parametrize(
    ("case", "variable", "cache_under_it"),
    [
        ("HF_HUB_CACHE", "HF_HUB_CACHE", "."),
        ("HF_HOME", "HF_HOME", "hub"),
        ("XDG_CACHE_HOME", "XDG_CACHE_HOME", "huggingface/hub"),
    ],
)
def test_resolution_and_preflight_agree_on_the_cache(
    case: str, variable: str, cache_under_it: str, tmp_path: Path
) -> None:
    env = {variable: str(tmp_path), "HF_HUB_OFFLINE": "1"}
    snapshot = write_cached(tmp_path / cache_under_it, "acme/tiny")
    assert find_cached("acme/tiny", "config.json", HubEnv.from_environ(env)) == snapshot / "config.json"
    assert resolve_model("acme/tiny", hub=hub_answering({}), environ=env).local_path == snapshot
    assert check_model("acme/tiny", env) is None


def test_mock_hub_says_what_it_was_asked() -> None:
    hub = hub_answering({})
    with pytest.raises(OSError, match="404"):
        hub.config("acme/missing")
    assert hub.safetensors_tensors("acme/missing") is not None
    assert hub.requests == [
        HubRequest("acme/missing", "config.json"),
        HubRequest("acme/missing", "safetensors"),
    ]


def test_not_a_repo_id_is_not_cached(tmp_path: Path) -> None:
    assert (
        find_cached("not a/valid//id", "config.json", HubEnv.from_environ({"HF_HUB_CACHE": str(tmp_path)}))
        is None
    )


REPO_IDS = [
    "acme/tiny",
    "tiny",
    "Org-1/Model_2.5-7B",
    "a" * 96,
    "a" * 97,
    "acme/tiny/extra",
    "acme--x/tiny",
    "acme/ti..ny",
    "acme/tiny.git",
    "-acme/tiny",
    "acme/tiny-",
    ".acme/tiny",
    "acme/café",
    "acme/ti ny",
    "",
]


@pytest.mark.parametrize(
    ("case", "layout"),
    [
        ("snapshot named by refs/main", "ref"),
        ("no refs: a snapshot named main", "main-folder"),
        ("refs/main names a missing snapshot", "dangling"),
        ("known not to exist", "no-exist"),
        ("the file is missing from the snapshot", "other-file"),
        ("nothing cached", "none"),
    ],
)
def test_find_cached_answers_as_huggingface_hub(case: str, layout: str, tmp_path: Path) -> None:
    """The cache rule reads the layout huggingface_hub writes, without importing it: every repo id
    and layout gives the file huggingface_hub's own lookup gives (or nothing where it gives none)."""
    from huggingface_hub import try_to_load_from_cache

    env = HubEnv.from_environ({"HF_HUB_CACHE": str(tmp_path)})
    found = []
    for repo_id in REPO_IDS:
        if "/" in repo_id and layout != "none" and "--" not in repo_id and " " not in repo_id:
            repo = tmp_path / f"models--{repo_id.replace('/', '--')}"
            commit = "main" if layout == "main-folder" else "abc123"
            if layout != "main-folder":
                (repo / "refs").mkdir(parents=True, exist_ok=True)
                (repo / "refs" / "main").write_text(commit)
            if layout != "dangling":
                snapshot = repo / "snapshots" / commit
                snapshot.mkdir(parents=True, exist_ok=True)
                (snapshot / ("other.json" if layout == "other-file" else "config.json")).write_text("{}")
            if layout == "no-exist":
                (repo / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
                (repo / ".no_exist" / commit / "config.json").write_text("")
                (repo / "snapshots" / commit / "config.json").unlink()
        try:
            theirs = try_to_load_from_cache(repo_id, "config.json", cache_dir=tmp_path)
        except ValueError:
            theirs = None
        expected = Path(theirs) if isinstance(theirs, str) else None
        assert find_cached(repo_id, "config.json", env) == expected, repo_id
        found += [repo_id] if expected is not None else []
    cached = layout in ("ref", "main-folder")
    # the invalid ids with a folder in the cache (acme/tiny.git, -acme/tiny, ...) are refused by both
    assert found == (["acme/tiny", "Org-1/Model_2.5-7B"] if cached else [])


def test_the_cache_rule_does_not_import_huggingface_hub(tmp_path: Path) -> None:
    write_cached(tmp_path, "acme/tiny")
    code = (
        "import sys\n"
        "from gpushare.hub import HubEnv, find_cached\n"
        "from gpushare.resolve import resolve_model\n"
        f"env = {{'HF_HUB_CACHE': {str(tmp_path)!r}, 'HF_HUB_OFFLINE': '1'}}\n"
        "assert find_cached('acme/tiny', 'config.json', HubEnv.from_environ(env)) is not None\n"
        "assert resolve_model('acme/tiny', environ=env).local_path is not None\n"
        "resolve_model('Qwen/Qwen2.5-7B-Instruct', environ=env)  # the catalog\n"
        "print('huggingface_hub' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
