"""Every generic argument check of fitscope, once, with one message form.

Each check takes the value first and the argument's name second (other
options keyword-only), returns the value converted (``int``, ``float``,
array) and otherwise raises with a one-line message of one form::

    <name>: expected <what>, got <value>

built by :func:`message`. ``<value>`` is the value's repr (NumPy scalars
shown as Python numbers), shortened by :func:`shorten` when long; for
arrays it is the shape, the dtype, or the first offending entry and its
index (``got -1.0 at [3, 7]``). Shapes are written with their axis names,
``(K, n) = (200, 1437)`` (:func:`shape_text`). Domain checks that stay in
their layer (the kernels' ``arch``, the data files' formats) build their
messages with :func:`message` too, so every argument error reads the same.

Scalars (options, counts, seeds) raise :class:`~fitscope.errors.ConfigError`;
arrays raise :class:`~fitscope.errors.DataError`. Both are ``ValueError``.

Seeds: one rule, :func:`check_seed`: a Python or NumPy integer (not a bool)
in ``[0, 2**32)``, the range of :func:`fitscope.seeding.derive_seed`'s
children, of NumPy's legacy ``np.random.seed`` and of 32-bit seed words;
lists of seeds are checked entry by entry (:func:`check_seeds`).

This module imports nothing from fitscope but :mod:`fitscope.errors`, so
every layer may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from fitscope.errors import ConfigError, DataError

#: seeds are integers in ``[0, SEED_BOUND)``
SEED_BOUND = 2**32
_SHORT = 80


# --------------------------------------------------------------------------- the message form


def shorten(value, limit: int = _SHORT) -> str:
    """The repr of ``value`` for a message: NumPy scalars as Python numbers, cut to ``limit`` characters."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def message(name: str, what: str, got: str) -> str:
    """The one message form: ``"<name>: expected <what>, got <got>"`` (``got`` is text, see :func:`shorten`)."""
    return f"{name}: expected {what}, got {got}"


