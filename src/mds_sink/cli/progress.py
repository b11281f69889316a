"""Progress of long commands: rate and ETA on a terminal (rich, which typer ships with), a quiet line
every few seconds otherwise, so that logs of scripted runs stay short."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import typer

if TYPE_CHECKING:
    from rich.progress import Task
    from rich.text import Text

QUIET_EVERY_S = 10.0


class Tracker(Protocol):
    """`advance(n)`, also by calling it; and `total(n)`."""

    def __call__(self, n: int = 1) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def total(self, n: int | None) -> None:
        """The amount of work, once known (an ETA needs it)."""
        ...


@contextmanager
def progress(description: str, *, total: int | None = None, unit: str = "records") -> Iterator[Tracker]:
    """The caller prints its own summary line when done."""
    if sys.stderr.isatty():
        with _rich(description, total, unit) as on_terminal:
            yield on_terminal
        return
    yield _Quiet(description, total, unit)


class _Quiet:
    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self._description, self._total, self._unit = description, total, unit
        self._done = 0
        self._started = self._last = time.monotonic()

    def total(self, n: int | None) -> None:
        self._total = n

    def __call__(self, n: int = 1) -> None:
        self.advance(n)

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= QUIET_EVERY_S:
            self._last = now
            rate = self._done / max(now - self._started, 1e-9)
            of = f" of {self._total:,}" if self._total else ""
            typer.echo(f"{self._description}: {self._done:,}{of} {self._unit} ({rate:,.0f}/s)", err=True)


@contextmanager
def _rich(description: str, total: int | None, unit: str) -> Iterator[Tracker]:
    from rich.console import Console  # noqa: PLC0415  (only on a terminal)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text as RichText  # noqa: PLC0415

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return RichText("" if speed is None else f"{speed:,.0f} {unit}/s")

    class OnTerminal:
        def __init__(self, bar: Progress, task: TaskID) -> None:
            self._bar, self._task = bar, task

        def advance(self, n: int = 1) -> None:
            self._bar.advance(self._task, n)

        def __call__(self, n: int = 1) -> None:
            self.advance(n)

        def total(self, n: int | None) -> None:
            self._bar.update(self._task, total=n)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield OnTerminal(bar, bar.add_task(description, total=total))
