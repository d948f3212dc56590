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

Faults a run survives:

- A damaged unit (a file cut short or changed on disk, or one saved by a job
  killed before it could record it): each unit file carries its own record
  (the member ``__unit__``: key, kind, config and its hash, seeds, info) and
  ``run.json`` holds its SHA-256 and size. Resuming checks every unit once
  (:meth:`Run.verify_units`), moves damaged files into ``units/.damaged/``
  and lists them in :attr:`Run.damaged_units`, so they are made again.
- An unreadable or lost ``run.json``: ``Run.create(..., resume=True,
  rebuild_meta=True)`` rebuilds it from the units whose own record matches
  the config (:func:`recover_config` reads that config back).
- A full disk: every write ends in one :class:`~fitscope.runs.atomic.WriteError`
  line (``disk full while writing <file> (...): free space, then run again
  with --resume``) and leaves no half-written file.
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
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fitscope.errors import RunError
from fitscope.runs.atomic import (
    WriteError,
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
from fitscope.validation import message, shorten

RUN_JSON = "run.json"
UNITS_DIR = "units"
DAMAGED_DIR = ".damaged"  # inside units/: damaged files moved aside, not deleted
UNIT_RECORD = "__unit__"  # the member of a unit's .npz that says which run made it
RESUME_HINT = "run again with --resume"
_FILE_FACTS = ("sha256", "bytes")  # kept by the run in units[key], besides the caller's info
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]{0,127}$")
_SAFE_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_hash(config: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


class _MetaUnreadable(Exception):
    """``run.json`` is missing or cannot be parsed; ``str()`` says why."""


def _load_meta_file(file: Path) -> dict:
    if not file.is_file():
        raise _MetaUnreadable("missing")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _MetaUnreadable(text) from None
    if not isinstance(meta, dict) or "id" not in meta:
        raise _MetaUnreadable("not a fitscope run.json: expected an object with an 'id'")
    return meta


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
        return _load_meta_file(file)
    except _MetaUnreadable as err:
        raise RunError(f"{file} cannot be read ({err}); resume the run with --resume --rebuild-meta "
                       "to rebuild it from its units") from None


def try_read_meta(path: str | os.PathLike) -> dict | None:
    """The ``run.json`` dict of the run directory ``path``, or None if it is missing or cannot be read.

    The tolerant twin of :func:`read_meta`, for code that has a way on
    without it (rebuilding it, listing runs from their directories).
    """
    try:
        return _load_meta_file(Path(path) / RUN_JSON)
    except _MetaUnreadable:
        return None


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0].strip() if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _unit_files(directory: Path) -> dict[str, Path]:
    """Unit key -> file for the ``.npz`` files directly in ``directory`` (``<run>/units``)."""
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.npz")) if _SAFE_NAME.match(p.stem) and p.is_file()}


def _encode_record(record: dict) -> np.ndarray:
    return np.frombuffer(canonical_json(record).encode("utf-8"), dtype=np.uint8)


def _decode_record(array: np.ndarray) -> dict:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"{UNIT_RECORD}: expected a 1-D uint8 array, got {array.dtype} of shape {array.shape}")
    record = json.loads(array.tobytes().decode("utf-8"))
    if not isinstance(record, dict) or not {"key", "kind", "config_hash", "config", "seeds"} <= set(record):
        raise ValueError(f"{UNIT_RECORD}: expected an object with key, kind, config_hash, config and seeds")
    return record


