"""Randomization-test corruptions and label flips: ground truth, seeds, rates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fitscope.data import CORRUPTION_KINDS, Corruption, Dataset, corrupt, flip_labels
from fitscope.errors import ConfigError, DataError


def make_images(n=300, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, 4, 5), dtype=np.float32)
    y = (np.arange(n) % k).astype(np.int64)
    xt = rng.random((40, 3, 4, 5), dtype=np.float32)
    yt = (np.arange(40) % k).astype(np.int64)
    return Dataset("img", x, y, xt, yt, tuple(str(c) for c in range(k)), "test", {"origin": "test"})


def make_vectors(n=20000, k=10, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * [1.0, 2.0, 0.5] + [0.0, 5.0, -1.0]).astype(np.float32)
    y = rng.integers(0, k, size=n)
    return Dataset("vec", x, y, x[:50].copy(), y[:50].copy(), tuple(str(c) for c in range(k)), "test")


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def vectors():
    return make_vectors()


def _assert_ground_truth(c: Corruption, clean: Dataset):
    new = c.dataset
    differs = (new.y_train != clean.y_train) | (new.x_train != clean.x_train).reshape(len(clean.y_train), -1).any(1)
    np.testing.assert_array_equal(c.changed, np.flatnonzero(differs))
    np.testing.assert_array_equal(c.original_labels, clean.y_train[c.changed])
    assert c.changed.dtype == np.int64 and c.original_labels.dtype == np.int64
    assert new.x_train.dtype == np.float32 and new.y_train.dtype == np.int64
    assert new.x_train.shape == clean.x_train.shape
    assert new.meta["corruption"]["kind"] == c.kind and new.meta["origin"] == clean.meta.get("origin")


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_every_kind_records_ground_truth_and_is_reproducible(images, kind):
    before = images.x_train.copy(), images.y_train.copy(), images.x_test.copy()
    a = corrupt(images, kind, noise=0.7, seed=11)
    b = corrupt(images, kind, noise=0.7, seed=11)
    _assert_ground_truth(a, images)
    np.testing.assert_array_equal(a.dataset.x_train, b.dataset.x_train)
    np.testing.assert_array_equal(a.dataset.y_train, b.dataset.y_train)
    np.testing.assert_array_equal(a.changed, b.changed)
    # the clean dataset is never modified
    np.testing.assert_array_equal(images.x_train, before[0])
    np.testing.assert_array_equal(images.y_train, before[1])
    np.testing.assert_array_equal(images.x_test, before[2])
    if kind != "shuffled_pixels":
        assert a.dataset.x_test is images.x_test
    assert a.dataset.y_test is images.y_test
    assert (a.permutation is not None) == (kind == "shuffled_pixels")
    if kind not in ("none",):
        c = corrupt(images, kind, noise=0.7, seed=12)
        assert not (np.array_equal(c.dataset.x_train, a.dataset.x_train)
                    and np.array_equal(c.dataset.y_train, a.dataset.y_train))


def test_none_changes_nothing(images):
    c = corrupt(images, "none", seed=0)
    assert c.dataset.x_train is images.x_train and len(c.changed) == 0 and c.noise == 0.0


@pytest.mark.parametrize("kind", ["labels", "random_pixels", "gaussian"])
def test_zero_noise_changes_nothing(images, kind):
    c = corrupt(images, kind, noise=0.0, seed=5)
    assert len(c.changed) == 0
    np.testing.assert_array_equal(c.dataset.x_train, images.x_train)
    np.testing.assert_array_equal(c.dataset.y_train, images.y_train)


@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
def test_label_noise_changes_about_p_times_one_minus_one_over_k(vectors, p):
    c = corrupt(vectors, "labels", noise=p, seed=3)
    n, k = len(vectors.y_train), vectors.n_classes
    expected = p * (1 - 1 / k)
    assert abs(len(c.changed) / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9
    # redrawn labels are uniform over all classes
    counts = np.bincount(c.dataset.y_train[c.changed], minlength=k)
    assert counts.min() > 0.7 * counts.mean()
    np.testing.assert_array_equal(c.dataset.x_train, vectors.x_train)


def test_random_labels_is_labels_with_noise_one(vectors):
    a = corrupt(vectors, "random_labels", noise=0.3, seed=9)
    b = corrupt(vectors, "labels", noise=1.0, seed=9)
    np.testing.assert_array_equal(a.dataset.y_train, b.dataset.y_train)
    assert a.noise == 1.0
    # random labels carry no information about the true ones
    agree = (a.dataset.y_train == vectors.y_train).mean()
    assert abs(agree - 1 / vectors.n_classes) < 0.02


def test_shuffled_pixels_one_permutation_for_train_and_test(images):
    c = corrupt(images, "shuffled_pixels", seed=4)
    perm = c.permutation
    assert perm.dtype == np.int64 and sorted(perm) == list(range(4 * 5))
    for clean, new in ((images.x_train, c.dataset.x_train), (images.x_test, c.dataset.x_test)):
        flat_clean = clean.reshape(len(clean), 3, -1)
        np.testing.assert_array_equal(new.reshape(len(new), 3, -1), flat_clean[:, :, perm])
    np.testing.assert_array_equal(c.dataset.y_train, images.y_train)
    assert len(c.changed) == len(images.y_train)


def test_random_pixels_independent_permutation_per_row(images):
    c = corrupt(images, "random_pixels", seed=6)
    clean = images.x_train.reshape(len(images.x_train), 3, -1)
    new = c.dataset.x_train.reshape(clean.shape)
    perms = []
    for i in range(10):
        # a position permutation: all channels of a pixel move together
        order = [int(np.flatnonzero(clean[i, 0] == v)[0]) for v in new[i, 0]]
        np.testing.assert_array_equal(new[i], clean[i][:, order])
        perms.append(tuple(order))
    assert len(set(perms)) == 10
    np.testing.assert_array_equal(c.dataset.x_test, images.x_test)
    half = corrupt(images, "random_pixels", noise=0.5, seed=6)
    assert 0.35 < len(half.changed) / len(images.y_train) < 0.65


def test_gaussian_matches_per_feature_mean_and_std(vectors):
    c = corrupt(vectors, "gaussian", seed=2)
    x = c.dataset.x_train
    np.testing.assert_allclose(x.mean(0), vectors.x_train.mean(0), atol=0.05)
    np.testing.assert_allclose(x.std(0), vectors.x_train.std(0), rtol=0.03)
    assert abs(np.corrcoef(x[:, 0], vectors.x_train[:, 0])[0, 1]) < 0.05  # fresh noise
    assert len(c.changed) == len(vectors.y_train)
    np.testing.assert_array_equal(c.dataset.y_train, vectors.y_train)


def test_corruption_is_frozen(images):
    c = corrupt(images, "labels", noise=0.5, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.kind = "none"


def test_invalid_arguments(images):
    with pytest.raises(ConfigError, match="kind: expected one of none, labels, random_labels, shuffled_pixels, "
                                          "random_pixels, gaussian, got 'blur'"):
        corrupt(images, "blur", seed=0)
    for noise in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ConfigError, match=r"noise: expected a number in \[0, 1\]"):
            corrupt(images, "labels", noise=noise, seed=0)
    with pytest.raises(ConfigError, match=r"^seed: expected an integer in \[0, 2\*\*32\), got -1$"):
        corrupt(images, "labels", seed=-1)


@pytest.mark.parametrize("mode", ["uniform", "pair"])
@pytest.mark.parametrize("rate", [0.0, 0.13, 1.0])
def test_flip_labels_exact_count_to_other_classes(mode, rate):
    y = np.arange(1000) % 4
    noisy, flipped = flip_labels(y, rate, 4, mode=mode, seed=1)
    assert len(flipped) == round(rate * 1000) and flipped.dtype == np.int64
    assert np.all(np.diff(flipped) > 0)
    np.testing.assert_array_equal(np.flatnonzero(noisy != y), flipped)
    if mode == "pair":
        np.testing.assert_array_equal(noisy[flipped], (y[flipped] + 1) % 4)
    elif rate == 1.0:
        # uniform over the other three classes
        counts = np.bincount((noisy - y) % 4, minlength=4)
        assert counts[0] == 0 and counts[1:].min() > 280
    again, _ = flip_labels(y, rate, 4, mode=mode, seed=1)
    np.testing.assert_array_equal(noisy, again)


def test_flip_labels_errors():
    y = np.array([0, 1, 2])
    with pytest.raises(ConfigError, match="rate"):
        flip_labels(y, 1.2, 3, seed=0)
    with pytest.raises(ConfigError, match="mode: expected one of uniform, pair, got 'swap'"):
        flip_labels(y, 0.5, 3, mode="swap", seed=0)
    with pytest.raises(ConfigError, match="n_classes"):
        flip_labels(y, 0.5, 1, seed=0)
    with pytest.raises(DataError, match=r"^y: expected class labels in \[0, 2\), got 2 at \[2\]$"):
        flip_labels(y, 0.5, 2, seed=0)
