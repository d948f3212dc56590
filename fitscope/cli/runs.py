"""``fitscope runs``: list and inspect run directories.

The logic lives in :func:`list_runs` and :func:`find_run` (called by the
tests directly); the typer commands only print.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app
from fitscope.errors import RunError
from fitscope.runs import Catalog, Run
from fitscope.runs.catalog import effective_status

runs_app = typer.Typer(
    help="List and inspect run directories.\n\nExample: fitscope runs list --root runs",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")

_STATUS_STYLE = {"done": "green", "running": "blue", "failed": "red", "killed": "red", "missing": "red",
                 "damaged": "red", "interrupted": "yellow"}


def _console() -> Console:
    # Piped output (and tests) get a wide table rather than rich's 80 columns.
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (_dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def _short_path(path: str | Path) -> str:
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _format_seconds(seconds: float | None) -> str:
    from fitscope.report.html import format_seconds

    return format_seconds(seconds)


def list_runs(root: Path, kind: str | None = None) -> list[dict]:
    """The catalog rows under ``root`` (refreshed from the run directories first), newest first.

    When the catalog cannot be read or brought up to date (a full disk, a
    root we may not write, a damaged file), the rows are made from the run
    directories themselves (:meth:`~fitscope.runs.Catalog.scan`).

    Raises:
        RunError: ``root`` is not a directory.
    """
    return _list_rows(root, kind)[0]


def _list_rows(root: Path, kind: str | None) -> tuple[list[dict], str | None]:
    """The rows of :func:`list_runs` and, when they come from the directories, why (one line)."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"--root {root}: no such directory; pass the folder that holds your run directories")
    catalog = Catalog(root)
    try:
        catalog.refresh()
        return catalog.list(kind), None
    except (RunError, sqlite3.Error, OSError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return catalog.scan(kind), f"note: listed from the run directories; {text}"


def find_run(key: str, root: Path) -> Run:
    """The run named by ``key``: a run directory, or an id (or unique id prefix) in ``root``'s catalog.

    Raises:
        RunError: nothing matches, the prefix is ambiguous, or the run's
            directory is gone.
    """
    path = Path(key)
    if path.is_dir():
        return Run.open(path)
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"no run {key!r}: it is not a run directory and --root {root} does not exist")
    row = Catalog(root).get(key)
    if not Path(row["path"]).is_dir():
        raise RunError(f"run {row['id']} was in {row['path']}, which no longer exists")
    return Run.open(row["path"])


@runs_app.command("list")
def list_command(
    root: Path = typer.Option(Path("runs"), "--root", help="Folder holding the run directories (and catalog.sqlite)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind, e.g. randomization."),
) -> None:
    """List the runs under a runs root, newest first.

    Example: fitscope runs list --root runs --kind randomization
    """
    rows, note = _list_rows(root, kind)
    console = _console()
    if note:
        typer.echo(note, err=True)
    if not rows:
        what = f"{kind} runs" if kind else "runs"
        console.print(f"no {what} in {root}")
        return
    table = Table(title=f"runs in {_short_path(Path(root).absolute())}", title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("path", overflow="fold", min_width=12)
    for row in rows:
        style = _STATUS_STYLE.get(row["status"], "")
        created = (row["created"] or "").replace("T", " ")[:16]
        table.add_row(
            row["id"], row["kind"], f"[{style}]{row['status']}[/]" if style else row["status"], created,
            _format_seconds(_seconds_between(row["created"], row["finished"])), _short_path(row["path"]),
        )
    console.print(table)


def _kv_table(data: dict, value_justify: str = "left") -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(justify=value_justify, overflow="fold")
    for key, value in data.items():
        text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
        table.add_row(str(key), text)
    return table


@runs_app.command("show")
def show_command(
    id_or_path: str = typer.Argument(..., help="A run directory, a run id, or a unique id prefix."),
    root: Path = typer.Option(Path("runs"), "--root", help="Folder whose catalog resolves ids."),
    as_json: bool = typer.Option(False, "--json", help="Print run.json as it is."),
) -> None:
    """Show one run: status, config, seeds, timings, units, artifacts and the report path.

    Example: fitscope runs show randomization-2024 --root runs
    """
    from fitscope.report.html import flatten

    run = find_run(id_or_path, root)
    meta = run.meta
    console = _console()
    if as_json:
        typer.echo(json.dumps(meta, indent=2, sort_keys=True))
        return
    status = effective_status(meta)
    style = _STATUS_STYLE.get(status, "")
    console.print(f"[bold]{run.id}[/]  {run.kind}  [{style or 'default'}]{status}[/]")
    head = {"path": str(run.path), "created": meta.get("created")}
    if meta.get("finished"):
        head["finished"] = meta["finished"]
        head["duration"] = _format_seconds(_seconds_between(meta.get("created"), meta["finished"]))
    head["attempts"] = len(meta.get("attempts") or [])
    head["config hash"] = (meta.get("config_hash") or "")[:16]
    if meta.get("error"):
        head["error"] = meta["error"]
    console.print(_kv_table(head))
    _section(console, "config", flatten(run.config))
    _section(console, "seeds", flatten(run.seeds))
    timings = run.timings
    if timings:
        shown = {k: _format_seconds(v) for k, v in timings.items()}
        shown["total"] = _format_seconds(sum(timings.values()))
        _section(console, "timings", shown, "right")
    if meta.get("summary"):
        _section(console, "summary", flatten(meta["summary"]), "right")
    units = run.unit_keys()
    console.print(f"\n[bold]units[/]: {len(units)}" + (f" ({', '.join(units[:10])}{', ...' if len(units) > 10 else ''})"
                                              if units else ""))
    artifacts = run.artifacts()
    if artifacts:
        sizes = {str(p): _size(run.path / p) for p in artifacts}
        _section(console, "artifacts", sizes, "right")
    report = run.path / "report.html"
    console.print(f"\n[bold]report[/]: {report if report.is_file() else 'not written yet'}")


def _section(console: Console, title: str, data: dict, value_justify: str = "left") -> None:
    console.print(f"\n[bold]{title}[/]")
    console.print(_kv_table(data, value_justify))


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
