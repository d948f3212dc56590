"""The fine-grained complexity measure sqrt(2 y^T H^-1 y / n) (Arora et al. 2019)."""

import math

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.kernels import complexity_measure
from fitscope.kernels.complexity import complexity_gram


def _separable(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.standard_normal((n, 6)) * 0.4
    X[:, 0] += np.where(y == 1, 2.0, -2.0)
    X[:, 1] += 1.0
    return X, y


def test_gram_entries_follow_the_formula():
    X = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    H = complexity_gram(X)
    u = 1 / math.sqrt(2)
    assert H[0, 0] == pytest.approx(0.5)
    assert H[0, 1] == pytest.approx(u * (math.pi - math.acos(u)) / (2 * math.pi))
    assert H[0, 2] == pytest.approx(0.0)


def test_binary_measure_matches_direct_formula_with_pm1_labels():
    X, y = _separable(30)
    result = complexity_measure(X, np.where(y == 1, "b", "a"))
    H = complexity_gram(X)
    v = 2.0 * y - 1.0
    assert result.true_measure == pytest.approx(math.sqrt(2 * v @ np.linalg.solve(H, v) / 30), rel=1e-10)
    assert result.targets == "+-1" and result.n_classes == 2 and result.noisy_measures.shape == (0,)


def test_multiclass_uses_one_hot_summed_over_classes():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((25, 5)), rng.integers(0, 3, size=25)
    Y = np.eye(3)[y]
    H = complexity_gram(X)
    expected = math.sqrt(2 * np.trace(Y.T @ np.linalg.solve(H, Y)) / 25)
    result = complexity_measure(X, y)
    assert result.targets == "one-hot" and result.true_measure == pytest.approx(expected, rel=1e-10)


def test_random_labels_are_more_complex_at_every_noise_level():
    X, y = _separable()
    levels = [0.1, 0.25, 0.5, 1.0]
    result = complexity_measure(X, y, noise_levels=levels, seed=7)
    np.testing.assert_array_equal(result.noise_levels, levels)
    assert np.all(result.noisy_measures > result.true_measure)
    assert result.noisy_measures[0] < result.noisy_measures[2]  # more noise, larger measure
    again = complexity_measure(X, y, noise_levels=levels, seed=7)
    np.testing.assert_array_equal(again.noisy_measures, result.noisy_measures)
    other = complexity_measure(X, y, noise_levels=levels, seed=8)
    assert not np.array_equal(other.noisy_measures, result.noisy_measures)


def test_duplicates_need_jitter_and_bad_input_is_rejected():
    X, y = _separable(20)
    X[1] = 3 * X[0]  # parallel rows make H singular
    with pytest.raises(DataError, match="numerically singular H .*jitter=1e-8"):
        complexity_measure(X, y)
    assert complexity_measure(X, y, jitter=1e-8).jitter == 1e-8
    with pytest.raises(DataError, match="nonzero norm"):
        complexity_measure(np.vstack([X[:3], np.zeros((1, 6))]), y[:4])
    with pytest.raises(DataError, match="y: expected a 1-D array of 20 labels"):
        complexity_measure(X, y[:5])
    with pytest.raises(DataError, match="at least 2 classes"):
        complexity_measure(X, np.zeros(20))
    with pytest.raises(ConfigError, match=r"^noise_levels\[\d\]: expected a number in \[0, 1\], got 1.5$"):
        complexity_measure(X, y, noise_levels=[0.5, 1.5], jitter=1e-8)
    with pytest.raises(ConfigError, match="jitter"):
        complexity_measure(X, y, jitter=-1.0)
