"""CIFAR-10 and CIFAR-100 "python version" folders, read with a restricted unpickler.

Each file is a pickled dict (keys are ``bytes`` in the real files; ``str``
keys are accepted too):

- CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch`` with ``data`` (uint8, shape ``(n, 3072)``, 1024 red then
  1024 green then 1024 blue values of a 32x32 image, row-major) and
  ``labels`` (n ints); ``batches.meta`` with ``label_names``.
- CIFAR-100 (``cifar-100-python``): ``train`` and ``test`` with ``data`` and
  ``fine_labels`` (the 100 classes used here) and ``coarse_labels``;
  ``meta`` with ``fine_label_names``.

Images become ``(N, 3, 32, 32)`` float32 divided by 255. A folder that holds
``cifar-10-batches-py`` or ``cifar-100-python`` (as torchvision unpacks them)
is found too. Files are read by :func:`fitscope.data.safe_pickle.load_restricted_pickle`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.data.safe_pickle import load_restricted_pickle
from fitscope.data.scale import pixels_to_unit
from fitscope.data.validation import build_dataset
from fitscope.errors import DataError

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")


def cifar_variant(folder: Path) -> tuple[str, Path] | None:
    """``("cifar10" | "cifar100", folder holding the files)`` if ``folder`` looks like CIFAR, else None.

    CIFAR-10 is recognised by ``batches.meta`` or ``data_batch_1``; CIFAR-100 by
    ``meta`` next to ``train`` or ``test``.
    """
    for base in (folder, *(folder / s for s in SUBFOLDERS)):
        if (base / "batches.meta").is_file() or (base / "data_batch_1").is_file():
            return "cifar10", base
        if (base / "meta").is_file() and ((base / "train").is_file() or (base / "test").is_file()):
            return "cifar100", base
    return None


def _field(record, key: str, path: Path):
    if not isinstance(record, dict):
        raise DataError(f"contents of {path.name}: expected a dict, got {type(record).__name__}")
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    keys = ", ".join(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in record)
    raise DataError(f"contents of {path.name}: expected a key {key!r}, got keys {keys}")


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    record = load_restricted_pickle(path)
    data = np.asarray(_field(record, "data", path))
    labels = np.asarray(_field(record, label_key, path))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"data in {path.name}: expected shape (n, 3072) of 32x32x3 images, got {data.shape}")
    if data.dtype != np.uint8:
        raise DataError(f"data in {path.name}: expected uint8 pixel values, got dtype {data.dtype}")
    if len(labels) != len(data):
        raise DataError(f"{label_key} in {path.name}: expected {len(data)} labels (one per image), got {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


def _names(path: Path, key: str) -> tuple[str, ...]:
    names = _field(load_restricted_pickle(path), key, path)
    if not isinstance(names, (list, tuple)):
        raise DataError(f"{key} in {path.name}: expected a list of class names, got {type(names).__name__}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar_folder(folder: Path, variant: str, base: Path) -> Dataset:
    """Load a CIFAR-10 (``variant="cifar10"``) or CIFAR-100 (``"cifar100"``) folder ``base``.

    Raises:
        DataError: a file is missing, refused by the restricted unpickler,
            unreadable or truncated, or holds arrays of the wrong shape.
    """
    files = CIFAR10_FILES if variant == "cifar10" else CIFAR100_FILES
    missing = [name for name in files if not (base / name).is_file()]
    if missing:
        label = "CIFAR-10" if variant == "cifar10" else "CIFAR-100"
        raise DataError(f"{label} folder {base}: expected files {', '.join(files)}, missing {', '.join(missing)}")
    if variant == "cifar10":
        train = [_batch(base / f"data_batch_{i}", "labels") for i in range(1, 6)]
        x_test, y_test = _batch(base / "test_batch", "labels")
        classes = _names(base / "batches.meta", "label_names")
        label_key = "labels"
    else:
        train = [_batch(base / "train", "fine_labels")]
        x_test, y_test = _batch(base / "test", "fine_labels")
        classes = _names(base / "meta", "fine_label_names")
        label_key = "fine_labels"
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return build_dataset(
        folder.name, pixels_to_unit(x_train), y_train, pixels_to_unit(x_test), y_test,
        where=base.name, classes=classes,
        source=f"{base} ({'CIFAR-10' if variant == 'cifar10' else 'CIFAR-100'} python pickles, restricted unpickler)",
        meta=dict(format=variant, folder=str(base), label_key=label_key, scaling="uint8 / 255"),
    )
