"""The fully-connected ReLU NTK and NNGP (Jacot et al. 2018; Arora et al. 2019, 2020).

Notation (METHODS section 5): ``L = depth`` hidden ReLU layers, c_sigma = 2,
no bias, ``Sigma^0(x, x') = x . x'``; each layer applies the closed-form step
:func:`fitscope.kernels.relu.relu_step` giving ``Sigma^h`` and ``Sigmadot^h``.
With ``f = fixed`` first weight layers not trained,

    NTK(x, x') = sum_{h=f..L} Sigma^h(x, x') prod_{h'=h+1..L} Sigmadot^{h'}(x, x'),

which is ``Theta^L`` of the recursion ``Theta^h = Theta^{h-1} Sigmadot^h + Sigma^h``
for ``f = 0`` and ``Sigma^L`` (the NNGP) for ``f = L``. Term ``h`` is the
contribution of weight layer ``h + 1`` (``h = 0``: the first layer, ``h = L``: the
readout).

Without bias every ``Sigma^h`` is homogeneous: ``Sigma^h(x, x') = |x| |x'| k_h(cos)``
with ``cos`` the cosine of the angle between ``x`` and ``x'``, and the
diagonal ``Sigma^h(x, x) = |x|^2`` at every layer (the ReLU step with c_sigma = 2
keeps variances). So the variances are computed once (the row norms), the
recursion runs on unit-norm rows (variances 1), and the block is scaled by
``|x| |x'|`` at the end; this is exact, not an approximation.

So the kernel of unit rows is one function ``F(t)`` of their angle, and a
block is evaluated in one of two ways (:func:`fc_kernel`, ``method``):
``"exact"`` runs the recursion per entry (``depth`` calls of ``relu_step``);
``"table"`` (used for large matrices) evaluates a piecewise-cubic table of
``F`` built once with that same recursion (:func:`angle_table`): one arccos
and a cubic per entry, agreeing with the exact recursion to about 1e-15
relative (tested). Blocking lives in :mod:`fitscope.kernels.blocks`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from fitscope.kernels.blocks import compute_in_blocks
from fitscope.kernels.relu import relu_step

# Live block-sized tensors per kernel entry while a block is computed (the
# cosines, the result and the temporaries of the recursion or of the table
# look-up), times the item size: the working memory the block planner budgets.
LIVE_TENSORS = 10
# Largest block side: blocks of at most 1024 x 1024 keep the elementwise work
# near cache and let a symmetric Gram skip most of its lower half (measured
# faster than 512 or 2048 on the 4000 x 40 mnist1d Gram).
MAX_BLOCK = 1024
# Intervals of the angle table (see :func:`angle_table`); 4 coefficient
# vectors of this length, 512 KiB in float64.
TABLE_SIZE = 16384
# Blocks use the table when the kernel has at least this many entries (below
# it building the table costs more than the exact recursion).
TABLE_MIN_ENTRIES = 1 << 18
# Cosines above 1 - NEAR_PARALLEL are recomputed from the rows' distance (see fc_block).
NEAR_PARALLEL = 1e-6


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``x`` of shape ``(N, D)`` into unit rows ``(N, D)`` and norms ``(N,)`` (float64).

    An all-zero row stays zero with norm 0 (its kernel row is then 0, the
    limit of the kernel as ``|x| -> 0``).
    """
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    return x / safe[:, None], norms


def angle_kernel(cos: torch.Tensor, *, depth: int, fixed: int, kind: str) -> torch.Tensor:
    """The exact recursion for unit inputs: the kernel as a function of their cosine.

    Args:
        cos: cosines ``Sigma^0`` in ``[-1, 1]``, any shape (not modified).
        depth: ``L >= 1`` hidden layers.
        fixed: first weight layers not trained, ``0 <= fixed <= depth``.
        kind: ``"ntk"`` or ``"nngp"``.

    Returns:
        Tensor of ``cos``'s shape: ``NTK`` (or ``Sigma^L`` for nngp) of unit inputs.
    """
    sigma = cos
    one = torch.ones((), dtype=sigma.dtype, device=sigma.device)
    theta = sigma.clone() if kind == "ntk" and fixed == 0 else None
    for h in range(1, depth + 1):
        sigma, sigma_dot = relu_step(sigma, one, one)
        if kind != "ntk":
            continue
        if theta is not None:
            theta.mul_(sigma_dot).add_(sigma)
        elif h >= fixed:
            theta = sigma.clone()
        del sigma_dot
    return theta if kind == "ntk" else sigma


