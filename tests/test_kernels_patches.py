"""Random-patch features and the CNTK-LAP + features kernel."""

from __future__ import annotations

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.kernels.conv import cntk
from fitscope.kernels.patches import RandomPatchFeatures, _patch, cntk_lap_patch_kernel, random_patch_features


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(12, 2, 8, 8))


def test_shapes_images_and_signals(images):
    f = random_patch_features(images, n_filters=7, patch_size=3, pool=2, n_whiten=200, seed=0)
    assert f.shape == (12, 7 * 2 * 2)
    maps = RandomPatchFeatures(n_filters=7, patch_size=3, pool=3, n_whiten=200).fit(images).transform(
        images[:4], flatten=False)
    assert maps.shape == (4, 7, 3, 3)
    sig = np.random.default_rng(1).normal(size=(5, 3, 20))
    assert random_patch_features(sig, n_filters=4, patch_size=5, pool=4, n_whiten=100).shape == (5, 16)
    assert np.all(f >= 0)  # a ReLU


def test_deterministic_given_seed(images):
    a = random_patch_features(images, n_filters=5, patch_size=3, n_whiten=100, seed=3)
    b = random_patch_features(images, n_filters=5, patch_size=3, n_whiten=100, seed=3)
    c = random_patch_features(images, n_filters=5, patch_size=3, n_whiten=100, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_whitening_gives_identity_covariance(images):
    rpf = RandomPatchFeatures(n_filters=10, patch_size=3, n_whiten=3000, zca_eps=1e-9, seed=0).fit(images)
    # re-draw the same patches (same seed, same sampling) and whiten them
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 12, size=3000)
    starts = [rng.integers(0, 6, size=3000) for _ in range(2)]
    p = np.stack([_patch(images[r], [s[i] for s in starts], 3) for i, r in enumerate(rows)])
    w = (p - rpf.mean_) @ rpf.whitening_
    cov = w.T @ w / len(w)
    np.testing.assert_allclose(cov, np.eye(18), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rpf.filters_, axis=1), 1.0)


def test_features_are_the_shifted_relu_of_whitened_patches_pooled(images):
    rpf = RandomPatchFeatures(n_filters=3, patch_size=3, pool=1, bias=0.2, n_whiten=100, seed=1).fit(images)
    x = images[:2]
    got = rpf.transform(x)
    want = np.zeros((2, 3))
    for n in range(2):
        for i in range(6):
            for j in range(6):
                wp = (_patch(x[n], [i, j], 3) - rpf.mean_) @ rpf.whitening_
                want[n] += np.maximum(rpf.filters_ @ wp - 0.2, 0.0) / 36
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fit_on_train_transform_test(images):
    rpf = RandomPatchFeatures(n_filters=4, patch_size=3, n_whiten=100, seed=0).fit(images[:8])
    np.testing.assert_array_equal(
        random_patch_features(images[8:], n_filters=4, patch_size=3, n_whiten=100, seed=0, fit_on=images[:8]),
        rpf.transform(images[8:]))
    with pytest.raises(DataError):
        rpf.transform(np.zeros((2, 2, 8, 9)))


def test_bad_parameters(images):
    with pytest.raises(ConfigError):
        RandomPatchFeatures(patch_size=9).fit(images)
    with pytest.raises(ConfigError):
        RandomPatchFeatures(n_filters=0).fit(images)
    with pytest.raises(ConfigError):
        RandomPatchFeatures(n_filters=20, n_whiten=10).fit(images)
    with pytest.raises(ConfigError):
        RandomPatchFeatures().transform(images)


def test_cntk_lap_patch_kernel(images):
    rpf = RandomPatchFeatures(n_filters=6, patch_size=3, n_whiten=200, seed=0).fit(images)
    g = cntk_lap_patch_kernel(images[:6], features=rpf, lam=0.5, depth=2, lap_window=2)
    assert np.array_equal(g, g.T)
    np.testing.assert_allclose(np.diag(g), 1.5, rtol=1e-8)
    assert np.linalg.eigvalsh(g).min() > -1e-10
    cross = cntk_lap_patch_kernel(images[:6], images[6:], features=rpf, lam=0.5, depth=2, lap_window=2)
    full = cntk_lap_patch_kernel(images, features=rpf, lam=0.5, depth=2, lap_window=2)
    np.testing.assert_allclose(cross, full[:6, 6:], rtol=1e-10)
    # lam = 0 is the cosine-normalized CNTK-LAP
    k = cntk(images[:6], depth=2, pool="lap", lap_window=2)
    np.testing.assert_allclose(cntk_lap_patch_kernel(images[:6], features=rpf, lam=0.0, depth=2, lap_window=2),
                               k / np.sqrt(np.outer(np.diag(k), np.diag(k))), rtol=1e-8)
    with pytest.raises(ConfigError):
        cntk_lap_patch_kernel(images, features=rpf, lam=-1.0)
