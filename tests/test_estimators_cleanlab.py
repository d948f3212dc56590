"""The cleanlab baseline wrapper, on synthetic probabilities where the flipped labels are known."""

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from fitscope.errors import ConfigError, DataError
from fitscope.estimators import cleanlab_issues, detection_metrics, label_issue_scores, mask_metrics


def synthetic(n=600, c=4, noise=0.15, seed=0):
    """Confident probabilities of the true class; a ``noise`` fraction of labels moved to another class."""
    rng = np.random.default_rng(seed)
    true = np.arange(n) % c
    logits = rng.normal(0.0, 1.0, (n, c))
    logits[np.arange(n), true] += 3.0
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = true.copy()
    flipped = rng.choice(n, int(noise * n), replace=False)
    labels[flipped] = (true[flipped] + rng.integers(1, c, len(flipped))) % c
    noisy = np.zeros(n, bool)
    noisy[flipped] = True
    return labels, probs, noisy


def test_matches_cleanlab_and_finds_flips():
    labels, probs, noisy = synthetic()
    result = cleanlab_issues(labels, probs)
    assert np.array_equal(result.mask, find_label_issues(labels, probs))
    np.testing.assert_allclose(result.scores, 1.0 - get_label_quality_scores(labels, probs), atol=1e-12)
    assert result.method == "self_confidence" and result.n_flagged == result.mask.sum()
    # the default label quality is self-confidence: the same ranking as our self-confidence signal
    np.testing.assert_allclose(result.scores, 1.0 - probs[np.arange(len(labels)), labels], atol=1e-12)
    m = mask_metrics(result.mask, noisy)
    assert m["k"] == noisy.sum() and m["flagged"] == result.n_flagged
    assert m["precision"] > 0.8 and m["recall"] > 0.8
    assert detection_metrics(result.scores, noisy)["auroc"] > 0.95
    # our score on the same probabilities is at least as good as cleanlab's label quality here
    ours = label_issue_scores(labels, probs)
    assert detection_metrics(ours, noisy)["auroc"] >= detection_metrics(result.scores, noisy)["auroc"] - 0.01


def test_ranking_puts_the_flagged_rows_first_each_group_by_quality():
    labels, probs, noisy = synthetic(seed=2)
    probs = probs.copy()
    probs[7] = np.nan
    result = cleanlab_issues(labels, probs)
    order = np.argsort(-np.nan_to_num(result.ranking, nan=-np.inf), kind="stable")
    flagged = int(result.mask.sum())
    assert result.mask[order[:flagged]].all() and not result.mask[order[flagged:]].any()
    for group in (order[:flagged], order[flagged:-1]):  # within a group: by cleanlab's issue score
        assert np.all(np.diff(result.scores[group]) <= 1e-12)
    assert np.isnan(result.ranking[7]) and order[-1] == 7
    assert detection_metrics(result.ranking, noisy)["auroc"] > 0.9


def test_nan_rows_are_left_out():
    labels, probs, _ = synthetic()
    probs = probs.copy()
    probs[[3, 10, 50]] = np.nan
    result = cleanlab_issues(labels, probs)
    assert not result.mask[[3, 10, 50]].any() and np.isnan(result.scores[[3, 10, 50]]).all()
    keep = np.setdiff1d(np.arange(len(labels)), [3, 10, 50])
    assert np.array_equal(result.mask[keep], find_label_issues(labels[keep], probs[keep]))
    assert np.isfinite(result.scores[keep]).all()


def test_other_method_and_slightly_off_sums():
    labels, probs, noisy = synthetic(seed=1)
    off = probs.astype(np.float16).astype(np.float64)  # float16 rounding: rows sum to 1 within ~1e-3
    result = cleanlab_issues(labels, off, method="normalized_margin")
    assert result.method == "normalized_margin"
    assert detection_metrics(result.scores, noisy)["auroc"] > 0.95


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        (dict(method="entropy"), ConfigError, "method: expected one of"),
        (dict(labels=np.array([0, 1, 5])), DataError, "below C = 4"),
        (dict(probs=np.full((3, 4), np.nan)), DataError, "at least 2 rows with a prediction"),
        (dict(probs=np.ones((3, 4))), DataError, "summing to 1"),
    ],
)
def test_bad_input(kwargs, error, needle):
    labels = kwargs.pop("labels", np.array([0, 1, 2]))
    probs = kwargs.pop("probs", np.full((3, 4), 0.25))
    with pytest.raises(error, match=needle):
        cleanlab_issues(labels, probs, **kwargs)


def test_mask_metrics():
    noisy = np.array([True, True, False, False, False])
    assert mask_metrics(np.array([True, False, True, False, False]), noisy) == {
        "precision": 0.5, "recall": 0.5, "flagged": 2, "k": 2}
    assert np.isnan(mask_metrics(np.zeros(5, bool), noisy)["precision"])
    with pytest.raises(DataError, match="shape"):
        mask_metrics(np.zeros(4, bool), noisy)
