"""The on-disk cache (``~/.cache/fitscope``): generated data sets and mapped arrays.

The folder is ``$FITSCOPE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fitscope``,
else ``~/.cache/fitscope``. It holds two kinds of entries, both written
atomically (temp file + rename, so a reader never sees half a file) and read
with ``allow_pickle=False``; an unreadable entry is treated as absent, and a
cache that cannot be written is skipped (the data is still returned, from
memory):

- ``<name>.npz``: data that fitscope generates itself (``mnist1d`` takes a
  few seconds to generate), :func:`read_cached` / :func:`write_cached`;
- ``arrays/<stem>-<digest>.npy``: arrays computed from a user's large file
  (a split, a float32 conversion, an extracted ``.npz`` member), written once
  and memory-mapped by every later load (:mod:`fitscope.data.mapped`),
  :func:`cached_array_path` / :func:`open_cached_array` / :func:`write_cached_file`.
  The digest covers the source file's identity (path, size, modification
  time, inode) and what was computed, so an edited file gets a new entry;
  the folder can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ARRAYS_VERSION = 1
"""Part of every ``arrays/`` entry's digest: raise it when what an entry holds changes meaning."""


def cache_dir() -> Path:
    """The folder that holds fitscope's cached arrays (not created here)."""
    explicit = os.environ.get("FITSCOPE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fitscope"


def read_cached(name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` of cache entry ``name`` (a file name), or None if absent or unreadable."""
    path = cache_dir() / name
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def write_cached(name: str, **arrays: np.ndarray) -> Path | None:
    """Store ``arrays`` as cache entry ``name`` atomically; the path, or None if it could not be written."""
    from fitscope.runs.atomic import atomic_save_npz

    try:
        return atomic_save_npz(cache_dir() / name, **arrays)
    except OSError:
        return None


def file_identity(path: Path) -> list:
    """``[absolute path, size, modification time (ns), inode]`` of ``path``: what names a cache entry made from it."""
    path = Path(path).resolve()
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ino]


def cached_array_path(stem: str, *key) -> Path:
    """The path of the ``arrays/`` entry for ``key`` (JSON-able parts: source identities, what was computed).

    ``stem`` (e.g. the source file's name) starts the file name so that a
    person can tell entries apart; the digest of ``key`` makes it unique.
    """
    digest = hashlib.sha256(json.dumps([ARRAYS_VERSION, *key], sort_keys=True).encode()).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._")[:60] or "array"
    return cache_dir() / "arrays" / f"{safe}-{digest}.npy"


def open_cached_array(path: Path, shape: tuple[int, ...] | None = None, dtype=None) -> np.ndarray | None:
    """A read-only map of the cached ``.npy`` file ``path``; None if absent, unreadable or not ``shape``/``dtype``."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if (shape is not None and arr.shape != tuple(shape)) or (dtype is not None and arr.dtype != np.dtype(dtype)):
        return None
    return arr


def write_cached_file(path: Path, chunks: Iterable) -> Path:
    """Write the bytes ``chunks`` (bytes or C-contiguous arrays, in order) to ``path`` atomically; the path.

    Raises:
        OSError: the cache cannot be written (a :class:`~fitscope.runs.atomic.WriteError`:
            no permission, a full disk); nothing is left at ``path``.
    """
    from fitscope.runs.atomic import atomic_open

    with atomic_open(path, "wb") as handle:
        for chunk in chunks:
            handle.write(memoryview(chunk).cast("B") if isinstance(chunk, np.ndarray) else chunk)
    return path
