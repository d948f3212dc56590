"""The checks every loader runs at the boundary, and the assembly of a checked Dataset.

Notation: ``N`` examples, ``n_classes`` classes. Inputs ``x`` have shape
``(N, *input_shape)`` (``input_shape`` is ``(D,)``, ``(C, L)`` or ``(C, H, W)``);
labels ``y`` have shape ``(N,)``. Inside fitscope, inputs are float32 and
labels int64 in ``[0, n_classes)``.

Loaders hand raw arrays to :func:`validate_arrays` (one set, before any split,
so that positions in messages are positions in the user's file) and to
:func:`build_dataset` (both splits). Both raise :class:`~fitscope.errors.DataError`
with a one-line message shaped ``<what> in <where>: expected <...>, got <...>``
(the one form of :func:`fitscope.validation.message`, with the file named).
The scalar arguments of :func:`fitscope.data.load` (``test_fraction``,
``seed``) are checked by the shared checks of :mod:`fitscope.validation`
(:class:`~fitscope.errors.ConfigError`). Inner code trusts what passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.data.mapped import rows_per_block
from fitscope.errors import DataError
from fitscope.validation import shorten

Locate = Callable[[int], str]


def _index(i: int) -> str:
    return f"index {i}"


def _in(what: str, where: str, split: str | None) -> str:
    return f"{what} in {where}" + (f" ({split} split)" if split else "")


def validate_arrays(
    x, y, *, where: str, split: str | None = None, locate: Locate | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check one set of inputs and labels; return them as float32 inputs and int64 labels.

    Args:
        x: inputs, any numeric array of shape ``(N, ...)`` with at least 2 axes.
        y: labels, shape ``(N,)`` or ``(N, 1)``: integers (or integral floats) >= 0.
        where: what the arrays came from, for messages (e.g. ``"data.npz"``).
        split: ``"train"``/``"test"`` when the arrays are one split of a source.
        locate: turns a row index into a position the user can find
            (``"line 4"`` for a CSV file); default ``"index i"``.

    Returns:
        ``(x, y)``: C-contiguous float32 inputs and int64 labels. Inputs that
        are already C-contiguous float32 are returned as a view, not copied
        (a read-only memory map stays one); others are converted in memory.

    Raises:
        DataError: different lengths, non-numeric or non-finite inputs,
            non-integer or negative labels, or arrays of the wrong rank.
    """
    x, yi = check_arrays(x, y, where=where, split=split, locate=locate)
    with np.errstate(over="ignore"):
        xf = np.ascontiguousarray(x, dtype=np.float32)
    return xf, yi


