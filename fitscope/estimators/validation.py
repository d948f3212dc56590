"""The checks every estimator runs on its arguments at the boundary.

Array problems raise :class:`~fitscope.errors.DataError`, scalar options
(thresholds, ratios, bandwidths, ``k``) raise :class:`~fitscope.errors.ConfigError`.
Every message is one line shaped ``<argument>: expected <...>, got <...>``.
Shapes are written with their names, e.g. ``(K, n) = (200, 1437)``. The public
estimator functions call these once; the code behind them trusts what passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.results import CScoreResult, LabelIssueResult, MemorizationResult, ProxyScores


def shape_text(names: Sequence[str], shape: Sequence[int] | None = None) -> str:
    """``("K", "n"), (200, 1437)`` -> ``"(K, n) = (200, 1437)"``; without ``shape`` just ``"(K, n)"``."""
    named = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    if shape is None:
        return named
    return f"{named} = {tuple(int(s) for s in shape)}"


def _as_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise DataError(f"{name}: expected an array, got {type(value).__name__} ({exc})") from None
    if arr.dtype == object:
        raise DataError(f"{name}: expected a numeric array, got dtype object")
    return arr


def _check_shape(name: str, arr: np.ndarray, kind: str, names: Sequence[str],
                 shape: Sequence[int | None] | None, like: str | None) -> None:
    """Raise unless ``arr`` has ``len(names)`` axes and matches ``shape`` (``None`` entries are free)."""
    if shape is None:
        shape = (None,) * len(names)
    fixed = all(s is not None for s in shape)
    suffix = f" like {like}" if like else ""
    if arr.ndim != len(names) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        if fixed:
            expected = f"{kind} of shape {shape_text(names, shape)}{suffix}"
        else:
            known = ", ".join(f"{n} = {s}" for n, s in zip(names, shape) if s is not None)
            expected = f"a {len(names)}-D {kind.removeprefix('a ').removeprefix('an ')} {shape_text(names)}"
            expected += f" with {known}{suffix}" if known else ""
        raise DataError(f"{name}: expected {expected}, got shape {tuple(arr.shape)}")
    if 0 in arr.shape:
        raise DataError(f"{name}: expected at least one entry on every axis {shape_text(names)}, "
                        f"got shape {tuple(arr.shape)}")


def _first_bad(mask: np.ndarray) -> str:
    """Index of the first True entry of ``mask`` as text, ``"[3, 7]"``."""
    idx = np.unravel_index(int(np.argmax(mask.ravel())), mask.shape)
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def check_mask(name: str, value, names: Sequence[str], shape: Sequence[int | None] | None = None,
               *, like: str | None = None, meaning: str = "") -> np.ndarray:
    """A bool membership mask of the given shape; any other dtype is an error (no 0/1 guessing).

    Args:
        name: the argument's name for messages.
        value: the array.
        names: axis names, e.g. ``("K", "n")``.
        shape: the required sizes (``None`` = any), e.g. ``(200, None)``.
        like: the argument the sizes come from, for messages.
        meaning: what True means, for messages.
    """
    arr = _as_array(name, value)
    if arr.dtype != np.bool_:
        what = f" ({meaning})" if meaning else ""
        raise DataError(f"{name}: expected a bool array{what}, got dtype {arr.dtype}")
    _check_shape(name, arr, "a bool array", names, shape, like)
    return arr


def check_binary(name: str, value, names: Sequence[str], shape: Sequence[int | None] | None = None,
                 *, like: str | None = None) -> np.ndarray:
    """Correctness indicators: bool, or integers/floats that are all 0 or 1; returned as bool."""
    arr = _as_array(name, value)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected a bool or 0/1 array, got dtype {arr.dtype}")
    _check_shape(name, arr, "a bool or 0/1 array", names, shape, like)
    if arr.dtype == np.bool_:
        return arr
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        at = _first_bad(bad)
        raise DataError(f"{name}: expected bool or 0/1 values, got {arr[bad][0].item()!r} at {at}")
    return arr != 0


def check_real(name: str, value, names: Sequence[str], shape: Sequence[int | None] | None = None,
               *, like: str | None = None, allow_nan: bool = False, check_values: bool = True) -> np.ndarray:
    """A real array of the given shape with finite values (NaN allowed when ``allow_nan``); dtype kept.

    ``check_values=False`` checks only dtype and shape: for large arrays whose
    caller checks a reduction instead (a sum is finite only if its terms are)
    and calls again with the check on failure, to name the first bad entry.
    """
    arr = _as_array(name, value)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    _check_shape(name, arr, "a real array", names, shape, like)
    if check_values and arr.dtype.kind == "f":
        bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
        if bad.any():
            what = "finite or NaN values" if allow_nan else "finite values"
            raise DataError(f"{name}: expected {what}, got {arr[bad][0].item()!r} at {_first_bad(bad)}")
    return arr


def check_features(name: str, value, n: int | None = None, *, like: str | None = None) -> np.ndarray:
    """Features ``(n, D)`` or ``(n, *shape)`` (flattened to ``(n, D)``), real and finite; dtype kept."""
    arr = _as_array(name, value)
    if arr.ndim < 2:
        raise DataError(f"{name}: expected an array (n, D) or (n, *shape), got shape {tuple(arr.shape)}")
    return check_real(name, arr.reshape(arr.shape[0], -1), ("n", "D"), (n, None), like=like)


def check_labels(name: str, value, n: int | None = None, *, like: str | None = None) -> np.ndarray:
    """Class labels ``(n,)``: non-negative integers (integral floats accepted); returned as int64."""
    arr = _as_array(name, value)
    if arr.dtype.kind not in "biuf" or arr.dtype == np.bool_:
        raise DataError(f"{name}: expected non-negative integer class labels, got dtype {arr.dtype}")
    _check_shape(name, arr, "an integer array", ("n",), (n,), like)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise DataError(f"{name}: expected non-negative integer class labels, "
                            f"got {arr[bad][0].item()!r} at {_first_bad(bad)}")
    if (arr < 0).any():
        raise DataError(f"{name}: expected non-negative integer class labels, "
                        f"got {arr[arr < 0][0].item()!r} at {_first_bad(arr < 0)}")
    return arr.astype(np.int64)


def check_probs(name: str, value, n: int, *, like: str = "labels", atol: float = 1e-3) -> np.ndarray:
    """Predicted probabilities ``(n, C)``: rows in [0, 1] that sum to 1 (within ``atol``), or all-NaN rows.

    An all-NaN row means "no prediction for this example" (what
    :func:`~fitscope.estimators.out_of_fold_probs` gives an example that every
    model trained on). Returned as float64.
    """
    arr = check_real(name, value, ("n", "C"), (n, None), like=like, allow_nan=True).astype(np.float64)
    nan = np.isnan(arr)
    partial = nan.any(axis=1) & ~nan.all(axis=1)
    if partial.any():
        i = int(np.argmax(partial))
        raise DataError(f"{name}: expected each row all numbers or all NaN (no prediction), "
                        f"got a partly NaN row at index {i}")
    if arr.shape[1] < 2:
        raise DataError(f"{name}: expected probabilities over at least 2 classes (n, C) with C >= 2, "
                        f"got shape {tuple(arr.shape)}")
    rows = ~nan[:, 0]
    bad = rows[:, None] & ((arr < 0) | (arr > 1))
    if bad.any():
        raise DataError(f"{name}: expected probabilities in [0, 1], got {arr[bad][0].item()!r} at {_first_bad(bad)}")
    sums = arr[rows].sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        i = int(np.flatnonzero(rows)[int(np.argmax(off))])
        raise DataError(f"{name}: expected rows summing to 1 (within {atol:g}), "
                        f"got {float(sums[off][0]):.6g} at row {i}")
    return arr


def check_number(name: str, value, *, low: float = -math.inf, high: float = math.inf,
                 open_low: bool = False, open_high: bool = False) -> float:
    """A real number in the given interval, as float; :class:`ConfigError` otherwise."""
    lo_b = "(" if open_low else "["
    hi_b = ")" if open_high else "]"
    interval = f"{lo_b}{low:g}, {high:g}{hi_b}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}: expected a number in {interval}, got {value!r}")
    x = float(value)
    if (math.isnan(x) or x < low or x > high or (open_low and x == low) or (open_high and x == high)):
        raise ConfigError(f"{name}: expected a number in {interval}, got {value!r}")
    return x


def check_int(name: str, value, *, low: int = 1) -> int:
    """An integer >= ``low``; :class:`ConfigError` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def check_scores(name: str, value, n: int, *, like: str = "labels") -> np.ndarray:
    """One real score per example ``(n,)``; NaN allowed (= unknown for that example). Returned as float64.

    Accepts the result objects of this package too: a
    :class:`~fitscope.estimators.MemorizationResult` gives ``.mem``, a
    :class:`~fitscope.estimators.CScoreResult` gives ``.cscore`` and a
    :class:`~fitscope.estimators.ProxyScores` or
    :class:`~fitscope.estimators.LabelIssueResult` gives ``.scores``.
    """
    if isinstance(value, MemorizationResult):
        value = value.mem
    elif isinstance(value, CScoreResult):
        value = value.cscore
    elif isinstance(value, (ProxyScores, LabelIssueResult)):
        value = value.scores
    return check_real(name, value, ("n",), (n,), like=like, allow_nan=True).astype(np.float64)


def check_labels_and_probs(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """Given labels ``(n,)`` and predicted probabilities ``(n, C)``, checked together.

    Labels must be class indices below C (the columns of ``pred_probs``).
    Returns ``(labels as int64, pred_probs as float64)``.
    """
    labels = check_labels("labels", labels)
    probs = check_probs("pred_probs", pred_probs, labels.shape[0])
    c = probs.shape[1]
    if labels.max() >= c:
        i = int(np.argmax(labels >= c))
        raise DataError(f"labels: expected class indices below C = {c} (the columns of pred_probs), "
                        f"got {int(labels[i])} at index {i}")
    return labels, probs
