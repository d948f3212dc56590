"""Holdout C-score on synthetic per-ratio arrays."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.estimators import CScoreResult, cscore_holdout


def _ratio_models(rng: np.random.Generator, ratio: float, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Models at one ratio whose held-out accuracy on every example is ``ratio`` and training accuracy 1."""
    in_subset = rng.random((k, n)) < ratio
    correct = in_subset | (rng.random((k, n)) < ratio)
    return correct, in_subset


def test_cscore_averages_held_out_accuracy_over_ratios():
    rng = np.random.default_rng(0)
    ratios = [0.9, 0.1, 0.5]  # given out of order
    data = {r: _ratio_models(rng, r, k, 400) for r, k in zip(ratios, (3000, 300, 600))}
    result = cscore_holdout(data)
    assert isinstance(result, CScoreResult) and result.method == "holdout"
    np.testing.assert_allclose(result.ratios, [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(result.n_models, [300, 600, 3000])
    assert result.per_ratio.shape == (3, 400) and result.counts.shape == (3, 400)
    # per ratio, held-out accuracy ~ the ratio itself; the C-score ~ their mean
    np.testing.assert_allclose(result.per_ratio.mean(axis=1), [0.1, 0.5, 0.9], atol=0.01)
    assert abs(result.cscore.mean() - 0.5) < 0.01
    np.testing.assert_allclose(result.cscore, result.per_ratio.mean(axis=0))
    np.testing.assert_array_equal(result.counts[0], (~data[0.1][1]).sum(axis=0))
    assert result.n_undefined == 0 and result.n_examples == 400


def test_hand_computed_case_with_never_held_out_examples():
    # two ratios, 3 examples; example 2 is in every subset at ratio 0.8 and at both ratios for example 1
    in_a = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], bool)
    cor_a = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 1]], bool)
    in_b = np.array([[0, 1, 1], [1, 1, 1]], bool)
    cor_b = np.array([[1, 1, 0], [0, 0, 1]], bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cscore_holdout({0.3: (cor_a, in_a), 0.8: (cor_b, in_b)})
    # ratio 0.3: example 0 held out by models 1, 2 -> (1 + 0) / 2; example 1 never; example 2 by 0, 1 -> 1/2
    np.testing.assert_allclose(result.per_ratio[0], [0.5, np.nan, 0.5])
    # ratio 0.8: example 0 held out by model 0 -> 1; examples 1 and 2 never
    np.testing.assert_allclose(result.per_ratio[1], [1.0, np.nan, np.nan])
    np.testing.assert_allclose(result.cscore, [0.75, np.nan, 0.5])
    np.testing.assert_array_equal(result.counts, [[2, 0, 2], [1, 0, 0]])
    assert result.n_undefined == 1
    frame = result.to_frame()
    assert list(frame.columns) == ["index", "cscore", "cscore_0.3", "cscore_0.8"]


def test_single_ratio_equals_mean_held_out_correctness():
    rng = np.random.default_rng(1)
    in_subset = rng.random((50, 30)) < 0.7
    correct = rng.random((50, 30)) < 0.6
    result = cscore_holdout({0.7: (correct.astype(np.int8), in_subset)})
    expected = (correct & ~in_subset).sum(axis=0) / (~in_subset).sum(axis=0)
    np.testing.assert_allclose(result.cscore, expected)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1, float("nan"), "0.5", True])
def test_ratio_outside_open_unit_interval(ratio):
    pair = (np.ones((2, 3), bool), np.ones((2, 3), bool))
    with pytest.raises(ConfigError, match=re.escape(
            f"correct_by_ratio key (a subset ratio): expected a number in (0, 1), got {ratio!r}")):
        cscore_holdout({ratio: pair})


@pytest.mark.parametrize("arg, error, message", [
    ({}, ConfigError, "correct_by_ratio: expected at least one subset ratio, got an empty dict"),
    ([(0.5, None)], DataError, "correct_by_ratio: expected a dict {ratio: (correct, in_subset)}, got list"),
    ({0.5: np.ones((2, 3), bool)}, DataError,
     "correct_by_ratio[0.5]: expected a pair (correct, in_subset), got ndarray"),
    ({0.5: (np.ones((2, 3), bool),)}, DataError,
     "correct_by_ratio[0.5]: expected a pair (correct, in_subset), got tuple of length 1"),
    ({0.5: (np.ones((2, 3), bool), np.ones((2, 3), np.uint8))}, DataError,
     "correct_by_ratio[0.5] in_subset: expected a bool array (True = example i is in model k's training subset), "
     "got dtype uint8"),
    ({0.5: (np.ones((2, 3), bool), np.ones((3, 3), bool))}, DataError,
     "correct_by_ratio[0.5] in_subset: expected a bool array of shape (K_s, n) = (2, 3) like correct, "
     "got shape (3, 3)"),
    ({0.2: (np.ones((2, 3), bool), np.ones((2, 3), bool)), 0.5: (np.ones((2, 4), bool), np.ones((2, 4), bool))},
     DataError, "correct_by_ratio[0.5] correct: expected a 2-D bool or 0/1 array (K_s, n) with n = 3 like "
                "the other ratios, got shape (2, 4)"),
])
def test_errors(arg, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        cscore_holdout(arg)
