"""C-score proxies: learning speed, kernel density and relative distance."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from fitscope.errors import ConfigError, DataError
from fitscope.estimators import ProxyScores, kernel_density, learning_speed, median_bandwidth, relative_distance


def test_learning_speed_from_known_records():
    # E=4 epochs, K=2 models, n=3 examples
    correct = np.zeros((4, 2, 3), bool)
    correct[:, :, 0] = True  # learnt from the first epoch: speed 1
    correct[2:, :, 1] = True  # learnt halfway: 0.5
    correct[3, 0, 2] = True  # learnt at the end by one model: 1/8
    result = learning_speed(correct)
    assert isinstance(result, ProxyScores) and result.method == "learning_speed"
    np.testing.assert_allclose(result.scores, [1.0, 0.5, 0.125])
    assert result.params == {"signal": "correct", "epochs": 4, "n_models": 2, "restricted_to_subset": False}
    # restricted to the models that train on the example
    in_subset = np.array([[True, False, True], [False, False, False]])
    restricted = learning_speed(correct, in_subset=in_subset)
    np.testing.assert_allclose(restricted.scores, [1.0, np.nan, 0.25])
    assert restricted.n_undefined == 1 and restricted.params["restricted_to_subset"]


def test_learning_speed_of_a_confidence_array():
    rng = np.random.default_rng(0)
    loss = rng.random((5, 3, 7)).astype(np.float16)  # like the engine's records
    result = learning_speed(confidence=np.exp(-loss))
    np.testing.assert_allclose(result.scores, np.exp(-loss.astype(np.float64)).mean(axis=(0, 1)), rtol=1e-3)
    assert result.params["signal"] == "confidence"
    with pytest.raises(ConfigError, match=r"^correct_records, confidence: expected exactly one of them, got both$"):
        learning_speed(loss > 0.5, confidence=loss)
    with pytest.raises(ConfigError, match=r"^correct_records, confidence: expected exactly one of them, got neither$"):
        learning_speed()
    with pytest.raises(DataError, match=re.escape("confidence: expected finite values, got nan at [0, 1, 2]")):
        bad = loss.copy()
        bad[0, 1, 2] = np.nan
        learning_speed(confidence=bad)
    with pytest.raises(DataError, match=re.escape("in_subset: expected a bool array of shape (K, n) = (3, 7) "
                                                  "like correct_records, got shape (7, 3)")):
        learning_speed(loss > 0.5, in_subset=np.ones((7, 3), bool))
    with pytest.raises(DataError, match=re.escape("correct_records: expected a 3-D bool or 0/1 array (E, K, n), "
                                                  "got shape (3, 7)")):
        learning_speed(loss[0] > 0.5)


def _blobs_with_outliers(rng: np.random.Generator):
    """Two tight 2-D blobs (classes 0 and 1) and three class-0 points far from class 0's blob."""
    x0 = rng.normal([0.0, 0.0], 1.0, (80, 2))
    x1 = rng.normal([8.0, 0.0], 1.0, (80, 2))
    outliers = np.array([[0.0, 9.0], [-8.0, 0.0], [8.0, 0.5]])  # the last sits inside class 1
    x = np.vstack([x0, x1, outliers])
    y = np.array([0] * 80 + [1] * 80 + [0] * 3)
    return x, y, np.arange(160, 163)


def test_kernel_density_scores_outliers_lowest():
    rng = np.random.default_rng(1)
    x, y, outliers = _blobs_with_outliers(rng)
    result = kernel_density(x, y)
    assert result.method == "kernel_density" and result.params["bandwidth_from"] == "median heuristic"
    assert set(np.argsort(result.scores)[:3]) == set(outliers)
    # ignoring labels, the point inside class 1 is typical; the other two stay the lowest
    unlabelled = kernel_density(x, y, same_class=False, bandwidth=1.0)
    assert set(np.argsort(unlabelled.scores)[:2]) == {160, 161}
    assert unlabelled.params == {"bandwidth": 1.0, "bandwidth_from": "given", "same_class": False}


def test_kernel_density_blocked_equals_unblocked_and_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(53, 4)).astype(np.float32)
    y = rng.integers(0, 3, 53)
    y[7] = 3  # a singleton class has no same-class neighbour
    h = 1.7
    one = kernel_density(x, y, bandwidth=h, block_rows=100)
    many = kernel_density(x, y, bandwidth=h, block_rows=4)
    np.testing.assert_allclose(many.scores, one.scores, rtol=1e-12)
    d2 = cdist(x.astype(np.float64), x.astype(np.float64), "sqeuclidean")
    kernel = np.exp(-d2 / (2 * h * h))
    same = (y[:, None] == y[None, :]) & ~np.eye(53, dtype=bool)
    with np.errstate(invalid="ignore"):
        expected = (kernel * same).sum(axis=1) / same.sum(axis=1)
    np.testing.assert_allclose(one.scores, expected, rtol=1e-10)
    assert np.isnan(one.scores[7]) and one.n_undefined == 1


def test_median_bandwidth_is_the_median_pairwise_distance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 5))
    assert median_bandwidth(x) == pytest.approx(np.median(pdist(x)), rel=1e-10)
    images = rng.normal(size=(30, 1, 3, 3))  # (n, *shape) is flattened
    assert median_bandwidth(images) == pytest.approx(np.median(pdist(images.reshape(30, -1))), rel=1e-10)
    with pytest.raises(DataError, match=r"^features: expected distinct examples .*got a median pairwise distance of 0"):
        median_bandwidth(np.zeros((5, 2)))


