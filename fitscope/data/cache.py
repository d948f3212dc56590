"""The on-disk cache of generated data sets (``~/.cache/fitscope``).

Only data that fitscope generates itself is cached (``mnist1d`` takes a few
seconds to generate). The folder is ``$FITSCOPE_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/fitscope``, else ``~/.cache/fitscope``. Entries are
``.npz`` files written atomically (temp file + rename), read back with
``allow_pickle=False``; an unreadable entry is treated as absent, and a cache
that cannot be written is skipped silently (the data is still returned).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np


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
