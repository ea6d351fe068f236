"""The Hugging Face Hub: the one rule for offline mode and the cache, and the Hub behind an interface.

`HubEnv.from_environ(env)` is the rule, read the way huggingface_hub 2.4 reads it at import
(`huggingface_hub/constants.py`), which is what vLLM obeys: it passes
`local_files_only=huggingface_hub.constants.HF_HUB_OFFLINE` when it loads a config
(`vllm/transformers_utils/config.py`) and downloads into `HF_HUB_CACHE`.

- offline: `HF_HUB_OFFLINE`, or when that is unset or empty `TRANSFORMERS_OFFLINE`, is one of
  1/ON/YES/TRUE in any case. A set `HF_HUB_OFFLINE` wins: `HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=1`
  is online.
- cache: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
  `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (`~` and `$VARS` expanded).

Both model resolution (`resolve.py`) and `up`'s pre-flight (`runtime/launcher/preflight.py`) ask it.
The network sits behind `HubClient`, in the style of httpx's transports: `HuggingFaceHub` is the
real one, `MockHub(handler)` answers every request with one scripted function.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from gpushare.errors import ConfigError

if TYPE_CHECKING:  # `up`'s pre-flight imports this module; the tensor model is not needed there
    from gpushare.weights import HeaderTensor

TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
"""huggingface_hub's ENV_VARS_TRUE_VALUES, compared upper-cased."""
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class HubEnv:
    """What the environment says about the Hub."""

    offline_by: str | None
    """The variable that turned offline mode on ("HF_HUB_OFFLINE"), or None when online."""
    cache_dir: Path
    """The hub cache: `models--org--name/snapshots/...` folders live here."""

    @property
    def offline(self) -> bool:
        return self.offline_by is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> HubEnv:
        env = os.environ if environ is None else environ
        return cls(offline_by=_offline_variable(env), cache_dir=_cache_dir(env))


def _offline_variable(env: Mapping[str, str]) -> str | None:
    # `os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")`: the first
    # variable that is set and not empty decides.
    for name in OFFLINE_VARIABLES:
        value = env.get(name)
        if value:
            return name if value.upper() in TRUE_VALUES else None
    return None


def _expand(path: str) -> str:
    # As huggingface_hub does: `~` from HOME, `$VARS` from this process's environment.
    return os.path.expandvars(os.path.expanduser(path))


def _cache_dir(env: Mapping[str, str]) -> Path:
    # os.getenv(name, default) semantics, as huggingface_hub's: a variable set to "" counts as set.
    cache_home = env.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    hf_home = _expand(env.get("HF_HOME", os.path.join(cache_home, "huggingface")))
    legacy = env.get("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(_expand(env.get("HF_HUB_CACHE", legacy)))


# A repo id as huggingface_hub validates it before it looks anything up (utils/_validators.py,
# validate_repo_id): "name" or "namespace/name", each of ASCII letters, digits, "-", "_", ".",
# at most 96 characters, not starting or ending with "-" or "."; no "--" or "..", no ".git" end.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def _valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return (
        len(parts) <= 2
        and all(_REPO_PART.fullmatch(part) for part in parts)
        and "--" not in repo_id
        and ".." not in repo_id
        and not repo_id.endswith(".git")
    )


def find_cached(repo_id: str, filename: str, env: HubEnv) -> Path | None:
    """The cached copy of `filename` in `repo_id`'s main snapshot, or None. Never the network, and
    never huggingface_hub itself (its download machinery takes ~0.1 s to import; `estimate` looks
    here on every call).

    The cache's layout, as huggingface_hub writes it and reads it back (file_download.py,
    try_to_load_from_cache): `models--{org}--{name}/refs/main` holds the commit of the main
    branch, `snapshots/{commit}/{filename}` the file, and `.no_exist/{commit}/{filename}` records
    that the file does not exist at that commit (then: None).
    """
    if not _valid_repo_id(repo_id) or filename.startswith("/") or ".." in Path(filename).parts:
        return None
    repo = env.cache_dir / "--".join(("models", *repo_id.split("/")))
    try:
        revision = (repo / "refs" / "main").read_text()
    except OSError:
        revision = "main"  # no ref: a snapshot folder may still be named after the branch
    if not revision or "/" in revision or revision in (".", ".."):
        return None
    if (repo / ".no_exist" / revision / filename).is_file():
        return None
    found = repo / "snapshots" / revision / filename
    return found if found.is_file() else None


def read_config_json(path: Path, reference: str) -> Mapping[str, Any]:
    """A config.json as a mapping; errors name the model and the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{reference}: {path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            hint="fix or re-download config.json",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{reference}: cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{reference}: {path} must hold a JSON object")
    return data


# --- the network --------------------------------------------------------------------------------


class HubClient(Protocol):
    """What gpushare asks the Hub for: a model's config.json and its safetensors headers (never the
    weights). Errors are the client's own (network, 404, gated); callers report them."""

    def config(self, repo_id: str) -> Mapping[str, Any]: ...

    def safetensors_tensors(self, repo_id: str) -> list[HeaderTensor] | None:
        """Every tensor of the checkpoint, or None when the repo has no safetensors."""
        ...


class HuggingFaceHub:
    """The real Hub, through huggingface_hub; downloads config.json into the rule's cache."""

    def __init__(self, env: HubEnv | None = None) -> None:
        self.env = env or HubEnv.from_environ()

    def config(self, repo_id: str) -> Mapping[str, Any]:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "config.json", cache_dir=self.env.cache_dir)
        return read_config_json(Path(path), repo_id)

    def safetensors_tensors(self, repo_id: str) -> list[HeaderTensor] | None:
        from huggingface_hub import get_safetensors_metadata

        from gpushare.weights import HeaderTensor

        try:
            meta = get_safetensors_metadata(repo_id)
        except Exception:  # no safetensors in the repo (e.g. .bin only): fall back to the config
            return None
        tensors: list[HeaderTensor] = []
        for file_meta in meta.files_metadata.values():
            for name, info in file_meta.tensors.items():
                tensors.append(HeaderTensor(name, info.dtype, tuple(info.shape)))
        return tensors


HubFile = Literal["config.json", "safetensors"]


@dataclass(frozen=True)
class HubRequest:
    repo_id: str
    file: HubFile


HubAnswer: TypeAlias = "Mapping[str, Any] | list[HeaderTensor] | None"
"""A config.json, the safetensors headers' tensors, or None (no safetensors)."""
HubHandler: TypeAlias = Callable[[HubRequest], HubAnswer]


class MockHub:
    """A Hub that answers with `handler(request)`: a config.json as a mapping, a list of tensors
    (or None) for the safetensors headers; a raised exception is the Hub's error. `requests` keeps
    what was asked, in order."""

    def __init__(self, handler: HubHandler) -> None:
        self._handler = handler
        self.requests: list[HubRequest] = []

    def _ask(self, request: HubRequest) -> HubAnswer:
        self.requests.append(request)
        return self._handler(request)

    def config(self, repo_id: str) -> Mapping[str, Any]:
        answer = self._ask(HubRequest(repo_id, "config.json"))
        if not isinstance(answer, Mapping):
            raise TypeError(f"MockHub handler gave {type(answer).__name__} for {repo_id}'s config.json")
        return answer

    def safetensors_tensors(self, repo_id: str) -> list[HeaderTensor] | None:
        answer = self._ask(HubRequest(repo_id, "safetensors"))
        if answer is not None and not isinstance(answer, list):
            raise TypeError(f"MockHub handler gave {type(answer).__name__} for {repo_id}'s safetensors")
        return answer
