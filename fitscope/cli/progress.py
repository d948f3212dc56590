"""The study runner's progress as a rich bar (what the CLI shows on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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
