"""The catalog: one SQLite index of the runs under a runs root.

A run directory is the truth; the catalog (``<root>/catalog.sqlite``, where
``root`` is the parent of the run directories) only lists runs so that
``fitscope runs list`` is quick. :class:`~fitscope.runs.Run` registers and
updates its row itself; :meth:`Catalog.refresh` re-reads every ``run.json``
(a killed job never wrote its final status) and adds run directories the
catalog does not know yet. Several processes may write: each operation is
one short transaction on a fresh connection with a busy timeout, in WAL mode.
Reading opens the database read-only; a catalog that cannot be read or
written raises a one-line :class:`~fitscope.errors.RunError`, and
:meth:`Catalog.scan` lists the runs from their directories without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from fitscope.errors import RunError

CATALOG_NAME = "catalog.sqlite"
COLUMNS = ("id", "kind", "path", "status", "created", "finished", "config_hash", "summary")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT,
    finished TEXT,
    config_hash TEXT,
    summary TEXT
)
"""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def effective_status(meta: dict) -> str:
    """The status of a run from its ``run.json`` dict, with dead runs told apart.

    ``run.json`` says "running" until the run finishes or fails; a process
    killed with SIGKILL never updates it. When the last attempt was made on
    this host by a process that no longer exists, the status is ``"killed"``.
    """
    status = meta.get("status", "unknown")
    if status != "running":
        return status
    attempts = meta.get("attempts") or []
    if not attempts:
        return status
    last = attempts[-1]
    pid, host = last.get("pid"), last.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _process_alive(pid):
        return "killed"
    return status


