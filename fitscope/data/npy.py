"""A folder of NumPy ``.npy`` files a user brings: the format for data sets of real size.

The file names (without ``.npy``, matched case-insensitively) follow the key
layouts of :mod:`fitscope.data.npz`: ``x_train.npy, y_train.npy, x_test.npy,
y_test.npy`` (already split), or a pair ``x.npy, y.npy`` (split with the
seed), and the other spellings listed there; an optional ``classes.npy``
names the classes. Other files in the folder are ignored.

Every file is opened with ``np.load(mmap_mode="r", allow_pickle=False)``:
float32 inputs in C order and channels-first layout that come split are the
Dataset's arrays as they are, read-only maps of the user's files, and
nothing is copied; a split, a uint8 scaling or a dtype conversion is written
once to the cache and mapped from there (the table of
:mod:`fitscope.data.mapped`). Save such files with
``np.save("x_train.npy", x.astype(np.float32))``.
"""

from __future__ import annotations

from pathlib import Path

from fitscope.data.cache import file_identity
from fitscope.data.dataset import Dataset
from fitscope.data.mapped import open_npy
from fitscope.data.npz import CLASS_KEYS, SINGLE_LAYOUTS, SPLIT_LAYOUTS, dataset_from_arrays, find_layout


def npy_files(folder: Path) -> dict[str, Path]:
    """The ``.npy`` files directly in ``folder``: name without the suffix -> path (empty if none)."""
    return {p.stem: p for p in sorted(folder.glob("*")) if p.suffix.lower() == ".npy" and p.is_file()}


def is_npy_folder(folder: Path) -> bool:
    """Whether ``folder`` holds ``.npy`` files of one complete key layout (see the module docstring)."""
    lower = {stem.lower() for stem in npy_files(folder)}
    return any(all(k in lower for k in layout) for layout in SPLIT_LAYOUTS + SINGLE_LAYOUTS)


def load_npy_folder(folder: Path, *, test_fraction: float, seed: int) -> Dataset:
    """Load a folder of ``.npy`` files (layouts in the module docstring), memory-mapped.

    Args:
        folder: an existing folder.
        test_fraction: test share when the folder holds a single set (``x``, ``y``).
        seed: split seed when the folder holds a single set.

    Returns:
        The :class:`Dataset`; ``meta["storage"]`` says for each input array
        ``"mapped: <file>"`` (the user's file or a cache file) or ``"memory"``
        (a small conversion, or a cache that could not be written).

    Raises:
        DataError: no complete layout, an unreadable or truncated file, an
            object array, or any check of :mod:`fitscope.data.validation`.
    """
    where = folder.name
    files = npy_files(folder)
    layout, lower = find_layout(list(files), where, what=".npy files")
    keys = [lower[k] for k in layout]
    arrays = [open_npy(files[k], where=where) for k in keys]
    class_key = next((lower[k] for k in CLASS_KEYS if k in lower), None)
    class_names = open_npy(files[class_key], where=where) if class_key else None
    return dataset_from_arrays(
        folder.name, arrays, keys, where=where, source=str(folder), meta=dict(format="npy"),
        class_key=class_key, class_names=class_names, identity=[file_identity(files[k]) for k in keys],
        test_fraction=test_fraction, seed=seed,
    )
