"""Progress of long commands: rate and ETA on a terminal (rich, which typer ships with), a quiet line
every few seconds otherwise, so that logs of scripted runs stay short."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.progress import Task
    from rich.text import Text

QUIET_EVERY_S = 10.0


@contextmanager
def progress(description: str, *, total: int | None = None, unit: str = "records") -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. The caller prints its own summary line when done."""
    if sys.stderr.isatty():
        with _rich(description, total, unit) as on_terminal:
            yield on_terminal
        return
    done = 0
    started = last = time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= QUIET_EVERY_S:
            last = now
            rate = done / max(now - started, 1e-9)
            of = f" of {total:,}" if total else ""
            typer.echo(f"{description}: {done:,}{of} {unit} ({rate:,.0f}/s)", err=True)

    yield advance


@contextmanager
def _rich(description: str, total: int | None, unit: str) -> Iterator[Callable[[int], None]]:
    from rich.console import Console  # noqa: PLC0415  (only on a terminal)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text as RichText  # noqa: PLC0415

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return RichText("" if speed is None else f"{speed:,.0f} {unit}/s")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate()]
    columns += [TimeRemainingColumn()] if total else [TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
