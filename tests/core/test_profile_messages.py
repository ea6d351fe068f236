"""Every message about a profile or a GPU inventory names the fix (issue 12, item 11).

The bad values are not a hand-picked list: they are made from the profile's own JSON Schema (one
per bound, pattern, choice, type and required field), so a field added later is covered the day it
is added. Cross-field rules (validators that no schema states) have their own table.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpushare.devices.static import StaticInventory
from gpushare.errors import InputError
from gpushare.profile import ProfileValidationError, parse_profile_text, profile_json_schema

BASE: dict[str, Any] = {"gpus": "2xH100", "models": [{"name": "q", "model": "m"}]}
# pydantic's own words; a message that still has them did not go through profile/messages.py.
PYDANTIC_WORDS = ("Input should", "Value error", "validation error", "Field required", "input_value")
# A message names the fix when it says what to write, set, use, give, add, remove, ... instead.
FIX = re.compile(
    r"\b(set it|use|write|give|add|remove|keep|pin|list|quote it|rename|lower|raise|did you mean|"
    r"known fields|known keys|expected|must be|shorten)\b",
    re.IGNORECASE,
)


def names_the_fix(message: str) -> bool:
    return not any(w in message for w in PYDANTIC_WORDS) and FIX.search(message) is not None


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The field's schema; of a union, its first member, with the other members' types under
    `also` (a value one of them accepts breaks no rule: `host_memory: 5` is 5 bytes)."""
    if "$ref" in schema:
        return _resolve(root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if not options:
        return schema
    first = _resolve(options[0], root)
    also = {_resolve(o, root).get("type") for o in options[1:]} - {None}
    return {**first, "also": sorted(also)} if also else first


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _breaks_the_union(value: Any, schema: dict[str, Any]) -> bool:
    also = schema.get("also", [])
    return not any(isinstance(value, _JSON_TYPES[t]) and not isinstance(value, bool) for t in also)


def _bad_values(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(what, value) pairs that break one constraint of `schema` each."""
    kind = schema.get("type")
    if kind == "integer":
        yield "not a number", "many"
        yield "a boolean", True
        low = schema.get("minimum")
        if low is not None:
            yield "below the minimum", low - 1
        if "maximum" in schema:
            yield "above the maximum", schema["maximum"] + 1
        if "multipleOf" in schema:
            yield "not a multiple", (low or 0) + 1
    elif kind == "number":
        yield "not a number", "much"
        if "minimum" in schema:
            yield "below the minimum", schema["minimum"] - 0.5
        if "exclusiveMaximum" in schema:
            yield "at the exclusive maximum", schema["exclusiveMaximum"]
    elif kind == "string":
        yield "not a string", 5
        if "enum" in schema:
            yield "not a choice", "nope"
        if schema.get("minLength"):
            yield "too short", ""
        if "maxLength" in schema:
            yield "too long", "a" * (schema["maxLength"] + 1)
        if "pattern" in schema:
            yield "against the pattern", "-?"
    elif kind == "boolean":
        yield "not a boolean", "yes"
    elif kind == "array":
        yield "not a list", 5
        if schema.get("minItems"):
            yield "empty", []
    elif kind == "object" and "additionalProperties" in schema:
        yield "a value not a string", {"A": 5}


def _cases() -> Iterator[tuple[str, tuple[str | int, ...], Any]]:
    root = profile_json_schema()
    places: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [((), root)]
    places.append((("defaults",), root["$defs"]["Defaults"]))
    places.append((("models", 0), root["$defs"]["ModelEntry"]))
    places.append((("defaults", "on_demand"), root["$defs"]["OnDemand"]))
    for prefix, schema in places:
        yield f"{prefix}: unknown key", (*prefix, "colour"), "blue"
        for name in schema.get("required", []):
            if prefix:
                yield f"{prefix}: {name} missing", (*prefix, name), None
        for name, field in schema["properties"].items():
            resolved = _resolve(field, root)
            if resolved.get("type") == "object" and "properties" in resolved:
                continue  # `defaults`: its own fields are cases of their own
            for what, value in _bad_values(resolved):
                if _breaks_the_union(value, resolved):
                    yield f"{'.'.join(map(str, (*prefix, name)))}: {what}", (*prefix, name), value
            items = resolved.get("items")
            if items is not None and "$ref" not in items:
                for what, value in _bad_values(_resolve(items, root)):
                    yield f"{'.'.join(map(str, (*prefix, name)))}[0]: {what}", (*prefix, name), [value]


CASES = list(_cases())


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ProfileValidationError) as info:
        parse_profile_text(json.dumps(data), "lab.yaml")
    return [p.message for p in info.value.problems]


def test_the_schema_gives_cases() -> None:
    assert len(CASES) > 60


@pytest.mark.parametrize(("case", "path", "value"), CASES, ids=[c[0] for c in CASES])
def test_each_schema_rule_names_its_fix(case: str, path: tuple[str | int, ...], value: Any) -> None:
    for message in _problems(_with(path, value)):
        assert names_the_fix(message), message


def _one(**fields: Any) -> dict[str, Any]:
    return {"models": [{"name": "q", "model": "m", **fields}]}


def _two(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return {"models": [{"name": "q", "model": "m", **first}, {"name": "r", "model": "m", **second}]}


CPU = {"device": "cpu", "gpus": "auto"}
CROSS_FIELD = [
    ("two targets", _one(concurrency=2, kv_tokens=9)),
    ("pin twice", _one(gpus=[0, 0])),
    ("pins fewer than tp", _one(gpus=[0], tensor_parallel_size=2)),
    ("pin beyond the GPUs", _one(gpus=[5])),
    ("tp beyond the GPUs", _one(tensor_parallel_size=4)),
    ("same name twice", _two({}, {"name": "q"})),
    ("alias of another", _two({}, {"aliases": ["q"]})),
    ("same port twice", _two({"port": 9000}, {"port": 9000})),
    ("managed flag", _one(extra_args=["--max-model-len=4"])),
    ("env name", _one(env={"1X": "y"})),
    ("CUDA_VISIBLE_DEVICES", _one(env={"CUDA_VISIBLE_DEVICES": "0"})),
    ("cpu pin", {**CPU, **_one(gpus=[0])}),
    ("cpu tp", {**CPU, **_one(tensor_parallel_size=2)}),
    ("cpu mps", {**CPU, **_one(mps_thread_percentage=50)}),
    ("unknown GPU", {"gpus": "H1000", **_one()}),
    ("auto in a list", {"gpus": ["auto", "H100"], **_one()}),
    ("no GPU", {"gpus": [], **_one()}),
]


@pytest.mark.parametrize(("case", "data"), CROSS_FIELD, ids=[c[0] for c in CROSS_FIELD])
def test_each_cross_field_rule_names_its_fix(case: str, data: dict[str, Any]) -> None:
    merged = {**BASE, **data}
    for message in _problems(merged):
        assert names_the_fix(message), message


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("not a list", '{"gpus": 5}'),
        ("unknown key", '[{"name": "H100", "colour": 1}]'),
        ("bad size", '[{"name": "x", "total_bytes": "lots"}]'),
        ("not in the catalog", '[{"name": "Mystery GPU"}]'),
        ("reserved over total", '[{"name": "x", "total_bytes": "8GiB", "reserved_bytes": "9GiB"}]'),
        ("same index", '[{"name": "H100", "index": 0}, {"name": "H100", "index": 0}]'),
        ("negative index", '[{"name": "H100", "index": -1}]'),
        ("bad flag", '[{"name": "H100", "mig_enabled": "maybe"}]'),
        ("processes", '[{"name": "H100", "processes": 5}]'),
        ("not JSON", "{"),
    ],
)
def test_each_inventory_message_names_its_fix(case: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "box.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        StaticInventory.from_json_file(path)
    message = info.value.message + (f"; {info.value.hint}" if info.value.hint else "")
    assert message.startswith(str(path)) and names_the_fix(message), message
