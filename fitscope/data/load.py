"""``load``: one entry point from a name or path to a checked :class:`Dataset`.

Resolution of ``source``:

1. a string naming a built-in data set (``digits``, ``iris``, ``wine``,
   ``breast_cancer``, ``mnist1d``; any case) loads it; write ``./digits`` to
   mean a path of that name instead;
2. an existing ``.npz`` or ``.csv`` file loads with :mod:`~fitscope.data.npz`
   or :mod:`~fitscope.data.csv`;
3. an existing folder loads as ``.npy`` files (:mod:`~fitscope.data.npy`),
   MNIST IDX files (:mod:`~fitscope.data.idx`), a CIFAR-10/100 python folder
   (:mod:`~fitscope.data.cifar`), or an image folder
   (:mod:`~fitscope.data.imagefolder`), checked in that order.

Anything else is a :class:`~fitscope.errors.DataError` naming the built-in
names and the supported file kinds. The result always has float32 inputs and
int64 labels in ``[0, n_classes)``; ``source`` and ``meta`` record the origin
and the split seed. Inputs of ``.npy`` files and of large ``.npz`` members are
read-only memory maps (of the file, or of a cache file holding their split or
float32 conversion), so a data set larger than one may copy per task is
loaded without copying it: :mod:`fitscope.data.mapped` says what is copied when.
"""

from __future__ import annotations

import os
from pathlib import Path

from fitscope.data.builtin import builtin_names, load_builtin
from fitscope.data.dataset import Dataset
from fitscope.errors import ConfigError, DataError
from fitscope.validation import check_fraction, check_seed, message, shorten

FILE_KINDS = (
    (".npz", "NumPy archive: x_train/y_train/x_test/y_test, or x/y (split with the seed)"),
    (".npy folder", "DIR/x_train.npy, y_train.npy, x_test.npy, y_test.npy (or x.npy, y.npy): memory-mapped, "
                    "for data sets of real size"),
    (".csv", "table: numeric feature columns and a label column (--label-column)"),
    ("IDX folder", "MNIST/Fashion-MNIST: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*"),
    ("CIFAR folder", "CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta)"),
    ("image folder", "DIR/train/<class>/*.png + DIR/test/<class>/*.png, or DIR/<class>/*.png"),
)


def supported_file_kinds() -> list[tuple[str, str]]:
    """``(kind, description)`` of every file or folder kind :func:`load` reads."""
    return list(FILE_KINDS)


def _kinds_text() -> str:
    return ("a .npz or .csv file, a folder of .npy files, an MNIST IDX folder, a CIFAR-10/100 python folder "
            "or an image folder")


def _looks_like_path(text: str) -> bool:
    return bool(Path(text).suffix) or os.sep in text or "/" in text or text.startswith((".", "~"))


def load(
    source: str | os.PathLike,
    *,
    label_column: str | int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load a built-in data set or a file/folder a user brings, split and checked.

    Args:
        source: a built-in name (see :func:`builtin_names`) or a path to a
            ``.npz``/``.csv`` file, a folder of ``.npy`` files, an MNIST IDX
            folder, a CIFAR-10/100 python folder or an image folder.
        label_column: for ``.csv`` only: the label column's header name or
            integer index (default: ``label``/``target``/``class``, else the last).
        test_fraction: share of examples in the test split when the source
            holds a single set (ignored by sources that come split, and by ``mnist1d``).
        seed: seed of the train/test split (and of ``mnist1d``'s generation).

    Returns:
        The :class:`Dataset`: float32 inputs of shape ``(N, D)``, ``(N, C, L)``
        or ``(N, C, H, W)``, int64 labels in ``[0, n_classes)``. Inputs read
        from ``.npy`` files or large ``.npz`` members are read-only memory
        maps (``meta["storage"]`` says which; :mod:`fitscope.data.mapped`).

    Raises:
        DataError: missing path, unknown name, unreadable or truncated file,
            or arrays that fail :mod:`fitscope.data.validation`.
        ConfigError: ``test_fraction`` outside (0, 1), a bad ``seed``, or a
            ``label_column`` for a source that is not a CSV file.

    Example:
        >>> data = load("digits", seed=0)
        >>> data.x_train.shape[1:], data.n_classes
        ((1, 8, 8), 10)
    """
    test_fraction = check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    seed = check_seed(seed)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(message("source", "a built-in name or a path", type(source).__name__))

    def no_label_column(what: str) -> None:
        if label_column is not None:
            raise ConfigError(message("label_column", f"None for {what} (it applies only to .csv files)",
                                      shorten(label_column)))

    if isinstance(source, str) and source.strip().lower() in builtin_names():
        name = source.strip().lower()
        no_label_column(f"the built-in data set {name!r}")
        return load_builtin(name, test_fraction=test_fraction, seed=seed)

    text = os.fspath(source)
    path = Path(text).expanduser()
    if not path.exists():
        if isinstance(source, str) and not _looks_like_path(text):
            raise DataError(
                f"unknown data source {text!r}: expected a built-in name ({', '.join(builtin_names())}) "
                f"or the path of {_kinds_text()}"
            )
        raise DataError(f"data source {text!r}: no such file or folder (expected the path of {_kinds_text()})")

    if path.is_dir():
        from fitscope.data.cifar import cifar_variant, load_cifar_folder
        from fitscope.data.idx import find_idx_files, has_idx_files, load_idx_folder, missing_idx_files
        from fitscope.data.imagefolder import is_image_folder, load_image_folder
        from fitscope.data.npy import is_npy_folder, load_npy_folder, npy_files

        no_label_column(f"the folder {text!r}")
        if is_npy_folder(path):
            return load_npy_folder(path, test_fraction=test_fraction, seed=seed)
        files = find_idx_files(path)
        if files is not None:
            return load_idx_folder(path, files)
        if has_idx_files(path):
            raise DataError(f"IDX folder {text!r}: expected 4 files, missing {', '.join(missing_idx_files(path))}")
        variant = cifar_variant(path)
        if variant is not None:
            return load_cifar_folder(path, *variant)
        if is_image_folder(path):
            return load_image_folder(path, test_fraction=test_fraction, seed=seed)
        if npy_files(path):
            from fitscope.data.npz import find_layout

            find_layout(list(npy_files(path)), text, what=".npy files")  # raises: the names expected and found
        raise DataError(
            f"folder {text!r}: expected MNIST IDX files, CIFAR python batches, class subfolders of images "
            f"or .npy files, got none of these"
        )

    suffix = path.suffix.lower()
    if suffix == ".npz":
        from fitscope.data.npz import load_npz

        no_label_column(f"the .npz file {path.name!r}")
        return load_npz(path, test_fraction=test_fraction, seed=seed)
    if suffix == ".csv":
        from fitscope.data.csv import load_csv

        return load_csv(path, label_column=label_column, test_fraction=test_fraction, seed=seed)
    raise DataError(f"data file {text!r}: expected {_kinds_text()}, got a {suffix or 'suffix-less'} file")
