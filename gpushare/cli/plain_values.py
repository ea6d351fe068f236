"""Command-line values without pydantic, where typer's answer is known in advance.

typer (0.2x) coerces every parameter's value through a pydantic `TypeAdapter`, built the first time
the parameter is processed, defaults included. For `gpushare estimate`, which needs pydantic for
nothing else, importing it and building some twenty adapters is about 0.08 s of CPU, a quarter of
the command (BENCHMARKS.md, start-up). For a plain value the answer is known without them: a `str`
parameter's text is the value, an `int` or `float` one's is `int(text)` / `float(text)` when the
text is plain digits, as pydantic's lax mode reads it, within the parameter's `min`/`max`, and a
flag's True or False is itself.
`PlainValues` answers those; everything else (text that does not parse, a value out of bounds,
bools from an environment variable, paths, choices, lists, clamping, custom parsers) goes to
typer's own coercion, built on first need, so its results and its error messages stay typer's.
tests/cli/test_plain_values.py checks both against typer's adapters.

Where typer has no such hook (other versions), `use_plain_values` changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PLAIN_TYPES = (str, int, float, bool)
_TYPERS = object()
"""`_plain`'s answer when typer must decide."""


def _plain(value: Any, annotation: type, minimum: Any, maximum: Any) -> Any:
    if annotation is str:
        return value if isinstance(value, str) else _TYPERS
    if annotation is bool:  # a flag's own True/False; text (an environment variable) is typer's
        return value if isinstance(value, bool) else _TYPERS
    if type(value) is annotation:
        number = value
    elif isinstance(value, str) and (_INT_TEXT if annotation is int else _FLOAT_TEXT).fullmatch(value):
        number = annotation(value)
    else:
        return _TYPERS
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        return _TYPERS  # typer says how it is out of range
    return number


def _eligible(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or not hasattr(param, "_runtime_param"):
        return False
    info = descriptor.parameter_info
    return (
        descriptor.annotation in _PLAIN_TYPES
        and not (param.multiple or param.nargs != 1)
        and getattr(info, "parser", None) is None
        and not getattr(info, "clamp", False)
        and not (descriptor.is_choice or descriptor.is_path or descriptor.is_file)
    )


class PlainValues:
    """Stands in for typer's coercion of one parameter (its `_runtime_param`)."""

    def __init__(self, param: Any) -> None:
        descriptor = param.type_descriptor
        self._descriptor = descriptor
        self._annotation: type = descriptor.annotation
        self._min = descriptor.parameter_info.min
        self._max = descriptor.parameter_info.max
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return None
        answer = _plain(value, self._annotation, self._min, self._max)
        if answer is not _TYPERS:
            return answer
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self._descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def use_plain_values(params: Iterable[Any]) -> None:
    """Give each plain parameter `PlainValues` (a command's `get_params(ctx)`: its own and --help)."""
    for param in params:
        if _eligible(param) and param._runtime_param is None:
            param._runtime_param = PlainValues(param)
