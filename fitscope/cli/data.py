"""``fitscope data``: list the built-in data sets and inspect a data source.

Thin commands over :mod:`fitscope.data`: ``list`` prints
:func:`~fitscope.data.describe_builtin` and the supported file kinds; ``show``
loads a source with :func:`~fitscope.data.load`, prints its shapes and class
counts, and writes a sample grid with :func:`~fitscope.data.write_sample_grid`.
Errors are :class:`~fitscope.errors.DataError`/``ConfigError``, printed as one
line by :func:`fitscope.cli.main`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app

data_app = typer.Typer(
    help="List the built-in data sets and inspect a data file or folder.\n\nExample: fitscope data show digits",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@data_app.command("list")
def list_command() -> None:
    """List the built-in data sets and the file kinds `fitscope data show` and every study read.

    Example: fitscope data list
    """
    from fitscope.data import describe_builtin, supported_file_kinds

    console = _console()
    table = Table(title="built-in data sets", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description", overflow="fold")
    for name, description in describe_builtin():
        table.add_row(name, description)
    console.print(table)
    kinds = Table(title="files and folders you can bring", title_justify="left")
    kinds.add_column("kind", style="bold", no_wrap=True)
    kinds.add_column("layout", overflow="fold")
    for kind, description in supported_file_kinds():
        kinds.add_row(kind, description)
    console.print(kinds)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "data"


@data_app.command("show")
def show_command(
    source: str = typer.Argument(..., help="Built-in name (see `fitscope data list`) or a data file/folder."),
    label_column: Optional[str] = typer.Option(
        None, "--label-column", help="CSV only: label column name or index (default label/target/class, else last)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Test share when the source is one set."),
    grid: Optional[Path] = typer.Option(
        None, "--grid", help="PNG of sample images/signals to write (default <name>_samples.png here)."),
    no_grid: bool = typer.Option(False, "--no-grid", help="Do not write the sample grid."),
) -> None:
    """Load a data source and print its shapes, dtypes and class counts; write a grid of samples.

    Example: fitscope data show digits --grid digits.png
    """
    from fitscope.data import load, write_sample_grid

    data = load(source, label_column=label_column, test_fraction=test_fraction, seed=seed)
    console = _console()
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("name", data.name)
    summary.add_row("source", data.source)
    summary.add_row("kind", f"{data.kind}, one input of shape {tuple(data.input_shape)}")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        summary.add_row(split, f"x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} {y.dtype}")
    summary.add_row("classes", str(data.n_classes))
    console.print(summary)

    train_counts = np.bincount(data.y_train, minlength=data.n_classes)
    test_counts = np.bincount(data.y_test, minlength=data.n_classes)
    counts = Table(title="examples per class", title_justify="left")
    counts.add_column("label", justify="right")
    counts.add_column("class")
    counts.add_column("train", justify="right")
    counts.add_column("test", justify="right")
    for c, name in enumerate(data.classes):
        counts.add_row(str(c), name, str(train_counts[c]), str(test_counts[c]))
    counts.add_row("", "total", str(len(data.y_train)), str(len(data.y_test)), style="bold")
    console.print(counts)

    if no_grid:
        return
    if data.kind == "vector":
        console.print("no sample grid: the inputs are vectors")
        return
    path = grid if grid is not None else Path.cwd() / f"{_safe_name(data.name)}_samples.png"
    written = write_sample_grid(data, path, seed=seed)
    console.print(f"sample grid: {written}")
