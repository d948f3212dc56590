"""Convolutional NTK and NNGP kernels (CNTK / CNN-GP, Arora et al. 2019; LAP of Li et al. 2019).

Notation: ``N1``, ``N2`` inputs; ``C`` channels; spatial shape ``S`` = ``(H, W)``
for images (arrays ``N x C x H x W``) or ``(L,)`` for signals (``N x C x L``);
``P`` = number of positions (``H * W`` or ``L``); ``d`` = 1 or 2 spatial axes.

Architecture: ``depth`` layers ``conv(k x k, stride 1, 'same' zero padding, no
bias) -> ReLU``, then a readout (``pool``) and a linear output layer, with
c_sigma = 2 and infinite width. Per pair of inputs ``(x, x')`` the kernel is a
matrix over pairs of positions ``(p, p')``:

    Sigma^0(p, p') = sum_c x_c(p) x'_c(p')                 (sum over channels, like
                                                            the FC kernel's x . x')
    for h = 1 .. depth:
        Lambda^h(p, p') = (1/k^d) sum_{a in A^d} Sigma^{h-1}(p + a, p' + a)
        Theta_pre(p, p') = (1/k^d) sum_{a in A^d} Theta^{h-1}(p + a, p' + a)
        Sigma^h, Sigmadot^h = relu_step(Lambda^h, Lambda^h(x, x)(p, p), Lambda^h(x', x')(p', p'))
        Theta^h = Theta_pre * Sigmadot^h + Sigma^h            (NTK)
    Theta^0 = Sigma^0

with entries outside the image equal to 0 (zero padding) and ``A`` the offsets
``-(k-1)//2 .. k//2`` of the filter window (symmetric for odd ``k``). The
window sums are divided by the window size ``k^d`` at EVERY layer (the
``1/q^2`` of Arora et al.'s definition; their CUDA code divides by 9 inside the
ReLU step and not at the input, which makes its kernel 9 times ours for
``k = 3``). ``fixed`` = number of first layers whose weights are not trained:
the weights of conv layer ``h`` contribute the ``Sigma^{h-1}`` term of the NTK,
so ``Theta^0 = 0`` when ``fixed >= 1`` and the ``+ Sigma^h`` term is dropped
for ``h < fixed``; ``fixed = depth`` leaves only the output layer trained
(NTK = NNGP). The NNGP kernel is ``Sigma^depth``.

Readouts (applied to ``Theta^depth``, or ``Sigma^depth`` for the NNGP):

- ``"none"`` (vanilla, flatten + linear layer): ``(1/P) sum_p Theta(p, p)``.
- ``"gap"`` (global average pooling): ``(1/P^2) sum_{p, p'} Theta(p, p')``.
- ``"lap"`` (local average pooling of window ``c``, Li et al. 2019): an average
  pooling layer (window ``c`` per axis, stride 1, 'same' zero padding, divisor
  ``c^d``) followed by the vanilla readout, i.e.
  ``(1/P) sum_o (1/c^{2d}) sum_{a, a' in B^d} Theta(o + a, o + a')`` with
  ``B = -(c-1)//2 .. c//2``. ``c = 1`` is the vanilla readout.

Relation to neural-tangents (checked in ``bench/kernels.py``): ``stax.serial(
[Conv(n, (k, k), padding='SAME', W_std=sqrt(2), b_std=None), Relu()] * depth,
GlobalAvgPool() | Flatten() | AvgPool((c, c), (1, 1), 'SAME') + Flatten(),
Dense(1, W_std=1))`` gives exactly ``1/C`` times this kernel (neural-tangents
averages the input covariance over channels, we sum).

Computation: the window sum keeps the offset ``p' - p`` fixed, so "none"
needs only the offset 0 and LAP only offsets with ``|p'_i - p_i| < c``; for
those the kernels are stored by (offset, position), ``|offsets| * P`` numbers
per pair, and the window sum is a box filter over positions. GAP needs every
position pair: a ``P x P`` matrix per pair, and the window sum adds shifts
along the diagonals. Everything runs in torch, vectorized over a block of
input pairs: blocks of about 2 MiB per tensor (cache-sized; the work is ~25
elementwise passes per layer, dominated by relu_step's arccos/sin/cos), within
``max_memory_mb`` (shared by the workers). On the CPU the blocks run on
``torch.get_num_threads()`` worker threads, each single-threaded (torch's
thread count is set to 1 during the call and restored after). A symmetric
Gram computes each unordered block pair once.

Precision: entries at ``rho`` close to 1 (the diagonal) carry a relative
rounding error of about ``sqrt(machine eps)`` in ``Sigmadot`` (arccos is
steep at 1): ~1e-8 in float64, ~1e-4 in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fitscope.errors import ConfigError
from fitscope.kernels.blocks import compute_in_blocks
from fitscope.kernels.relu import relu_step
from fitscope.kernels.validation import (
    DTYPES,
    check_depth_fixed,
    check_device,
    check_dtype,
    check_filter_size,
    check_kind,
    check_max_memory,
    check_pair,
    check_pool,
)
from fitscope.validation import check_int

# Tensors of one block's size alive at once in a layer (Sigma, Theta, the two
# window sums, and relu_step's temporaries); the measured peak is below this.
_LIVE_TENSORS = 16
# Default size of one block tensor: the ~25 elementwise passes of a layer run
# from cache instead of memory (measured on digits: 60x60-pair blocks of
# 118 MB tensors took 2-4x the CPU time of 8x8-pair blocks of 2 MB).
_CACHE_BYTES = 2 * 2**20


def cntk(
    x1,
    x2=None,
    *,
    depth: int,
    filter_size: int = 3,
    pool: str = "gap",
    lap_window: int | None = None,
    fixed: int = 0,
    kind: str = "ntk",
    dtype: str = "float64",
    device: str | None = None,
    max_memory_mb: float = 1024,
    max_block: int | None = None,
) -> np.ndarray:
    """Convolutional NTK (``kind="ntk"``) or NNGP (``kind="nngp"``) kernel matrix.

    Args:
        x1: ``N1 x C x H x W`` images or ``N1 x C x L`` signals (any real array).
        x2: ``N2 x C x H x W`` / ``N2 x C x L`` with the same ``C`` and spatial
            shape, or None for the symmetric Gram matrix of ``x1`` (computed
            once per unordered pair of blocks, exactly symmetric).
        depth: number of conv + ReLU layers, >= 1.
        filter_size: ``k``, the filter is ``k x k`` (or ``k`` for signals), >= 1.
        pool: ``"none"`` (vanilla), ``"gap"`` or ``"lap"`` (see the module docstring).
        lap_window: LAP window ``c`` (1 <= c <= each spatial size); only with ``pool="lap"``.
        fixed: number of first conv layers not trained, 0 <= fixed <= depth.
        kind: ``"ntk"`` or ``"nngp"``.
        dtype: ``"float64"`` (default) or ``"float32"``: the computation and output dtype.
        device: torch device, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``; None: the
            placement's (``FITSCOPE_DEVICE``, else the CPU; see :mod:`fitscope.train.device`).
            CI tests the CPU only; ``bench/device.py`` measures a GPU.
        max_memory_mb: cap on the working memory of one block of pairs, in MiB.
        max_block: optional cap on a block's side (rows of ``x1`` or ``x2``);
            None = blocks whose tensors are about 2 MiB (cache-sized), within the memory cap.

    Returns:
        ``(N1, N2)`` array (``(N1, N1)`` when ``x2`` is None) of the chosen dtype.

    Raises:
        DataError: inputs of the wrong rank, mismatched shapes, NaN or inf.
        ConfigError: an option out of range, or ``max_memory_mb`` too small
            for one pair of inputs.
    """
    depth, fixed = check_depth_fixed(depth, fixed)
    filter_size = check_filter_size(filter_size)
    pool, lap_window = check_pool(pool, lap_window)
    kind = check_kind(kind)
    tdtype = check_dtype(dtype)
    cap = check_max_memory(max_memory_mb)
    max_block = check_int(max_block, "max_block", allow_none=True)
    a1, a2 = check_pair(x1, x2, arch="conv")
    spatial = tuple(a1.shape[2:])
    _check_lap(pool, lap_window, spatial)
    dev = check_device(device)

    geom = _geometry(spatial, filter_size, pool, lap_window)
    itemsize = torch.finfo(tdtype).bits // 8
    per_pair = geom.entries * _LIVE_TENSORS * itemsize
    # per input row of a block: its inputs and variances, shifted copies in the offset layout
    stack = 1 if geom.full else len(geom.offsets)
    per_row = (a1.shape[1] + depth) * stack * math.prod(spatial) * itemsize
    if max_block is None:
        max_block = max(1, math.isqrt(_CACHE_BYTES // (geom.entries * itemsize)))

    t1 = torch.as_tensor(a1, dtype=tdtype, device=dev)
    t2 = t1 if a2 is None else torch.as_tensor(a2, dtype=tdtype, device=dev)
    var1 = _variances(t1, depth, geom)
    var2 = var1 if a2 is None else _variances(t2, depth, geom)

    def block(s1: slice, s2: slice) -> np.ndarray:
        with torch.no_grad():
            k = _pair_block(t1[s1], t2[s2], [v[s1] for v in var1], [v[s2] for v in var2],
                            geom=geom, depth=depth, fixed=fixed, ntk=kind == "ntk")
        return k.cpu().numpy()

    n1 = a1.shape[0]
    n2 = n1 if a2 is None else a2.shape[0]
    symmetric = a2 is None
    # CPU: one block per worker thread, each single-threaded (see compute_in_blocks)
    workers = 1 if dev.type != "cpu" else max(1, torch.get_num_threads())
    return compute_in_blocks(n1, n2, block, bytes_per_pair=per_pair, bytes_per_row=per_row, max_memory_mb=cap,
                             symmetric=symmetric, max_block=max_block, workers=workers,
                             out_dtype=np.float64 if tdtype == torch.float64 else np.float32)


def cntk_diagonal(
    x,
    *,
    depth: int,
    filter_size: int = 3,
    pool: str = "gap",
    lap_window: int | None = None,
    fixed: int = 0,
    kind: str = "ntk",
    dtype: str = "float64",
    device: str | None = None,
    max_memory_mb: float = 1024,
) -> np.ndarray:
    """The self-kernel values ``k(x_n, x_n)`` of :func:`cntk`, without the rest of the Gram matrix.

    Args:
        x: ``N x C x H x W`` images or ``N x C x L`` signals.
        Other arguments as in :func:`cntk`.

    Returns:
        ``(N,)`` array, equal to ``np.diag(cntk(x, ...))`` up to rounding.
    """
    depth, fixed = check_depth_fixed(depth, fixed)
    filter_size = check_filter_size(filter_size)
    pool, lap_window = check_pool(pool, lap_window)
    kind = check_kind(kind)
    tdtype = check_dtype(dtype)
    cap = check_max_memory(max_memory_mb)
    a, _ = check_pair(x, None, arch="conv")
    spatial = tuple(a.shape[2:])
    _check_lap(pool, lap_window, spatial)
    dev = check_device(device)
    geom = _geometry(spatial, filter_size, pool, lap_window)
    itemsize = torch.finfo(tdtype).bits // 8
    stack = 1 if geom.full else len(geom.offsets)
    per_one = geom.entries * _LIVE_TENSORS * itemsize + 2 * (a.shape[1] + depth) * stack * math.prod(spatial) * itemsize
    if per_one > cap * 2**20:
        raise ConfigError(f"max_memory_mb: expected at least {math.ceil(per_one / 2**20)} MiB "
                          f"(one input), got {max_memory_mb:g}")
    b = max(1, int(cap * 2**20 // per_one))
    t = torch.as_tensor(a, dtype=tdtype, device=dev)
    var = _variances(t, depth, geom)
    out = np.empty(a.shape[0], dtype=np.float64 if tdtype == torch.float64 else np.float32)
    with torch.no_grad():
        for i in range(0, a.shape[0], b):
            s = slice(i, min(i + b, a.shape[0]))
            vs = [v[s] for v in var]
            block = _pair_block(t[s], t[s], vs, vs, geom=geom, depth=depth, fixed=fixed,
                                ntk=kind == "ntk", paired=True)
            out[s] = block[:, 0].cpu().numpy()
    return out


def _check_lap(pool: str, lap_window: int | None, spatial: tuple[int, ...]) -> None:
    if pool == "lap":
        if lap_window is None:
            raise ConfigError("lap_window: expected an integer >= 1 with pool='lap', got None")
        if lap_window > min(spatial):
            raise ConfigError(f"lap_window: expected at most the smallest spatial size {min(spatial)} "
                              f"of the inputs {spatial}, got {lap_window}")
    elif lap_window is not None:
        raise ConfigError(f"lap_window: expected None with pool={pool!r} (it is only used with pool='lap'), "
                          f"got {lap_window!r}")


def cntk_bytes_per_pair(spatial: tuple[int, ...], *, filter_size: int = 3, pool: str = "gap",
                        lap_window: int | None = None, dtype: str = "float64") -> int:
    """Bytes of working memory :func:`cntk` budgets for one pair of inputs (the block planner's unit).

    Args:
        spatial: ``(H, W)`` or ``(L,)``.
        filter_size, pool, lap_window, dtype: as in :func:`cntk`.
    """
    geom = _geometry(tuple(spatial), filter_size, pool, lap_window)
    return geom.entries * _LIVE_TENSORS * torch.finfo(DTYPES[dtype]).bits // 8


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    """What one pair's kernel tensor looks like for a given pool.

    ``full``: GAP layout ``[*S, *S]`` (positions of x, positions of x').
    Otherwise the offset layout ``[D, *S]``: entry ``[o, q]`` is the kernel at
    positions ``(q, q + offsets[o])``; ``mask[o, q]`` is 1 where ``q +
    offsets[o]`` is inside the image and ``readout[o, q]`` the readout weight.
    """

    spatial: tuple[int, ...]
    k: int
    full: bool
    offsets: tuple[tuple[int, ...], ...]
    mask: np.ndarray | None
    readout: np.ndarray | None

    @property
    def entries(self) -> int:
        p = math.prod(self.spatial)
        return p * p if self.full else len(self.offsets) * p


def _window_offsets(k: int) -> range:
    """Offsets of a size-``k`` 'same' window relative to its output position."""
    return range(-((k - 1) // 2), k // 2 + 1)


def _geometry(spatial: tuple[int, ...], k: int, pool: str, lap_window: int | None) -> _Geometry:
    spatial = tuple(int(s) for s in spatial)
    if pool == "gap":
        return _Geometry(spatial, k, True, (), None, None)
    c = 1 if pool == "none" else int(lap_window)
    per_axis_offsets = [range(-(min(c, n) - 1), min(c, n)) for n in spatial]
    offsets = tuple(np.array(np.meshgrid(*per_axis_offsets, indexing="ij")).reshape(len(spatial), -1).T.tolist())
    offsets = tuple(tuple(int(v) for v in o) for o in offsets)
    window = _window_offsets(c)
    # per axis: w[delta, q] = #{o in [0, n): q - o in B and q + delta - o in B} / c^2, 0 if q + delta is outside
    axis_w = []
    for n, offs in zip(spatial, per_axis_offsets):
        w = np.zeros((len(offs), n))
        for di, delta in enumerate(offs):
            for q in range(n):
                if 0 <= q + delta < n:
                    w[di, q] = sum(1 for o in range(n) if (q - o) in window and (q + delta - o) in window) / c**2
        axis_w.append(w)
    p = math.prod(spatial)
    readout = np.zeros((len(offsets),) + spatial)
    mask = np.zeros((len(offsets),) + spatial)
    for oi, off in enumerate(offsets):
        r = np.ones(spatial)
        m = np.ones(spatial)
        for ax, (n, delta) in enumerate(zip(spatial, off)):
            shape = [1] * len(spatial)
            shape[ax] = n
            r = r * axis_w[ax][delta + min(c, n) - 1].reshape(shape)
            inside = ((np.arange(n) + delta >= 0) & (np.arange(n) + delta < n)).astype(float)
            m = m * inside.reshape(shape)
        readout[oi] = r / p
        mask[oi] = m
    return _Geometry(spatial, k, False, offsets, mask, readout)


# --------------------------------------------------------------------------- computation


def _window_mean(t: torch.Tensor, axis_groups: list[tuple[int, ...]], k: int) -> torch.Tensor:
    """Mean over the 'same' window of aligned offsets: for each group of axes, shift them together.

    ``out[.., i, .., i', ..] = (1/k) sum_{a} t[.., i + a, .., i' + a, ..]`` per
    group (zeros outside), groups applied one after another (the window is a
    product of per-axis windows). Written by hand: torch's pooling and conv
    ops do not shift along diagonals of two axes; in-place slice adds avoid
    padded copies.
    """
    if k == 1:
        return t
    for axes in axis_groups:
        n = t.shape[axes[0]]
        out = t.clone()
        for s in _window_offsets(k):
            if s == 0 or abs(s) >= n:
                continue
            length = n - abs(s)
            dst, src = out, t
            for ax in axes:
                dst = dst.narrow(ax, max(0, -s), length)
                src = src.narrow(ax, max(0, s), length)
            dst += src
        t = out.mul_(1.0 / k)
    return t


def _variances(x: torch.Tensor, depth: int, geom: _Geometry) -> list[torch.Tensor]:
    """``Lambda^h(x, x)(p, p)`` for h = 1 .. depth, each ``(N, *S)``.

    With c_sigma = 2 the ReLU step keeps the variance (``Sigma^h(p, p) =
    Lambda^h(p, p)``), so each layer's variance is the window mean of the last.
    """
    d = len(geom.spatial)
    groups = [(1 + a,) for a in range(d)]
    v = (x * x).sum(dim=1)
    out = []
    for _ in range(depth):
        v = _window_mean(v, groups, geom.k)
        out.append(v)
    return out


def _shift_stack(t: torch.Tensor, offsets, spatial) -> torch.Tensor:
    """``t[m, ..., *S]`` -> ``[m, ..., D, *S]`` with ``out[..., o, q] = t[..., q + offsets[o]]`` (0 outside)."""
    d = len(spatial)
    lead = t.shape[:-d]
    out = t.new_zeros(lead + (len(offsets),) + tuple(spatial))
    for oi, off in enumerate(offsets):
        dst = out.select(len(lead), oi)
        src = t
        for ax, (n, delta) in enumerate(zip(spatial, off)):
            axis = len(lead) + ax
            length = n - abs(delta)
            dst = dst.narrow(axis, max(0, -delta), length)
            src = src.narrow(axis, max(0, delta), length)
        dst.copy_(src)
    return out


def _pair_block(x1, x2, var1, var2, *, geom: _Geometry, depth: int, fixed: int, ntk: bool,
                paired: bool = False) -> torch.Tensor:
    """Kernel of every pair in ``x1 [b1, C, *S]`` x ``x2 [b2, C, *S]``; ``var*`` from :func:`_variances`.

    Returns ``[b1, b2]``; with ``paired`` (``b1 == b2``) only the pairs ``(x1[n], x2[n])``, as ``[b1, 1]``.
    """
    b1 = x1.shape[0]
    b2 = 1 if paired else x2.shape[0]
    spatial = geom.spatial
    d = len(spatial)
    p = math.prod(spatial)
    c = x1.shape[1]
    if geom.full:
        # [b1, b2, *S, *S]
        if paired:
            sig = torch.einsum("ncp,ncq->npq", x1.reshape(b1, c, p), x2.reshape(b1, c, p))
        else:
            sig = torch.einsum("ncp,mcq->nmpq", x1.reshape(b1, c, p), x2.reshape(b2, c, p))
        sig = sig.reshape((b1, b2) + spatial + spatial)
        groups = [(2 + a, 2 + d + a) for a in range(d)]
        ones = (1,) * d
        v1s = [v.reshape((b1, 1) + spatial + ones) for v in var1]
        v2s = [v.reshape((b1 if paired else 1, b2) + ones + spatial) for v in var2]
        mask = None
    else:
        # [b1, b2, D, *S]: entry [n, m, o, q] is the kernel at (q, q + offsets[o])
        nd = len(geom.offsets)
        x2s = _shift_stack(x2, geom.offsets, spatial).reshape(x2.shape[0], c, nd, p)  # [b2, C, D, P]
        if paired:
            sig = torch.einsum("ncq,ncoq->noq", x1.reshape(b1, c, p), x2s)
        else:
            sig = torch.einsum("ncq,mcoq->nmoq", x1.reshape(b1, c, p), x2s)
        sig = sig.reshape((b1, b2, nd) + spatial)
        groups = [(3 + a,) for a in range(d)]
        v1s = [v.reshape((b1, 1, 1) + spatial) for v in var1]
        v2s = [_shift_stack(v, geom.offsets, spatial).unsqueeze(1 if paired else 0) for v in var2]
        mask = None if nd == 1 else torch.as_tensor(geom.mask, dtype=sig.dtype, device=sig.device)
    theta = None
    if ntk:
        theta = sig.clone() if fixed == 0 else torch.zeros_like(sig)
    for h in range(1, depth + 1):
        lam = _window_mean(sig, groups, geom.k)
        if ntk:
            th_pre = _window_mean(theta, groups, geom.k)
        sig, sig_dot = relu_step(lam, v1s[h - 1], v2s[h - 1])
        del lam
        if ntk:
            theta = th_pre.mul_(sig_dot)
            if h >= fixed:
                theta += sig
            if mask is not None:
                theta *= mask
        del sig_dot
    final = theta if ntk else sig
    if geom.full:
        return final.reshape(b1, b2, -1).mean(dim=2)
    w = torch.as_tensor(geom.readout, dtype=final.dtype, device=final.device)
    return (final * w).reshape(b1, b2, -1).sum(dim=2)
