"""Every argument check of the kernels package, run once at the public boundary.

Array problems raise :class:`~fitscope.errors.DataError`, options (depth,
kind, dtype, memory cap, ...) raise :class:`~fitscope.errors.ConfigError`.
Each message is one line shaped ``<argument>: expected <...>, got <...>``
and, where there is one, says the fix. The kernel code behind these checks
trusts what passed them.

Shapes: ``x1`` is ``(N1, D)`` for ``arch="fc"`` and ``(N1, C, H, W)`` or
``(N1, C, L)`` for ``arch="conv"``; ``x2`` has the same trailing shape.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from fitscope.errors import ConfigError, DataError

ARCHS = ("fc", "conv")
KINDS = ("ntk", "nngp")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
POOLS = ("none", "gap", "lap")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_arch(arch) -> str:
    """``arch`` must be ``"fc"`` or ``"conv"``; returns it."""
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ConfigError(f"arch: expected one of {', '.join(ARCHS)}, got {arch!r}")
    return arch


def check_kind(kind) -> str:
    """``kind`` must be ``"ntk"`` or ``"nngp"``; returns it."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_dtype(dtype) -> torch.dtype:
    """``dtype`` must be ``"float64"`` or ``"float32"`` (or the torch dtype); returns the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_device(device) -> torch.device:
    """``device`` must name a torch device that exists here (``"cpu"``, ``"cuda"``, ``"cuda:1"``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device: expected a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: expected 'cpu' or an available CUDA device, got {device!r} "
                              "(torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: expected a CUDA index < {torch.cuda.device_count()}, got {device!r}")
    elif dev.type != "cpu":
        raise ConfigError(f"device: expected 'cpu' or 'cuda[:index]', got {device!r}")
    return dev


def check_depth_fixed(depth, fixed) -> tuple[int, int]:
    """``depth`` (hidden layers) must be an int >= 1 and ``fixed`` (untrained first layers) an int in [0, depth]."""
    if not _is_int(depth) or depth < 1:
        raise ConfigError(f"depth: expected an integer >= 1 (number of hidden layers), got {depth!r}")
    if not _is_int(fixed) or not 0 <= fixed <= depth:
        raise ConfigError(f"fixed: expected an integer in [0, depth] = [0, {int(depth)}] "
                          f"(number of first layers not trained), got {fixed!r}")
    return int(depth), int(fixed)


def check_max_memory(max_memory_mb) -> float:
    """``max_memory_mb`` must be a finite number > 0 (MiB of working memory per block pair)."""
    if (not isinstance(max_memory_mb, numbers.Real) or isinstance(max_memory_mb, bool)
            or not math.isfinite(max_memory_mb) or max_memory_mb <= 0):
        raise ConfigError(f"max_memory_mb: expected a number > 0, got {max_memory_mb!r}")
    return float(max_memory_mb)


def check_filter_size(filter_size) -> int:
    """``filter_size`` must be an int >= 1 (the conv kernel may add its own conditions)."""
    if not _is_int(filter_size) or filter_size < 1:
        raise ConfigError(f"filter_size: expected an integer >= 1, got {filter_size!r}")
    return int(filter_size)


def check_pool(pool, lap_window) -> tuple[str, int | None]:
    """``pool`` must be ``"none"``, ``"gap"`` or ``"lap"``; ``lap_window`` None or an int >= 1."""
    if not isinstance(pool, str) or pool not in POOLS:
        raise ConfigError(f"pool: expected one of {', '.join(POOLS)}, got {pool!r}")
    if lap_window is not None and (not _is_int(lap_window) or lap_window < 1):
        raise ConfigError(f"lap_window: expected None or an integer >= 1, got {lap_window!r}")
    return pool, None if lap_window is None else int(lap_window)


def check_array(name: str, value, *, arch: str = "fc") -> np.ndarray:
    """One kernel input as a finite float array of the shape ``arch`` needs.

    Args:
        name: the argument's name for messages (``"x1"``).
        value: array-like; integer and float dtypes are accepted.
        arch: ``"fc"`` wants ``(N, D)``; ``"conv"`` wants ``(N, C, H, W)`` or ``(N, C, L)``.

    Returns:
        The array as float64 (float32 input stays float32), at least one row and one feature.
    """
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise DataError(f"{name}: expected a numeric array, got {type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name}: expected a numeric (integer or float) array, got dtype {arr.dtype}")
    if arch == "fc":
        if arr.ndim in (3, 4):
            raise DataError(f"{name}: expected a 2-D array (N, D) for arch='fc', got shape {arr.shape}; "
                            f"flatten it with {name}.reshape(len({name}), -1) or use arch='conv'")
        if arr.ndim != 2:
            raise DataError(f"{name}: expected a 2-D array (N, D) for arch='fc', got shape {arr.shape}"
                            + (f"; for one example use {name}.reshape(1, -1)" if arr.ndim == 1 else ""))
    else:
        if arr.ndim not in (3, 4):
            hint = {2: f"; for 1-channel signals add a channel axis with {name}[:, None], for flat vectors "
                       "use arch='fc'",
                    }.get(arr.ndim, "")
            raise DataError(f"{name}: expected images (N, C, H, W) or signals (N, C, L) for arch='conv', "
                            f"got shape {arr.shape}{hint}")
    if 0 in arr.shape:
        raise DataError(f"{name}: expected at least one entry on every axis, got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = np.unravel_index(int(np.argmax(~np.isfinite(arr))), arr.shape)
        raise DataError(f"{name}: expected finite values, got {arr[bad]} (NaN or inf) at index {list(map(int, bad))}")
    return arr


def check_nonzero_rows(name: str, arr: np.ndarray) -> None:
    """Raise unless every row (example) of ``arr`` has a nonzero norm (needed by the FC kernel's angles)."""
    flat = arr.reshape(len(arr), -1)
    zero = ~np.any(flat != 0, axis=1)
    if zero.any():
        rows = np.flatnonzero(zero)
        shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        raise DataError(f"{name}: expected rows with nonzero norm (the kernel depends on angles), got "
                        f"{len(rows)} all-zero row(s) at index {shown}; drop them or add a constant feature")


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
        raise DataError(f"x2: expected the same {what} as x1, {a.shape[1:]}, got {b.shape[1:]}")
    if arch == "fc" and not allow_zero_rows:
        check_nonzero_rows("x1", a)
        if b is not None:
            check_nonzero_rows("x2", b)
    return a, b
