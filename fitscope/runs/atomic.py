"""Atomic file writes: a file is either its old content or its complete new one.

Every writer here streams into a temporary file in the target's directory,
flushes and fsyncs it, then ``os.replace``-s it over the target (atomic on
POSIX and Windows within one file system) and fsyncs the directory. If the
writer raises, or the process dies, the target keeps its old content (or stays
absent); a raising writer also removes its temporary file. Temporary names
look like ``.<name>.<random>.fitscope-tmp`` so that leftovers of a killed
process can be recognised and removed (:func:`remove_stale_temp_files`).

A write the operating system refuses (a full disk, no permission, a
read-only file system) raises :class:`WriteError`: one line naming the file
and what to do, which is both a :class:`~fitscope.errors.RunError` (the CLI
prints it without a traceback) and an :class:`OSError` (code that catches
``OSError`` around a best-effort write keeps working).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno as _errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from fitscope.errors import RunError
from fitscope.validation import message, shorten

TEMP_SUFFIX = ".fitscope-tmp"

# Files made by mkstemp are 0600; give ours the mode an ordinary open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


_DISK_FULL = frozenset({_errno.ENOSPC, getattr(_errno, "EDQUOT", _errno.ENOSPC)})
_NOT_ALLOWED = frozenset({_errno.EACCES, _errno.EPERM, _errno.EROFS})


class WriteError(RunError, OSError):
    """A file could not be written: one line such as ``disk full while writing <path> (...): free space, then ...``.

    Both a :class:`~fitscope.errors.RunError` and an :class:`OSError`.

    Args:
        path: the file being written.
        reason: what the operating system said, e.g. ``"No space left on device"``.
        errno: the error number (``errno.ENOSPC`` for a full disk), or None.
        then: what to do once the cause is fixed, e.g. ``"run again with --resume"``.

    Attributes:
        path: the file being written (a :class:`~pathlib.Path`).
        reason: what the operating system said.
        errno: the error number, or None.
        disk_full: whether the disk (or a disk quota) is full.
    """

    def __init__(self, path: str | os.PathLike, reason: str, *, errno: int | None = None,
                 then: str = "run again") -> None:
        self.path = Path(path)
        self.reason = reason
        self.disk_full = errno in _DISK_FULL
        self.then = then
        if self.disk_full:
            message = f"disk full while writing {self.path} ({reason}): free space, then {then}"
        elif errno in _NOT_ALLOWED:
            message = f"cannot write {self.path} ({reason}): make it writable, then {then}"
        else:
            message = f"cannot write {self.path} ({reason}): check the disk, then {then}"
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return (_rebuild_write_error, (str(self.path), self.reason, self.errno, self.then))

    @classmethod
    def from_os_error(cls, path: str | os.PathLike, err: OSError, *, then: str = "run again") -> WriteError:
        """The :class:`WriteError` for ``err`` raised while writing ``path`` (a WriteError gets the new ``then``)."""
        if isinstance(err, WriteError):
            return cls(err.path, err.reason, errno=err.errno, then=then)
        text = str(err).splitlines()[0] if str(err) else ""
        return cls(path, err.strerror or text or type(err).__name__, errno=err.errno, then=then)


def _rebuild_write_error(path: str, reason: str, errno: int | None, then: str) -> WriteError:
    return WriteError(path, reason, errno=errno, then=then)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends cleanly.

    Args:
        path: the file to write; its parent directories are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (UTF-8 text).

    Yields:
        The open temporary file. If the block raises, the temporary file is
        removed and ``path`` is left as it was.

    Raises:
        WriteError: the file could not be written (an :class:`OSError` from
            the operating system, the block included, e.g. a full disk).
    """
    if mode not in ("wb", "w"):
        raise ValueError(message("mode", "'wb' or 'w' (atomic_open)", shorten(mode)))
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as err:
        raise WriteError.from_os_error(target, err) from None
    tmp = Path(tmp_name)
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WriteError.from_os_error(target, err) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError: the file could not be written (e.g. a full disk).
    """
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars/arrays, paths, sets and datetimes turned into plain JSON types.

    Dict keys become strings. Raises ``TypeError`` naming the type of the
    first value that has no JSON form.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k.item() if isinstance(k, np.generic) else k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # a pydantic model
        return to_jsonable(obj.model_dump())
    raise TypeError(message("value", "one that can be stored as JSON", f"{type(obj).__name__} {shorten(obj)}"))


def canonical_json(obj: Any) -> str:
    """One-line JSON with sorted keys and no spaces: equal data give equal text (used for hashes)."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON (indent 2, sorted keys, NumPy values converted) atomically; returns the path.

    Non-finite floats are written as ``NaN``/``Infinity`` (Python's JSON
    reads them back).
    """
    plain = to_jsonable(obj)
    with atomic_open(path, "w") as handle:
        json.dump(plain, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    return Path(path)


def atomic_write_parquet(path: str | os.PathLike, df) -> Path:
    """Write a :class:`pandas.DataFrame` to ``path`` as Parquet (pyarrow) atomically; returns the path."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(message("df", "a pandas DataFrame (atomic_write_parquet)", type(df).__name__))
    with atomic_open(path, "wb") as handle:
        df.to_parquet(handle, engine="pyarrow")
    return Path(path)


def atomic_save_npz(path: str | os.PathLike, /, **arrays) -> Path:
    """Save ``arrays`` (name -> array) to an uncompressed ``.npz`` file atomically; returns the path.

    Object arrays are refused (they would need pickle to load back).
    """
    checked = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(message(name, "an array of numbers or strings (atomic_save_npz)", "dtype object"))
        checked[name] = array
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **checked)
    return Path(path)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed writer left in ``directory`` (not recursive); returns them.

    Only call this when no other process is writing into ``directory``.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed

