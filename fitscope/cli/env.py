"""``fitscope env``: the versions to paste into a bug report."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app
from fitscope.runs import versions


@app.command("env")
def env_command(
    as_json: bool = typer.Option(False, "--json", help="Print the versions as JSON."),
) -> None:
    """Print the versions of Python, the platform, fitscope and its dependencies (for bug reports).

    Example: fitscope env
    """
    info = versions()
    info["executable"] = sys.executable
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    table = Table(title="fitscope env", title_justify="left", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in info.items():
        table.add_row(key, "not installed" if value is None and key not in ("cuda",) else str(value))
    Console(highlight=False).print(table)
