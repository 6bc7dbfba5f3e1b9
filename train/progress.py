"""`bst-train train` progress on stderr: a pool bar (folds done, ETA for the pool) and a fold bar (epochs, the validation
figure, ETA for the fold), so the first sign of life comes at once rather than after a fold's minutes.

The pool calls `start(todo)`, `fold_started(family, k)`, `epoch(epoch, max_epochs, val_acc)` and `fold_done()`;
a Ray run reports folds only (its epochs run in workers). A fold may stop early (patience): its ETA is the upper
bound of `max_epochs`. `NullProgress` is the silent default of the API.
"""
from __future__ import annotations

import sys
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .folds import N_FOLDS


class NullProgress:
    """Silent progress (library default)."""

    def start(self, todo: Sequence) -> None: ...
    def fold_started(self, family: str, k: int) -> None: ...
    def epoch(self, epoch: int, max_epochs: int, val_acc: float) -> None: ...
    def fold_done(self, family: str | None = None, k: int | None = None) -> None: ...
    def print(self, line: str) -> None: ...
    def close(self) -> None: ...


class PoolProgress(NullProgress):
    """Rich bars on stderr (hidden when stderr is no terminal unless `force`); `print` puts a line above them."""

    def __init__(self, console: Console | None = None, *, force: bool = False) -> None:
        self.console = console or Console(stderr=True, force_terminal=force or None)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[figure]}"), TimeElapsedColumn(), TextColumn("ETA"),
                             TimeRemainingColumn(), console=self.console, transient=False)
        self.pool_task = None
        self.fold_task = None

    def start(self, todo: Sequence) -> None:
        self.bars.start()
        self.pool_task = self.bars.add_task("pool  (folds)", total=max(len(todo), 1), figure="")
        if not todo:
            self.bars.update(self.pool_task, completed=1, figure="nothing to train (resumed)")

    def fold_started(self, family: str, k: int) -> None:
        if self.fold_task is not None:
            self.bars.remove_task(self.fold_task)
        self.fold_task = self.bars.add_task(f"{family} fold {k + 1}/{N_FOLDS} (epochs)", total=None, figure="")

    def epoch(self, epoch: int, max_epochs: int, val_acc: float) -> None:
        if self.fold_task is not None:
            self.bars.update(self.fold_task, total=max_epochs, completed=epoch, figure=f"val acc {val_acc:.3f}")

    def fold_done(self, family: str | None = None, k: int | None = None) -> None:
        if self.fold_task is not None:
            self.bars.remove_task(self.fold_task)
            self.fold_task = None
        if self.pool_task is not None:
            label = f"last: {family} fold {k + 1}" if family is not None and k is not None else ""
            self.bars.update(self.pool_task, advance=1, figure=label)

    def print(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)

    def close(self) -> None:
        self.bars.stop()


def default_progress(enabled: bool = True) -> NullProgress:
    """Rich bars on a terminal stderr, nothing otherwise (logs stay clean in CI and pipes)."""
    return PoolProgress() if enabled and sys.stderr.isatty() else NullProgress()
