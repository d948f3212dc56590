"""Splitting a kernel matrix into row/column blocks with bounded working memory.

A kernel matrix of shape ``(N1, N2)`` is computed block pair by block pair:
rows ``s1`` of ``x1`` against rows ``s2`` of ``x2``. The caller says how
many bytes of working memory one kernel entry needs (``bytes_per_pair``:
all temporaries of its recursion) and, optionally, how much one input row
needs (``bytes_per_row``: e.g. that row's patches); the planner picks the
largest blocks whose working memory stays under ``max_memory_mb``. For a
symmetric Gram matrix (``x2 is None``) rows and columns share one set of
boundaries and only block pairs on or above the diagonal are listed; the
caller mirrors the off-diagonal ones (:func:`compute_in_blocks` does).

Used by the FC kernel (``fc.py``) and the convolutional kernel (``conv.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from fitscope.errors import ConfigError

MIB = 1024 * 1024


def smallest_memory_mb(bytes_per_pair: float, bytes_per_row: float = 0.0) -> float:
    """The working memory (MiB) of the smallest possible block pair, one row against one row."""
    return (bytes_per_pair + 2 * bytes_per_row) / MIB


def _round_up(value: float, digits: int = 3) -> float:
    """``value`` rounded up to ``digits`` significant digits (a cap that surely works)."""
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / step) * step


def _block_sizes(n1: int, n2: int, budget: float, bytes_per_pair: float, bytes_per_row: float,
                 symmetric: bool, max_block: int | None) -> tuple[int, int]:
    """Largest (b1, b2) with b1 * b2 * bytes_per_pair + (b1 + b2) * bytes_per_row <= budget."""
    cap1 = n1 if max_block is None else min(n1, max_block)
    cap2 = n2 if max_block is None else min(n2, max_block)

    def fits(b1: int, b2: int) -> bool:
        return b1 * b2 * bytes_per_pair + (b1 + b2) * bytes_per_row <= budget

    if symmetric:
        # one size for rows and columns: largest b with b^2 p + 2 b r <= budget
        p, r = bytes_per_pair, bytes_per_row
        b = int((-2 * r + math.sqrt(4 * r * r + 4 * p * budget)) / (2 * p)) if p > 0 else cap1
        b = max(1, min(cap1, b))
        while b > 1 and not fits(b, b):  # guard against float rounding
            b -= 1
        return b, b
    # square-ish blocks first, then let the other side grow when one side is short
    b = max(1, int(math.isqrt(int(budget // max(bytes_per_pair, 1e-300))))) if bytes_per_pair > 0 else max(cap1, cap2)
    b2 = max(1, min(cap2, b))
    rest = budget - b2 * bytes_per_row
    b1 = int(rest // (b2 * bytes_per_pair + bytes_per_row)) if rest > 0 else 1
    b1 = max(1, min(cap1, b1))
    rest = budget - b1 * bytes_per_row
    b2 = max(1, min(cap2, int(rest // (b1 * bytes_per_pair + bytes_per_row)) if rest > 0 else 1))
    return b1, b2


def plan_blocks(n1: int, n2: int, *, bytes_per_pair: float, max_memory_mb: float,
                bytes_per_row: float = 0.0, symmetric: bool = False,
                max_block: int | None = None) -> list[tuple[slice, slice]]:
    """Block pairs covering an ``(n1, n2)`` kernel matrix within a memory cap.

    Args:
        n1, n2: rows of ``x1`` and of ``x2`` (``n2 == n1`` when symmetric).
        bytes_per_pair: working bytes one kernel entry needs while its block is computed.
        max_memory_mb: the cap (MiB) on one block pair's working memory.
        bytes_per_row: working bytes per input row of a block (either side).
        symmetric: Gram matrix of one input: shared boundaries, only pairs
            with ``s1.start <= s2.start`` are listed.
        max_block: an upper bound on a block's side (e.g. to stay in cache).

    Returns:
        A list of ``(s1, s2)`` row slices of ``x1`` and ``x2``; together (and
        with mirrors, when symmetric) they cover every entry exactly once.

    Raises:
        ConfigError: ``max_memory_mb`` is smaller than one 1 x 1 block pair needs;
            the message names the smallest cap that works.
    """
    if symmetric and n1 != n2:
        raise ConfigError(f"n2: expected n2 == n1 = {n1} for a symmetric plan, got {n2}")
    budget = max_memory_mb * MIB
    need = smallest_memory_mb(bytes_per_pair, bytes_per_row)
    if need > max_memory_mb:
        raise ConfigError(f"max_memory_mb: expected at least {_round_up(need):g} MiB "
                          f"(one block pair of 1 x 1 rows), got {max_memory_mb:g}")
    b1, b2 = _block_sizes(n1, n2, budget, bytes_per_pair, bytes_per_row, symmetric, max_block)
    rows = [slice(i, min(i + b1, n1)) for i in range(0, n1, b1)]
    cols = [slice(j, min(j + b2, n2)) for j in range(0, n2, b2)]
    if symmetric:
        return [(rows[i], rows[j]) for i in range(len(rows)) for j in range(i, len(rows))]
    return [(s1, s2) for s1 in rows for s2 in cols]


def compute_in_blocks(n1: int, n2: int, block_fn: Callable[[slice, slice], torch.Tensor | np.ndarray], *,
                      bytes_per_pair: float, max_memory_mb: float, bytes_per_row: float = 0.0,
                      symmetric: bool = False, max_block: int | None = None,
                      out_dtype=np.float64, workers: int = 1) -> np.ndarray:
    """Fill an ``(n1, n2)`` NumPy matrix block by block from ``block_fn(s1, s2)``.

    ``block_fn`` returns the ``(len(s1), len(s2))`` block as a torch tensor
    (any device) or an array. When ``symmetric``, only pairs on or above the
    diagonal are computed and the others are mirrored; diagonal blocks are
    symmetrized as ``(B + B^T) / 2`` so the result is exactly symmetric.
    Arguments as in :func:`plan_blocks`.

    ``workers > 1`` runs blocks on that many threads, each with torch
    single-threaded (torch's thread count is 1 for the call, then restored):
    a kernel block is a chain of small elementwise ops, and torch's own
    threads meet at a barrier after each one, which cost 3-10x on a busy
    2-core machine. The memory cap is then shared by the workers; when it
    fits one block but not one per worker, one worker runs.
    """
    from concurrent.futures import ThreadPoolExecutor

    plan_args = dict(bytes_per_pair=bytes_per_pair, bytes_per_row=bytes_per_row, symmetric=symmetric,
                     max_block=max_block)
    plan = None
    if workers > 1:
        try:
            plan = plan_blocks(n1, n2, max_memory_mb=max_memory_mb / workers, **plan_args)
        except ConfigError:
            plan = None
    if plan is None or len(plan) < 2:
        workers = 1
        plan = plan_blocks(n1, n2, max_memory_mb=max_memory_mb, **plan_args)
    out = np.empty((n1, n2), dtype=out_dtype)

    def put(s1: slice, s2: slice, block) -> None:
        if isinstance(block, torch.Tensor):
            block = block.detach().to("cpu").numpy()
        out[s1, s2] = block
        if symmetric:
            if s1 == s2:
                diag = out[s1, s2]
                diag += diag.T.copy()
                diag *= 0.5
            else:
                out[s2, s1] = block.T

    if workers == 1:
        for s1, s2 in plan:
            put(s1, s2, block_fn(s1, s2))
        return out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as executor:
            for (s1, s2), block in zip(plan, executor.map(lambda pair: block_fn(*pair), plan)):
                put(s1, s2, block)
    finally:
        torch.set_num_threads(threads)
    return out
