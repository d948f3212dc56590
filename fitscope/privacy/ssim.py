"""Structural similarity (SSIM, Wang, Bovik, Sheikh & Simoncelli 2004) for batches of 2-D images.

Notation: B images of H x W pixels; ``data_range`` L is the span of pixel
values (2 for images in ``[-1, 1]``, 1 for ``[0, 1]``).

    SSIM(x, y) = mean over pixels of
        (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))

with local means, variances and covariance taken under a Gaussian window
(sigma 1.5, truncated at 3.5 sigma) and ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``
(the paper's constants; population, not sample, covariances).

Written by hand with :func:`scipy.ndimage.gaussian_filter` because
scikit-image is not a dependency. One difference from
``skimage.metrics.structural_similarity(gaussian_weights=True)``: skimage
drops a border of ``(window - 1) / 2`` = 5 pixels before averaging, which
would leave nothing of an 8 x 8 digit; here the filter reflects at the
border and the whole map is averaged.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from fitscope.errors import DataError
from fitscope.validation import as_array, check_finite, check_number, message

K1, K2 = 0.01, 0.03  # Wang et al. (2004)


def _as_batch(name: str, a) -> np.ndarray:
    a = as_array(a, name).astype(np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape) < 1:
        raise DataError(message(name, "images of shape (H, W) or (B, H, W)", f"shape {a.shape}"))
    return check_finite(a, name)


def _check_window(data_range, sigma) -> tuple[float, float]:
    return (check_number(data_range, "data_range", low=0.0, high=math.inf, open_low=True, open_high=True),
            check_number(sigma, "sigma", low=0.0, high=math.inf, open_low=True, open_high=True))


def ssim_map(x, y, *, data_range: float, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM of image pairs.

    Args:
        x: ``(B, H, W)`` or ``(H, W)`` images.
        y: images of the same shape as ``x``.
        data_range: span L of the pixel values (> 0), e.g. 2 for ``[-1, 1]``.
        sigma: standard deviation of the Gaussian window in pixels (> 0).

    Returns:
        ``(B, H, W)`` float64 SSIM map.

    Raises:
        DataError: shapes differ or are not 2-D images, NaN/inf values.
        ConfigError: ``data_range`` or ``sigma`` not > 0.
    """
    x, y = _as_batch("x", x), _as_batch("y", y)
    if x.shape != y.shape:
        raise DataError(message("y", f"the shape of x {x.shape}", str(y.shape)))
    data_range, sigma = _check_window(data_range, sigma)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # Filter each image on its own (sigma 0 on the batch axis), reflecting at the border.
    blur = lambda a: gaussian_filter(a, sigma=(0, sigma, sigma), truncate=3.5, mode="reflect")  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def ssim(x, y, *, data_range: float, sigma: float = 1.5) -> np.ndarray:
    """Mean SSIM of each image pair: ``(B,)`` for ``(B, H, W)`` inputs (a 0-d array for one pair).

    Args:
        x: ``(B, H, W)`` or ``(H, W)`` images.
        y: images of the same shape as ``x``.
        data_range: span L of the pixel values (> 0).
        sigma: Gaussian window standard deviation in pixels.

    Returns:
        float64 array ``(B,)`` (or 0-d when ``x`` is one ``(H, W)`` image); 1 for identical images.
    """
    single = np.ndim(x) == 2
    out = ssim_map(x, y, data_range=data_range, sigma=sigma).mean(axis=(1, 2))
    return out[0] if single else out


def ssim_matrix(a, b, *, data_range: float, sigma: float = 1.5) -> np.ndarray:
    """SSIM of every pair ``(a[i], b[j])``: an ``(n_a, n_b)`` float64 matrix.

    Args:
        a: ``(n_a, H, W)`` images.
        b: ``(n_b, H, W)`` images.
        data_range: span L of the pixel values (> 0).
        sigma: Gaussian window standard deviation in pixels.
    """
    a, b = _as_batch("a", a), _as_batch("b", b)
    if a.shape[1:] != b.shape[1:]:
        raise DataError(message("b", f"images of size {a.shape[1:]} like a", str(b.shape[1:])))
    data_range, sigma = _check_window(data_range, sigma)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    blur = lambda t: gaussian_filter(t, sigma=(0, sigma, sigma), truncate=3.5, mode="reflect")  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    sq_a, sq_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    out = np.empty((len(a), len(b)))
    # The cross term blur(a_i * b_j) needs every pair; one row of pairs at a time keeps memory at (n_b, H, W).
    for i in range(len(a)):
        cov = blur(a[i][None] * b) - mu_a[i][None] * mu_b
        num = (2 * mu_a[i][None] * mu_b + c1) * (2 * cov + c2)
        den = (mu_a[i][None] ** 2 + mu_b**2 + c1) * (sq_a[i][None] + sq_b + c2)
        out[i] = (num / den).mean(axis=(1, 2))
    return out
