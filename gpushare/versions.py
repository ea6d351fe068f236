"""vLLM release numbers as tuples, so releases compare in order. Pure."""

from __future__ import annotations


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.26.0' → (0, 26, 0); letters are dropped ('0.30.0rc1' → (0, 30, 1)), missing parts are 0."""
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]
