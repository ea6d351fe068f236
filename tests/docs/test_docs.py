"""README.md's examples and the profiles' numbers are what the commands print (examples.py).

When one fails after a change that is meant to move an answer: scripts/refresh-docs, and commit
the README and profile changes with it.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from examples import CLAIMS, README, ROOT, blocks, expected_body, refreshed_readme, run_cli  # noqa: E402

BLOCKS = blocks(README.read_text())
REFRESH = "out of date: run scripts/refresh-docs (and commit what it changes)"


def test_the_readme_has_checked_examples() -> None:
    kinds = {"file" if b.what.startswith("file ") else b.what.split()[1] for b in BLOCKS}
    assert {"file", "estimate", "plan", "check", "models"} <= kinds
    assert any(b.markdown and b.what == "gpushare models --architectures --markdown" for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.marker_line}: {b.what}" for b in BLOCKS])
def test_each_checked_block_is_what_its_command_prints(block: object) -> None:
    from examples import Block

    assert isinstance(block, Block)
    expected = expected_body(block.what, block.markdown)
    diff = "\n".join(difflib.unified_diff(block.body.splitlines(), expected.splitlines(), lineterm=""))
    assert block.body == expected, f"README.md:{block.marker_line} {REFRESH}\n{diff}"


@pytest.mark.parametrize("claim", CLAIMS, ids=[f"{c.file}: {c.pattern}" for c in CLAIMS])
def test_each_number_in_the_profiles_comments_is_computed(claim: object) -> None:
    from examples import Claim

    assert isinstance(claim, Claim)
    assert claim.current((ROOT / claim.file).read_text()) == claim.value(), f"{claim.file} {REFRESH}"


def _outside_blocks(text: str) -> list[str]:
    lines = text.splitlines()
    for block in reversed(blocks(text)):
        del lines[block.fence_start + 1 : block.fence_end]
    return lines


def test_refreshing_changes_nothing_else() -> None:
    """The refresh rewrites block bodies only: the prose around them stays as written."""
    stale = README.read_text().replace("$ gpushare plan profiles/classic.yaml\n", "$ stale\n", 1)
    assert stale != README.read_text()
    assert _outside_blocks(refreshed_readme(stale)) == _outside_blocks(stale)
    assert refreshed_readme(stale) == README.read_text()


def test_a_markdown_block_is_refreshed_in_place() -> None:
    """The architecture list is the command's markdown between its marker and the end line: a
    stale row is rewritten, and nothing outside the block moves."""
    text = README.read_text()
    row = "| `BertModel` | `bert.BertEmbeddingModel` |"
    assert row in text
    stale = text.replace(row, "| `BertModel` | `bert.Stale` |", 1)
    (block,) = [b for b in blocks(stale) if b.markdown]
    assert "bert.Stale" in block.body
    assert refreshed_readme(stale) == text


def test_other_console_blocks_hold_commands_only() -> None:
    """A console block that no marker checks may show commands (tests/test_command_mentions.py
    checks those), never output, which would drift unseen."""
    checked = {b.fence_start for b in BLOCKS}
    lines = README.read_text().splitlines()
    for at, line in enumerate(lines):
        if line == "```console" and at not in checked:
            end = lines.index("```", at + 1)
            for n in range(at + 1, end):
                assert lines[n].startswith("$ gpushare ") or lines[n].lstrip().startswith("# "), (
                    f"README.md:{n + 1}: output in a console block no `checked` marker names: {lines[n]!r}"
                )


def test_files_the_readme_names_exist() -> None:
    """`profiles/lab.yaml` was named and did not exist."""
    text = README.read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:profiles|examples|bench|scripts|tests)/[\w./-]+\w)", text))
    missing = sorted(n for n in named if not (ROOT / n).exists() and "*" not in n)
    assert missing == []


def test_the_quantized_profiles_reasoning_still_holds() -> None:
    """Its comment says the GPTQ model alone does not fit a 24 GB card: plan it there."""
    output = run_cli(["plan", "profiles/quantized.yaml", "--gpus", "RTX-4090"])
    assert "does not fit: qwen2.5-32b-gptq:" in output
