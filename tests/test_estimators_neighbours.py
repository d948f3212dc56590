"""Nearest-neighbour label conflicts and late examples, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.neighbours import late_examples, nearest_neighbour, neighbour_conflicts


def _planted(seed: int = 0, n: int = 60, pairs: int = 8, d: int = 5):
    """Well-separated points, ``pairs`` of which get a near-duplicate carrying another label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=10.0, size=(n, d))
    y = rng.integers(0, 4, size=n)
    dup_of = rng.choice(n, size=pairs, replace=False)
    x_dup = x[dup_of] + rng.normal(scale=1e-3, size=(pairs, d))
    y_dup = (y[dup_of] + 1 + rng.integers(0, 3, size=pairs)) % 4  # always another label
    return np.concatenate([x, x_dup]), np.concatenate([y, y_dup]), dup_of


def _brute(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.argmin(1), d.min(1)


def test_conflict_fraction_matches_brute_force_on_planted_near_duplicates():
    x, y, dup_of = _planted()
    n0, pairs = len(x) - len(dup_of), len(dup_of)
    nb, dist = _brute(x)
    brute_conflict = y[nb] != y

    result = neighbour_conflicts(x, y)
    assert np.array_equal(result.neighbour, nb)
    np.testing.assert_allclose(result.distance, dist, rtol=1e-6)
    assert np.array_equal(result.conflict[0], brute_conflict)

    # The planted pairs are each other's nearest neighbour and conflict by construction.
    planted = np.zeros(len(x), bool)
    planted[dup_of] = True
    planted[n0:] = True
    assert (result.neighbour[n0:] == dup_of).all() and (result.neighbour[dup_of] == np.arange(n0, n0 + pairs)).all()
    assert result.rate(planted) == 1.0
    assert result.count(planted) == 2 * pairs
    assert result.rate() == pytest.approx(brute_conflict.sum() / len(x))
    assert result.rate(~planted) == pytest.approx(brute_conflict[~planted].mean())
    assert result.distance_median(planted) == pytest.approx(np.median(dist[planted]))
    assert result.distance_median(planted) < 0.01 < result.distance_median()


def test_per_model_labels_share_one_neighbour_search():
    x, y, _ = _planted(seed=1)
    rng = np.random.default_rng(5)
    labels = np.stack([y, rng.integers(0, 4, size=len(y)), y])
    nb, _ = _brute(x)
    result = neighbour_conflicts(x, labels)
    assert result.conflict.shape == labels.shape
    for k in range(3):
        assert np.array_equal(result.conflict[k], labels[k][nb] != labels[k])
    late = np.zeros(labels.shape, bool)
    late[1, :7] = True
    late[2, 3:9] = True
    expected = np.concatenate([(labels[1][nb] != labels[1])[:7], (labels[2][nb] != labels[2])[3:9]]).mean()
    assert result.rate(late) == pytest.approx(expected)
    assert np.isnan(result.rate(np.zeros(labels.shape, bool)))


def test_an_exact_duplicate_is_a_neighbour_but_not_oneself():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    nb, dist = nearest_neighbour(x)
    assert nb.tolist()[:2] == [1, 0] and dist[0] == 0.0 and nb[2] in (0, 1)


def test_late_examples_look_at_the_fraction_of_each_models_time_to_fit():
    rng = np.random.default_rng(0)
    correct = rng.random((10, 3, 20)) < 0.6
    fit = np.array([10, 5, -1])  # the third never fit: look at 80% of the 10 recorded epochs
    late = late_examples(correct, fit, at=0.8)
    assert np.array_equal(late[0], ~correct[7, 0])   # epoch 8 (1-based)
    assert np.array_equal(late[1], ~correct[3, 1])   # epoch 4
    assert np.array_equal(late[2], ~correct[7, 2])
    assert np.array_equal(late_examples(correct, np.array([1, 1, 1]), at=0.5), ~correct[0])


def test_bad_arguments_are_named():
    with pytest.raises(DataError, match="features: expected at least 2 examples"):
        neighbour_conflicts(np.zeros((1, 3)), np.zeros(1, int))
    with pytest.raises(DataError, match="labels"):
        neighbour_conflicts(np.zeros((4, 3)), np.zeros(5, int))
    with pytest.raises(ConfigError, match="at: expected a number in"):
        late_examples(np.ones((2, 1, 3), bool), np.array([1]), at=0.0)
    with pytest.raises(DataError, match="epochs_to_fit: expected at most E = 2"):
        late_examples(np.ones((2, 1, 3), bool), np.array([3]))