class Catalog:
    """The SQLite index of the runs whose directories lie directly under ``root``.

    Args:
        root: the runs root (the parent directory of the run directories).
            Nothing is created until a run is registered.

    Rows are returned as dicts with the keys of :data:`COLUMNS`; ``path`` is
    the run directory as an absolute path string and ``summary`` a dict (or
    ``None``).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()
        self.path = self.root / CATALOG_NAME

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # -- connection -----------------------------------------------------
    def _error(self, err: BaseException, *, write: bool) -> RunError:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if write:
            return RunError(f"catalog {self.path} cannot be written ({text}); free space or make {self.root} "
                            "writable (the run directories hold everything; the catalog only lists them)")
        return RunError(f"catalog {self.path} cannot be read ({text}); delete it and it is rebuilt from the "
                        "run directories")

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            if write:
                self.root.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30.0)
            else:  # read-only: listing works on a full disk or a root we may not write
                conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30.0)
        except (sqlite3.Error, OSError) as err:
            raise self._error(err, write=write) from None
        try:
            conn.row_factory = sqlite3.Row
            if write:
                with contextlib.suppress(sqlite3.DatabaseError):
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            with conn:  # one transaction: commit on success, roll back on error
                yield conn
        except (sqlite3.Error, OSError) as err:
            raise self._error(err, write=write) from None
        finally:
            conn.close()

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        if not self.path.exists():
            return []
        with self._connect(write=False) as conn:
            try:
                return [self._from_row(r) for r in conn.execute(sql, params).fetchall()]
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return []
                raise

    def _from_row(self, row: sqlite3.Row) -> dict:
        out = dict(row)
        out["path"] = str(self.root / out["path"])
        if out.get("summary"):
            try:
                out["summary"] = json.loads(out["summary"])
            except json.JSONDecodeError:
                pass
        else:
            out["summary"] = None
        return out

    def _stored_path(self, run_path: str | os.PathLike) -> str:
        path = Path(run_path).absolute()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _row_from_meta(self, meta: dict, run_path: str | os.PathLike, status: str | None = None) -> tuple:
        from fitscope.runs.atomic import canonical_json

        summary = meta.get("summary")
        return (
            meta["id"],
            meta.get("kind", ""),
            self._stored_path(run_path),
            status or meta.get("status", "unknown"),
            meta.get("created"),
            meta.get("finished"),
            meta.get("config_hash"),
            None if summary is None else canonical_json(summary),
        )

    # -- writing --------------------------------------------------------
    def upsert(self, meta: dict, run_path: str | os.PathLike, *, status: str | None = None) -> None:
        """Insert or update the row of the run whose ``run.json`` dict is ``meta``.

        Args:
            meta: the run's ``run.json`` content.
            run_path: the run directory.
            status: the status to store (default ``meta["status"]``).

        Raises:
            RunError: the catalog cannot be written (e.g. a full disk).
        """
        row = self._row_from_meta(meta, run_path, status)
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT INTO runs (id, kind, path, status, created, finished, config_hash, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET kind=excluded.kind, path=excluded.path, status=excluded.status, "
                "created=excluded.created, finished=excluded.finished, config_hash=excluded.config_hash, "
                "summary=excluded.summary",
                row,
            )

    def _set_status(self, run_id: str, status: str) -> None:
        with self._connect(write=True) as conn:
            conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def remove(self, run_id: str) -> None:
        """Delete the row of ``run_id`` (the run directory is left alone)."""
        if self.path.exists():
            with self._connect(write=True) as conn:
                conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- reading --------------------------------------------------------
    def list(self, kind: str | None = None) -> list[dict]:
        """All rows, newest first (by ``created``), optionally only those of one ``kind``.

        Raises:
            RunError: the catalog exists but cannot be read (:meth:`scan` can).
        """
        if kind is None:
            return self._rows("SELECT * FROM runs ORDER BY created DESC, rowid DESC")
        return self._rows("SELECT * FROM runs WHERE kind = ? ORDER BY created DESC, rowid DESC", (kind,))

    def scan(self, kind: str | None = None) -> list[dict]:
        """Rows made from the ``run.json`` of each run directory under ``root``, newest first; no SQLite.

        What :meth:`list` would give for a fresh catalog, for when the catalog
        cannot be read or written. Directories whose ``run.json`` cannot be
        read are left out.
        """
        from fitscope.runs.run import try_read_meta

        found = []
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                if not (entry / "run.json").is_file():
                    continue
                meta = try_read_meta(entry)
                if meta is None or (kind is not None and meta.get("kind") != kind):
                    continue
                found.append(self._from_row(dict(zip(COLUMNS, self._row_from_meta(meta, entry,
                                                                                  effective_status(meta))))))
        found.sort(key=lambda row: row["created"] or "", reverse=True)  # stable: same second, by name
        return found

    def get(self, key: str | os.PathLike) -> dict:
        """The row of a run named by its id, a unique prefix of its id, or its directory.

        Uses the run directories themselves (:meth:`scan`) when the catalog
        cannot be read.

        Raises:
            RunError: no run matches, or a prefix matches several (the
                message lists a few known ids).
        """
        text = os.fspath(key)
        try:
            rows = self.list()
        except RunError:
            rows = self.scan()
        for row in rows:
            if row["id"] == text:
                return row
        candidate = Path(text)
        if candidate.exists() or os.sep in text or text.startswith("."):
            target = candidate.absolute().resolve()
            for row in rows:
                if Path(row["path"]).resolve() == target:
                    return row
        matches = [row for row in rows if text and row["id"].startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(r["id"] for r in matches[:5])
            more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
            raise RunError(f"run {text!r} is ambiguous: it matches {shown}{more}; give more of the id")
        if not rows:
            raise RunError(f"no run {text!r}: {self.root} holds no runs (no {CATALOG_NAME} entries)")
        shown = ", ".join(r["id"] for r in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise RunError(f"no run {text!r} in {self.root}; known runs: {shown}{more}")

    def refresh(self) -> list[dict]:
        """Bring the catalog in line with the run directories; returns the rows that changed.

        Re-reads ``run.json`` of every row: a changed status (e.g. a run
        still "running" in the catalog that finished, failed, or whose process
        was killed: "killed") is updated; a missing directory is marked
        "missing", one now holding another run "replaced", and one whose
        ``run.json`` cannot be read "damaged". Run directories directly under
        ``root`` that the catalog does not list are added.

        Raises:
            RunError: the catalog cannot be read or written (e.g. a full
                disk); :meth:`scan` lists the runs without it.
        """
        from fitscope.runs.run import read_meta

        changed: list[dict] = []
        known_paths = set()
        for row in self.list():
            path = Path(row["path"])
            known_paths.add(path.resolve())
            if not (path / "run.json").is_file():
                if row["status"] != "missing":
                    self._set_status(row["id"], "missing")
                    changed.append(dict(row, status="missing"))
                continue
            try:
                meta = read_meta(path)
            except RunError:
                if row["status"] != "damaged":  # `--resume --rebuild-meta` rebuilds it
                    self._set_status(row["id"], "damaged")
                    changed.append(dict(row, status="damaged"))
                continue
            if meta.get("id") != row["id"]:
                # The directory was deleted and a new run made in its place (``make demo`` does this):
                # the old run is gone.
                if row["status"] != "replaced":
                    self._set_status(row["id"], "replaced")
                    changed.append(dict(row, status="replaced"))
                continue
            status = effective_status(meta)
            summary = meta.get("summary")
            if (status, meta.get("finished"), summary) != (row["status"], row["finished"], row["summary"]):
                self.upsert(meta, path, status=status)
                changed.append(dict(row, status=status, finished=meta.get("finished"), summary=summary))
        if self.root.is_dir():
            known_ids = {row["id"] for row in self.list()}
            for entry in sorted(self.root.iterdir()):
                if not (entry / "run.json").is_file() or entry.resolve() in known_paths:
                    continue
                try:
                    meta = read_meta(entry)
                except RunError:
                    continue
                if "id" not in meta or meta["id"] in known_ids:
                    continue
                status = effective_status(meta)
                self.upsert(meta, entry, status=status)
                changed.append(dict(self.get(meta["id"])))
        return changed
