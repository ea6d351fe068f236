"""The terminal, for every command: one `Console` factory, so that all output behaves alike when the
reader goes away (a closed pipe ends the run through the error boundary, app.py); the width output
must fit, and two ways to fit it: a table that leaves columns out (never cuts a cell short), and
lines folded between their parts (never inside one). Commands are never folded: callers print
them whole, one per line, so they stay copy-pasteable."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own answer is SystemExit(1), the "does not fit" code; the boundary maps this to
        # PIPE_CLOSED_EXIT instead.
        self.quiet = True
        raise BrokenPipeError


def console(stderr: bool = False, soft_wrap: bool = False) -> Console:
    """A console on stdout (or stderr): colour on a terminal only, no highlighting of numbers.
    `soft_wrap`: rich never breaks a line (commands must stay copy-pasteable)."""
    return _Console(highlight=False, stderr=stderr, soft_wrap=soft_wrap)


def output_width(out: Console) -> int | None:
    """The columns output must fit: COLUMNS when set (on a terminal or not), else the terminal's
    width; None off a terminal, where nothing is folded or left out (a file or a pipe gets whole
    lines, for grep and awk)."""
    text = os.environ.get("COLUMNS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    return out.width if out.is_terminal else None


Cell = str | tuple[str, str]
"""A table cell: its text, or (text, rich style)."""


@dataclass(frozen=True)
class Column:
    header: str
    keep: int = 0
    """Which columns go first when the width is short: the highest `keep` first; 0 never goes."""
    right: bool = False


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int | None) -> list[int]:
    """The columns that fit in `width` (all of them when None): each is as wide as its widest cell
    (never cut short), two spaces apart; columns are left out, highest `keep` first."""
    widths = [max([len(c.header), *(len(_text(r[i])) for r in rows)]) for i, c in enumerate(columns)]
    kept = list(range(len(columns)))
    if width is None:
        return kept
    by_keep = sorted((i for i in kept if columns[i].keep), key=lambda i: (-columns[i].keep, -i))
    while sum(widths[i] for i in kept) + 2 * (len(kept) - 1) > width and by_keep:
        kept.remove(by_keep.pop(0))
    return kept


def table_lines(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int | None) -> list[Text]:
    """A plain table (a bold header, no box), fitted to `width`; a last line names what was left out."""
    kept = fit_columns(columns, rows, width)
    widths = {i: max([len(columns[i].header), *(len(_text(r[i])) for r in rows)]) for i in kept}

    def line(cells: Sequence[Cell], style: str | None = None) -> Text:
        out = Text(style=style or "")
        for n, i in enumerate(kept):
            text = _text(cells[i])
            pad = " " * (widths[i] - len(text))
            out.append("  " if n else "")
            cell_style = cells[i][1] if not isinstance(cells[i], str) else ""
            if columns[i].right:
                out.append(pad)
            out.append(text, style=cell_style)
            if not columns[i].right and n < len(kept) - 1:
                out.append(pad)
        return out

    lines = [line([c.header for c in columns], "bold"), *(line(r) for r in rows)]
    left_out = [columns[i].header for i in range(len(columns)) if i not in kept]
    if left_out:
        note = f"(left out at {width} columns: {', '.join(left_out)}; see --json)"
        lines += fold_words(note, width, hang="", style="dim")
    return lines


def fold(
    parts: Sequence[Text | str], width: int | None, indent: str = "", hang: str = "    ", sep: str = " "
) -> list[Text]:
    """`parts` joined by `sep` into lines of at most `width` cells, broken only between parts (a
    part is never cut, so a name or a number stays whole even when it alone is wider); the first
    line starts with `indent`, the next ones with `hang`. One line when `width` is None."""
    lines: list[Text] = []
    current = Text(indent)
    empty = True
    for part in parts:
        piece = Text(part) if isinstance(part, str) else part
        if not empty and width is not None and current.cell_len + len(sep) + piece.cell_len > width:
            lines.append(current)
            current, empty = Text(hang), True
        if not empty:
            current.append(sep)
        current.append_text(piece)
        empty = False
    lines.append(current)
    return lines


_NUMBER_AND_UNIT = re.compile(r"(\d) (B|KiB|MiB|GiB|TiB|GB|tokens)\b")


def words(text: str) -> list[str]:
    """The words of a sentence to fold, a number kept with its unit ("18.77 GiB")."""
    return [w.replace("\0", " ") for w in _NUMBER_AND_UNIT.sub("\\1\0\\2", text).split(" ")]


def fold_words(
    text: str, width: int | None, indent: str = "", hang: str = "    ", style: str = ""
) -> list[Text]:
    """A sentence folded between words (a word, a path or a number is never cut)."""
    return [Text(line.plain, style) for line in fold(words(text), width, indent, hang)]