def check_arrays(
    x, y, *, where: str, split: str | None = None, locate: Locate | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The checks of :func:`validate_arrays`, without converting the inputs: ``(x as given, int64 labels)``.

    For a loader that converts the inputs itself (a memory-mapped file whose
    float32 copy goes to the cache, :mod:`fitscope.data.mapped`). The
    finiteness checks read ``x`` in blocks of rows, so a map of any size is
    checked with :data:`~fitscope.data.mapped.BLOCK_BYTES` of temporaries.

    Raises:
        DataError: as :func:`validate_arrays`.
    """
    locate = locate or _index
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{_in('labels', where, split)}: expected a 1-D array of class indices, got shape {y.shape}"
        )
    if x.ndim < 2:
        raise DataError(
            f"{_in('inputs', where, split)}: expected an array of shape (N, features...) "
            f"with one row per example, got shape {x.shape}"
        )
    if len(x) != len(y):
        raise DataError(
            f"{_in('inputs and labels', where, split)}: expected the same number of rows, "
            f"got {len(x)} inputs and {len(y)} labels"
        )
    if x.dtype.kind not in "biuf":
        raise DataError(f"{_in('inputs', where, split)}: expected numbers, got dtype {x.dtype}")

    if x.dtype.kind == "f":
        bad = _first_false(x, np.isfinite)
        if bad is not None:
            raise DataError(
                f"{_in('inputs', where, split)}: expected finite numbers, "
                f"got {shorten(x[bad])} at {locate(int(bad[0]))}"
            )
        if x.dtype.itemsize > 4:
            bad = _first_false(x, _finite_as_float32)
            if bad is not None:
                raise DataError(
                    f"{_in('inputs', where, split)}: expected numbers within float32 range (|x| < 3.4e38), "
                    f"got {shorten(x[bad])} at {locate(int(bad[0]))}"
                )

    yi = _integer_labels(y, what=_in("labels", where, split), locate=locate)
    return x, yi


def _finite_as_float32(block: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.isfinite(block.astype(np.float32))


def _first_false(x: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> tuple[int, ...] | None:
    """The index of the first entry of ``x`` where ``test`` (elementwise, on a block of rows) is False, or None."""
    step = rows_per_block(x)
    for start in range(0, len(x), step):
        ok = test(x[start:start + step])
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            return (start + int(bad[0]), *(int(i) for i in bad[1:]))
    return None


def _integer_labels(y: np.ndarray, *, what: str, locate: Locate) -> np.ndarray:
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind in "iu":
        if y.dtype.kind == "u" and y.dtype.itemsize == 8 and len(y) and y.max() > np.iinfo(np.int64).max:
            i = int(np.argmax(y > np.iinfo(np.int64).max))
            raise DataError(f"{what}: expected class indices below 2**63, got {int(y[i])} at {locate(i)}")
        yi = y.astype(np.int64)
    elif y.dtype.kind == "f":
        integral = np.isfinite(y) & (y == np.floor(y))
        if not integral.all():
            i = int(np.argmin(integral))
            raise DataError(f"{what}: expected non-negative integers, got {shorten(y[i])} at {locate(i)}")
        yi = y.astype(np.int64)
    else:
        raise DataError(f"{what}: expected non-negative integers, got dtype {y.dtype}")
    if len(yi) and yi.min() < 0:
        i = int(np.argmax(yi < 0))
        raise DataError(f"{what}: expected non-negative integers, got {int(yi[i])} at {locate(i)}")
    return yi


def check_at_least_two_classes(y: np.ndarray, *, where: str, split: str | None = None,
                               classes: Sequence[str] | None = None) -> None:
    """Raise :class:`DataError` unless the int64 labels ``y`` hold at least two distinct classes."""
    present = np.unique(y)
    if len(present) < 2:
        if len(present) == 0:
            got = "no labels"
        else:
            c = int(present[0])
            name = f" ({classes[c]!r})" if classes is not None and c < len(classes) and classes[c] != str(c) else ""
            got = f"only class {c}{name}"
        raise DataError(f"{_in('labels', where, split)}: expected at least 2 classes, got {got}")


def build_dataset(
    name: str,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    where: str,
    source: str,
    classes: Sequence[str] | None = None,
    meta: dict | None = None,
) -> Dataset:
    """Validate both splits and return the :class:`Dataset`.

    Args:
        name: the dataset's short name.
        x_train, y_train, x_test, y_test: raw arrays (see :func:`validate_arrays`).
        where: the source for messages (file or folder name).
        source: the human-readable origin stored in the dataset.
        classes: class names, index ``c`` names label ``c``; default ``"0" .. str(n_classes - 1)``
            with ``n_classes = 1 + the largest label``.
        meta: extra facts to store (copied).

    Raises:
        DataError: any check of :func:`validate_arrays` fails, a split is empty,
            train and test inputs differ in shape, a label is not below the number
            of class names, or the train split holds a single class.
    """
    x_train, y_train = validate_arrays(x_train, y_train, where=where, split="train")
    x_test, y_test = validate_arrays(x_test, y_test, where=where, split="test")
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) == 0:
            raise DataError(f"{split} split of {where}: expected at least one example, got 0")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"inputs in {where}: expected test inputs of the train inputs' shape {x_train.shape[1:]}, "
            f"got {x_test.shape[1:]}"
        )
    if len(x_train.shape) - 1 > 3:
        raise DataError(
            f"inputs in {where}: expected one example of shape (D,), (C, L) or (C, H, W), "
            f"got {x_train.shape[1:]}"
        )
    top = int(max(y_train.max(), y_test.max()))
    if classes is None:
        classes = tuple(str(c) for c in range(top + 1))
    else:
        classes = tuple(str(c) for c in classes)
        if top >= len(classes):
            split, y = ("train", y_train) if y_train.max() == top else ("test", y_test)
            i = int(np.argmax(y == top))
            raise DataError(
                f"{_in('labels', where, split)}: expected class indices below {len(classes)} "
                f"(the number of class names), got {top} at index {i}"
            )
    check_at_least_two_classes(y_train, where=where, split="train", classes=classes)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=classes,
        source=source,
        meta=dict(meta or {}),
    )

