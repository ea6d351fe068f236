"""A `vllm serve` command line as a value: `VllmCommand.to_argv()` writes it, `from_argv()` reads
one back, and `FLAGS` is the one table from fields to flags (the profile's list of flags that
gpushare sets comes from it too).

The reading follows vLLM's argument parser (vllm/engine/arg_utils.py, utils FlexibleArgumentParser):
`--flag value` and `--flag=value`, underscores in flag names read as dashes, the last occurrence of
a flag wins, `--served-model-name` takes one or more names, and the model is either the positional
after `serve` or `--model`. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

FlagKind = Literal["value", "names", "switch"]


@dataclass(frozen=True)
class Flag:
    """One field's flag: `value` takes one argument, `names` one or more (nargs='+'), `switch`
    none. The flag is written only when the field differs from `omit_when`."""

    field: str
    flag: str
    kind: FlagKind = "value"
    omit_when: object = None


def format_utilization(util: float) -> str:
    """0.5 → '0.5', 0.31250 → '0.3125': four decimals at most, no trailing zeros."""
    return f"{util:.4f}".rstrip("0").rstrip(".")


# The order is the order `to_argv` writes them in.
FLAGS: tuple[Flag, ...] = (
    Flag("served_name", "--served-model-name", "names"),
    Flag("host", "--host"),
    Flag("port", "--port"),
    Flag("max_model_len", "--max-model-len"),
    Flag("gpu_memory_utilization", "--gpu-memory-utilization"),
    Flag("kv_cache_memory_bytes", "--kv-cache-memory-bytes"),
    Flag("tensor_parallel_size", "--tensor-parallel-size", omit_when=1),
    Flag("dtype", "--dtype", omit_when="auto"),
    Flag("kv_cache_dtype", "--kv-cache-dtype", omit_when="auto"),
    Flag("block_size", "--block-size"),
    Flag("max_num_seqs", "--max-num-seqs"),
    Flag("max_num_batched_tokens", "--max-num-batched-tokens"),
    Flag("quantization", "--quantization"),
    Flag("runner", "--runner"),
    Flag("convert", "--convert"),
    Flag("enforce_eager", "--enforce-eager", "switch", omit_when=False),
    # on-demand instances (vllm/sleep.py): the cumem allocator, so /sleep can free the memory
    Flag("enable_sleep_mode", "--enable-sleep-mode", "switch", omit_when=False),
    # Multimodal models (vLLM 0.26.0 engine/arg_utils.py:1250-1280, config/multimodal.py)
    Flag("language_model_only", "--language-model-only", "switch", omit_when=False),
    Flag("limit_mm_per_prompt", "--limit-mm-per-prompt", omit_when=()),
    Flag("mm_encoder_tp_mode", "--mm-encoder-tp-mode"),
)
MODEL_FLAG = Flag("model", "--model")
# vLLM's short spellings of flags in the table (arg_utils.py: `-tp`, `-q`).
SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-q": "--quantization"}
FLAG_OF: dict[str, str] = {f.field: f.flag for f in (MODEL_FLAG, *FLAGS)}
"""Field name → flag, for every flag the command writes (`--model` included)."""

_BY_FLAG: dict[str, Flag] = {f.flag: f for f in (MODEL_FLAG, *FLAGS)}
_INTS = frozenset(
    {
        "port",
        "max_model_len",
        "kv_cache_memory_bytes",
        "tensor_parallel_size",
        "block_size",
        "max_num_seqs",
        "max_num_batched_tokens",
    }
)


def format_mm_limits(limits: tuple[tuple[str, int], ...]) -> str:
    """((image, 2), (video, 0)) → '{"image":2,"video":0}', the JSON vLLM's flag takes."""
    return json.dumps(dict(limits), separators=(",", ":"))


