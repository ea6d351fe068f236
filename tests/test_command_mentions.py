"""Every `gpushare X ...` the package or the README names is a real command with real options
(issue 12, item 6: hints said `gpushare models --catalog` and `gpushare status --all`).

Read from every string in the package (hints, messages, help, docstrings; f-strings' literal
parts) and from the README's code. A mention is checked when it is in backticks, in the README,
names a command of the CLI's own table (`COMMANDS`), or carries an `--option`; prose such as "gpushare
sets this flag" is left alone. The command, its subcommand (for a group such as `profile`) and each
`--option` must exist in the click commands the CLI builds.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

import gpushare
from gpushare.cli import app
from gpushare.cli.app import COMMANDS

PACKAGE_DIR = Path(gpushare.__file__).parent
README = PACKAGE_DIR.parent / "README.md"
# Commands whose module exists but which the CLI does not register yet, with who registers them.
# Remove the entry when it is registered (a test below insists).
PENDING: dict[str, str] = {}
ROOT_OPTIONS = {"--debug", "--help"}

BACKTICKED = re.compile(r"`(gpushare(?: [^`]*)?)`")
# Unquoted: "gpushare WORD" and what follows up to a clause's end.
BARE = re.compile(r"(?<![\w`/.$-])(gpushare (?:--debug )?[a-z][\w-]*(?: [^\s;,()`'\"]+)*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
WORD = re.compile(r"[a-z][\w-]*")


@dataclass(frozen=True)
class Mention:
    where: str
    text: str
    strict: bool


def _strings(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _mentions_in(text: str, where: str, strict: bool) -> Iterator[Mention]:
    quoted = [m.group(1) for m in BACKTICKED.finditer(text)]
    for found in quoted:
        yield Mention(where, found, True)
    rest = BACKTICKED.sub(" ", text)
    for match in BARE.finditer(rest):
        yield Mention(where, _clause(match.group(1)), strict)


def _clause(text: str) -> str:
    """A bare mention up to a word that ends its clause with a colon ("gpushare export k8s: ...")."""
    words = text.split(" ")
    for at, word in enumerate(words):
        if word.endswith(":"):
            return " ".join([*words[:at], word[:-1]])
    return text


def package_mentions() -> Iterator[Mention]:
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        where = str(path.relative_to(PACKAGE_DIR.parent))
        for text in _strings(ast.parse(path.read_text())):
            yield from _mentions_in(text, where, strict=False)


def readme_mentions() -> Iterator[Mention]:
    in_code = False
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        where = f"README.md:{number}"
        if in_code:
            command = line.removeprefix("$ ").strip()
            if line.startswith("$ gpushare") or line.startswith("gpushare "):
                yield Mention(where, command.split("  #")[0], True)
        else:
            for found in BACKTICKED.finditer(line):
                yield Mention(where, found.group(1), True)


def _commands() -> dict[str, Any]:
    for entry in COMMANDS.values():
        importlib.import_module(f"gpushare.cli.{entry.module}")
    return dict(typer.main.get_group(app).commands)


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names


def problem(mention: Mention, commands: dict[str, Any]) -> str | None:
    """Why `mention` names something that does not exist, or None."""
    words = mention.text.split()[1:]
    while words and words[0] in ROOT_OPTIONS:
        words = words[1:]
    options = OPTION.findall(mention.text)
    if not words or not WORD.fullmatch(words[0]):
        return None if not [o for o in options if o not in ROOT_OPTIONS] else "options without a command"
    name = words[0]
    if not (mention.strict or name in commands or name in PENDING or options):
        return None  # prose: "gpushare sets this flag"
    if name in PENDING:
        return None
    if name not in commands:
        return f"no command {name!r}"
    command = commands[name]
    subcommands = getattr(command, "commands", None)
    if subcommands is not None:
        sub = next((w for w in words[1:] if WORD.fullmatch(w)), None)
        if sub is None:
            return None if not options or set(options) <= {"--help"} else "options without a subcommand"
        if sub not in subcommands:
            return f"`gpushare {name}` has no command {sub!r}"
        command = subcommands[sub]
    unknown = [o for o in options if o not in _options(command) and o not in ROOT_OPTIONS]
    return f"`gpushare {name}` has no option {', '.join(unknown)}" if unknown else None


ALL = [*package_mentions(), *readme_mentions()]


def test_mentions_are_found() -> None:
    texts = {m.text for m in ALL}
    assert "gpushare up PROFILE" in texts  # a bare hint (the `_only_profile` error)
    assert any(t.startswith("gpushare estimate MODEL [--gpu") for t in texts)  # the README's synopsis
    assert len(ALL) > 100


@pytest.mark.parametrize("mention", ALL, ids=[f"{m.where}: {m.text}"[:120] for m in ALL])
def test_each_mention_names_a_real_command(mention: Mention) -> None:
    assert problem(mention, _commands()) is None, f"{mention.where}: `{mention.text}`"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpushare models --catalog lists it", "`gpushare models` has no option --catalog"),
        ("gpushare status --all", "`gpushare status` has no option --all"),
        ("gpushare deploy k8s", "no command 'deploy'"),
        ("gpushare export helm", "`gpushare export` has no command 'helm'"),
        ("gpushare profile estimate", "`gpushare profile` has no command 'estimate'"),
        ("gpushare plan profiles/lab.yaml --gpus 2xH100 --json", None),
        ("gpushare --debug gpus", None),
        ("gpushare sets --max-model-len", "no command 'sets'"),
    ],
)
def test_the_checker_itself(text: str, expected: str | None) -> None:
    assert problem(Mention("test", text, True), _commands()) == expected


def test_a_colon_ends_a_bare_mention() -> None:
    [mention] = _mentions_in("gpushare export k8s: profile 'lab'", "test", strict=False)
    assert mention.text == "gpushare export k8s"


def test_pending_commands_are_still_pending() -> None:
    assert not set(PENDING) & set(_commands()), "registered now: remove it from PENDING"
