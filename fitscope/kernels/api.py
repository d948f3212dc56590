"""The public kernel function :func:`ntk`: validate once, dispatch on ``arch``."""

from __future__ import annotations

import numpy as np

from fitscope.kernels.fc import fc_kernel
from fitscope.kernels.validation import (
    check_arch,
    check_depth_fixed,
    check_device,
    check_dtype,
    check_filter_size,
    check_kind,
    check_max_memory,
    check_pair,
    check_pool,
)


def ntk(x1, x2=None, *, arch: str = "fc", depth: int = 3, fixed: int = 0, kind: str = "ntk",
        filter_size: int = 3, pool: str = "gap", lap_window: int | None = None,
        dtype: str = "float64", device: str | None = None, max_memory_mb: float = 1024) -> np.ndarray:
    """The infinite-width ReLU kernel (NTK or NNGP) between two sets of inputs.

    ReLU with c_sigma = 2 and no bias (METHODS section 5). The matrix is
    computed in blocks whose working memory stays under ``max_memory_mb``;
    for ``x2=None`` only the blocks on and above the diagonal are computed and
    mirrored, so the Gram matrix is exactly symmetric.

    Args:
        x1: ``(N1, D)`` for ``arch="fc"``; ``(N1, C, H, W)`` images or
            ``(N1, C, L)`` signals for ``arch="conv"``. Finite numbers; for
            fc no all-zero row (the kernel is built from angles).
        x2: same trailing shape as ``x1``, ``(N2, ...)``; None for the Gram matrix of ``x1``.
        arch: ``"fc"`` (fully connected) or ``"conv"`` (CNTK / CNN-GP, see
            :mod:`fitscope.kernels.conv`).
        depth: ``L >= 1``, the number of hidden layers.
        fixed: how many first weight layers are not trained (Arora et al.
            2020): the NTK sums only the trained layers' terms; 0 is the full
            NTK, ``depth`` leaves only the readout trained (= the NNGP).
        kind: ``"ntk"`` or ``"nngp"`` (the GP kernel ``Sigma^L``).
        filter_size, pool, lap_window: conv only: filter side, ``"none" |
            "gap" | "lap"`` pooling and the LAP window.
        dtype: ``"float64"`` (default) or ``"float32"``: the computation's and
            the result's dtype (whatever the inputs' dtype), for fc and conv alike.
        device: torch device of the computation (``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ``"auto"``); None: the placement's (``FITSCOPE_DEVICE``,
            which a study's executor sets to its ``--device``), else the CPU.
            The inputs go to the device once; each block of the matrix comes
            back to the NumPy result as it is done (the result may not fit
            on the device).
        max_memory_mb: cap (MiB) on one block pair's working memory.

    Returns:
        ``(N1, N2)`` NumPy array (``(N1, N1)`` when ``x2`` is None) of ``dtype``.

    Raises:
        DataError: bad arrays (shape, NaN/inf, mismatched features, zero rows for fc).
        ConfigError: bad options, a CUDA device not found here, or a memory cap too small for one
            block (names the smallest cap).
    """
    arch = check_arch(arch)
    depth, fixed = check_depth_fixed(depth, fixed)
    kind = check_kind(kind)
    dtype = str(check_dtype(dtype)).removeprefix("torch.")  # "float64" / "float32"
    device = str(check_device(device))
    max_memory_mb = check_max_memory(max_memory_mb)
    a, b = check_pair(x1, x2, arch=arch)
    if arch == "conv":
        filter_size = check_filter_size(filter_size)
        pool, lap_window = check_pool(pool, lap_window)
    return kernel_of_checked(a, b, arch=arch, depth=depth, fixed=fixed, kind=kind, filter_size=filter_size,
                             pool=pool, lap_window=lap_window, dtype=dtype, device=device,
                             max_memory_mb=max_memory_mb)


def kernel_of_checked(a: np.ndarray, b: np.ndarray | None, *, arch: str, depth: int, fixed: int, kind: str,
                      filter_size: int, pool: str, lap_window: int | None, dtype: str, device: str | None,
                      max_memory_mb: float) -> np.ndarray:
    """:func:`ntk` for arguments that already passed :mod:`fitscope.kernels.validation` (no checks here).

    The kernel machines call this after their own scikit-learn input checks;
    unlike :func:`ntk` it accepts all-zero fc rows (their kernel row is 0). ``device`` None is the
    placement's device (see :func:`ntk`).
    """
    if arch == "conv":
        from fitscope.kernels.conv import cntk  # lazy: conv.py is a separate, heavier module

        return cntk(a, b, depth=depth, filter_size=filter_size, pool=pool, lap_window=lap_window,
                    fixed=fixed, kind=kind, dtype=dtype, device=device, max_memory_mb=max_memory_mb)
    return fc_kernel(a, b, depth=depth, fixed=fixed, kind=kind, dtype=check_dtype(dtype),
                     device=check_device(device), max_memory_mb=max_memory_mb)
