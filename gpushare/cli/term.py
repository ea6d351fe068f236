"""The terminal, for every command: one `Console` factory, so that all output behaves alike when the
reader goes away (a closed pipe ends the run through the error boundary, app.py)."""

from __future__ import annotations

from rich.console import Console


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
