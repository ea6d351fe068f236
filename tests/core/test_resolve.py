"""Model resolution: local folder, HF cache, catalog, Hub (through a fake), and where it looked."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gpushare.errors import ConfigError, ModelNotFoundError
from gpushare.resolve import CATALOG_DIR, catalog_entries, read_safetensors_header, resolve_model
from gpushare.weights import HeaderTensor

LLAMA_CFG = json.loads((CATALOG_DIR / "meta-llama--Llama-3.1-8B-Instruct.json").read_text())


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def write_safetensors(path: Path, header: dict[str, Any]) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


class FakeHub:
    def __init__(self, configs: Mapping[str, Mapping[str, Any]]) -> None:
        self.configs = configs
        self.asked: list[str] = []

    def config(self, repo_id: str) -> Mapping[str, Any]:
        self.asked.append(repo_id)
        if repo_id not in self.configs:
            raise OSError(f"404 Client Error for {repo_id}")
        return self.configs[repo_id]

    def safetensors_tensors(self, repo_id: str) -> list[HeaderTensor] | None:
        return [HeaderTensor("model.embed_tokens.weight", "BF16", (128256, 4096))]


def test_local_folder_reads_headers_only(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_CFG))
    write_safetensors(
        folder / "model-00001.safetensors",
        {"a.weight": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]}},
    )
    resolved = resolve_model(str(folder))
    assert resolved.local_path == folder
    assert resolved.tensors == (HeaderTensor("a.weight", "BF16", (4, 8)),)


def test_hf_cache_snapshot_is_found(isolated_cache: Path) -> None:
    repo = isolated_cache / "models--acme--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text(json.dumps(LLAMA_CFG))
    resolved = resolve_model("acme/tiny", hub=FakeHub({}))
    assert "Hugging Face cache" in resolved.location
    assert resolved.local_path == snapshot


def test_catalog_by_repo_id_and_bare_name() -> None:
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct", hub=FakeHub({})).location == "gpushare catalog"
    assert resolve_model("qwen2.5-7b-instruct", hub=FakeHub({})).reference == "Qwen/Qwen2.5-7B-Instruct"


def test_catalog_has_the_required_families() -> None:
    names = set(catalog_entries())
    for repo in (
        "meta-llama/Llama-3.1-8B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "THUDM/chatglm3-6b",
        "google/gemma-2-9b-it",
        "deepseek-ai/DeepSeek-V2-Lite",
    ):
        assert repo in names


def test_hub_gives_config_and_headers_without_weights() -> None:
    hub = FakeHub({"acme/remote": LLAMA_CFG})
    resolved = resolve_model("acme/remote", hub=hub)
    assert resolved.location == "Hugging Face Hub"
    assert hub.asked == ["acme/remote"]
    assert resolved.tensors is not None


def test_offline_never_asks_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = FakeHub({"acme/remote": LLAMA_CFG})
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("acme/remote", hub=hub)
    assert hub.asked == []
    assert "HF_HUB_OFFLINE" in info.value.message


def test_not_found_lists_every_place() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("acme/missing", hub=FakeHub({}))
    message = info.value.message
    assert "no local folder" in message and "Hugging Face cache" in message
    assert "catalog" in message and "404" in message
    # The hint names the command that lists the catalog (tests/test_command_mentions.py checks it exists).
    assert "not in the bundled catalog (`gpushare models` lists it)" in message


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_truncated_safetensors(tmp_path: Path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x01\x02")
    with pytest.raises(ConfigError, match="too short"):
        read_safetensors_header(bad)