def _fail(name: str, what: str, value, error: type[Exception] = ConfigError) -> Exception:
    return error(message(name, what, shorten(value)))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _bound(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


# --------------------------------------------------------------------------- scalars


def check_number(value, name: str, *, low: float = -math.inf, high: float = math.inf,
                 open_low: bool = False, open_high: bool = False, allow_none: bool = False) -> float | None:
    """A real number (not a bool, not NaN) in the interval, returned as float.

    ``low``/``high`` bound it, closed unless ``open_low``/``open_high``;
    an open infinite bound excludes that infinity (``low=0, open_low=True,
    open_high=True`` is a finite number > 0). Message: ``a number in (0, inf)``.
    ``allow_none`` lets None through (returned as None).
    """
    if value is None and allow_none:
        return None
    interval = f"{'(' if open_low else '['}{_bound(low)}, {_bound(high)}{')' if open_high else ']'}"
    what = f"a number in {interval}" + (" or None" if allow_none else "")
    if not _is_real(value):
        raise _fail(name, what, value)
    x = float(value)
    if math.isnan(x) or x < low or x > high or (open_low and x == low) or (open_high and x == high):
        raise _fail(name, what, value)
    return x


def check_fraction(value, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """A number in ``[0, 1]`` (ends open as asked): a probability, ratio or fraction; see :func:`check_number`."""
    return check_number(value, name, low=0.0, high=1.0, open_low=open_low, open_high=open_high)


def check_int(value, name: str, *, low: int | None = 1, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """An integer (Python or NumPy, not a bool) in ``[low, high]`` (None = unbounded), returned as int.

    The default ``low=1`` asks for a positive integer. Messages:
    ``an integer >= 1``, ``an integer in [0, 5]``; ``allow_none`` lets None
    through (returned as None) and adds ``or None``.
    """
    if value is None and allow_none:
        return None
    if low is not None and high is not None:
        what = f"an integer in [{low}, {high}]"
    elif low is not None:
        what = f"an integer >= {low}"
    elif high is not None:
        what = f"an integer <= {high}"
    else:
        what = "an integer"
    what += " or None" if allow_none else ""
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise _fail(name, what, value)
    return int(value)


def check_choice(value, name: str, choices: Iterable):
    """``value`` must equal one of ``choices`` (same type: ``"1"`` is not ``1``); returns it."""
    choices = tuple(choices)
    for c in choices:
        same_kind = isinstance(value, type(c)) and (isinstance(c, bool) or not isinstance(value, (bool, np.bool_)))
        if same_kind and bool(value == c):
            return c
    raise _fail(name, "one of " + ", ".join(str(c) for c in choices), value)


def check_bool(value, name: str) -> bool:
    """``True`` or ``False`` (a Python or NumPy bool; 0/1 are not accepted); returned as bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, "True or False", value)
    return bool(value)


def check_seed(seed, name: str = "seed") -> int:
    """The one seed rule: a Python or NumPy integer, not a bool, in ``[0, 2**32)``; returned as int."""
    if not _is_int(seed) or not 0 <= seed < SEED_BOUND:
        raise _fail(name, "an integer in [0, 2**32)", seed)
    return int(seed)


def check_seeds(seeds, name: str = "seeds", *, allow_empty: bool = False) -> list[int]:
    """A sequence of seeds, each by :func:`check_seed` (named ``seeds[i]``); at least one unless ``allow_empty``."""
    try:
        items = None if isinstance(seeds, (str, bytes, dict)) else list(seeds)
    except TypeError:  # not iterable
        items = None
    if items is None:
        raise _fail(name, "a sequence of integer seeds in [0, 2**32)", seeds)
    out = [check_seed(s, f"{name}[{i}]") for i, s in enumerate(items)]
    if not out and not allow_empty:
        raise ConfigError(message(name, "at least one seed", "an empty sequence"))
    return out


def check_type(value, name: str, types: type | tuple[type, ...], what: str | None = None):
    """``value`` must be an instance of ``types`` (message: ``what``, default "a <type name>"); returns it."""
    if not isinstance(value, types):
        if what is None:
            names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
            what = "a " + " or ".join(names)
        raise ConfigError(message(name, what, type(value).__name__))
    return value


# --------------------------------------------------------------------------- arrays


def shape_text(names: Sequence[str], shape: Sequence[int] | None = None) -> str:
    """``("K", "n"), (200, 1437)`` -> ``"(K, n) = (200, 1437)"``; without ``shape`` just ``"(K, n)"``."""
    named = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    if shape is None:
        return named
    return f"{named} = {tuple(int(s) for s in shape)}"


def first_index(mask: np.ndarray) -> str:
    """The index of the first True entry of ``mask`` as text: ``"[3, 7]"``."""
    idx = np.unravel_index(int(np.argmax(mask.ravel())), mask.shape)
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def as_array(value, name: str, *, error: type[Exception] = DataError) -> np.ndarray:
    """``np.asarray(value)``; ``error`` (:class:`DataError`) for ragged input or dtype object."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise error(message(name, "a numeric array", f"{type(value).__name__} ({exc})")) from None
    if arr.dtype == object:
        raise error(message(name, "a numeric array", "dtype object"))
    return arr


def check_shape(arr: np.ndarray, name: str, *, axes: Sequence[str], shape: Sequence[int | None] | None = None,
                kind: str = "an array", like: str | None = None, error: type[Exception] = DataError) -> np.ndarray:
    """Raise unless ``arr`` has ``len(axes)`` axes, matches ``shape`` (None entries free) and has no empty axis.

    Args:
        arr: the array.
        name: the argument's name.
        axes: axis names, e.g. ``("K", "n")``.
        shape: the required sizes (None = any), e.g. ``(200, None)``.
        kind: what the array is, for messages (``"a bool array"``).
        like: the argument the sizes come from, for messages.
        error: the exception class (:class:`DataError`; :class:`ConfigError` for arrays that are options).
    """
    if shape is None:
        shape = (None,) * len(axes)
    fixed = all(s is not None for s in shape)
    suffix = f" like {like}" if like else ""
    if arr.ndim != len(axes) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        if fixed:
            expected = f"{kind} of shape {shape_text(axes, shape)}{suffix}"
        else:
            known = ", ".join(f"{n} = {s}" for n, s in zip(axes, shape) if s is not None)
            expected = f"a {len(axes)}-D {kind.removeprefix('a ').removeprefix('an ')} {shape_text(axes)}"
            expected += f" with {known}{suffix}" if known else ""
        raise error(message(name, expected, f"shape {tuple(arr.shape)}"))
    if 0 in arr.shape:
        raise error(message(name, f"at least one entry on every axis {shape_text(axes)}", f"shape {tuple(arr.shape)}"))
    return arr


def check_finite(arr: np.ndarray, name: str, *, allow_nan: bool = False) -> np.ndarray:
    """``arr`` if every entry is finite (NaN allowed with ``allow_nan``), else an error naming the first bad one.

    Read in blocks of rows (about 4 MiB of flags at a time), so that a large
    array (a read-only memory map, a view of Ray's object store) is checked
    without a mask of its own size.
    """
    if arr.dtype.kind in "fc":
        rows = arr if arr.ndim else arr.reshape(1)
        step = max(1, (4 << 20) // max(int(np.prod(rows.shape[1:], dtype=np.int64)), 1))
        for start in range(0, len(rows), step):
            bad = np.isinf(rows[start:start + step]) if allow_nan else ~np.isfinite(rows[start:start + step])
            if bad.any():
                at = np.unravel_index(int(np.argmax(bad.ravel())), bad.shape)
                index = (start + int(at[0]), *(int(i) for i in at[1:])) if arr.ndim else ()
                what = "finite or NaN values" if allow_nan else "finite values"
                where = "[" + ", ".join(str(i) for i in index) + "]"
                raise DataError(message(name, what, f"{shorten(arr[index])} at {where}"))
    return arr


def check_mask(value, name: str, *, axes: Sequence[str], shape: Sequence[int | None] | None = None,
               like: str | None = None, meaning: str = "") -> np.ndarray:
    """A bool membership mask of the given shape; any other dtype is an error (no 0/1 guessing).

    Args:
        value: the array.
        name: the argument's name for messages.
        axes: axis names, e.g. ``("K", "n")``.
        shape: the required sizes (None = any), e.g. ``(200, None)``.
        like: the argument the sizes come from, for messages.
        meaning: what True means, for messages.
    """
    arr = as_array(value, name)
    if arr.dtype != np.bool_:
        what = f" ({meaning})" if meaning else ""
        raise DataError(message(name, f"a bool array{what}", f"dtype {arr.dtype}"))
    return check_shape(arr, name, axes=axes, shape=shape, kind="a bool array", like=like)


def check_binary(value, name: str, *, axes: Sequence[str], shape: Sequence[int | None] | None = None,
                 like: str | None = None, error: type[Exception] = DataError) -> np.ndarray:
    """Indicators (correct or not, in a subset or not): bool, or integers/floats all 0 or 1; returned as bool.

    ``error``: the exception class (:class:`DataError`; :class:`ConfigError` for arrays that are options).
    """
    arr = as_array(value, name, error=error)
    if arr.dtype.kind not in "biuf":
        raise error(message(name, "a bool or 0/1 array", f"dtype {arr.dtype}"))
    check_shape(arr, name, axes=axes, shape=shape, kind="a bool or 0/1 array", like=like, error=error)
    if arr.dtype == np.bool_:
        return arr
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        raise error(message(name, "bool or 0/1 values", f"{shorten(arr[bad][0])} at {first_index(bad)}"))
    return arr != 0


def check_real(value, name: str, *, axes: Sequence[str], shape: Sequence[int | None] | None = None,
               like: str | None = None, allow_nan: bool = False, check_values: bool = True) -> np.ndarray:
    """A real array (bool, int or float) of the given shape, finite (NaN allowed when ``allow_nan``); dtype kept.

    ``check_values=False`` checks only dtype and shape: for large arrays whose
    caller checks a reduction instead (a sum is finite only if its terms are)
    and calls again with the check on failure, to name the first bad entry.
    """
    arr = as_array(value, name)
    if arr.dtype.kind not in "biuf":
        raise DataError(message(name, "a real-valued array", f"dtype {arr.dtype}"))
    check_shape(arr, name, axes=axes, shape=shape, kind="a real array", like=like)
    if check_values:
        check_finite(arr, name, allow_nan=allow_nan)
    return arr


def check_features(value, name: str, n: int | None = None, *, like: str | None = None) -> np.ndarray:
    """Features ``(n, D)`` or ``(n, *shape)`` (flattened to ``(n, D)``), real and finite; dtype kept."""
    arr = as_array(value, name)
    if arr.ndim < 2:
        raise DataError(message(name, "an array (n, D) or (n, *shape)", f"shape {tuple(arr.shape)}"))
    return check_real(arr.reshape(arr.shape[0], -1), name, axes=("n", "D"), shape=(n, None), like=like)


def check_labels(value, name: str, n: int | None = None, *, like: str | None = None,
                 n_classes: int | None = None) -> np.ndarray:
    """Class labels ``(n,)``: non-negative integers (integral floats accepted), below ``n_classes`` if given; int64."""
    what = "non-negative integer class labels"
    arr = as_array(value, name)
    if arr.dtype.kind not in "iuf":
        raise DataError(message(name, what, f"dtype {arr.dtype}"))
    check_shape(arr, name, axes=("n",), shape=(n,), kind="an integer array", like=like)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise DataError(message(name, what, f"{shorten(arr[bad][0])} at {first_index(bad)}"))
    if (arr < 0).any():
        raise DataError(message(name, what, f"{shorten(arr[arr < 0][0])} at {first_index(arr < 0)}"))
    if n_classes is not None and (arr >= n_classes).any():
        bad = arr >= n_classes
        raise DataError(message(name, f"class labels in [0, {n_classes})",
                                f"{shorten(arr[bad][0])} at {first_index(bad)}"))
    return arr.astype(np.int64)


def check_probs(value, name: str, n: int, *, like: str = "labels", atol: float = 1e-3) -> np.ndarray:
    """Predicted probabilities ``(n, C)``: rows in [0, 1] that sum to 1 (within ``atol``), or all-NaN rows.

    An all-NaN row means "no prediction for this example" (what
    :func:`~fitscope.estimators.out_of_fold_probs` gives an example that every
    model trained on). Returned as float64.
    """
    arr = check_real(value, name, axes=("n", "C"), shape=(n, None), like=like, allow_nan=True).astype(np.float64)
    nan = np.isnan(arr)
    partial = nan.any(axis=1) & ~nan.all(axis=1)
    if partial.any():
        raise DataError(message(name, "each row all numbers or all NaN (no prediction)",
                                f"a partly NaN row at index {int(np.argmax(partial))}"))
    if arr.shape[1] < 2:
        raise DataError(message(name, "probabilities over at least 2 classes (n, C) with C >= 2",
                                f"shape {tuple(arr.shape)}"))
    rows = ~nan[:, 0]
    bad = rows[:, None] & ((arr < 0) | (arr > 1))
    if bad.any():
        raise DataError(message(name, "probabilities in [0, 1]", f"{shorten(arr[bad][0])} at {first_index(bad)}"))
    sums = arr[rows].sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        i = int(np.flatnonzero(rows)[int(np.argmax(off))])
        raise DataError(message(name, f"rows summing to 1 (within {atol:g})", f"{float(sums[off][0]):.6g} at row {i}"))
    return arr
