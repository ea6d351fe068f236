"""A profile's problems: where (the path in the file and its YAML line) and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpushare.errors import ProfileError


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
