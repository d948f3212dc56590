"""SSIM (Wang et al. 2004) with a Gaussian window: known values and properties."""

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.ssim import K1, ssim, ssim_map, ssim_matrix


def _images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 8, 8))


def test_identical_images_give_one():
    x = _images()
    np.testing.assert_allclose(ssim(x, x, data_range=2.0), 1.0, atol=1e-12)


def test_constant_shift_of_a_constant_image_is_the_luminance_term():
    # sigma_x = sigma_y = 0, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) at every pixel.
    a, b, L = 0.2, 0.7, 2.0
    c1 = (K1 * L) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(np.full((8, 8), a), np.full((8, 8), b), data_range=L)
    assert got == pytest.approx(expected, rel=1e-10)


def test_constant_shift_keeps_the_structure_term():
    # y = x + c: cov = var_x = var_y, so the map equals the luminance term of the local means.
    x = _images(1)[0] * 0.3
    c, L = 0.4, 2.0
    m = ssim_map(x, x + c, data_range=L)[0]
    from scipy.ndimage import gaussian_filter

    mu = gaussian_filter(x, 1.5, truncate=3.5, mode="reflect")
    c1 = (K1 * L) ** 2
    np.testing.assert_allclose(m, (2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1), atol=1e-10)


def test_symmetric_and_below_one_for_different_images():
    x, y = _images(4, 1), _images(4, 2)
    s_xy, s_yx = ssim(x, y, data_range=2.0), ssim(y, x, data_range=2.0)
    np.testing.assert_allclose(s_xy, s_yx, atol=1e-12)
    assert (s_xy < 0.5).all()


def test_matrix_matches_pairwise_calls():
    a, b = _images(3, 3), _images(2, 4)
    m = ssim_matrix(a, b, data_range=2.0)
    assert m.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert m[i, j] == pytest.approx(float(ssim(a[i], b[j], data_range=2.0)), abs=1e-12)


def test_bad_input():
    with pytest.raises(DataError, match="shape of x"):
        ssim(_images(2), _images(3), data_range=2.0)
    with pytest.raises(ConfigError, match=r"^data_range: expected a number in \(0, inf\), got 0$"):
        ssim(_images(1), _images(1), data_range=0)
    with pytest.raises(DataError, match=r"^x: expected finite values, got nan at \[0, 0, 0\]$"):
        ssim(np.full((4, 4), np.nan), np.zeros((4, 4)), data_range=1.0)
