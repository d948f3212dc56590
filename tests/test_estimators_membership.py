"""LiRA and the loss threshold on synthetic shadow scores with a known separation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.stats import norm

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.membership import (
    lira_leave_one_out,
    lira_offline,
    lira_online,
    lira_score,
    loss_threshold_scores,
    membership_metrics,
)


def _synthetic(k=64, n=400, shift=1.0, spread=0.0, seed=0):
    """Scores N(difficulty_i, 1) out, N(difficulty_i + shift, 1) in; difficulty_i ~ N(0, spread)."""
    rng = np.random.default_rng(seed)
    member = rng.random((k, n)) < 0.5
    difficulty = rng.normal(0, spread, n)
    scores = difficulty + rng.normal(0, 1, (k, n)) + shift * member
    return scores, member


def test_lira_score_matches_the_definition_and_is_finite_when_p_is_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = np.array([0, 1, 2, 3, 0])
    p = np.exp(log_softmax(logits, axis=1))
    py = p[np.arange(5), labels]
    np.testing.assert_allclose(lira_score(logits, labels), np.log(py) - np.log(1 - py), rtol=1e-10)
    np.testing.assert_allclose(lira_score(p, labels, probs=True), np.log(py) - np.log(1 - py), rtol=1e-8)
    big = np.array([[200.0, 0.0, -5.0]])
    assert lira_score(big, [0])[0] == pytest.approx(200 - np.log(1 + np.exp(-5)), rel=1e-12)
    # (K, n, C) with shared labels, float16 like the audit's stored logits
    stacked = np.stack([logits, -logits]).astype(np.float16)
    assert lira_score(stacked, labels).shape == (2, 5)
    np.testing.assert_allclose(loss_threshold_scores(logits, labels), np.log(py), rtol=1e-10)


def test_bad_outputs_and_labels_are_one_line_errors():
    with pytest.raises(DataError, match="labels: expected class indices below C = 3"):
        lira_score(np.zeros((2, 3)), [0, 3])
    with pytest.raises(DataError, match=re.escape("logits_or_probs: expected probabilities in [0, 1] with probs=True "
                                                   "(pass probs=False for logits), got 2.0 at [0, 0]")):
        lira_score(np.full((2, 3), 2.0), [0, 1], probs=True)
    with pytest.raises(DataError, match="logits_or_probs"):
        lira_score(np.array([[np.nan, 0.0]]), [0])


def test_online_auc_matches_the_analytic_value():
    shift = 1.0
    scores, member = _synthetic(shift=shift, spread=0.0)
    attack = lira_leave_one_out(scores, member, method="online")
    m = membership_metrics(attack, member)
    # equal variances: the likelihood ratio is monotone in the score, AUC = Phi(shift / sqrt(2))
    assert m.auc == pytest.approx(norm.cdf(shift / np.sqrt(2)), abs=0.01)
    offline = membership_metrics(lira_leave_one_out(scores, member, method="offline"), member)
    assert offline.auc == pytest.approx(norm.cdf(shift / np.sqrt(2)), abs=0.01)


def test_lira_beats_the_threshold_when_difficulty_varies():
    scores, member = _synthetic(shift=2.0, spread=3.0)
    threshold = membership_metrics(scores, member)  # a global threshold on the raw score
    for method in ("online", "offline"):
        for fixed in (False, True):
            m = membership_metrics(lira_leave_one_out(scores, member, method=method, global_variance=fixed), member)
            assert m.auc > threshold.auc + 0.1
            assert m.tpr_at_1pct > threshold.tpr_at_1pct + 0.1
    # LiRA removes the per-example difficulty: close to the analytic AUC of the shift alone
    m = membership_metrics(lira_leave_one_out(scores, member, global_variance=True), member)
    assert m.auc == pytest.approx(norm.cdf(2.0 / np.sqrt(2)), abs=0.015)


def test_leave_one_out_equals_explicit_shadow_fits():
    scores, member = _synthetic(k=12, n=30, seed=3)
    for method, fn in (("online", lira_online), ("offline", lira_offline)):
        for fixed in (False, True):
            loo = lira_leave_one_out(scores, member, method=method, global_variance=fixed)
            for k in (0, 5, 11):
                others = np.arange(12) != k
                explicit = fn(scores[others], member[others], scores[k], global_variance=fixed)
                np.testing.assert_allclose(loo[k], explicit, rtol=1e-9, atol=1e-9)


def test_online_against_scipy_gaussians():
    scores, member = _synthetic(k=10, n=5, seed=1)
    target = np.array([0.3, -1.0, 2.0, 0.0, 1.0])
    got = lira_online(scores, member, target)
    for i in range(5):
        a, b = scores[member[:, i], i], scores[~member[:, i], i]
        if len(a) >= 2 and len(b) >= 2:
            want = (norm.logpdf(target[i], a.mean(), a.std(ddof=1)) - norm.logpdf(target[i], b.mean(), b.std(ddof=1)))
            assert got[i] == pytest.approx(want, rel=1e-9)
    off = lira_offline(scores, member, target)
    b = scores[~member[:, 0], 0]
    assert off[0] == pytest.approx(norm.logcdf(target[0], b.mean(), b.std(ddof=1)), rel=1e-9)


def test_too_few_shadow_models_is_a_one_line_error():
    scores, member = _synthetic(k=3, n=20)
    with pytest.raises(ConfigError, match=r"^scores: expected at least 4 models \(rows K\) .*, got K = 3$") as info:
        lira_leave_one_out(scores, member)
    assert "\n" not in str(info.value)
    scores, member = _synthetic(k=8, n=20)
    member[:] = False
    member[0] = True  # one "in" model per example
    with pytest.raises(ConfigError, match="^shadow_in: expected on average at least 2 shadow models per example "
                                          "trained with it"):
        lira_online(scores, member, scores[0])
    # offline needs only "out" shadows
    assert np.isfinite(lira_offline(scores, member, scores[0])).all()
    with pytest.raises(ConfigError, match="method"):
        lira_leave_one_out(*_synthetic(k=8, n=10), method="both")


def test_metrics_low_fpr_points_and_bad_truth():
    scores = np.r_[np.arange(1000.0), 1000 + np.arange(10.0)]
    truth = np.r_[np.zeros(1000, bool), np.ones(10, bool)]
    m = membership_metrics(scores, truth)
    assert m.auc == 1.0 and m.tpr_at_0_1pct == 1.0 and m.tpr_at_1pct == 1.0
    # reversed: every member below every non-member
    m = membership_metrics(-scores, truth)
    assert m.auc == 0.0 and m.tpr_at_1pct == 0.0
    with_nan = scores.copy()
    with_nan[0] = np.nan
    assert membership_metrics(with_nan, truth).dropped == 1
    with pytest.raises(DataError, match="is_member"):
        membership_metrics(scores, truth.astype(int))
    with pytest.raises(DataError, match="both members and non-members"):
        membership_metrics(scores[:5], truth[:5])


def _brute_force_tpr_at(scores, truth, fpr):
    """Largest TPR over every threshold t (flag score >= t, t = each distinct score or +inf) with FPR <= fpr,
    and the highest threshold that reaches it (the fewest false positives)."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    pos, neg = t.sum(), (~t).sum()
    best, best_threshold = 0.0, np.inf
    for threshold in np.unique(s)[::-1]:
        flagged = s >= threshold
        f = (flagged & ~t).sum() / neg
        if f <= fpr and (flagged & t).sum() / pos > best:
            best, best_threshold = (flagged & t).sum() / pos, threshold
    return best, best_threshold


