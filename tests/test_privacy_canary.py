"""The canary audit: planting, the guessing attack, and a bound that never exceeds the true label-DP eps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.canary import canary_audit, canary_bound, guess_canaries, plant_canaries
from fitscope.privacy.label_dp import rr_with_prior

K = 10


def _rr_procedure(eps, seed):
    """A procedure that is exactly eps-label-DP and memorizes its noisy labels perfectly (the strongest case)."""

    def train_and_predict(x, y):
        noisy = rr_with_prior(y, np.full((len(y), K), 1.0 / K), eps, seed=seed)
        return np.eye(K)[noisy]

    return train_and_predict


def test_planting_changes_exactly_m_labels_to_other_labels():
    y = np.arange(500) % K
    c = plant_canaries(y, 60, K, seed=0)
    assert len(c.indices) == 60 == len(np.unique(c.indices))
    assert (c.y != y).sum() == 60 and (c.labels != c.original).all()
    np.testing.assert_array_equal(c.y[c.indices], c.labels)
    shifts = np.bincount((c.labels - c.original) % K, minlength=K)
    assert shifts[0] == 0 and (shifts[1:] > 0).sum() >= 7


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_the_bound_never_exceeds_the_true_eps_of_randomized_response(eps):
    x = np.zeros((3000, 1))
    y = np.random.default_rng(1).integers(0, K, 3000)
    bounds = []
    for seed in range(5):
        audit = canary_audit(_rr_procedure(eps, seed + 100), x, y, m=2000, n_classes=K, seed=seed, claimed_eps=eps)
        assert audit.eps_lower <= eps, audit
        bounds.append(audit.eps_lower)
    # and the K-ary bound is tight: with 2000 canaries it gets most of the way to eps
    assert np.mean(bounds) > 0.6 * eps


def test_the_binary_formula_would_be_loose_and_a_non_private_procedure_is_caught():
    y = np.random.default_rng(0).integers(0, K, 400)
    memorize = lambda x, labels: np.eye(K)[labels]  # noqa: E731 - non-private: returns its training labels
    audit = canary_audit(memorize, np.zeros((400, 1)), y, m=100, n_classes=K, seed=0, claimed_eps=math.inf)
    assert audit.correct == 100 and audit.accuracy == 1.0
    low = 0.05 ** (1 / 100)  # one-sided Clopper-Pearson lower bound with x = m
    assert audit.accuracy_low == pytest.approx(low)
    assert audit.eps_lower == pytest.approx(math.log(8 * low / (1 - low)))
    assert audit.eps_lower > math.log(low / (1 - low)) + 2  # log(L - 1) = log 8 above the binary formula


def test_chance_accuracy_gives_zero_and_bounds_are_ordered():
    b = canary_bound(11, 100, K)  # about 1/9: chance among the 9 other labels
    assert b.eps_lower == 0.0 and b.chance == pytest.approx(1 / 9)
    b = canary_bound(70, 100, K, confidence=0.95)
    assert b.accuracy_ci[0] < b.accuracy_low < b.accuracy < b.accuracy_ci[1]
    assert 0 < b.eps_lower < b.eps_estimate == pytest.approx(math.log(8 * 0.7 / 0.3))


def test_guess_excludes_the_original_label():
    y = np.array([0, 1, 2, 3, 4])
    c = plant_canaries(y, 5, K, seed=0)
    probs = np.eye(K)[y]  # a model that still predicts the original labels
    guesses = guess_canaries(probs, c)
    assert (guesses != c.original).all()


def test_bad_input():
    with pytest.raises(ConfigError, match=r"^m: expected an integer in \[1, 10\], got 11$"):
        plant_canaries(np.arange(10) % 3, 11, 3, seed=0)
    with pytest.raises(ConfigError, match=r"^n_classes: expected an integer >= 3, got 2$"):
        plant_canaries(np.arange(10) % 2, 2, 2, seed=0)
    with pytest.raises(ConfigError, match="confidence"):
        canary_bound(3, 10, K, confidence=1.0)
    c = plant_canaries(np.arange(10) % 3, 2, 3, seed=0)
    with pytest.raises(DataError, match=r"probs: expected model outputs of shape \(n, C\) = \(10, 3\)"):
        guess_canaries(np.zeros((10, 4)), c)