def _read_unit_file(path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """Every array of the unit file ``path`` and its own record (None for a unit saved without one).

    Each member is read to its end, so zip's CRC-32 is checked for all of
    them. Raises whatever the damage makes zipfile or NumPy raise.
    """
    arrays: dict[str, np.ndarray] = {}
    record = None
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len({info.filename for info in infos}) != len(infos):
            raise ValueError("the archive lists a member twice")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not a .npy array")
            with archive.open(info) as member:
                array = np.lib.format.read_array(member, allow_pickle=False)
                if member.read():
                    raise ValueError(f"member {info.filename!r} has bytes after its array")
            name = info.filename[: -len(".npy")]
            if name == UNIT_RECORD:
                record = _decode_record(array)
            else:
                arrays[name] = array
    return arrays, record


def _read_unit_record(path: Path) -> dict | None:
    """The own record of the unit file ``path``, or None if it has none or it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{UNIT_RECORD}.npy") as member:
            array = np.lib.format.read_array(member, allow_pickle=False)
            if member.read():
                return None
        return _decode_record(array)
    except Exception:  # noqa: BLE001 - any damage means "no usable record"
        return None


def _unit_mismatch(path: Path, kind: str, digest: str, seeds: dict) -> str | None:
    """Why the unit file ``path`` cannot serve a ``kind`` run with config hash ``digest`` and ``seeds`` (None: it can)."""
    try:
        _, record = _read_unit_file(path)
    except Exception as err:  # noqa: BLE001 - a damaged file can raise almost anything
        return f"unreadable: {_first_line(err)}"
    if record is None:
        return "it carries no record of the run that made it (saved by an older fitscope)"
    if record.get("kind") != kind or record.get("config_hash") != digest:
        return "made with another config"
    if canonical_json(record.get("seeds")) != canonical_json(seeds):
        return "made with other seeds"
    if record.get("key") != path.stem:
        return f"it holds unit {record.get('key')!r}, not {path.stem!r}"
    return None


def recover_config(out: str | os.PathLike) -> tuple[str, dict, dict] | None:
    """The ``(kind, config, seeds)`` the run in ``out`` was made with, or None if nothing says.

    From ``run.json`` when it can be read; otherwise from the record that
    each unit file carries (the one most units agree on; on a tie, the
    newest unit's), so that a run whose ``run.json`` is lost can be rebuilt
    (``Run.create(out, kind=kind, config=config, seeds=seeds, resume=True,
    rebuild_meta=True)``) without the user repeating its settings.
    """
    out = Path(out)
    meta = try_read_meta(out)
    if meta is not None and isinstance(meta.get("config"), dict) and isinstance(meta.get("seeds"), dict):
        return meta.get("kind"), meta["config"], meta["seeds"]
    found: dict[str, tuple[str, dict, dict]] = {}
    votes: Counter[str] = Counter()
    newest: dict[str, float] = {}
    for path in _unit_files(out / UNITS_DIR).values():
        record = _read_unit_record(path)
        if (record is None or not isinstance(record["config"], dict) or not isinstance(record["seeds"], dict)
                or config_hash(record["config"]) != record["config_hash"]):
            continue
        ident = canonical_json([record["kind"], record["config_hash"], record["seeds"]])
        found[ident] = (record["kind"], record["config"], record["seeds"])
        votes[ident] += 1
        with contextlib.suppress(OSError):
            newest[ident] = max(newest.get(ident, 0.0), path.stat().st_mtime)
    if not votes:
        return None
    best = max(votes, key=lambda ident: (votes[ident], newest.get(ident, 0.0)))
    return found[best]


@contextlib.contextmanager
def _writing(then: str = RESUME_HINT) -> Iterator[None]:
    """Turn a failed write into one :class:`WriteError` line that ends in ``then``."""
    try:
        yield
    except WriteError as err:
        raise WriteError.from_os_error(err.path, err, then=then) from None


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise RunError(message(what, "a safe file name: 1-128 letters, digits and . _ + = @ , - (starting with a "
                               "letter or digit)", shorten(name)))
    return name


def _check_relative(name: str, what: str) -> str:
    parts = name.split("/") if isinstance(name, str) else [name]
    for part in parts:
        _check_name(part, what)
    if parts[0] in (RUN_JSON, UNITS_DIR):
        raise RunError(message(what, f"a name other than {RUN_JSON} and {UNITS_DIR}/ (the run manages them)",
                               shorten(name)))
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

    Attributes:
        damaged_units: keys of the units found damaged when the run was
            resumed or rebuilt (sorted); their files were moved to
            ``units/.damaged/`` and they no longer count as saved.
        unit_damage: unit key -> what was wrong with it (``"checksum
            mismatch"``, ``"cut short: 812 of 1490 bytes"``, ``"file missing"``,
            ``"not recorded in run.json (...)"``, ``"made with another
            config"``, ``"unreadable: ..."``), for the keys of :attr:`damaged_units`.
        rebuilt_units: keys of the units kept when ``run.json`` was rebuilt
            (``rebuild_meta``), sorted.
    """

    def __init__(self, path: str | os.PathLike, meta: dict) -> None:
        self._path = Path(path).absolute()
        self._meta = meta
        self.damaged_units: list[str] = []
        self.unit_damage: dict[str, str] = {}
        self.rebuilt_units: list[str] = []

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
        rebuild_meta: bool = False,
    ) -> Run:
        """Create the run directory ``out``, or reopen it with ``resume=True``.

        Resuming checks every stored unit against its recorded checksum
        (:meth:`verify_units`): damaged ones are moved to ``units/.damaged/``,
        listed in :attr:`damaged_units` (why: :attr:`unit_damage`) and no
        longer count as saved, so the caller makes them again.

        Args:
            out: the run directory. Absent or empty: a new run is made there.
            kind: the study that makes the run, e.g. ``"randomization"``.
            config: the resolved study config (JSON-able); stored with its hash.
            seeds: every seed the run uses, so it can be replayed.
            resume: reopen a run already in ``out`` if its config hash equals
                this config's (its finished units are kept).
            rebuild_meta: with ``resume``, when ``out``'s ``run.json`` is
                unreadable or missing but it holds units: write a new one for
                ``kind``/``config``/``seeds`` and keep the units that read back
                whole and were made with this config and seeds (listed in
                :attr:`rebuilt_units`); the others are moved to
                ``units/.damaged/`` (:attr:`damaged_units`). Ignored when
                ``run.json`` can be read.

        Raises:
            RunError: ``out`` holds a run and ``resume`` is false; ``resume``
                with a different config, seeds or kind, or while the process
                that made the run is still alive on this host; ``out`` is a
                file or a non-empty directory that is not a run; its
                ``run.json`` cannot be read (and ``rebuild_meta`` is not
                given); a write fails (:class:`~fitscope.runs.atomic.WriteError`,
                e.g. a full disk).
        """
        if not isinstance(kind, str) or not _SAFE_KIND.match(kind):
            raise RunError(message("kind", "a short name of letters, digits, _ and - (like 'randomization')",
                                   shorten(kind)))
        if not isinstance(config, dict):
            raise RunError(message("config", "a dict", type(config).__name__))
        if not isinstance(seeds, dict):
            raise RunError(message("seeds", "a dict", type(seeds).__name__))
        if rebuild_meta and not resume:
            raise RunError(message("--rebuild-meta", "--resume as well (it rebuilds the run.json of a run being "
                                   "resumed)", "no --resume"))
        try:
            config = to_jsonable(config)
            seeds = to_jsonable(seeds)
        except TypeError as err:
            raise RunError(message("config, seeds", "values that can be stored as JSON", str(err))) from None
        out = Path(out)
        digest = config_hash(config)
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} is a file, not a run directory; choose another --out")
        unit_files = _unit_files(out / UNITS_DIR)
        if (out / RUN_JSON).exists() or unit_files:
            try:
                meta = _load_meta_file(out / RUN_JSON)
            except _MetaUnreadable as err:
                if rebuild_meta:
                    return cls._rebuild(out, kind=kind, config=config, seeds=seeds, problem=str(err))
                raise RunError(cls._unreadable_meta_message(out, str(err), kind, digest, seeds)) from None
            if not resume:
                raise RunError(
                    f"{out} already holds a run (status {meta.get('status', 'unknown')}); "
                    "pass --resume to continue it or choose another --out"
                )
            return cls._resume(out, meta, kind=kind, config=config, seeds=seeds)
        if out.is_dir() and any(out.iterdir()):
            raise RunError(
                f"--out {out} exists and is not empty but holds no run ({RUN_JSON} missing); "
                "choose another --out or empty it"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"--out {out} cannot be created: {err.strerror or err}") from None
        run = cls(out, cls._new_meta(kind, config, seeds))
        run._save()
        run._sync_catalog()
        return run

    @classmethod
    def _new_meta(cls, kind: str, config: dict, seeds: dict, *, run_id: str | None = None,
                  created: str | None = None) -> dict:
        now = _dt.datetime.now(_dt.timezone.utc)
        return {
            "id": run_id or f"{kind}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}",
            "kind": kind,
            "status": "running",
            "config": config,
            "config_hash": config_hash(config),
            "seeds": seeds,
            "versions": versions(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "created": created or now.isoformat(timespec="seconds"),
            "timings": {},
            "attempts": [cls._attempt()],
            "units": {},
        }

    @classmethod
    def _resume(cls, out: Path, meta: dict, *, kind: str, config: dict, seeds: dict) -> Run:
        if meta.get("config_hash") != config_hash(config):
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
        damage = run._check_units()
        units = meta.setdefault("units", {})
        for key in sorted(damage):
            file = run.path / UNITS_DIR / f"{key}.npz"
            if file.exists():
                run._set_aside(file)
            units.pop(key, None)
        run.damaged_units = sorted(damage)
        run.unit_damage = dict(sorted(damage.items()))
        meta["status"] = "running"
        for key in ("finished", "error", "summary"):
            meta.pop(key, None)
        attempt = cls._attempt()
        now_versions = versions()
        if now_versions != meta.get("versions"):
            attempt["versions"] = now_versions  # results may differ from the first attempt's
        if damage:
            attempt["damaged_units"] = run.unit_damage
        meta.setdefault("attempts", []).append(attempt)
        run._save()
        run._sync_catalog()
        return run

    @classmethod
    def _rebuild(cls, out: Path, *, kind: str, config: dict, seeds: dict, problem: str) -> Run:
        digest = config_hash(config)
        units_dir = out / UNITS_DIR
        remove_stale_temp_files(out)
        remove_stale_temp_files(units_dir)
        kept: dict[str, dict] = {}
        damage: dict[str, str] = {}
        for key, file in _unit_files(units_dir).items():
            why = _unit_mismatch(file, kind, digest, seeds)
            if why is None:
                try:
                    record = _read_unit_record(file) or {}
                    entry = {"saved": record.get("saved"), **to_jsonable(record.get("info") or {}),
                             "sha256": _sha256(file), "bytes": file.stat().st_size}
                except OSError as err:
                    why = f"unreadable: {_first_line(err)}"
                else:
                    kept[key] = {"entry": entry, "run": record.get("run")}
                    continue
            damage[key] = why
        # The units' own record names the run they belong to: keep its id (and so its catalog row).
        ids = Counter(v["run"] for v in kept.values() if isinstance(v["run"], str) and _SAFE_NAME.match(v["run"]))
        run_id = ids.most_common(1)[0][0] if ids else None
        meta = cls._new_meta(kind, config, seeds, run_id=run_id, created=cls._created_in_catalog(out, run_id))
        meta["units"] = {key: value["entry"] for key, value in kept.items()}
        meta["rebuilt"] = {"time": utc_now(), "kept": len(kept), "discarded": len(damage),
                           "reason": f"{RUN_JSON} {problem}"}
        if damage:
            meta["attempts"][-1]["damaged_units"] = dict(sorted(damage.items()))
        run = cls(out, meta)
        old = out / RUN_JSON
        if old.exists():
            run._set_aside(old)
        for key in sorted(damage):
            run._set_aside(units_dir / f"{key}.npz")
        run.rebuilt_units = sorted(kept)
        run.damaged_units = sorted(damage)
        run.unit_damage = dict(sorted(damage.items()))
        run._save()
        run._sync_catalog()
        return run

    @staticmethod
    def _created_in_catalog(out: Path, run_id: str | None) -> str | None:
        if run_id is None:
            return None
        try:
            for row in Catalog(out.absolute().parent).list():
                if row["id"] == run_id:
                    return row.get("created")
        except Exception:  # noqa: BLE001 - the catalog is a convenience here
            pass
        return None

    @staticmethod
    def _unreadable_meta_message(out: Path, problem: str, kind: str, digest: str, seeds: dict) -> str:
        files = _unit_files(out / UNITS_DIR)
        intact = sum(_unit_mismatch(f, kind, digest, seeds) is None for f in files.values())
        what = f"{out / RUN_JSON} cannot be read ({problem})" if problem != "missing" else \
            f"{out} holds units but no {RUN_JSON}"
        if intact:
            return (f"{what}; run again with --resume --rebuild-meta to rebuild it from the "
                    f"{_plural(intact, 'intact unit')}")
        if files:
            return (f"{what}; none of its {_plural(len(files), 'unit')} is intact and made with this config: "
                    "run again with --resume --rebuild-meta to start it again there, or choose another --out")
        return (f"{what}; it holds no finished units: run again with --resume --rebuild-meta to start it "
                "again there, or choose another --out")

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
        with _writing():
            atomic_write_json(self._path / RUN_JSON, self._meta)

    def _sync_catalog(self) -> None:
        # The run directory is the truth; a catalog that cannot be written
        # (locked for too long, read-only root, full disk) must not fail the job.
        try:
            self.catalog.upsert(self._meta, self._path)
        except Exception as err:  # noqa: BLE001 - sqlite3 and OS errors alike
            warnings.warn(f"run {self.id}: catalog {self.catalog.path} not updated: {err}", stacklevel=3)

    def _set_aside(self, file: Path) -> Path:
        """Move the damaged ``file`` into ``units/.damaged/`` (a free name there); returns where it went."""
        folder = self._path / UNITS_DIR / DAMAGED_DIR
        target = folder / file.name
        n = 1
        while target.exists():
            target = folder / f"{file.stem}.{n}{file.suffix}"
            n += 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
        except OSError as err:
            raise RunError(f"cannot move the damaged {file} into {folder} ({err.strerror or err}); "
                           f"move or delete it yourself, then {RESUME_HINT}") from None
        return target

    # -- units of work --------------------------------------------------
    def _unit_path(self, key: str) -> Path:
        return self._path / UNITS_DIR / f"{_check_name(key, 'unit key')}.npz"

    def save_unit(self, key: str, arrays: dict[str, np.ndarray], info: dict | None = None) -> Path:
        """Store a finished unit of work as ``units/<key>.npz`` (atomically); returns its path.

        The file also holds the member ``__unit__`` (the key, kind, config,
        config hash and seeds of the run, and ``info``) so that it can be
        recognised without ``run.json``; ``run.json`` records its SHA-256
        (``units[key]["sha256"]``) and size (``units[key]["bytes"]``).

        Args:
            key: a safe file name, e.g. ``"curves-random_labels"``.
            arrays: name -> array (numbers or strings; no object arrays).
            info: small JSON-able facts about the unit, kept in ``run.json``
                under ``units[key]`` with the time it was saved.

        Raises:
            RunError: a bad key, array name or info; the file cannot be
                written (:class:`~fitscope.runs.atomic.WriteError`, e.g. a
                full disk: nothing half-written is left, and the unit does
                not count as saved).
        """
        path = self._unit_path(key)
        if not isinstance(arrays, dict) or not all(isinstance(k, str) and k for k in arrays):
            raise RunError(message(f"unit {key!r}: arrays", "a dict of name -> array with non-empty string names",
                                   shorten(arrays)))
        if UNIT_RECORD in arrays:
            raise RunError(message(f"unit {key!r}: arrays", f"names other than {UNIT_RECORD!r} (reserved for "
                                   "the unit's own record; rename that array)", repr(UNIT_RECORD)))
        try:
            info = to_jsonable(info or {})
        except TypeError as err:
            raise RunError(message(f"unit {key!r}: info", "values that can be stored as JSON", str(err))) from None
        if not isinstance(info, dict) or any(k in info for k in _FILE_FACTS):
            raise RunError(message(f"unit {key!r}: info", f"a dict without the keys {', '.join(_FILE_FACTS)} "
                                   "(the run records them)", shorten(info)))
        saved = utc_now()
        record = {"key": key, "run": self.id, "kind": self.kind, "config_hash": self._meta.get("config_hash"),
                  "config": self.config, "seeds": self.seeds, "saved": saved, "info": info}
        units = self._meta.setdefault("units", {})
        with _writing():
            atomic_save_npz(path, **arrays, **{UNIT_RECORD: _encode_record(record)})  # fails: old file stands
            try:
                facts = {"sha256": _sha256(path), "bytes": path.stat().st_size}
            except OSError as err:
                units.pop(key, None)  # the new file no longer matches an old record
                raise WriteError.from_os_error(path, err) from None
        units[key] = {"saved": saved, **info, **facts}
        try:
            self._save()
        except BaseException:
            units.pop(key, None)  # not recorded on disk: resuming finds the file unrecorded (or changed)
            raise
        return path

    def has_unit(self, key: str) -> bool:
        """Whether the unit ``key`` was saved (by this or an earlier attempt) and its file is there.

        Cheap (no reading): the files were checked once, when the run was
        resumed (:meth:`verify_units`).
        """
        return key in (self._meta.get("units") or {}) and self._unit_path(key).is_file()

    def load_unit(self, key: str) -> dict[str, np.ndarray]:
        """The arrays of the saved unit ``key`` (without the unit's own ``__unit__`` record).

        Every array is read whole, so a file damaged on disk is noticed (zip's
        CRC-32) rather than returning wrong numbers.

        Raises:
            RunError: the unit was not saved, or its file cannot be read.
        """
        if not self.has_unit(key):
            known = ", ".join(self.unit_keys()[:8]) or "none"
            raise RunError(f"run {self.id} has no unit {key!r} (saved units: {known})")
        path = self._unit_path(key)
        try:
            arrays, _ = _read_unit_file(path)
        except Exception as err:  # noqa: BLE001 - a damaged file can raise almost anything
            raise RunError(f"unit {key!r} of run {self.id} cannot be read ({path}: {_first_line(err)}); "
                           f"{RESUME_HINT} to make it again") from None
        return arrays

    def unit_keys(self) -> list[str]:
        """The keys of the saved units (recorded in ``run.json``, file present), sorted."""
        return sorted(key for key in (self._meta.get("units") or {}) if self.has_unit(key))

    def _check_units(self) -> dict[str, str]:
        records = self._meta.get("units") or {}
        files = _unit_files(self._path / UNITS_DIR)
        damage: dict[str, str] = {}
        for key, record in records.items():
            file = files.get(key)
            if file is None:
                damage[key] = "file missing"
                continue
            record = record if isinstance(record, dict) else {}
            try:
                size = file.stat().st_size
                if "sha256" not in record:  # saved by an older fitscope: read it whole instead
                    _read_unit_file(file)
                elif record.get("bytes") not in (None, size):
                    damage[key] = (f"cut short: {size} of {record['bytes']} bytes" if size < record["bytes"]
                                   else f"size {size} bytes, recorded {record['bytes']}")
                elif _sha256(file) != record["sha256"]:
                    damage[key] = "checksum mismatch"
            except Exception as err:  # noqa: BLE001 - a damaged file can raise almost anything
                damage[key] = f"unreadable: {_first_line(err)}"
        for key in files:
            if key not in records:
                damage[key] = f"not recorded in {RUN_JSON} (the job stopped while saving it)"
        return damage

    def verify_units(self) -> list[str]:
        """The keys of the damaged units, sorted; reads every unit file once (moves nothing).

        A unit is damaged when its file is missing, its size or SHA-256 differs
        from the one recorded in ``run.json`` (a unit saved before checksums
        were recorded must read back whole instead), or the file has no record
        (the job was killed between writing it and recording it). Resuming
        (``Run.create(..., resume=True)``) moves damaged files aside.
        """
        return sorted(self._check_units())

    # -- artifacts ------------------------------------------------------
    def _artifact(self, name: str, suffix: str | None = None) -> Path:
        if suffix and not name.endswith(suffix):
            name += suffix
        return self._path / _check_relative(name, "artifact name")

    def write_table(self, name: str, df) -> Path:
        """Write a DataFrame to ``<run>/<name>.parquet`` atomically; returns the path.

        Raises:
            RunError: a bad name; the file cannot be written
                (:class:`~fitscope.runs.atomic.WriteError`, e.g. a full disk).
        """
        with _writing():
            return atomic_write_parquet(self._artifact(name, ".parquet"), df)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` to ``<run>/<name>.json`` atomically (NumPy values converted); returns the path.

        Raises:
            RunError: a bad name; the file cannot be written (e.g. a full disk).
        """
        with _writing():
            return atomic_write_json(self._artifact(name, ".json"), obj)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``<run>/<name>`` (name includes its extension) atomically; returns the path.

        Raises:
            RunError: a bad name; the file cannot be written (e.g. a full disk).
        """
        with _writing():
            return atomic_write_text(self._artifact(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` to ``<run>/<name>`` (name includes its extension) atomically; returns the path.

        Raises:
            RunError: a bad name; the file cannot be written (e.g. a full disk).
        """
        with _writing():
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
        except BaseException:
            self._add_time(name, start)
            with contextlib.suppress(WriteError):  # the block's own error is the one to report
                self._save()
            raise
        self._add_time(name, start)
        self._save()

    def _add_time(self, name: str, start: float) -> None:
        seconds = time.perf_counter() - start
        self.timings[name] = round(float(self.timings.get(name, 0.0)) + seconds, 6)

    # -- end of the run -------------------------------------------------
    def _end(self, status: str, drop: tuple[str, ...] = (), **fields: Any) -> None:
        # Changed in place (callers hold references into meta), and put back if run.json cannot be
        # written: the run is then still "running", as its run.json on disk says.
        missing = object()
        attempts = self._meta.get("attempts") or []
        last = attempts[-1] if attempts else {}
        before = {k: self._meta.get(k, missing) for k in ("status", "finished", *drop, *fields)}
        before_last = {k: last.get(k, missing) for k in ("ended", "status")}
        for key in drop:
            self._meta.pop(key, None)
        self._meta["status"] = status
        self._meta["finished"] = utc_now()
        self._meta.update(fields)
        if attempts:
            last["ended"] = self._meta["finished"]
            last["status"] = status
        try:
            self._save()
        except BaseException:
            for target, old in ((self._meta, before), (last, before_last)):
                for key, value in old.items():
                    if value is missing:
                        target.pop(key, None)
                    else:
                        target[key] = value
            raise
        self._sync_catalog()

    def finish(self, summary: dict | None = None) -> None:
        """Mark the run "done" and store ``summary`` (a small dict of headline numbers) in run.json and catalog."""
        fields: dict[str, Any] = {}
        if summary is not None:
            fields["summary"] = to_jsonable(summary)
        self._end("done", drop=("error",), **fields)

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
            if not (isinstance(err, WriteError) and isinstance(exc, WriteError)):
                # (a failed write that cannot record itself: its own one line says it all)
                warnings.warn(f"run {self.id}: could not record the failure: {err}", stacklevel=2)
        return False
