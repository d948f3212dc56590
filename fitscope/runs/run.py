"""A run: one directory holding everything one job produced.

Layout of a run directory::

    run.json          id, kind, status, config (+ hash), seeds, versions, argv,
                      created/finished, timings, attempts, units, summary
    units/<key>.npz   finished units of work (what a resumed job skips)
    <name>.parquet    per-example tables (write_table)
    <name>.json, ...  other artifacts (write_json, write_text, write_bytes)
    report.html       the report (fitscope.report.write_report)

Every file is written atomically, ``run.json`` included, so a killed job
leaves only complete files: it resumes (``Run.create(..., resume=True)``)
from the units it finished. The runs root (the parent directory) holds the
catalog, which :class:`Run` keeps up to date.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fitscope.errors import RunError
from fitscope.runs.atomic import (
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    canonical_json,
    remove_stale_temp_files,
    to_jsonable,
)
from fitscope.runs.catalog import Catalog, effective_status
from fitscope.runs.versions import versions

RUN_JSON = "run.json"
UNITS_DIR = "units"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]{0,127}$")
_SAFE_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_hash(config: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def read_meta(path: str | os.PathLike) -> dict:
    """The ``run.json`` dict of the run directory ``path``.

    Raises:
        RunError: ``path`` does not exist, is not a run directory, or its
            ``run.json`` cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"run directory {path} does not exist")
    file = path / RUN_JSON
    if not file.is_file():
        raise RunError(f"{path} is not a run directory (no {RUN_JSON})")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{file} cannot be read: {err}") from None
    if not isinstance(meta, dict) or "id" not in meta:
        raise RunError(f"{file} is not a fitscope run.json (expected an object with an 'id')")
    return meta


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise RunError(
            f"{what} {name!r} is not a safe file name: use 1-128 letters, digits and . _ + = @ , - "
            "(starting with a letter or digit)"
        )
    return name


def _check_relative(name: str, what: str) -> str:
    parts = name.split("/") if isinstance(name, str) else [name]
    for part in parts:
        _check_name(part, what)
    if parts[0] in (RUN_JSON, UNITS_DIR):
        raise RunError(f"{what} {name!r} is reserved: {RUN_JSON} and {UNITS_DIR}/ are managed by the run")
    return name


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def config_differences(old: dict, new: dict, limit: int = 3) -> list[str]:
    """Up to ``limit`` differing (dotted) keys of two configs as ``"key: old vs new"`` texts."""
    a, b = _flatten(to_jsonable(old)), _flatten(to_jsonable(new))
    out = []
    missing = "<absent>"
    for key in sorted(set(a) | set(b)):
        if a.get(key, missing) != b.get(key, missing):
            show = [canonical_json(d[key]) if key in d else missing for d in (a, b)]
            out.append(f"{key}: {show[0]} vs {show[1]}")
    return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])


