"""Random-patch features (Coates & Ng 2011) and their combination with CNTK-LAP (Li et al. 2019).

Notation: ``N`` inputs ``C x H x W`` (images) or ``C x L`` (signals); ``k``
the patch side; ``Dp = C k^d`` numbers per patch (``d`` = 1 or 2 spatial axes);
``F`` filters; ``G`` the pooled grid side.

Fit (:meth:`RandomPatchFeatures.fit`), all draws from one ``seed``:

1. sample ``n_whiten`` patches (uniform over images and 'valid' positions)
   from the training inputs, flattened to ``Dp`` numbers;
2. ZCA whitening: ``mu`` = patch mean, ``Cov`` = patch covariance with
   eigen-decomposition ``U diag(s) U^T``, ``W = U diag(1 / sqrt(s + eps)) U^T``
   with ``eps = zca_eps * mean(s)`` (default ``zca_eps = 0.01``: 1% of the mean
   eigenvalue, which damps directions with almost no variance; ``zca_eps -> 0``
   gives exactly identity covariance on the sampled patches);
3. filters = ``F`` of those patches (the first ``F`` sampled), whitened
   ``W (p - mu)`` and scaled to unit norm (so ``bias`` is in units of a
   whitened patch's projection).

Transform (:meth:`RandomPatchFeatures.transform`): every 'valid' patch ``p``
of an input gives ``relu(<W (p - mu), f> - bias)`` per filter ``f`` (the
shifted ReLU); the ``(H-k+1) x (W-k+1)`` response maps are average-pooled to
a ``G x G`` grid (``G`` per axis for signals) by adaptive average pooling.
Whitening is linear, so this is one convolution with filters ``W f`` and
offsets ``<mu, W f>``. No per-patch contrast normalization (Coates & Ng
normalize each patch first); keeping the map linear keeps it a convolution.

Combination with CNTK-LAP (:func:`cntk_lap_patch_kernel`): the sum of the
cosine-normalized CNTK-LAP kernel and ``lam`` times the linear kernel of
unit-norm patch features (both have 1 on the diagonal, so ``lam`` weighs them
independently of scale).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.errors import ConfigError, DataError
from fitscope.kernels.conv import cntk, cntk_diagonal
from fitscope.kernels.validation import check_array
from fitscope.validation import check_int, check_number, check_seed, message


class RandomPatchFeatures:
    """Coates-Ng random-patch features: whitened random patches as filters, shifted ReLU, average pooling.

    Args:
        n_filters: ``F``, number of filters (patches) >= 1.
        patch_size: ``k``, patch side (``k x k`` for images, ``k`` for signals) >= 1.
        pool: ``G``, side of the pooled output grid >= 1.
        bias: the shift of the ReLU, ``relu(<patch, filter> - bias)``.
        zca_eps: whitening regularizer relative to the mean eigenvalue (see the module docstring), >= 0.
        n_whiten: patches sampled to estimate the whitening (at least ``n_filters``).
        seed: seed of the patch sampling (a numpy Generator).

    Attributes (after :meth:`fit`):
        mean_: ``(Dp,)`` patch mean.
        whitening_: ``(Dp, Dp)`` ZCA matrix ``W``.
        filters_: ``(F, Dp)`` whitened unit-norm filters.
        input_shape_: ``(C, *spatial)`` of the training inputs.
    """

    def __init__(self, *, n_filters: int = 256, patch_size: int = 5, pool: int = 2, bias: float = 1.0,
                 zca_eps: float = 0.01, n_whiten: int = 10000, seed: int = 0):
        self.n_filters = n_filters
        self.patch_size = patch_size
        self.pool = pool
        self.bias = bias
        self.zca_eps = zca_eps
        self.n_whiten = n_whiten
        self.seed = seed

    def _check_params(self) -> None:
        for name in ("n_filters", "patch_size", "pool", "n_whiten"):
            check_int(getattr(self, name), name)
        if self.n_whiten < self.n_filters:
            raise ConfigError(message("n_whiten", f"at least n_filters = {self.n_filters}", str(self.n_whiten)))
        check_number(self.bias, "bias", low=-math.inf, high=math.inf, open_low=True, open_high=True)
        check_number(self.zca_eps, "zca_eps", low=0.0, high=math.inf, open_high=True)
        check_seed(self.seed)

    def fit(self, x) -> "RandomPatchFeatures":
        """Sample patches from ``x`` (``N x C x H x W`` or ``N x C x L``), fit the whitening, pick the filters."""
        self._check_params()
        a = check_array("x", x, arch="conv").astype(np.float64)
        spatial = a.shape[2:]
        k = self.patch_size
        if k > min(spatial):
            raise ConfigError(message("patch_size", f"at most the smallest spatial size {min(spatial)}", str(k)))
        rng = np.random.default_rng(self.seed)
        n = self.n_whiten
        rows = rng.integers(0, a.shape[0], size=n)
        starts = [rng.integers(0, s - k + 1, size=n) for s in spatial]
        patches = np.stack([_patch(a[r], [s[i] for s in starts], k) for i, r in enumerate(rows)])
        mean = patches.mean(axis=0)
        centered = patches - mean
        cov = centered.T @ centered / n
        s, u = np.linalg.eigh(cov)
        s = np.clip(s, 0.0, None)
        eps = self.zca_eps * float(s.mean())
        if eps == 0.0 and s.min() <= 0.0:
            raise DataError(message("x", "sampled patches with a nonsingular covariance when zca_eps = 0",
                                    "a singular covariance; use zca_eps > 0"))
        w = (u / np.sqrt(s + eps)) @ u.T
        filters = centered[: self.n_filters] @ w
        norms = np.linalg.norm(filters, axis=1, keepdims=True)
        self.mean_ = mean
        self.whitening_ = w
        self.filters_ = filters / np.where(norms > 0, norms, 1.0)
        self.input_shape_ = tuple(a.shape[1:])
        return self

    def transform(self, x, *, flatten: bool = True) -> np.ndarray:
        """Pooled features of ``x``.

        Args:
            x: inputs of the fitted ``(C, *spatial)`` shape, ``(N, C, ...)``.
            flatten: return ``(N, F * G^d)`` (default) or ``(N, F, G, G)`` / ``(N, F, G)``
                (feature maps, usable as CNTK input).
        """
        if not hasattr(self, "filters_"):
            raise ConfigError(message("transform", "a fitted RandomPatchFeatures (call fit(x) first)",
                                      "an unfitted one"))
        a = check_array("x", x, arch="conv").astype(np.float64)
        if tuple(a.shape[1:]) != self.input_shape_:
            raise DataError(message("x", f"inputs of shape (N, {', '.join(map(str, self.input_shape_))}) as in fit",
                                    f"shape {a.shape}"))
        d = a.ndim - 2
        c, k = a.shape[1], self.patch_size
        # whitening is linear: <W (p - mu), f> = <p, W f> - <mu, W f>
        g = self.filters_ @ self.whitening_  # (F, Dp); W is symmetric
        offset = g @ self.mean_ + self.bias
        weight = torch.from_numpy(g.reshape((len(g), c) + (k,) * d))
        conv = F.conv2d if d == 2 else F.conv1d
        pool = F.adaptive_avg_pool2d if d == 2 else F.adaptive_avg_pool1d
        out = []
        with torch.no_grad():
            for i in range(0, a.shape[0], 256):
                resp = conv(torch.from_numpy(a[i:i + 256]), weight) - torch.from_numpy(offset).reshape((-1,) + (1,) * d)
                out.append(pool(torch.relu(resp), (self.pool,) * d).numpy())
        feats = np.concatenate(out)
        return feats.reshape(len(feats), -1) if flatten else feats

    def fit_transform(self, x, *, flatten: bool = True) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same inputs."""
        return self.fit(x).transform(x, flatten=flatten)