def test_median_bandwidth_subsamples_large_inputs_with_its_seed():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2500, 3))
    a, b = median_bandwidth(x, seed=1), median_bandwidth(x, seed=1)
    assert a == b and a == pytest.approx(np.median(pdist(x[::5])), rel=0.05)


def test_relative_distance_scores_outliers_lowest_and_matches_brute_force():
    rng = np.random.default_rng(5)
    x, y, outliers = _blobs_with_outliers(rng)
    result = relative_distance(x, y, k=3)
    assert result.method == "relative_distance" and result.params == {"k": 3}
    # the class-0 point inside class 1 is the least typical; the isolated ones sit with the blobs' borders
    order = np.argsort(result.scores)
    assert order[0] == 162 and set(outliers) <= set(order[:6])
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    same = np.where(y[:, None] == y[None, :], d, np.inf)
    other = np.where(y[:, None] != y[None, :], d, np.inf)
    expected = np.sort(other, axis=1)[:, :3].mean(axis=1) / np.sort(same, axis=1)[:, :3].mean(axis=1)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-10)


def test_relative_distance_small_classes_and_duplicates():
    x = np.array([[0.0], [0.0], [0.0], [5.0], [6.0], [7.0], [9.0]])
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    result = relative_distance(x, y, k=2)
    assert np.isinf(result.scores[:3]).all()  # two exact same-class duplicates
    assert np.isnan(result.scores[6]) and result.n_undefined == 1  # class 2 has no 2 other members
    with pytest.raises(DataError, match=r"^labels: expected at least 2 classes for relative_distance, "
                                        r"got only class 1$"):
        relative_distance(x, np.ones(7, int))
    with pytest.raises(ConfigError, match=r"^k: expected an integer >= 1, got 0$"):
        relative_distance(x, y, k=0)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, y: kernel_density(x[:, 0], y), DataError,
     "features: expected an array (n, D) or (n, *shape), got shape (10,)"),
    (lambda x, y: kernel_density(x, y[:-1]), DataError,
     "labels: expected an integer array of shape (n,) = (10,) like features, got shape (9,)"),
    (lambda x, y: kernel_density(x, y - 1), DataError,
     "labels: expected non-negative integer class labels, got -1 at [0]"),
    (lambda x, y: kernel_density(x, y + 0.5), DataError,
     "labels: expected non-negative integer class labels, got 0.5 at [0]"),
    (lambda x, y: kernel_density(np.where(x > 0, np.inf, x), y), DataError,
     "features: expected finite values, got inf at [0, 0]"),
    (lambda x, y: kernel_density(x, y, bandwidth=0.0), ConfigError,
     "bandwidth: expected a number in (0, inf), got 0.0"),
    (lambda x, y: kernel_density(x, y, block_rows=2.5), ConfigError,
     "block_rows: expected an integer >= 1, got 2.5"),
    (lambda x, y: relative_distance(x.astype(str), y), DataError,
     "features: expected a real-valued array, got dtype <U32"),
])
def test_feature_errors(call, error, message):
    x = np.abs(np.random.default_rng(6).normal(size=(10, 2)))
    y = np.array([0, 1] * 5)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(x, y)


def test_learning_speed_from_counts_equals_the_records_bit_for_bit():
    """The training summary's per-model counts give the scores of the full (E, K, n) records, bit for bit."""
    from fitscope.train import TrainConfig, train_ensemble

    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=70) > 0).astype(np.int64)
    masks = rng.random((6, 70)) < 0.7
    masks[0, :3] = masks[1:, :3] = False  # three examples in no subset: NaN either way
    r = train_ensemble("mlp:8x1", x, y, config=TrainConfig(epochs=6, batch_size=16, record="full"), seeds=range(6),
                       masks=masks)
    for subset in (None, masks):
        old = learning_speed(r.records.correct_array(), in_subset=subset)
        new = learning_speed(correct_counts=r.summary.correct_epochs, epochs=r.summary.epochs, in_subset=subset)
        np.testing.assert_array_equal(new.scores, old.scores)  # NaN where NaN, every other bit equal
        assert new.params == old.params
    assert np.isnan(new.scores[:3]).all() and 0 < np.nanmean(new.scores) < 1


def test_learning_speed_counts_are_checked():
    counts = np.array([[0, 2, 4], [1, 1, 3]])
    np.testing.assert_array_equal(learning_speed(correct_counts=counts, epochs=4).scores, [0.125, 0.375, 0.875])
    with pytest.raises(DataError, match=re.escape("correct_counts: expected integer counts of epochs in [0, 3], "
                                                  "got 4 at [0, 2]")):
        learning_speed(correct_counts=counts, epochs=3)
    with pytest.raises(DataError, match=re.escape("correct_counts: expected integer counts of epochs in [0, 4], "
                                                  "got 0.5 at [0, 0]")):
        learning_speed(correct_counts=counts + np.array([[0.5, 0, 0], [0, 0, 0]]), epochs=4)
    with pytest.raises(ConfigError, match=r"^epochs: expected the epochs counted over with correct_counts, "):
        learning_speed(correct_counts=counts)
    with pytest.raises(ConfigError, match=r"^epochs: expected the epochs counted over with correct_counts, "):
        learning_speed(counts[None] > 0, epochs=4)
    with pytest.raises(ConfigError, match=r"^correct_records, confidence, correct_counts: expected exactly one of "
                                          r"them, got correct_counts and correct_records$"):
        learning_speed(counts[None] > 0, correct_counts=counts, epochs=4)