def parse_mm_limits(text: str) -> tuple[tuple[str, int], ...] | None:
    """The counts of a --limit-mm-per-prompt JSON object, or None when it is anything else (the
    per-item options form, `{"image": {"count": 1, "width": 512}}`, stays an extra argument)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()):
        return None
    return tuple((str(k), int(n)) for k, n in value.items())


_FORMAT: dict[str, Callable[[Any], str]] = {
    "gpu_memory_utilization": format_utilization,
    "limit_mm_per_prompt": format_mm_limits,
}


def canonical_flag(arg: str) -> str | None:
    """The long flag an argument spells (`--max_model_len=4` → `--max-model-len`, `-tp` →
    `--tensor-parallel-size`), or None when it is not a flag."""
    if arg in SHORT_FLAGS:
        return SHORT_FLAGS[arg]
    if not arg.startswith("--"):
        return None
    return "--" + arg[2:].split("=", 1)[0].replace("_", "-")


@dataclass(frozen=True)
class VllmCommand:
    """One `vllm serve` process as gpushare starts it.

    `program` is what comes before the model: `("vllm", "serve")` takes the model as the positional
    after it; any other program (`python -m vllm.entrypoints.openai.api_server`) gets `--model`.
    None (or the default) means the flag is not passed and vLLM picks; `extra_args` go last, as
    they are.
    """

    program: tuple[str, ...]
    model: str | None = None
    served_name: tuple[str, ...] = ()
    host: str | None = None
    port: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    quantization: str | None = None
    runner: str | None = None  # generate or pooling (vLLM 0.26.0 config/model.py RunnerOption)
    convert: str | None = None  # embed or classify: a text generator served as a pooling model
    enforce_eager: bool = False
    enable_sleep_mode: bool = False
    language_model_only: bool = False
    limit_mm_per_prompt: tuple[tuple[str, int], ...] = ()
    mm_encoder_tp_mode: str | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def positional_model(self) -> bool:
        """Whether the model goes right after the program (`vllm serve MODEL`)."""
        return bool(self.program) and self.program[-1] == "serve"

    def name_served(self) -> str | None:
        """The name completions ask for: the first served name, else the model."""
        return self.served_name[0] if self.served_name else self.model

    def to_argv(self) -> tuple[str, ...]:
        argv = list(self.program)
        if self.model is not None:
            argv += [self.model] if self.positional_model else [MODEL_FLAG.flag, self.model]
        for flag in FLAGS:
            value = getattr(self, flag.field)
            if value == flag.omit_when or (flag.kind == "names" and not value):
                continue
            if flag.kind == "switch":
                argv.append(flag.flag)
            elif flag.kind == "names":
                argv += [flag.flag, *value]
            else:
                argv += [flag.flag, _FORMAT.get(flag.field, str)(value)]
        argv += self.extra_args
        return tuple(argv)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> VllmCommand:
        """Read a command back. Flags not in the table stay in `extra_args` in their order (with
        the arguments that follow them); a value that does not parse stays there too."""
        args = list(argv)
        program, rest = _split_program(args)
        values: dict[str, Any] = {}
        extra: list[str] = []
        if program and program[-1] == "serve" and rest and not rest[0].startswith("-"):
            values["model"] = rest.pop(0)
        i = 0
        while i < len(rest):
            arg = rest[i]
            flag = _BY_FLAG.get(canonical_flag(arg) or "")
            if flag is None:
                extra.append(arg)
                i += 1
                continue
            inline = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else None
            if flag.kind == "switch":
                values[flag.field] = True
                i += 1
                continue
            if flag.kind == "names":
                names = [inline] if inline is not None else []
                j = i + 1
                if inline is None:
                    while j < len(rest) and not rest[j].startswith("-"):
                        names.append(rest[j])
                        j += 1
                if names:
                    values[flag.field] = tuple(names)
                else:
                    extra.append(arg)
                i = j
                continue
            if inline is None and i + 1 >= len(rest):
                extra.append(arg)  # a flag without its value: vLLM would refuse it; keep it
                i += 1
                continue
            text = inline if inline is not None else rest[i + 1]
            used = [arg] if inline is not None else [arg, rest[i + 1]]
            i += len(used)
            parsed = _parse(flag.field, text)
            if parsed is None:
                extra += used
            else:
                values[flag.field] = parsed
        return cls(program=tuple(program), extra_args=tuple(extra), **values)

    def without(self, *field_names: str) -> VllmCommand:
        """The same command with these fields back at vLLM's defaults (their flags not passed)."""
        defaults: dict[str, Any] = {f.name: f.default for f in fields(self) if f.name in field_names}
        return replace(self, **defaults)


def _split_program(args: list[str]) -> tuple[list[str], list[str]]:
    """The program and the rest: the program runs through `serve` when `serve` comes before the
    first flag of the table, else up to that flag."""
    first_flag = next((at for at, arg in enumerate(args) if canonical_flag(arg) in _BY_FLAG), len(args))
    if "serve" in args[:first_flag]:
        at = args.index("serve") + 1
        return args[:at], args[at:]
    return args[:first_flag], args[first_flag:]


def _parse(name: str, text: str) -> Any:
    if name in _INTS:
        try:
            return int(text)
        except ValueError:
            return None
    if name == "gpu_memory_utilization":
        try:
            return float(text)
        except ValueError:
            return None
    if name == "limit_mm_per_prompt":
        return parse_mm_limits(text)
    return text
