"""A rich progress bar that shows items per second (on standard error)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ItemsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 and task.completed else 0.0
        return Text(f"{rate:.2f} items/s", style="progress.data.speed")


class _Quiet:
    def add_task(self, *_a, **_k) -> int:
        return 0

    def advance(self, *_a, **_k) -> None:
        pass

    def update(self, *_a, **_k) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool = True):
    """A Progress (or a silent stand-in) with bar, done/total, items/s, elapsed and remaining time."""
    if not enabled:
        yield _Quiet()
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with bar:
        yield bar