def _patch(img: np.ndarray, start: list[int], k: int) -> np.ndarray:
    """The ``C x k^d`` patch of ``img`` at ``start``, flattened channel-major."""
    index = (slice(None),) + tuple(slice(s, s + k) for s in start)
    return img[index].reshape(-1)


def random_patch_features(x, *, n_filters: int = 256, patch_size: int = 5, pool: int = 2, bias: float = 1.0,
                          seed: int = 0, fit_on=None, zca_eps: float = 0.01, n_whiten: int = 10000,
                          flatten: bool = True) -> np.ndarray:
    """Random-patch features of ``x`` with filters drawn from ``fit_on`` (default ``x`` itself).

    Args:
        x: ``(N, C, H, W)`` images or ``(N, C, L)`` signals.
        fit_on: inputs to sample the patches and whitening from (e.g. the
            training set when ``x`` is a test set); None = ``x``.
        Other arguments: as in :class:`RandomPatchFeatures` and its ``transform``.

    Returns:
        ``(N, F * G^d)`` features (or ``(N, F, G, ...)`` when ``flatten=False``).
    """
    rpf = RandomPatchFeatures(n_filters=n_filters, patch_size=patch_size, pool=pool, bias=bias,
                              zca_eps=zca_eps, n_whiten=n_whiten, seed=seed)
    rpf.fit(x if fit_on is None else fit_on)
    return rpf.transform(x, flatten=flatten)


