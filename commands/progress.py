"""Progress of long command-line work, drawn on the terminal and nowhere else.

    with progress("starting workflows", total=len(inputs), quiet=args.json) as bar:
        for invoice in inputs:
            ...
            bar.advance()

A bar is drawn only when standard error is a terminal (not a "dumb" one) and the caller did
not ask for quiet; otherwise the bar is silent and prints nothing at all, so logs, pipes and
`--json` output never carry it. It is drawn on standard error, never standard output, and
disappears when the work ends. While it is up, lines the command prints to standard error
(and to standard output when that is the same terminal) appear above it.

`rich` is imported only when a bar is drawn: a piped or quiet command pays nothing for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class Bar:
    """A silent bar: what `progress` gives when nothing is to be drawn."""

    shown = False

    def advance(self, steps: int = 1) -> None:
        """Count `steps` more units of work as done."""

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        """Change the total (once it is known) or the words in front of the bar."""


class _DrawnBar(Bar):
    shown = True

    def __init__(self, drawing: Progress, task: TaskID) -> None:
        self._drawing = drawing
        self._task = task

    def advance(self, steps: int = 1) -> None:
        self._drawing.advance(self._task, steps)

    def update(self, *, total: int | None = None, description: str | None = None) -> None:
        changes: dict[str, object] = {}
        if total is not None:
            changes["total"] = total
        if description is not None:
            changes["description"] = description
        self._drawing.update(self._task, **changes)  # type: ignore[arg-type]


def draws_on(stream: TextIO) -> bool:
    """Whether a bar would be drawn on `stream`: a terminal that can move its cursor."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return terminal and os.environ.get("TERM") != "dumb"


@contextmanager
def progress(
    description: str,
    total: int | None = None,
    *,
    quiet: bool = False,
    unit: str = "",
    stream: TextIO | None = None,
) -> Iterator[Bar]:
    """A bar for work of `total` units (None: not known yet; a moving pulse until it is).

    `unit` names what is counted ("days", "invoices"); `stream` defaults to standard error.
    With `quiet`, or when the stream is not a terminal, the bar yielded draws nothing. A bar
    opened while another is drawn becomes a second line under it, gone when its work ends.
    """
    if total is not None and total < 0:
        raise ValueError(f"progress {description!r}: total must not be negative, not {total}")
    out = sys.stderr if stream is None else stream
    if quiet or not draws_on(out):
        yield Bar()
        return
    global _drawing
    if _drawing is not None:
        task = _drawing.add_task(description, total=total, unit=unit)
        try:
            yield _DrawnBar(_drawing, task)
        finally:
            _drawing.refresh()  # its last count is drawn once, as a bar of its own would be
            _drawing.remove_task(task)
        return
    drawing = _new_drawing(out)
    with drawing:
        _drawing = drawing
        try:
            yield _DrawnBar(drawing, drawing.add_task(description, total=total, unit=unit))
        finally:
            _drawing = None


# The bars on the terminal now, if any: one display at a time, each bar a line of it.
_drawing: Progress | None = None


def _new_drawing(out: TextIO) -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class Count(ProgressColumn):
        """3/120 days; 3 invoices while the total is unknown; nothing before the first."""

        def render(self, task: Task) -> Text:
            done = int(task.completed)
            if task.total is not None:
                count = f"{done:{len(str(int(task.total)))}d}/{int(task.total)}"
            else:
                count = str(done) if done else ""
            unit = task.fields.get("unit", "")
            return Text(f"{count} {unit}" if count and unit else count, style="progress.download")

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        Count(),
        TimeElapsedColumn(),
        console=Console(file=out),
        transient=True,
        redirect_stdout=out is sys.stderr and draws_on(sys.stdout),
        redirect_stderr=out is sys.stderr,
    )
