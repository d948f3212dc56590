"""How similar two saliency maps of the same input are: Spearman rank correlation, SSIM, top-k overlap.

Each function compares maps row by row: ``a`` and ``b`` are ``(n, *input_shape)``
(the same input, two models or two methods) and the result is ``(n,)``, one
similarity per row, as in Adebayo et al. 2018 (section 3), who compare a
trained model's maps with its randomized versions' by

- the Spearman rank correlation of the maps' absolute values and of the signed
  maps (:func:`spearman_similarity`, ``absolute=True`` / ``False``);
- the structural similarity index (SSIM) of the maps normalized to ``[0, 1]``
  (:func:`ssim_similarity`);
- and, here, the overlap of the ``k`` most salient features (largest absolute
  value): ``|top_k(a) & top_k(b)| / k`` (:func:`top_k_overlap`).

A map that is constant (all zeros, e.g. a CGI map whose class won no pixel) has
no ranks: its Spearman correlation is NaN, and so is its SSIM normalization.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from fitscope.errors import DataError
from fitscope.validation import check_int, message

#: the metrics of :func:`similarities`, in the order tables show them
METRICS: tuple[str, ...] = ("spearman_abs", "spearman", "ssim", "top_k")


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    """``a``, ``b`` as float64 ``(n, features)`` of the same shape (one row per input)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise DataError(message("b", f"maps of the shape of a {a.shape}, with a row axis", str(b.shape)))
    return a.reshape(len(a), -1), b.reshape(len(b), -1)


def spearman_similarity(a, b, *, absolute: bool) -> np.ndarray:
    """``(n,)`` Spearman rank correlation of each row's maps (of their absolute values if ``absolute``).

    Ties get their average rank (as :func:`scipy.stats.spearmanr`); a row where
    either map is constant gives NaN.
    """
    a, b = _pair(a, b)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


def normalize_absolute(maps) -> np.ndarray:
    """Each map's absolute values divided by its largest: ``(n, ...)`` in ``[0, 1]`` (NaN for an all-zero map)."""
    maps = np.abs(np.asarray(maps, dtype=np.float64))
    top = maps.reshape(len(maps), -1).max(axis=1).reshape((-1,) + (1,) * (maps.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, maps / np.where(top > 0, top, 1.0), np.nan)


def ssim_similarity(a, b, *, data_range: float = 1.0) -> np.ndarray:
    """``(n,)`` SSIM of each row's maps, normalized by :func:`normalize_absolute` (values in ``[0, 1]``).

    scikit-image's ``structural_similarity`` with ``data_range=1`` (the range of
    the normalized maps; pass another for other units), its default 7-wide
    window (smaller where a side is shorter), on the map without its channel
    axis when there is one channel (an 8 x 8 image stays 2-D, a 40-sample
    signal 1-D); several channels are compared with ``channel_axis=0``.
    """
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a), np.asarray(b)
    _pair(a, b)
    na, nb = normalize_absolute(a), normalize_absolute(b)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        x, y = na[i], nb[i]
        if np.isnan(x).any() or np.isnan(y).any():
            continue
        channel = None
        if x.ndim >= 2 and x.shape[0] == 1:
            x, y = x[0], y[0]
        elif x.ndim >= 3:
            channel = 0
        spatial = x.shape if channel is None else x.shape[1:]
        win = min(7, *[s if s % 2 else s - 1 for s in spatial])
        out[i] = structural_similarity(x, y, data_range=data_range, win_size=max(win, 1), channel_axis=channel)
    return out


def top_k_overlap(a, b, *, k: int) -> np.ndarray:
    """``(n,)`` share of the ``k`` features of largest absolute value in ``a`` that are among ``b``'s ``k`` largest.

    Ties at the k-th place are broken by feature index (a stable sort of the
    absolute values, largest first).
    """
    a, b = _pair(a, b)
    k = check_int(k, "k", low=1, high=a.shape[1])
    top_a = np.argsort(-np.abs(a), axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-np.abs(b), axis=1, kind="stable")[:, :k]
    hits = np.zeros((len(a), a.shape[1]), dtype=np.int8)
    np.put_along_axis(hits, top_a, 1, axis=1)
    return np.take_along_axis(hits, top_b, axis=1).sum(1) / k


def similarities(a, b, *, k: int) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` per row: ``{metric: (n,)}``."""
    return {
        "spearman_abs": spearman_similarity(a, b, absolute=True),
        "spearman": spearman_similarity(a, b, absolute=False),
        "ssim": ssim_similarity(a, b),
        "top_k": top_k_overlap(a, b, k=k),
    }