@pytest.mark.parametrize("non_members, level", [(1000, 0.01), (10000, 0.001)])
def test_tpr_at_low_fpr_uses_the_full_curve(non_members, level):
    # 100 members. The top 20 scores are each shared by one member and one non-member (ties): the ROC
    # curve runs straight through (k / non_members, k / 100), k = 1..20, and roc_curve's default
    # drop_intermediate=True keeps only the ends of that straight run, so at FPR `level` (10 non-members)
    # it reports TPR 1% instead of the 10% that the threshold at the 10th tied score reaches.
    rng = np.random.default_rng(0)
    top = 100.0 + np.arange(20.0)[::-1]
    rest = non_members - 20
    scores = np.r_[top, top, rng.normal(0, 1, rest), rng.normal(0, 1, 80)]
    truth = np.r_[np.ones(20, bool), np.zeros(20 + rest, bool), np.ones(80, bool)]
    from sklearn.metrics import roc_curve

    fpr_d, tpr_d, _ = roc_curve(truth, scores)  # the dropped curve the metrics used before
    assert float(tpr_d[fpr_d <= level].max()) == pytest.approx(0.01)
    m = membership_metrics(scores, truth)
    for at in (0.001, 0.005, 0.01, 0.02):
        expected, threshold = _brute_force_tpr_at(scores, truth, at)
        assert m.tpr_at(at) == pytest.approx(expected)
        assert m.threshold_at(at) == threshold
        flagged = scores >= m.threshold_at(at)  # the threshold's own rates, as the leak rate counts them
        assert (flagged & ~truth).sum() / non_members <= at
        assert (flagged & truth).sum() / 100 == pytest.approx(expected)
    assert _brute_force_tpr_at(scores, truth, level)[0] == pytest.approx(0.10)
    assert {0.01: m.tpr_at_1pct, 0.001: m.tpr_at_0_1pct}[level] == pytest.approx(0.10)


def test_lira_functions_are_exported_from_fitscope_estimators():
    import fitscope.estimators as estimators
    from fitscope.estimators import membership

    public = ["MembershipMetrics", "lira_leave_one_out", "lira_offline", "lira_online", "lira_score",
              "loss_threshold_scores", "membership_metrics"]
    for name in public:
        assert name in estimators.__all__, name
        assert getattr(estimators, name) is getattr(membership, name), name
    from fitscope.estimators import lira_online as exported  # the import a user writes

    assert exported is lira_online
