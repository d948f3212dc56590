"""Membership inference: LiRA (Carlini et al. 2022) and the loss-threshold baseline, from shadow-model outputs.

Notation: K models, each trained on a subset of the n training examples;
``in_mask[k, i]`` is True when example i is in model k's training set; C
classes. Everything here is arrays in, scores out; nothing trains.

- :func:`lira_score`: the per-example statistic LiRA fits Gaussians to,
  ``phi = log p_y - log sum_{y' != y} p_y'`` (the logit of the confidence in
  the given label), computed from logits with a log-sum-exp so it stays
  finite where ``p_y`` rounds to 1.
- :func:`lira_online`: for each example, Gaussians fitted to the shadow
  scores of the models trained with it ("in") and without it ("out"); the
  attack statistic is the log-likelihood ratio
  ``log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out)``.
- :func:`lira_offline`: only the "out" Gaussian; the paper's one-sided test
  ``Pr[Z < s]``, ``Z ~ N(mu_out, sd_out)``, returned as its log (``log_ndtr``)
  so that ranks do not tie where the probability rounds to 1.
- ``global_variance=True``: one variance for all examples (per side), the
  pooled within-example variance of the shadow scores (sum of squared
  deviations from each example's own mean over the sum of ``count - 1``):
  the paper's "fixed variance" variant, better with few shadow models.
- :func:`loss_threshold_scores`: the baseline (Yeom et al. 2018): minus the
  target model's cross-entropy; one global threshold on it is the attack.
- :func:`lira_leave_one_out`: the standard evaluation: each model in turn is
  the target and the other K - 1 its shadows; gives a ``(K, n)`` attack score
  whose ground truth is ``in_mask``.
- :func:`membership_metrics`: ROC AUC, TPR at 0.1% and 1% FPR and the full ROC
  curve (``sklearn.metrics.roc_curve(..., drop_intermediate=False)``: every
  distinct score is a threshold, so no point below a low FPR is dropped) of
  scores against membership.

Higher attack scores always mean "more likely a member".

How many shadow models LiRA needs: a Gaussian per example and side needs at
least 2 scores for its variance. :func:`lira_online` and
:func:`lira_offline` raise a one-line :class:`~fitscope.errors.ConfigError`
unless the shadows hold, on average over examples, at least
:data:`MIN_SHADOWS_PER_SIDE` = 2 "in" and 2 "out" scores (offline: 2 "out"),
and :func:`lira_leave_one_out` needs at least :data:`MIN_MODELS` = 4 models
and the same averages after leaving any one model out. An individual example
with fewer than 2 scores on a side uses the pooled variance of that side;
one with none on a side gets a NaN score, left out of the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp

from fitscope.errors import ConfigError, DataError
from fitscope.validation import check_choice, check_labels, check_mask, check_real, first_index, message, shorten

#: Fewest shadow scores per example and side, on average over examples.
MIN_SHADOWS_PER_SIDE = 2
#: Fewest models for the leave-one-model-out evaluation.
MIN_MODELS = 4
#: The false positive rates at which the true positive rate is reported.
LOW_FPRS = (0.001, 0.01)
_IN = "True = example i is in model k's training set"
_VAR_FLOOR = 1e-12  # a variance of 0 (identical scores) would make the Gaussian a spike


# --------------------------------------------------------------------------- scores


def _labels_for(labels, shape: tuple[int, ...]) -> np.ndarray:
    """Labels ``(n,)`` or matching the leading axes ``(..., n)`` of the outputs, as int64."""
    arr = np.asarray(labels)
    if arr.ndim == 1:
        lab = check_labels(arr, "labels", shape[-2], like="the outputs' example axis")
    else:
        if arr.shape != shape[:-1]:
            raise DataError(f"labels: expected shape (n,) = ({shape[-2]},) or {shape[:-1]} like the outputs' "
                            f"leading axes, got {arr.shape}")
        lab = check_labels(arr.ravel(), "labels").reshape(arr.shape)
    if lab.size and int(lab.max()) >= shape[-1]:
        raise DataError(f"labels: expected class indices below C = {shape[-1]} (the outputs' last axis), "
                        f"got {int(lab.max())}")
    return np.broadcast_to(lab, shape[:-1])


def _log_probs(outputs, labels, probs: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(log-softmax outputs (..., n, C) float64, labels broadcast to (..., n))``."""
    names = ("K", "n", "C") if np.ndim(outputs) == 3 else ("n", "C")
    arr = np.asarray(check_real(outputs, "logits_or_probs", axes=names), dtype=np.float64)
    if arr.shape[-1] < 2:
        raise DataError(f"logits_or_probs: expected outputs over C >= 2 classes, got shape {arr.shape}")
    lab = _labels_for(labels, arr.shape)
    if probs:
        bad = (arr < 0) | (arr > 1)
        if bad.any():
            raise DataError(message("logits_or_probs", "probabilities in [0, 1] with probs=True "
                                    "(pass probs=False for logits)", f"{shorten(arr[bad][0])} at {first_index(bad)}"))
        with np.errstate(divide="ignore"):
            logp = np.log(arr)
        logp = logp - logsumexp(logp, axis=-1, keepdims=True)  # renormalize rows that are off by rounding
    else:
        logp = arr - logsumexp(arr, axis=-1, keepdims=True)
    return logp, lab