def angle_table(*, depth: int, fixed: int, kind: str, size: int = TABLE_SIZE,
                dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """The :func:`angle_table_f64` coefficients in ``dtype`` on ``device``."""
    return angle_table_f64(depth, fixed, kind, size).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)  # a grid search asks for the same few tables again and again
def angle_table_f64(depth: int, fixed: int, kind: str, size: int = TABLE_SIZE) -> torch.Tensor:
    """Piecewise-cubic coefficients of the kernel of unit inputs as a function of their angle.

    Without bias the kernel of unit inputs is one function ``F(t)`` of the
    angle ``t = arccos(cos) in [0, pi]``, smooth on the closed interval (as a
    function of the cosine it has square-root singularities at +-1). We
    tabulate it exactly with :func:`angle_kernel` at ``size + 1`` equally
    spaced angles and interpolate each interval with the cubic through its 4
    nearest nodes (one-sided at the ends); the interpolation error is
    ``O((pi / size)^4)``, below 1e-12 relative at the default size, and the
    look-up replaces ``depth`` evaluations of arccos, sin and cos per entry by
    one arccos and a cubic. Written by hand: torch has no 1-D cubic interpolation.

    Returns:
        ``(4, size)`` tensor: ``F(t) = c0 + c1 f + c2 f^2 + c3 f^3`` on interval
        ``i`` with ``f = t size / pi - i in [0, 1)``.
    """
    nodes = torch.arange(size + 1, dtype=torch.float64) * (math.pi / size)
    values = angle_kernel(torch.cos(nodes).clamp_(-1.0, 1.0), depth=depth, fixed=fixed, kind=kind)
    i = torch.arange(size)
    first = (i - 1).clamp(0, size - 3)  # first of the 4 stencil nodes
    offsets = (first - i).to(torch.float64)  # -1 inside, 0 at the left end, -2 at the right end
    stencil = values[first[:, None] + torch.arange(4)]  # (size, 4) node values
    coefs = torch.empty(4, size, dtype=torch.float64)
    for off in (-2.0, -1.0, 0.0):
        rows = offsets == off
        if not rows.any():
            continue
        pos = off + torch.arange(4, dtype=torch.float64)  # node positions in units of f
        vander = pos[:, None] ** torch.arange(4, dtype=torch.float64)  # (4 nodes, 4 powers)
        coefs[:, rows] = torch.linalg.solve(vander, stencil[rows].T)
    return coefs


