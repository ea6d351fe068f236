"""Find a model's config.json (and its safetensors headers when they can be had without weights).

Where a reference is looked up, in order:
1. a local folder holding config.json;
2. the local Hugging Face cache (a repo id downloaded before);
3. the bundled catalog of exact published config.json files (gpushare/catalog/hf_configs);
4. the Hub, through huggingface_hub: config.json and the safetensors headers only, never
   weights; skipped in offline mode.

Offline mode and the cache's place follow `hub.HubEnv` (the one rule, shared with `up`'s
pre-flight); the Hub sits behind `hub.HubClient` so tests never touch the network.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpushare.errors import ConfigError, ModelNotFoundError
from gpushare.hfconfig import ModelArch, parse_config
from gpushare.hub import HubClient as HubClient  # re-exported: estimate_job imports it from here
from gpushare.hub import HubEnv, HuggingFaceHub, find_cached, read_config_json
from gpushare.weights import HeaderTensor, parse_header

CATALOG_DIR = Path(__file__).parent / "catalog" / "hf_configs"
# Catalog repos that ship a Sentence-Transformers `modules.json` with a pooling module, which makes
# vLLM's `--runner auto` pick the pooling runner (config/model.py _get_default_runner_type,
# transformers_utils/config.py get_pooling_config). Each repo's model card shows its
# sentence-transformers use; the i11 GPU run's folders carried these files
# (bench/gpu/i11_folders.py) and vLLM logged "Found pooling configuration".
SENTENCE_TRANSFORMERS_REPOS = frozenset(
    {"Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Embedding-8B", "BAAI/bge-m3"}
)
_ST_FILE = "modules.json"
_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors caps its JSON header at 100 MB


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    location: str  # human description of where config.json came from
    config: Mapping[str, Any]
    tensors: tuple[HeaderTensor, ...] | None  # every tensor of the checkpoint, when known
    local_path: Path | None  # a folder vLLM can serve from, when there is one
    sentence_transformers: bool = False
    """The model ships a Sentence-Transformers modules.json: vLLM's `--runner auto` picks pooling.
    Known for folders, the Hugging Face cache and the catalog; not asked of the Hub."""

    def arch(self) -> ModelArch:
        return parse_config(self.config, self.reference)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file: 8-byte little-endian length, then JSON."""
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ConfigError(f"{path}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw_len)
        if length > _HEADER_LIMIT:
            raise ConfigError(f"{path}: safetensors header of {length} bytes is implausible")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header must be a JSON object")
    return header


def tensors_in_folder(folder: Path) -> tuple[HeaderTensor, ...] | None:
    """All tensors from the folder's *.safetensors headers (reads headers only), or None."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    tensors: list[HeaderTensor] = []
    for file in files:
        tensors.extend(parse_header(read_safetensors_header(file), str(file)))
    return tuple(tensors)


def catalog_entries() -> dict[str, Path]:
    """Bundled configs by repo id ("Qwen/Qwen2.5-7B-Instruct")."""
    entries = {}
    for path in sorted(CATALOG_DIR.glob("*.json")):
        org, _, repo = path.stem.partition("--")
        if repo:
            entries[f"{org}/{repo}"] = path
    return entries


def _catalog_lookup(reference: str) -> Path | None:
    entries = catalog_entries()
    if reference in entries:
        return entries[reference]
    lowered = {k.lower(): v for k, v in entries.items()}
    if reference.lower() in lowered:
        return lowered[reference.lower()]
    # A bare name matches when exactly one catalog repo has it ("Qwen2.5-7B-Instruct").
    bare = [v for k, v in entries.items() if k.split("/", 1)[1].lower() == reference.lower()]
    return bare[0] if len(bare) == 1 else None


def _looks_like_repo_id(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and all(parts) and not reference.startswith((".", "/", "~"))


def resolve_model(
    reference: str, hub: HubClient | None = None, environ: Mapping[str, str] | None = None
) -> ResolvedModel:
    """Find `reference`; raise ModelNotFoundError naming every place looked at. `environ` (default
    os.environ) says whether the Hub may be asked and where the cache is (`hub.HubEnv`)."""
    env = HubEnv.from_environ(environ)
    looked: list[str] = []
    path = Path(reference).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelNotFoundError(
                f"{reference}: folder has no config.json", hint="point at a Hugging Face model folder"
            )
        return ResolvedModel(
            reference,
            f"local folder {path}",
            read_config_json(config, reference),
            tensors_in_folder(path),
            path,
            (path / _ST_FILE).is_file(),
        )
    looked.append(f"no local folder {path}")
    if path.suffix == ".json" and path.is_file():
        return ResolvedModel(reference, f"config file {path}", read_config_json(path, reference), None, None)

    if _looks_like_repo_id(reference):
        cached_config = find_cached(reference, "config.json", env)
        cached = cached_config.parent if cached_config is not None else None
        if cached is not None:
            return ResolvedModel(
                reference,
                f"Hugging Face cache {cached}",
                read_config_json(cached / "config.json", reference),
                tensors_in_folder(cached),
                cached,
                (cached / _ST_FILE).is_file() or reference in SENTENCE_TRANSFORMERS_REPOS,
            )
        looked.append("not in the Hugging Face cache")

    catalog_path = _catalog_lookup(reference)
    if catalog_path is not None:
        repo_id = catalog_path.stem.replace("--", "/", 1)
        return ResolvedModel(
            repo_id,
            "gpushare catalog",
            read_config_json(catalog_path, reference),
            None,
            None,
            repo_id in SENTENCE_TRANSFORMERS_REPOS,
        )
    looked.append("not in the bundled catalog (`gpushare models` lists it)")

    if _looks_like_repo_id(reference):
        if env.offline:
            looked.append(f"Hub not asked ({env.offline_by} is set)")
        else:
            hub = hub or HuggingFaceHub(env)
            try:
                hub_config = hub.config(reference)
            except ConfigError:
                raise
            except Exception as exc:  # network errors, 404, gated repos
                looked.append(
                    f"Hub: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                )
            else:
                tensors = hub.safetensors_tensors(reference)
                return ResolvedModel(
                    reference,
                    "Hugging Face Hub",
                    hub_config,
                    tuple(tensors) if tensors else None,
                    None,
                    reference in SENTENCE_TRANSFORMERS_REPOS,
                )
    raise ModelNotFoundError(
        f"model {reference!r} not found: " + "; ".join(looked),
        hint="give a local folder with config.json, a cached or catalog repo id,"
        f" or unset {env.offline_by or 'HF_HUB_OFFLINE'}",
    )
