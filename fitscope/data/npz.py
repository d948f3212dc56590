"""NumPy ``.npz`` archives a user brings.

Read with ``np.load(allow_pickle=False)``: an archive holding object arrays is
refused rather than unpickled. Key layouts (matched case-insensitively):

- already split: ``x_train, y_train, x_test, y_test``;
  ``train_images, train_labels, test_images, test_labels``;
  ``train_x, train_y, test_x, test_y``;
- one set, split with the seed (stratified): ``x, y``; ``images, labels``;
  ``data, labels``; ``inputs, labels``; ``x, labels``.

An optional ``classes`` (or ``class_names``/``label_names``) string array names
the classes. Labels may be integers, integral floats, one-hot rows or class
name strings (sorted names become indices). Inputs go through
:func:`fitscope.data.layout.channels_first`; uint8 inputs are divided by 255.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.data.labels import encode_class_names
from fitscope.data.cache import file_identity
from fitscope.data.layout import channels_first
from fitscope.data.mapped import (
    COPY_IN_MEMORY_BELOW,
    extracted_member,
    float32_rows,
    mapped_file,
    npy_header,
    stored_member_map,
)
from fitscope.data.split import split_indices
from fitscope.data.validation import build_dataset, check_arrays, check_at_least_two_classes
from fitscope.errors import DataError

SPLIT_LAYOUTS = (
    ("x_train", "y_train", "x_test", "y_test"),
    ("train_images", "train_labels", "test_images", "test_labels"),
    ("train_x", "train_y", "test_x", "test_y"),
)
SINGLE_LAYOUTS = (("x", "y"), ("images", "labels"), ("data", "labels"), ("inputs", "labels"), ("x", "labels"))
CLASS_KEYS = ("classes", "class_names", "label_names")
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _expected_layouts() -> str:
    return "; ".join("/".join(layout) for layout in SPLIT_LAYOUTS + SINGLE_LAYOUTS)


def _read(archive, key: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(
                f"array {key!r} in {where}: expected numbers or strings, got an object array "
                f"(fitscope reads .npz files with allow_pickle=False; save plain numeric arrays)"
            ) from None
        raise DataError(f"array {key!r} in {where}: unreadable or truncated ({err})") from None
    except _READ_ERRORS as err:
        raise DataError(f"array {key!r} in {where}: unreadable or truncated ({type(err).__name__}: {err})") from None


def _one_hot_to_index(y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf":
        if np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
            return np.argmax(y, axis=1).astype(np.int64)
    return y


def _mapped_member(archive, path: Path, key: str, where: str) -> np.ndarray:
    """Array ``key`` of the open archive, mapped in place or extracted to the cache (read if that cannot be written)."""
    names = archive.zip.namelist()
    member = key + ".npy" if key + ".npy" in names else key
    info = archive.zip.getinfo(member)
    try:
        with archive.zip.open(info) as stream:
            _, _, dtype, _ = npy_header(stream)
        if dtype.hasobject:
            return _read(archive, key, where)  # NumPy's refusal, in the one message for object arrays
        mapped = stored_member_map(path, info)
        if mapped is None:
            mapped = extracted_member(archive.zip, info, stem=f"{path.stem}-{key}",
                                      cache_key=[file_identity(path), "npz member", member])
    except _READ_ERRORS as err:
        raise DataError(f"array {key!r} in {where}: unreadable or truncated ({type(err).__name__}: {err})") from None
    return mapped if mapped is not None else _read(archive, key, where)


def load_npz(path: Path, *, test_fraction: float, seed: int) -> Dataset:
    """Load a ``.npz`` archive (key layouts in the module docstring).

    The input members of an archive of at least
    :data:`~fitscope.data.mapped.COPY_IN_MEMORY_BELOW` bytes are
    memory-mapped, not read: in place when stored uncompressed at an aligned
    offset, else extracted once into the cache (see
    :mod:`fitscope.data.mapped` for what is copied when); labels are read.

    Args:
        path: an existing ``.npz`` file.
        test_fraction: test share when the archive holds a single set.
        seed: split seed when the archive holds a single set.

    Raises:
        DataError: unreadable/truncated archive, unknown key layout, object
            arrays, or any check of :mod:`fitscope.data.validation`.
    """
    where = path.name
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise DataError(f"cannot read {path}: expected a NumPy .npz archive, got {type(err).__name__}: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"cannot read {path}: expected a NumPy .npz archive, got a single .npy array")
    with archive:
        layout, lower = find_layout(archive.files, where)
        large = path.stat().st_size >= COPY_IN_MEMORY_BELOW
        arrays = [_mapped_member(archive, path, lower[k], where) if large and i % 2 == 0  # inputs
                  else _read(archive, lower[k], where) for i, k in enumerate(layout)]
        class_key = next((lower[k] for k in CLASS_KEYS if k in lower), None)
        class_names = _read(archive, class_key, where) if class_key else None
    return dataset_from_arrays(
        path.stem, arrays, [lower[k] for k in layout], where=where, source=str(path), meta=dict(format="npz"),
        class_key=class_key, class_names=class_names, identity=[file_identity(path)],
        test_fraction=test_fraction, seed=seed,
    )


def find_layout(keys, where: str, *, what: str = "keys") -> tuple[tuple[str, ...], dict[str, str]]:
    """The key layout (lower case) that ``keys`` hold, and lower-case key -> the key as given.

    ``what`` names the keys in the message (``"keys"``, ``".npy files"``).

    Raises:
        DataError: no layout of :data:`SPLIT_LAYOUTS` or :data:`SINGLE_LAYOUTS` is complete.
    """
    lower: dict[str, str] = {}
    for key in keys:
        lower.setdefault(key.lower(), key)
    layout = next((l for l in SPLIT_LAYOUTS + SINGLE_LAYOUTS if all(k in lower for k in l)), None)
    if layout is None:
        got = ", ".join(keys) or "no arrays"
        raise DataError(f"{what} in {where}: expected one of the layouts {_expected_layouts()}, got {got}")
    return layout, lower


def dataset_from_arrays(
    name: str,
    arrays: list[np.ndarray],
    keys: list[str],
    *,
    where: str,
    source: str,
    meta: dict,
    class_key: str | None,
    class_names: np.ndarray | None,
    identity: list,
    test_fraction: float,
    seed: int,
) -> Dataset:
    """The checked :class:`Dataset` of the arrays of one key layout (a ``.npz`` archive or a ``.npy`` folder).

    Inputs are copied only where they must be (:func:`fitscope.data.mapped.float32_rows`):
    float32 C-order inputs of a split layout stay the arrays given (maps stay
    maps); a split of a single set, a scaling or a dtype conversion is
    written once to the cache when large. Labels are read into memory.

    Args:
        name: the dataset's name.
        arrays: ``x_train, y_train, x_test, y_test`` or ``x, y`` in the order of ``keys``.
        keys: the keys as the source spells them.
        where: the source for messages; ``source``: its path.
        meta: facts to start ``Dataset.meta`` with (``format``).
        class_key, class_names: the class-name array and its key, if any.
        identity: JSON-able identity of the source files (names cache entries).
        test_fraction, seed: the split of a single set.
    """
    meta = dict(meta, keys=list(keys))
    labels = [_one_hot_to_index(y) for y in arrays[1::2]]
    classes = None
    if any(y.dtype.kind in "US" for y in labels):
        codes, classes = encode_class_names(np.concatenate([np.asarray(y).astype(str).ravel() for y in labels]))
        sizes = np.cumsum([len(np.ravel(y)) for y in labels])[:-1]
        labels = np.split(codes, sizes)
        meta["class_encoding"] = "sorted class names"
    elif class_names is not None:
        if class_names.ndim != 1 or class_names.dtype.kind not in "US":
            raise DataError(
                f"array {class_key!r} in {where}: expected a 1-D array of class names, "
                f"got dtype {class_names.dtype} and shape {class_names.shape}"
            )
        classes = tuple(str(c) for c in class_names)

    views = [channels_first(x, where=where) for x in arrays[0::2]]
    meta["layout"] = views[0][1]
    if views[0][0].dtype == np.uint8:
        meta["scaling"] = "uint8 / 255"
    storage: dict[str, str] = {}
    meta["storage"] = storage

    # one rule for the whole source: large inputs are copied (if at all) into the cache, small ones in memory
    large = sum(int(np.prod(x.shape, dtype=np.int64)) for x in arrays[0::2]) * 4 >= COPY_IN_MEMORY_BELOW

    def float32(x: np.ndarray, rows: np.ndarray | None, role: str) -> np.ndarray:
        key = [identity, list(keys), role] + ([seed, test_fraction] if rows is not None else [])
        out = float32_rows(x, rows, stem=f"{name}-{role}", cache_key=key if large else None)
        file = mapped_file(out)
        storage[role] = "memory" if file is None else f"mapped: {file}"
        return out

    if len(keys) == 4:
        (x_train, _), (x_test, _) = views
        x_train, y_train = check_arrays(x_train, labels[0], where=where, split="train")
        x_test, y_test = check_arrays(x_test, labels[1], where=where, split="test")
        return build_dataset(
            name, float32(x_train, None, "x_train"), y_train, float32(x_test, None, "x_test"), y_test,
            where=where, classes=classes, meta=meta,
            source=f"{source} (keys {', '.join(keys)})",
        )

    x, y = check_arrays(views[0][0], labels[0], where=where)
    check_at_least_two_classes(y, where=where, classes=classes)
    train, test, stratified = split_indices(y, test_fraction=test_fraction, seed=seed, where=where)
    meta.update(split_seed=seed, test_fraction=test_fraction, stratified=stratified)
    kind = "stratified split" if stratified else "shuffle split"
    return build_dataset(
        name, float32(x, train, "x_train"), y[train], float32(x, test, "x_test"), y[test],
        where=where, classes=classes, meta=meta,
        source=f"{source} (keys {', '.join(keys)}; {kind}, test_fraction={test_fraction}, seed={seed})",
    )
