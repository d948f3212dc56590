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
from fitscope.data.layout import channels_first
from fitscope.data.scale import pixels_to_unit
from fitscope.data.split import split_train_test
from fitscope.data.validation import build_dataset, check_at_least_two_classes, validate_arrays
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


def _inputs(x: np.ndarray, *, where: str) -> tuple[np.ndarray, dict]:
    x, note = channels_first(x, where=where)
    facts = {"layout": note}
    if x.dtype == np.uint8:
        x = pixels_to_unit(x)
        facts["scaling"] = "uint8 / 255"
    return x, facts


def _one_hot_to_index(y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf":
        if np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
            return np.argmax(y, axis=1).astype(np.int64)
    return y


def load_npz(path: Path, *, test_fraction: float, seed: int) -> Dataset:
    """Load a ``.npz`` archive (key layouts in the module docstring).

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
        lower: dict[str, str] = {}
        for key in archive.files:
            lower.setdefault(key.lower(), key)
        layout = next((l for l in SPLIT_LAYOUTS + SINGLE_LAYOUTS if all(k in lower for k in l)), None)
        if layout is None:
            got = ", ".join(archive.files) or "no arrays"
            raise DataError(f"keys in {where}: expected one of the layouts {_expected_layouts()}, got {got}")
        arrays = [_read(archive, lower[k], where) for k in layout]
        class_key = next((lower[k] for k in CLASS_KEYS if k in lower), None)
        class_names = _read(archive, class_key, where) if class_key else None

    keys = [lower[k] for k in layout]
    meta = dict(format="npz", keys=keys)
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

    if len(layout) == 4:
        x_train, facts = _inputs(arrays[0], where=where)
        x_test, _ = _inputs(arrays[2], where=where)
        meta.update(facts)
        return build_dataset(
            path.stem, x_train, labels[0], x_test, labels[1],
            where=where, classes=classes, meta=meta,
            source=f"{path} (keys {', '.join(keys)})",
        )

    x, facts = _inputs(arrays[0], where=where)
    meta.update(facts)
    x, y = validate_arrays(x, labels[0], where=where)
    check_at_least_two_classes(y, where=where, classes=classes)
    x_train, y_train, x_test, y_test, stratified = split_train_test(
        x, y, test_fraction=test_fraction, seed=seed, where=where
    )
    meta.update(split_seed=seed, test_fraction=test_fraction, stratified=stratified)
    kind = "stratified split" if stratified else "shuffle split"
    return build_dataset(
        path.stem, x_train, y_train, x_test, y_test,
        where=where, classes=classes, meta=meta,
        source=f"{path} (keys {', '.join(keys)}; {kind}, test_fraction={test_fraction}, seed={seed})",
    )
