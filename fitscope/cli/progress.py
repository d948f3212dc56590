"""A rich progress display for ensembles trained one unit after another."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EnsembleProgress:
    """One bar per unit (an ensemble of K models), advanced per epoch.

    Shows epochs done of the budget, model-epochs per second, the current mean
    train/test accuracy and the time left. Use as a context manager; pass
    :meth:`start_unit` and :meth:`update` as the study's callbacks.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8} model-epochs/s  train {task.fields[train]}  test {task.fields[test]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = None
        self._models = 1
        self._t0 = 0.0

        self._started = False

    def __enter__(self) -> "EnsembleProgress":
        # The display starts with the first unit, so an error raised before any training
        # (bad data, bad flags) is the only line the user sees.
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._close_task()
            self._progress.__exit__(*exc)

    def _close_task(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, total=task.completed)
            self._task = None

    def start_unit(self, key: str, n_models: int, epochs: int) -> None:
        """Open a bar for a unit of ``n_models`` models with an epoch budget of ``epochs``."""
        if not self._started:
            self._progress.__enter__()
            self._started = True
        self._close_task()
        self._models = n_models
        self._t0 = time.perf_counter()
        self._task = self._progress.add_task(
            # The audit counts model-epochs over all its units as one bar (n_models = 1): no K there.
            f"{key} (K={n_models})" if n_models > 1 else key, total=epochs, rate="-", train="-", test="-"
        )

    def update(self, info: dict) -> None:
        """Advance to ``info['epoch']`` of ``info['epochs']``, showing rates and accuracies."""
        if self._task is None:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        epoch = int(info.get("epoch", 0))
        train = info.get("train_acc_mean")
        test = info.get("test_acc_mean")
        self._progress.update(
            self._task,
            completed=epoch,
            rate=f"{self._models * epoch / elapsed:.1f}",
            train="-" if train is None else f"{train:.3f}",
            test="-" if test is None or test != test else f"{test:.3f}",
        )


class StudyBar:
    """The study runner's progress as one rich bar: work done (e.g. model-epochs), units stored, time left.

    Implements :class:`fitscope.experiments.study.Progress` (duck-typed, so the CLI layer need not
    subclass an experiments class). The bar starts with the first unit, so an error raised before
    any training is the only line a user sees.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[units]}"),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=console,
            transient=False,
        )
        self._task = None
        self._of = 0
        self._what = "steps"

    def __enter__(self) -> "StudyBar":
        return self

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            self._progress.stop()

    def start(self, *, total: int, units: int, reused: int, where: str, what: str = "steps") -> None:
        """Open the bar for ``total`` work (``what``) over ``units`` units."""
        self._of = units + reused
        self._what = what
        self._progress.start()
        self._task = self._progress.add_task(f"training ({where})", total=max(int(total), 1),
                                             units=f"{what}, units {reused}/{self._of}")

    def advance(self, done: int) -> None:
        """Move the bar to ``done``."""
        if self._task is not None:
            self._progress.update(self._task, completed=done)

    def unit_done(self, key: str, *, stored: int, of: int) -> None:
        """Count a stored unit."""
        if self._task is not None:
            self._progress.update(self._task, units=f"{self._what}, units {stored}/{of}")

    def phase(self, name: str) -> None:
        """Close the bar and say which step runs."""
        if self._task is not None:
            self._progress.stop()
            self._task = None
        self._console.print(f"{name}...")

    def message(self, text: str) -> None:
        """One line above the bar."""
        self._console.print(text, soft_wrap=True, markup=False, highlight=False)
