"""The cleanlab baseline of label-issue detection (confident learning), on the audit's out-of-fold probabilities.

A thin wrapper around ``cleanlab.filter.find_label_issues`` (the boolean mask
of confident learning, ``filter_by="prune_by_noise_rate"``, cleanlab's
default) and ``cleanlab.rank.get_label_quality_scores`` (a per-example label
quality in [0, 1]; ``method="self_confidence"`` by default), turned into an
issue score ``1 - quality`` so that higher = more suspicious, like
:func:`fitscope.estimators.label_issue_scores`.

Rows of ``pred_probs`` that are all NaN (an example that every subset model
trained on, so no out-of-fold prediction) are left out of cleanlab's call;
they get ``mask = False`` and ``scores = NaN`` (:func:`detection_metrics`
ranks NaN last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitscope.errors import DataError
from fitscope.estimators.validation import check_labels_and_probs
from fitscope.validation import check_choice

#: Methods of ``cleanlab.rank.get_label_quality_scores``.
QUALITY_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass(frozen=True)
class CleanlabResult:
    """cleanlab's verdict per example.

    Attributes:
        mask: ``(n,)`` bool, ``find_label_issues``'s flags (False where no prediction).
        scores: ``(n,)`` float64, ``1 - get_label_quality_scores`` (higher = more likely wrong; NaN where
            no prediction).
        method: the label-quality method used for ``scores``.
    """

    mask: np.ndarray
    scores: np.ndarray
    method: str

    @property
    def n_flagged(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def ranking(self) -> np.ndarray:
        """``find_label_issues`` as a ranking, for AUROC and precision at k: ``(n,)`` float64
        ``mask + 0.5 * scores`` (the flagged rows first, each group ordered by ``scores``; NaN where
        no prediction)."""
        return np.where(self.mask, 1.0, 0.0) + 0.5 * self.scores


def cleanlab_issues(labels, pred_probs, *, method: str = "self_confidence",
                    filter_by: str = "prune_by_noise_rate") -> CleanlabResult:
    """cleanlab's label-issue mask and issue score (``1 - label quality``) from out-of-fold probabilities.

    Args:
        labels: ``(n,)`` given labels, integers in [0, C).
        pred_probs: ``(n, C)`` out-of-fold probabilities (all-NaN rows allowed), e.g.
            :func:`fitscope.estimators.out_of_fold_probs`.
        method: ``get_label_quality_scores`` method, one of :data:`QUALITY_METHODS`.
        filter_by: ``find_label_issues``'s ``filter_by``.

    Returns:
        :class:`CleanlabResult`.

    Raises:
        DataError: shapes, labels outside [0, C), bad probabilities, fewer than 2 rows with a prediction.
        ConfigError: an unknown ``method``.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    method = check_choice(method, "method", QUALITY_METHODS)
    labels, probs = check_labels_and_probs(labels, pred_probs)
    n, c = probs.shape
    have = ~np.isnan(probs).any(axis=1)
    if np.count_nonzero(have) < 2:
        raise DataError(f"pred_probs: expected at least 2 rows with a prediction, got {int(np.count_nonzero(have))}")
    p = probs[have]
    p = p / p.sum(axis=1, keepdims=True)  # cleanlab checks sums tightly; float16 logits leave ~1e-7
    y = labels[have]
    mask = np.zeros(n, bool)
    mask[have] = find_label_issues(y, p, filter_by=filter_by, n_jobs=1)
    scores = np.full(n, np.nan)
    scores[have] = 1.0 - get_label_quality_scores(y, p, method=method)
    return CleanlabResult(mask=mask, scores=scores, method=method)


def mask_metrics(mask, is_noisy) -> dict:
    """Precision and recall of a boolean flag set against the true noisy labels, and how many it flags."""
    mask = np.asarray(mask, bool)
    noisy = np.asarray(is_noisy, bool)
    if mask.shape != noisy.shape:
        raise DataError(f"mask: expected shape {noisy.shape} like is_noisy, got {mask.shape}")
    flagged = int(mask.sum())
    hits = int((mask & noisy).sum())
    k = int(noisy.sum())
    return {"precision": hits / flagged if flagged else float("nan"),
            "recall": hits / k if k else float("nan"), "flagged": flagged, "k": k}
