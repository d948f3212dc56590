"""The kernels package's own argument checks, run once at the public boundary.

Array problems raise :class:`~fitscope.errors.DataError`, options (depth,
kind, dtype, memory cap, ...) raise :class:`~fitscope.errors.ConfigError`.
The generic checks (numbers, integers, choices) are those of
:mod:`fitscope.validation`, and every message here is built with its
:func:`~fitscope.validation.message`: one line shaped
``<argument>: expected <...>, got <...>`` that, where there is one, says the fix. The kernel code behind these checks
trusts what passed them.

Shapes: ``x1`` is ``(N1, D)`` for ``arch="fc"`` and ``(N1, C, H, W)`` or
``(N1, C, L)`` for ``arch="conv"``; ``x2`` has the same trailing shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fitscope.errors import ConfigError, DataError
from fitscope.train.device import placement_device
from fitscope.validation import as_array, check_choice, check_finite, check_int, check_number, message

ARCHS = ("fc", "conv")
KINDS = ("ntk", "nngp")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
POOLS = ("none", "gap", "lap")


def check_arch(arch) -> str:
    """``arch`` must be ``"fc"`` or ``"conv"``; returns it."""
    return check_choice(arch, "arch", ARCHS)


def check_kind(kind) -> str:
    """``kind`` must be ``"ntk"`` or ``"nngp"``; returns it."""
    return check_choice(kind, "kind", KINDS)


def check_dtype(dtype) -> torch.dtype:
    """``dtype`` must be ``"float64"`` or ``"float32"`` (or the torch dtype); returns the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    return DTYPES[check_choice(dtype, "dtype", DTYPES)]


def check_device(device) -> torch.device:
    """``device`` must name a torch device found here (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``); returns it.

    None is the placement's device (``FITSCOPE_DEVICE``, set by a study's
    executor, else the CPU): :func:`fitscope.train.device.placement_device`.
    """
    return placement_device(device)


def check_depth_fixed(depth, fixed) -> tuple[int, int]:
    """``depth`` (hidden layers) must be an int >= 1 and ``fixed`` (untrained first layers) an int in [0, depth]."""
    depth = check_int(depth, "depth")
    fixed = check_int(fixed, "fixed", low=0)
    if fixed > depth:
        raise ConfigError(message("fixed", f"at most depth = {depth} (fixed counts the first layers not trained)",
                                  str(fixed)))
    return depth, fixed


def check_max_memory(max_memory_mb) -> float:
    """``max_memory_mb`` must be a finite number > 0 (MiB of working memory per block pair)."""
    return check_number(max_memory_mb, "max_memory_mb", low=0.0, high=math.inf, open_low=True, open_high=True)


def check_filter_size(filter_size) -> int:
    """``filter_size`` must be an int >= 1 (the conv kernel may add its own conditions)."""
    return check_int(filter_size, "filter_size")


def check_pool(pool, lap_window) -> tuple[str, int | None]:
    """``pool`` must be ``"none"``, ``"gap"`` or ``"lap"``; ``lap_window`` None or an int >= 1."""
    return check_choice(pool, "pool", POOLS), check_int(lap_window, "lap_window", allow_none=True)


def check_array(name: str, value, *, arch: str = "fc") -> np.ndarray:
    """One kernel input as a finite float array of the shape ``arch`` needs.

    Args:
        name: the argument's name for messages (``"x1"``).
        value: array-like; integer and float dtypes are accepted.
        arch: ``"fc"`` wants ``(N, D)``; ``"conv"`` wants ``(N, C, H, W)`` or ``(N, C, L)``.

    Returns:
        The array as float64 (float32 input stays float32), at least one row and one feature.
    """
    arr = as_array(value, name)
    if arr.dtype.kind not in "iuf":
        raise DataError(message(name, "a numeric (integer or float) array", f"dtype {arr.dtype}"))
    if arch == "fc":
        if arr.ndim in (3, 4):
            raise DataError(message(name, "a 2-D array (N, D) for arch='fc'", f"shape {arr.shape}; flatten it "
                                    f"with {name}.reshape(len({name}), -1) or use arch='conv'"))
        if arr.ndim != 2:
            hint = f"; for one example use {name}.reshape(1, -1)" if arr.ndim == 1 else ""
            raise DataError(message(name, "a 2-D array (N, D) for arch='fc'", f"shape {arr.shape}{hint}"))
    elif arr.ndim not in (3, 4):
        hint = (f"; for 1-channel signals add a channel axis with {name}[:, None], for flat vectors use arch='fc'"
                if arr.ndim == 2 else "")
        raise DataError(message(name, "images (N, C, H, W) or signals (N, C, L) for arch='conv'",
                                f"shape {arr.shape}{hint}"))
    if 0 in arr.shape:
        raise DataError(message(name, "at least one entry on every axis", f"shape {arr.shape}"))
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)
    return check_finite(arr, name)


def check_nonzero_rows(name: str, arr: np.ndarray) -> None:
    """Raise unless every row (example) of ``arr`` has a nonzero norm (needed by the FC kernel's angles)."""
    flat = arr.reshape(len(arr), -1)
    zero = ~np.any(flat != 0, axis=1)
    if zero.any():
        rows = np.flatnonzero(zero)
        shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        raise DataError(message(name, "rows with nonzero norm (the kernel depends on angles)",
                                f"{len(rows)} all-zero row(s) at index {shown}; drop them or add a constant feature"))


def check_pair(x1, x2=None, *, arch: str = "fc", allow_zero_rows: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Check both kernel inputs: shapes, finiteness, same feature shape, nonzero rows for FC.

    Args:
        x1: ``(N1, D)`` for fc, ``(N1, C, H, W)`` / ``(N1, C, L)`` for conv.
        x2: same trailing shape as ``x1``, or None (the Gram matrix of ``x1``).
        arch: ``"fc"`` or ``"conv"``.
        allow_zero_rows: accept all-zero rows for fc (their kernel row is 0,
            the limit |x| -> 0); the public :func:`ntk` rejects them.

    Returns:
        ``(x1, x2)`` as float arrays (float64 unless the input was float32); ``x2`` stays None.
    """
    arch = check_arch(arch)
    a = check_array("x1", x1, arch=arch)
    b = None if x2 is None else check_array("x2", x2, arch=arch)
    if b is not None and a.shape[1:] != b.shape[1:]:
        what = "feature dimension D" if arch == "fc" else "trailing shape (C, ...)"
        raise DataError(message("x2", f"the same {what} as x1, {a.shape[1:]}", str(b.shape[1:])))
    if arch == "fc" and not allow_zero_rows:
        check_nonzero_rows("x1", a)
        if b is not None:
            check_nonzero_rows("x2", b)
    return a, b
