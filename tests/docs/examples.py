"""The README's examples and the numbers in the shipped profiles' comments, made from the real
commands, so that they cannot drift (issue 12, item 15).

In README.md, a marker comment names where a fenced block comes from; the block right after it
must be exactly what that gives:

    <!-- checked: gpushare plan profiles/classic.yaml -->          `$ gpushare ...` and its output
    <!-- checked: gpushare check X --gpus L4 | head -3 -->          the first 3 lines, then `...`
    <!-- checked: file profiles/classic.yaml -->                    the file, as it is

A command whose output is markdown (`gpushare models --architectures --markdown`, the list of
supported architectures) is checked without a fence: its output, as it is, stands between the
marker and a `<!-- checked: end -->` line, so the README renders it.

Commands run in-process (typer's CliRunner, from the repository root) as a user's shell would run
them piped, with COLUMNS=100, HF_HUB_OFFLINE=1, no calibration records and an empty state
directory. `CLAIMS` are numbers in other files' prose, each with the command that computes it.

Refresh everything after a change that is meant to move an answer:

    scripts/refresh-docs          (python tests/docs/examples.py --write)

test_docs.py checks that nothing differs from what this would write.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
COLUMNS = "100"
MARKER = re.compile(r"^<!-- checked: (?P<what>.+?) -->$")
END = "<!-- checked: end -->"
HEAD = re.compile(r"^(?P<command>.+?) \| head -(?P<lines>\d+)$")


@dataclass(frozen=True)
class Block:
    """A checked block of README.md: the marker's line and what it names, and the body lines
    between `fence_start` and `fence_end` (0-based indices of the fence lines; for a markdown
    block, of the marker and its end line)."""

    marker_line: int
    what: str
    fence_start: int
    fence_end: int
    body: str
    markdown: bool = False


def blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    found: list[Block] = []
    for at, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match is None or line.strip() == END:
            continue
        start = at + 1
        if start < len(lines) and not lines[start].startswith("```"):
            end = next((n for n in range(start, len(lines)) if lines[n].strip() == END), None)
            if end is None:
                raise ValueError(
                    f"README.md:{at + 1}: a `checked` marker needs a fenced block or an {END} line"
                )
            found.append(Block(at + 1, match["what"], at, end, "\n".join(lines[start:end]), markdown=True))
            continue
        if start >= len(lines):
            raise ValueError(f"README.md:{at + 1}: a `checked` marker must be followed by a fenced block")
        end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("```")), None)
        if end is None:
            raise ValueError(f"README.md:{start + 1}: unclosed fenced block")
        found.append(Block(at + 1, match["what"], start, end, "\n".join(lines[start + 1 : end])))
    return found


def run_cli(args: list[str]) -> str:
    """What `gpushare ARGS` prints (stdout and stderr as they come), as the docs show it."""
    from typer.testing import CliRunner

    from gpushare.cli import app

    with tempfile.TemporaryDirectory() as state:
        env = {
            "COLUMNS": COLUMNS,
            "HF_HUB_OFFLINE": "1",
            "GPUSHARE_CALIBRATION_FILE": str(Path(state) / "none.json"),
            "GPUSHARE_STATE_DIR": state,
            "GPUSHARE_API_KEY": "",
            "VLLM_API_KEY": "",
        }
        old = Path.cwd()
        os.chdir(ROOT)
        try:
            result = CliRunner().invoke(app, args, env=env)
        finally:
            os.chdir(old)
    return result.output


def expected_body(what: str, markdown: bool = False) -> str:
    """The body a marker's block must have: in a fence, `$ command` and its output; a markdown
    block, the output as it is."""
    if markdown:
        words = what.split()
        if words[0] != "gpushare" or HEAD.match(what):
            raise ValueError(f"`{what}`: a markdown block holds a whole gpushare command's output")
        return run_cli(words[1:]).rstrip("\n")
    if what.startswith("file "):
        return (ROOT / what.removeprefix("file ").strip()).read_text().rstrip("\n")
    head = HEAD.match(what)
    command = head["command"] if head else what
    words = command.split()
    if words[0] != "gpushare":
        raise ValueError(f"`{what}`: only gpushare commands and files are checked")
    output = [line.rstrip() for line in run_cli(words[1:]).rstrip("\n").splitlines()]
    if head and len(output) > int(head["lines"]):
        output = [*output[: int(head["lines"])], "..."]
    return "\n".join([f"$ {command}", *output])


def refreshed_readme(text: str) -> str:
    lines = text.splitlines()
    for block in reversed(blocks(text)):
        lines[block.fence_start + 1 : block.fence_end] = expected_body(
            block.what, block.markdown
        ).splitlines()
    return "\n".join(lines) + "\n"


# --- numbers in other files' prose ------------------------------------------------------------


def _estimate(*args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_cli(["estimate", *args, "--json"]))
    return data


def _usable(profile: str, gpu: str) -> str:
    """What `plan` says GPU 0 offers (CUDA's total less the profile's reserve)."""
    match = re.search(r" usable (\S+ \S+) ", run_cli(["plan", profile, "--gpus", gpu]))
    assert match is not None
    return match.group(1)


def _gib(value: int) -> str:
    from gpushare.units import format_bytes

    return format_bytes(value)


GPTQ_ON_4090 = ("Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4", "--gpu", "RTX-4090", "--max-model-len", "4096")


@dataclass(frozen=True)
class Claim:
    """A number in `file`'s text: `pattern`'s one group, which `value()` computes."""

    file: str
    pattern: str
    value: Callable[[], str]

    def current(self, text: str) -> str:
        match = re.search(self.pattern, text)
        if match is None:
            raise ValueError(f"{self.file}: no text matches {self.pattern!r}")
        return match.group(1)

    def refreshed(self, text: str) -> str:
        match = re.search(self.pattern, text)
        assert match is not None
        return text[: match.start(1)] + self.value() + text[match.end(1) :]


CLAIMS = [
    Claim(
        "profiles/quantized.yaml",
        r"whose weights alone take (\S+ \S+);",
        lambda: _gib(_estimate(*GPTQ_ON_4090, "--concurrency", "1")["weights_bytes"]),
    ),
    Claim(
        "profiles/quantized.yaml",
        r"context it needs (\S+ \S+) for even",
        lambda: _gib(_estimate(*GPTQ_ON_4090, "--concurrency", "1")["process_bytes"]),
    ),
    Claim(
        "profiles/quantized.yaml",
        r"reserve \((\S+ \S+) on an RTX 4090\)",
        lambda: _usable("profiles/quantized.yaml", "RTX-4090"),
    ),
]


def checked_files() -> Iterator[tuple[Path, str, str]]:
    """(path, text now, text as refreshed) of every file this module keeps."""
    text = README.read_text()
    yield README, text, refreshed_readme(text)
    by_file: dict[str, list[Claim]] = {}
    for claim in CLAIMS:
        by_file.setdefault(claim.file, []).append(claim)
    for name, claims in by_file.items():
        path = ROOT / name
        now = path.read_text()
        new = now
        for claim in claims:
            new = claim.refreshed(new)
        yield path, now, new


def main(argv: list[str]) -> int:
    write = "--write" in argv
    stale = []
    for path, now, new in checked_files():
        if now != new:
            stale.append(path.relative_to(ROOT))
            if write:
                path.write_text(new)
    for name in stale:
        print(f"{'refreshed' if write else 'stale'}: {name}")
    if not stale:
        print("README.md and the checked files are up to date")
    return 0 if write or not stale else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