def eval_angle_table(coefs: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Evaluate an :func:`angle_table` at cosines ``cos`` (any shape; overwritten)."""
    size = coefs.shape[1]
    u = torch.arccos(cos, out=cos).mul_(size / math.pi)
    idx = u.to(torch.int64).clamp_(max=size - 1)
    f = u.sub_(idx)
    flat = idx.view(-1)
    out = coefs[3].index_select(0, flat).view_as(f)
    for k in (2, 1, 0):  # Horner: out <- c_k + out * f
        out = coefs[k].index_select(0, flat).view_as(f).addcmul_(out, f)
    return out


def fc_block(u1: torch.Tensor, u2: torch.Tensor, *, depth: int, fixed: int, kind: str,
             diagonal: bool = False, table: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel between unit rows ``u1 (B1, D)`` and ``u2 (B2, D)``, before scaling by the norms.

    Args:
        u1, u2: unit-norm (or all-zero) rows, same dtype and device.
        depth, fixed, kind: as in :func:`angle_kernel`.
        diagonal: ``u1`` and ``u2`` are the same rows; the cosine on the
            diagonal is set to exactly 1 (instead of 1 up to rounding, where
            arccos is steepest).
        table: an :func:`angle_table` for these options, or None for the exact recursion.

    Returns:
        ``(B1, B2)`` tensor: the kernel of the unit rows.
    """
    cos = u1 @ u2.T
    cos.clamp_(-1.0, 1.0)
    if diagonal:
        cos.diagonal().fill_(1.0)
    # Nearly parallel rows: arccos is steepest at 1, and the matmul's rounding
    # depends on the block shape; recompute these cosines from the rows'
    # distance, cos = cos(2 asin(|u1 - u2| / 2)), exactly 1 for equal rows and
    # the same whichever block the pair falls in.
    near = (cos > 1.0 - NEAR_PARALLEL).nonzero()
    if len(near):
        i, j = near[:, 0], near[:, 1]
        dist = torch.linalg.vector_norm(u1[i] - u2[j], dim=1)
        cos[i, j] = torch.cos(2.0 * torch.asin(torch.clamp(dist * 0.5, max=1.0)))
    if table is not None:
        return eval_angle_table(table, cos)
    return angle_kernel(cos, depth=depth, fixed=fixed, kind=kind)


def fc_kernel(x1: np.ndarray, x2: np.ndarray | None, *, depth: int, fixed: int, kind: str,
              dtype: torch.dtype, device: torch.device, max_memory_mb: float,
              max_block: int | None = None, method: str = "auto") -> np.ndarray:
    """The FC NTK / NNGP matrix of validated inputs, in blocks of bounded memory.

    Args:
        x1: ``(N1, D)`` finite floats (checked by :mod:`fitscope.kernels.validation`).
        x2: ``(N2, D)`` or None for the symmetric Gram matrix of ``x1``.
        depth, fixed, kind: as in :func:`angle_kernel`.
        dtype: ``torch.float64`` or ``torch.float32`` for the computation.
        device: where it runs.
        max_memory_mb: cap on one block pair's working memory (MiB).
        max_block: cap on a block's side; None for :data:`MAX_BLOCK`.
        method: ``"exact"`` (the recursion per entry), ``"table"`` (the
            angle table, see :func:`angle_table`) or ``"auto"`` (the table
            from :data:`TABLE_MIN_ENTRIES` entries on).

    Returns:
        ``(N1, N2)`` NumPy array of ``dtype`` (float64 or float32).
    """
    u1, n1 = unit_rows(x1)
    t1 = torch.from_numpy(u1).to(device=device, dtype=dtype)
    if x2 is None:
        t2, n2 = t1, n1
    else:
        u2, n2 = unit_rows(x2)
        t2 = torch.from_numpy(u2).to(device=device, dtype=dtype)
    symmetric = x2 is None
    m1 = torch.from_numpy(n1).to(device=device, dtype=dtype)
    m2 = m1 if symmetric else torch.from_numpy(n2).to(device=device, dtype=dtype)
    if method == "auto":
        method = "table" if len(t1) * len(t2) >= TABLE_MIN_ENTRIES else "exact"
    table = angle_table(depth=depth, fixed=fixed, kind=kind, dtype=dtype, device=device) if method == "table" else None

    def block(s1: slice, s2: slice) -> torch.Tensor:
        k = fc_block(t1[s1], t2[s2], depth=depth, fixed=fixed, kind=kind,
                     diagonal=symmetric and s1 == s2, table=table)
        return k.mul_(m1[s1, None]).mul_(m2[None, s2])

    itemsize = torch.finfo(dtype).bits // 8
    return compute_in_blocks(len(t1), len(t2), block, bytes_per_pair=LIVE_TENSORS * itemsize,
                             max_memory_mb=max_memory_mb, symmetric=symmetric,
                             max_block=MAX_BLOCK if max_block is None else max_block,
                             out_dtype=np.float64 if dtype == torch.float64 else np.float32,
                             workers=1 if torch.device(device).type != "cpu" else max(1, torch.get_num_threads()))
