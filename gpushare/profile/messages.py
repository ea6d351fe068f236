"""pydantic's validation errors as profile problems, each with its fix."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from gpushare.memory.settings import SETTING_RULES
from gpushare.profile.lines import LineIndex
from gpushare.profile.problems import ProfileProblem, format_path
from gpushare.profile.schema import AtPath, Profile, strip_prefix


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


_BOUND_KINDS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"}
)


def _message(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """The path and a message with the fix for one pydantic error."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), AtPath):
        at = ctx["error"]
        # relative to the model whose validator raised it (the profile's: the root)
        return loc + at.loc, at.message
    # pydantic tags union members in the location ("list[str]", "function-after[...]"): drop them.
    loc = tuple(p for p in loc if isinstance(p, int) or not any(c in p for c in "[]()"))
    leaf = loc[-1] if loc else None
    if kind in _BOUND_KINDS and isinstance(leaf, str) and leaf in SETTING_RULES:
        problem = SETTING_RULES[leaf].problem(value)
        if problem is not None:
            return loc, problem
    if kind == "extra_forbidden":
        field = str(loc[-1])
        known = _fields_of(loc[:-1])
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
        return loc, f"unknown field {field!r}; {fix}"
    if kind == "missing":
        return loc, "required field missing; add it"
    if kind == "value_error":
        return loc, strip_prefix(str(error["msg"]), "Value error, ")
    if kind == "literal_error":
        return loc, f"{value!r} is not allowed; use {ctx.get('expected', 'one of the listed values')}"
    if kind == "string_pattern_mismatch":
        return loc, (
            f"{value!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    bound = _bound_message(kind, value, ctx)
    if bound is not None:
        return loc, bound
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


def _bound_message(kind: str, value: Any, ctx: Mapping[str, Any]) -> str | None:
    """A number out of range, a string or list too short or long: the bound and what to write."""
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']} or more, got {value!r}; set it to {ctx['ge']} or more"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}, got {value!r}; set it above {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be {ctx['le']} or less, got {value!r}; set it to {ctx['le']} or less"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}, got {value!r}; set it below {ctx['lt']}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx['multiple_of']}, got {value!r}"
    if kind == "string_too_short":
        return "must not be empty; give a value"
    if kind == "string_too_long":
        return f"is {len(value)} characters, at most {ctx['max_length']}; shorten it"
    if kind == "too_short":
        count = ctx["min_length"]
        return f"must list at least {count} item{'' if count == 1 else 's'}; add one"
    if kind == "too_long":
        return f"may list at most {ctx['max_length']}; remove some"
    return None


def _other_branch(
    error: Mapping[str, Any], loc: tuple[str | int, ...], locs: Sequence[tuple[str | int, ...]]
) -> bool:
    """A union's literal member refusing a value another member took further (`modalities:
    {image: -1}` is no 'off', and the mapping's own error says what is wrong): not a problem."""
    if error["type"] != "literal_error" or isinstance(error.get("input"), str):
        return False
    return any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)


def problems_from_validation(exc: ValidationError, lines: LineIndex) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    seen: set[tuple[str, str]] = set()
    errors = exc.errors()
    located = [_message(error) for error in errors]
    locs = [loc for loc, _ in located]
    for error, (loc, message) in zip(errors, located, strict=True):
        if _other_branch(error, loc, locs):
            continue
        path = format_path(loc)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(ProfileProblem(path, lines.line_of(loc), message))
    return problems