def cntk_lap_patch_kernel(x1, x2=None, *, features: RandomPatchFeatures, lam: float = 1.0, depth: int = 3,
                          lap_window: int = 3, filter_size: int = 3, fixed: int = 0, kind: str = "ntk",
                          dtype: str = "float64", device: str | None = None,
                          max_memory_mb: float = 1024) -> np.ndarray:
    """CNTK-LAP plus random-patch features: ``k_lap(x, x') / sqrt(k_lap(x, x) k_lap(x', x')) + lam <phi(x), phi(x')>``.

    ``phi`` = the fitted ``features``' flattened output scaled to unit norm
    (an all-zero feature vector stays zero). Both terms are 1 on the diagonal
    (for nonzero inputs), so ``lam`` sets their relative weight; the result is
    a valid (PSD) kernel as a sum of two.

    Args:
        x1: ``(N1, C, H, W)`` or ``(N1, C, L)``.
        x2: ``(N2, ...)`` or None for the Gram matrix of ``x1``.
        features: a fitted :class:`RandomPatchFeatures` (fit it on training inputs).
        lam: weight of the feature kernel, >= 0.
        depth, lap_window, filter_size, fixed, kind, dtype, device, max_memory_mb: as in
            :func:`fitscope.kernels.conv.cntk` with ``pool="lap"`` (the CNTK term runs on
            ``device``; the patch features on the CPU).

    Returns:
        ``(N1, N2)`` float64 array.
    """
    lam = check_number(lam, "lam", low=0.0, high=math.inf, open_high=True)
    opts = dict(depth=depth, filter_size=filter_size, pool="lap", lap_window=lap_window, fixed=fixed,
                kind=kind, dtype=dtype, device=device, max_memory_mb=max_memory_mb)
    gram = cntk(x1, x2, **opts).astype(np.float64)
    d1 = cntk_diagonal(x1, **opts).astype(np.float64)
    d2 = d1 if x2 is None else cntk_diagonal(x2, **opts).astype(np.float64)
    s1, s2 = np.sqrt(np.clip(d1, 0, None)), np.sqrt(np.clip(d2, 0, None))
    gram = gram / np.where(s1 > 0, s1, 1.0)[:, None] / np.where(s2 > 0, s2, 1.0)[None, :]
    p1 = _unit_rows(features.transform(x1))
    p2 = p1 if x2 is None else _unit_rows(features.transform(x2))
    out = gram + lam * (p1 @ p2.T)
    return 0.5 * (out + out.T) if x2 is None else out


def _unit_rows(phi: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(phi, axis=1, keepdims=True)
    return phi / np.where(norms > 0, norms, 1.0)