class Run:
    """A run directory: create or resume with :meth:`create`, read with :meth:`open`.

    Use as a context manager so that an exception marks the run "failed"
    (``KeyboardInterrupt``/``SystemExit``: "interrupted") before it
    propagates; a block that ends cleanly finishes the run if
    :meth:`finish` was not called::

        with Run.create("runs/rand", kind="randomization", config=cfg, seeds={"seed": 0}) as run:
            if not run.has_unit("noise"):
                run.save_unit("noise", {"acc": acc})
            run.write_table("results", df)
            run.finish(summary={"test_acc": 0.97})
    """

    def __init__(self, path: str | os.PathLike, meta: dict) -> None:
        self._path = Path(path).absolute()
        self._meta = meta

    # -- construction ---------------------------------------------------
    @classmethod
    def create(
        cls,
        out: str | os.PathLike,
        *,
        kind: str,
        config: dict,
        seeds: dict,
        resume: bool = False,
    ) -> Run:
        """Create the run directory ``out``, or reopen it with ``resume=True``.

        Args:
            out: the run directory. Absent or empty: a new run is made there.
            kind: the study that makes the run, e.g. ``"randomization"``.
            config: the resolved study config (JSON-able); stored with its hash.
            seeds: every seed the run uses, so it can be replayed.
            resume: reopen a run already in ``out`` if its config hash equals
                this config's (its finished units are kept).

        Raises:
            RunError: ``out`` holds a run and ``resume`` is false; ``resume``
                with a different config, seeds or kind, or while the process
                that made the run is still alive on this host; ``out`` is a
                file or a non-empty directory that is not a run.
        """
        if not isinstance(kind, str) or not _SAFE_KIND.match(kind):
            raise RunError(f"kind: expected a short name of letters, digits, _ and - (like 'randomization'); "
                           f"got {kind!r}")
        if not isinstance(config, dict):
            raise RunError(f"config: expected a dict; got {type(config).__name__}")
        if not isinstance(seeds, dict):
            raise RunError(f"seeds: expected a dict; got {type(seeds).__name__}")
        try:
            config = to_jsonable(config)
            seeds = to_jsonable(seeds)
        except TypeError as err:
            raise RunError(f"config/seeds must be JSON-able: {err}") from None
        out = Path(out)
        digest = config_hash(config)
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} is a file, not a run directory; choose another --out")
        if (out / RUN_JSON).exists():
            meta = read_meta(out)
            if not resume:
                raise RunError(
                    f"{out} already holds a run (status {meta.get('status', 'unknown')}); "
                    "pass --resume to continue it or choose another --out"
                )
            if meta.get("config_hash") != digest:
                diffs = config_differences(meta.get("config", {}), config)
                raise RunError(
                    f"--resume: {out} was made with a different config ({'; '.join(diffs)}); use another --out"
                )
            if canonical_json(meta.get("seeds", {})) != canonical_json(seeds):
                diffs = config_differences(meta.get("seeds", {}), seeds)
                raise RunError(f"--resume: {out} was made with different seeds ({'; '.join(diffs)}); "
                               "use another --out")
            if meta.get("kind") != kind:
                raise RunError(f"--resume: {out} is a {meta.get('kind')!r} run, not {kind!r}; use another --out")
            last = (meta.get("attempts") or [{}])[-1]
            if (meta.get("status") == "running" and effective_status(meta) == "running"
                    and last.get("host") == socket.gethostname() and last.get("pid") != os.getpid()):
                raise RunError(f"--resume: {out} is still being written by process {last.get('pid')}; "
                               "wait for it to end or stop it first")
            run = cls(out, meta)
            remove_stale_temp_files(run.path)
            remove_stale_temp_files(run.path / UNITS_DIR)
            meta["status"] = "running"
            for key in ("finished", "error", "summary"):
                meta.pop(key, None)
            attempt = cls._attempt()
            now_versions = versions()
            if now_versions != meta.get("versions"):
                attempt["versions"] = now_versions  # results may differ from the first attempt's
            meta.setdefault("attempts", []).append(attempt)
            run._save()
            run._sync_catalog()
            return run
        if out.is_dir() and any(out.iterdir()):
            raise RunError(
                f"--out {out} exists and is not empty but holds no run ({RUN_JSON} missing); "
                "choose another --out or empty it"
            )
        now = _dt.datetime.now(_dt.timezone.utc)
        meta = {
            "id": f"{kind}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
            "kind": kind,
            "status": "running",
            "config": config,
            "config_hash": digest,
            "seeds": seeds,
            "versions": versions(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "created": now.isoformat(timespec="seconds"),
            "timings": {},
            "attempts": [cls._attempt()],
            "units": {},
        }
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"--out {out} cannot be created: {err.strerror or err}") from None
        run = cls(out, meta)
        run._save()
        run._sync_catalog()
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Open an existing run directory for reading (or writing more artifacts).

        Raises:
            RunError: ``path`` is not a run directory.
        """
        return cls(path, read_meta(path))

    @staticmethod
    def _attempt() -> dict:
        return {"started": utc_now(), "argv": list(sys.argv), "pid": os.getpid(), "host": socket.gethostname()}

    # -- properties -----------------------------------------------------
    @property
    def path(self) -> Path:
        """The run directory (absolute)."""
        return self._path

    @property
    def id(self) -> str:
        """The run id, ``<kind>-<YYYYmmdd-HHMMSS>-<6 hex>``."""
        return self._meta["id"]

    @property
    def kind(self) -> str:
        """The study that made the run."""
        return self._meta["kind"]

    @property
    def status(self) -> str:
        """``running``, ``done``, ``failed`` or ``interrupted``."""
        return self._meta["status"]

    @property
    def config(self) -> dict:
        """The resolved config the run was made with."""
        return self._meta["config"]

    @property
    def seeds(self) -> dict:
        """Every seed the run uses."""
        return self._meta["seeds"]

    @property
    def meta(self) -> dict:
        """The ``run.json`` content (a live dict; changes are saved by the next update)."""
        return self._meta

    @property
    def timings(self) -> dict[str, float]:
        """Wall seconds per named part (a live dict inside :attr:`meta`)."""
        return self._meta.setdefault("timings", {})

    @property
    def catalog(self) -> Catalog:
        """The catalog of the runs root (the parent directory)."""
        return Catalog(self._path.parent)

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r}, path={str(self._path)!r})"

    # -- persistence ----------------------------------------------------
    def _save(self) -> None:
        atomic_write_json(self._path / RUN_JSON, self._meta)

    def _sync_catalog(self) -> None:
        # The run directory is the truth; a catalog that cannot be written
        # (locked for too long, read-only root) must not fail the job.
        try:
            self.catalog.upsert(self._meta, self._path)
        except Exception as err:  # noqa: BLE001 - sqlite3 and OS errors alike
            warnings.warn(f"run {self.id}: catalog {self.catalog.path} not updated: {err}", stacklevel=3)

    # -- units of work --------------------------------------------------
    def _unit_path(self, key: str) -> Path:
        return self._path / UNITS_DIR / f"{_check_name(key, 'unit key')}.npz"

    def save_unit(self, key: str, arrays: dict[str, np.ndarray], info: dict | None = None) -> Path:
        """Store a finished unit of work as ``units/<key>.npz`` (atomically); returns its path.

        Args:
            key: a safe file name, e.g. ``"curves-random_labels"``.
            arrays: name -> array (numbers or strings; no object arrays).
            info: small JSON-able facts about the unit, kept in ``run.json``
                under ``units[key]`` with the time it was saved.
        """
        path = self._unit_path(key)
        if not isinstance(arrays, dict) or not all(isinstance(k, str) and k for k in arrays):
            raise RunError(f"unit {key!r}: arrays must be a dict of name -> array with non-empty string names")
        atomic_save_npz(path, **arrays)
        entry = {"saved": utc_now(), **to_jsonable(info or {})}
        self._meta.setdefault("units", {})[key] = entry
        self._save()
        return path

    def has_unit(self, key: str) -> bool:
        """Whether the unit ``key`` was saved (by this or an earlier attempt)."""
        return self._unit_path(key).is_file()

    def load_unit(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of the saved unit ``key``.

        Raises:
            RunError: the unit was not saved, or its file cannot be read.
        """
        path = self._unit_path(key)
        if not path.is_file():
            known = ", ".join(self.unit_keys()[:8]) or "none"
            raise RunError(f"run {self.id} has no unit {key!r} (saved units: {known})")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise RunError(f"unit {key!r} of run {self.id} cannot be read ({path}): {err}") from None

    def unit_keys(self) -> list[str]:
        """The keys of the saved units, sorted."""
        directory = self._path / UNITS_DIR
        if not directory.is_dir():
            return []
        return sorted(p.stem for p in directory.glob("*.npz") if _SAFE_NAME.match(p.stem))

    # -- artifacts ------------------------------------------------------
    def _artifact(self, name: str, suffix: str | None = None) -> Path:
        if suffix and not name.endswith(suffix):
            name += suffix
        return self._path / _check_relative(name, "artifact name")

    def write_table(self, name: str, df) -> Path:
        """Write a DataFrame to ``<run>/<name>.parquet`` atomically; returns the path."""
        return atomic_write_parquet(self._artifact(name, ".parquet"), df)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` to ``<run>/<name>.json`` atomically (NumPy values converted); returns the path."""
        return atomic_write_json(self._artifact(name, ".json"), obj)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``<run>/<name>`` (name includes its extension) atomically; returns the path."""
        return atomic_write_text(self._artifact(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``<run>/<name>`` (name includes its extension) atomically; returns the path."""
        return atomic_write_bytes(self._artifact(name), data)

    def artifacts(self) -> list[Path]:
        """The files in the run directory (not ``run.json`` nor units), relative to it, sorted."""
        out = []
        for path in sorted(self._path.rglob("*")):
            rel = path.relative_to(self._path)
            if not path.is_file() or rel.parts[0] in (RUN_JSON, UNITS_DIR) or rel.name.startswith("."):
                continue
            out.append(rel)
        return out

    # -- timing ---------------------------------------------------------
    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Add the wall seconds of the ``with`` block to ``timings[name]`` and save ``run.json``.

        Re-entering the same name accumulates; the time is recorded even if
        the block raises.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = round(float(self.timings.get(name, 0.0)) + seconds, 6)
            self._save()

    # -- end of the run -------------------------------------------------
    def _end(self, status: str, **fields: Any) -> None:
        self._meta["status"] = status
        self._meta["finished"] = utc_now()
        self._meta.update(fields)
        attempts = self._meta.get("attempts") or []
        if attempts:
            attempts[-1]["ended"] = self._meta["finished"]
            attempts[-1]["status"] = status
        self._save()
        self._sync_catalog()

    def finish(self, summary: dict | None = None) -> None:
        """Mark the run "done" and store ``summary`` (a small dict of headline numbers) in run.json and catalog."""
        fields: dict[str, Any] = {}
        if summary is not None:
            fields["summary"] = to_jsonable(summary)
        self._meta.pop("error", None)
        self._end("done", **fields)

    def fail(self, message: str, *, status: str = "failed") -> None:
        """Mark the run "failed" (or ``status``, e.g. "interrupted") with the error ``message``."""
        self._end(status, error=str(message))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if self.status == "running":
                    self.finish()
            elif self.status != "running":
                pass  # finished (or failed) before the error: keep that outcome
            elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
                self.fail(f"interrupted ({exc_type.__name__})", status="interrupted")
            else:
                text = str(exc).splitlines()[0] if str(exc) else ""
                self.fail(f"{exc_type.__name__}: {text}" if text else exc_type.__name__)
        except Exception as err:  # noqa: BLE001 - never hide the original exception
            if exc_type is None:
                raise
            warnings.warn(f"run {self.id}: could not record the failure: {err}", stacklevel=2)
        return False
