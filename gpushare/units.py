"""Byte sizes. Bytes are `int` everywhere; strings are parsed only at the boundary.

GiB (2**30) and GB (10**9) are different and both appear in users' files, so both are accepted
and kept apart. A bare number is bytes.
"""

from __future__ import annotations

import math
import re

from gpushare.errors import InputError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": KiB,
    "kib": KiB,
    "mi": MiB,
    "mib": MiB,
    "gi": GiB,
    "gib": GiB,
    "ti": TiB,
    "tib": TiB,
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float, what: str = "size") -> int:
    """Parse "80GiB", "80 GB", "24g", "1.5GiB" or a plain number of bytes into an int.

    >>> parse_bytes("80GiB")
    85899345920
    >>> parse_bytes("80GB")
    80000000000
    """
    if isinstance(text, bool):
        raise InputError(f"{what}: expected a size such as 80GiB or 24GB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise InputError(f"{what}: a size cannot be negative ({text})")
        return text
    if isinstance(text, float):
        if text < 0 or not math.isfinite(text):
            raise InputError(f"{what}: a size must be a finite non-negative number ({text})")
        return int(text)
    match = _SIZE_RE.match(text)
    if not match:
        raise InputError(
            f"{what}: cannot read {text!r} as a size", hint="write e.g. 80GiB, 24GB or 1073741824"
        )
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise InputError(
            f"{what}: unknown unit {unit!r} in {text!r}",
            hint="use B, KB/MB/GB/TB (powers of 10) or KiB/MiB/GiB/TiB (powers of 2)",
        )
    return int(round(float(number) * factor))


def format_bytes(n: int | float, digits: int = 2) -> str:
    """Human form in binary units: 85520809984 -> '79.65 GiB'."""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            if unit == "B":
                return f"{sign}{int(value)} B"
            return f"{sign}{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cdiv(a: int, b: int) -> int:
    """Ceiling division on ints, as vLLM's `cdiv`."""
    return -(-a // b)
