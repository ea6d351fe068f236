"""Reading a profile: validate the YAML, then resolve each model and check what depends on its
config. Pure apart from reading the profile file and resolving model configs (through an
injected loader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from gpushare.errors import GpushareError
from gpushare.profile.lines import LineIndex, duplicate_keys
from gpushare.profile.messages import problems_from_validation
from gpushare.profile.problems import ProfileProblem, ProfileValidationError
from gpushare.profile.schema import ModelEntry, Profile

if TYPE_CHECKING:
    from gpushare.estimate_job import ModelFacts

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
    duplicates = list(duplicate_keys(root))
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
    profile = parse_profile_text(read_profile_file(path), file)
    profile.with_source(path, profile.model_lines)
    if check_models:
        check_profile_models(profile, load)
    return profile


def read_profile_file(path: Path) -> str:
    """The profile file's text; a missing file, a directory or unreadable bytes are one problem."""
    file = str(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "no such file"
    except IsADirectoryError:
        problem = "is a directory; give the profile's YAML file"
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read it ({exc})"
    raise ProfileValidationError(file, [ProfileProblem("", 0, problem)])


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
