"""``fitscope regularizers list``: every part of the training objective, its hyperparameters, ranges and paper.

The rows come from :func:`fitscope.train.regularizers.regularizers_table`; this command only prints them.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app

regularizers_app = typer.Typer(
    name="regularizers",
    help="Regularizers: the parts of the training objective that --regularizers takes.\n\n"
         "Example: fitscope regularizers list",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(regularizers_app, name="regularizers")

GRAMMAR = ("--regularizers takes parts joined by +, each NAME or NAME:PARAM=VALUE,PARAM=VALUE, e.g.\n"
           "  --regularizers elr:lambda=3,beta=0.7+mixup:alpha=0.2\n"
           "'ce' is plain cross-entropy (no part). At most one part replaces the loss (gce, sce) and one wraps "
           "the step (sam).")


@regularizers_app.command("list")
def list_regularizers() -> None:
    """Show every regularizer part with its hyperparameters (default and range) and its paper.

    Example: fitscope regularizers list
    """
    from fitscope.train.regularizers import regularizers_table

    console = Console()
    table = Table(title="Regularizers", show_lines=False)
    for column in ("name", "what it does", "hyperparameters (default in range)", "paper"):
        table.add_column(column, overflow="fold")
    for row in regularizers_table():
        table.add_row(row["name"], row["summary"], row["hyperparameters"], row["paper"])
    console.print(table)
    console.print(GRAMMAR, markup=False, highlight=False)