def lira_score(logits_or_probs, labels, *, probs: bool = False) -> np.ndarray:
    """LiRA's per-example statistic ``log p_y - log sum_{y' != y} p_y'`` of every output.

    From logits ``z`` this is ``z_y - logsumexp_{y' != y} z_{y'}`` (the
    softmax normalizer cancels), finite even where ``p_y`` is 1 in floating
    point. From probabilities (``probs=True``) it is the same on their logs;
    a probability of exactly 1 (or 0) gives +inf (-inf).

    Args:
        logits_or_probs: ``(n, C)`` or ``(K, n, C)`` logits (default) or probabilities.
        labels: ``(n,)`` labels (shared) or ``(K, n)``.
        probs: the outputs are probabilities, not logits.

    Returns:
        ``(n,)`` or ``(K, n)`` float64 scores.
    """
    logp, lab = _log_probs(logits_or_probs, labels, probs)
    own = np.take_along_axis(logp, lab[..., None], axis=-1)[..., 0]
    others = logp.copy()
    np.put_along_axis(others, lab[..., None], -np.inf, axis=-1)
    with np.errstate(divide="ignore"):
        return own - logsumexp(others, axis=-1)


def loss_threshold_scores(logits_or_probs, labels, *, probs: bool = False) -> np.ndarray:
    """The loss-threshold baseline's attack score: minus the cross-entropy of the given label.

    Args:
        logits_or_probs: ``(n, C)`` or ``(K, n, C)`` logits (default) or probabilities.
        labels: ``(n,)`` or ``(K, n)`` labels.
        probs: the outputs are probabilities.

    Returns:
        ``(n,)`` or ``(K, n)`` float64, ``log p_y`` (higher = lower loss = more likely a member).
    """
    logp, lab = _log_probs(logits_or_probs, labels, probs)
    return np.take_along_axis(logp, lab[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- Gaussian fits


@dataclass(frozen=True)
class _Side:
    """Per-example Gaussian of one side: means, variances (per example or pooled) and counts, each ``(n,)``."""

    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray


def _fit(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray, global_variance: bool) -> _Side:
    """Gaussian fits from sums over the shadows: ``total``, ``total_sq`` and ``count``, any shape ``(..., n)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        ss = np.maximum(total_sq - count * np.where(count > 0, mean, 0.0) ** 2, 0.0)  # sum of squared deviations
        dof = np.maximum(count - 1, 0)
        pooled = ss.sum(axis=-1, keepdims=True) / np.maximum(dof.sum(axis=-1, keepdims=True), 1)
        if global_variance:
            var = np.broadcast_to(pooled, mean.shape)
        else:
            var = np.where(count >= 2, ss / np.maximum(dof, 1), pooled)
    return _Side(mean, np.maximum(var, _VAR_FLOOR), count)


def _log_normal(x: np.ndarray, side: _Side) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * side.var) + (x - side.mean) ** 2 / side.var)


def _sums(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-example sums over models of scores, squared scores and counts, for members and non-members."""
    s_in = np.where(member, scores, 0.0)
    s_out = np.where(member, 0.0, scores)
    return (s_in.sum(0), (s_in**2).sum(0), member.sum(0).astype(np.float64),
            s_out.sum(0), (s_out**2).sum(0), (~member).sum(0).astype(np.float64))


def _check_shadows(scores, in_mask) -> tuple[np.ndarray, np.ndarray]:
    scores = check_real(scores, "shadow_scores", axes=("K", "n")).astype(np.float64)
    in_mask = check_mask(in_mask, "shadow_in", axes=("K", "n"), shape=scores.shape, like="shadow_scores", meaning=_IN)
    return scores, in_mask


def _check_targets(target_scores, n: int) -> np.ndarray:
    arr = np.asarray(target_scores)
    if arr.ndim == 1:
        return check_real(arr, "target_scores", axes=("n",), shape=(n,), like="shadow_scores").astype(np.float64)
    return check_real(arr, "target_scores", axes=("T", "n"), shape=(None, n), like="shadow_scores").astype(np.float64)


def _need(count_mean: float, side: str, what: str) -> None:
    if count_mean < MIN_SHADOWS_PER_SIDE:
        raise ConfigError(message(
            "shadow_in", f"on average at least {MIN_SHADOWS_PER_SIDE} shadow models per example trained {side} it "
            "(LiRA fits a Gaussian to each side; train more shadow models, e.g. 16 or more at ratio 0.5)",
            f"{count_mean:.2g} {what}"))


def lira_online(shadow_scores, shadow_in, target_scores, *, global_variance: bool = False) -> np.ndarray:
    """LiRA online: log-likelihood ratio of the target's score under the "in" vs the "out" Gaussian.

    Args:
        shadow_scores: ``(K, n)`` :func:`lira_score` of K shadow models on every example.
        shadow_in: ``(K, n)`` bool, True where the shadow model trained on the example.
        target_scores: ``(n,)`` or ``(T, n)`` :func:`lira_score` of the target model(s).
        global_variance: one pooled variance per side for all examples (the paper's fixed variance).

    Returns:
        ``(n,)`` or ``(T, n)`` float64 ``log N(s; mu_in, var_in) - log N(s; mu_out, var_out)``; NaN where an
        example has no "in" or no "out" shadow score.

    Raises:
        ConfigError: fewer than 2 "in" or 2 "out" shadow scores per example on average.
    """
    scores, member = _check_shadows(shadow_scores, shadow_in)
    target = _check_targets(target_scores, scores.shape[1])
    t_in, t2_in, c_in, t_out, t2_out, c_out = _sums(scores, member)
    _need(float(c_in.mean()), "with", "(mean 'in' count)")
    _need(float(c_out.mean()), "without", "(mean 'out' count)")
    fit_in = _fit(t_in, t2_in, c_in, global_variance)
    fit_out = _fit(t_out, t2_out, c_out, global_variance)
    return _log_normal(target, fit_in) - _log_normal(target, fit_out)


def lira_offline(shadow_scores, shadow_in, target_scores, *, global_variance: bool = False) -> np.ndarray:
    """LiRA offline: one-sided test of the target's score against the "out" Gaussian only.

    The statistic is ``log Pr[Z < s]`` with ``Z ~ N(mu_out, var_out)`` (the
    paper's ``1 - Pr[Z > s]``, as a log so that the highest scores do not
    all round to 1). Only the shadow models trained *without* each example
    are used, so no "in" shadow model is needed.

    Args:
        shadow_scores: ``(K, n)`` :func:`lira_score` of the shadow models.
        shadow_in: ``(K, n)`` bool membership of the shadow models (selects the "out" scores).
        target_scores: ``(n,)`` or ``(T, n)`` scores of the target model(s).
        global_variance: one pooled variance for all examples.

    Returns:
        ``(n,)`` or ``(T, n)`` float64; NaN where an example has no "out" shadow score.

    Raises:
        ConfigError: fewer than 2 "out" shadow scores per example on average.
    """
    scores, member = _check_shadows(shadow_scores, shadow_in)
    target = _check_targets(target_scores, scores.shape[1])
    _, _, _, t_out, t2_out, c_out = _sums(scores, member)
    _need(float(c_out.mean()), "without", "(mean 'out' count)")
    fit_out = _fit(t_out, t2_out, c_out, global_variance)
    return log_ndtr((target - fit_out.mean) / np.sqrt(fit_out.var))


def lira_leave_one_out(scores, in_mask, *, method: str = "online", global_variance: bool = False) -> np.ndarray:
    """The standard LiRA evaluation: each model in turn is the target, the other K - 1 its shadows.

    Vectorized with running sums: the target's own score is subtracted from
    the per-example sums, so each target's Gaussians use exactly the other
    models (including, with ``global_variance``, the pooled variance).

    Args:
        scores: ``(K, n)`` :func:`lira_score` of every model on every example.
        in_mask: ``(K, n)`` bool membership.
        method: ``"online"`` or ``"offline"``.
        global_variance: pooled variance per side (see :func:`lira_online`).

    Returns:
        ``(K, n)`` float64 attack scores; row k attacks model k, and ``in_mask`` is the ground truth.
        NaN where the other models leave a side empty for that example.

    Raises:
        ConfigError: fewer than :data:`MIN_MODELS` models, an unknown ``method``, or (after leaving any
            one model out) fewer than 2 "in" / 2 "out" shadows per example on average.
    """
    method = check_choice(method, "method", ("online", "offline"))
    scores = check_real(scores, "scores", axes=("K", "n")).astype(np.float64)
    member = check_mask(in_mask, "in_mask", axes=("K", "n"), shape=scores.shape, like="scores", meaning=_IN)
    k = scores.shape[0]
    if k < MIN_MODELS:
        raise ConfigError(message("scores", f"at least {MIN_MODELS} models (rows K) for LiRA's leave-one-model-out "
                                  "evaluation (shadow models trained with and without each example)", f"K = {k}"))
    t_in, t2_in, c_in, t_out, t2_out, c_out = _sums(scores, member)
    # (K, n) sums over every model but the target
    own_in = np.where(member, scores, 0.0)
    own_out = np.where(member, 0.0, scores)
    li_t, li_t2, li_c = t_in - own_in, t2_in - own_in**2, c_in - member
    lo_t, lo_t2, lo_c = t_out - own_out, t2_out - own_out**2, c_out - ~member
    if method == "online":
        _need(float(li_c.mean(axis=1).min()), "with", "(smallest mean 'in' count when one model is the target)")
    _need(float(lo_c.mean(axis=1).min()), "without", "(smallest mean 'out' count when one model is the target)")
    fit_out = _fit(lo_t, lo_t2, lo_c.astype(np.float64), global_variance)
    if method == "offline":
        return log_ndtr((scores - fit_out.mean) / np.sqrt(fit_out.var))
    fit_in = _fit(li_t, li_t2, li_c.astype(np.float64), global_variance)
    return _log_normal(scores, fit_in) - _log_normal(scores, fit_out)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MembershipMetrics:
    """How well an attack's scores separate members from non-members.

    Attributes:
        auc: ROC AUC.
        tpr_at_0_1pct: true positive rate at 0.1% false positive rate (the
            largest TPR of a threshold with FPR <= 0.001).
        tpr_at_1pct: the same at 1% FPR.
        fpr: the full ROC curve's false positive rates (``sklearn.metrics.roc_curve`` with
            ``drop_intermediate=False``: one point per distinct score, none dropped).
        tpr: its true positive rates.
        thresholds: its thresholds (``thresholds[j]`` gives ``(fpr[j], tpr[j])``).
        members: number of member (score, truth) pairs scored.
        non_members: number of non-member pairs.
        dropped: pairs left out because their score was NaN.
    """

    auc: float
    tpr_at_0_1pct: float
    tpr_at_1pct: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    members: int
    non_members: int
    dropped: int

    def tpr_at(self, fpr: float) -> float:
        """The largest true positive rate of a threshold whose false positive rate is at most ``fpr``."""
        ok = self.fpr <= fpr
        return float(self.tpr[ok].max()) if ok.any() else 0.0

    def threshold_at(self, fpr: float) -> float:
        """The score threshold (flag ``score >= t``) of :meth:`tpr_at`: the highest one that reaches that TPR."""
        ok = np.flatnonzero(self.fpr <= fpr)
        j = int(ok[np.argmax(self.tpr[ok])]) if len(ok) else 0
        return float(self.thresholds[j])

    def row(self) -> dict:
        """The headline numbers as a dict (for tables and JSON)."""
        return {"auc": self.auc, "tpr_at_0.1%_fpr": self.tpr_at_0_1pct, "tpr_at_1%_fpr": self.tpr_at_1pct,
                "members": self.members, "non_members": self.non_members}


def membership_metrics(scores, is_member) -> MembershipMetrics:
    """ROC AUC, TPR at 0.1% and 1% FPR and the ROC curve of attack ``scores`` against the truth.

    Args:
        scores: attack scores of any shape (higher = member); NaN entries are left out.
        is_member: bool of the same shape.

    Raises:
        DataError: shapes differ, or no member or no non-member is left.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    s = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(is_member)
    if truth.dtype != np.bool_ or truth.shape != s.shape:
        raise DataError(f"is_member: expected a bool array of shape {s.shape} like scores, "
                        f"got dtype {truth.dtype} shape {truth.shape}")
    if np.isinf(s).any():  # +-inf sorts fine but breaks roc_curve's thresholds; map to just beyond the range
        finite = s[np.isfinite(s)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        s = np.where(s == np.inf, hi + 1.0, np.where(s == -np.inf, lo - 1.0, s))
    keep = ~np.isnan(s)
    s, truth = s[keep], truth[keep]
    members, non = int(truth.sum()), int((~truth).sum())
    if members == 0 or non == 0:
        raise DataError(f"is_member: expected both members and non-members among the scored pairs, "
                        f"got {members} members and {non} non-members")
    # the full curve: drop_intermediate=True (sklearn's default) drops collinear points, e.g. runs of tied
    # member/non-member scores, and with them the best TPR below a low FPR (and threshold_at's threshold)
    fpr, tpr, thresholds = roc_curve(truth, s, drop_intermediate=False)
    out = MembershipMetrics(auc=float(roc_auc_score(truth, s)), tpr_at_0_1pct=0.0, tpr_at_1pct=0.0, fpr=fpr,
                            tpr=tpr, thresholds=thresholds, members=members, non_members=non,
                            dropped=int((~keep).sum()))
    return MembershipMetrics(**{**out.__dict__, "tpr_at_0_1pct": out.tpr_at(LOW_FPRS[0]),
                                "tpr_at_1pct": out.tpr_at(LOW_FPRS[1])})
