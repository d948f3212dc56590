"""Estimators: per-example scores from the arrays that training produced. No training, no I/O.

Notation throughout: K models, n training examples, m test examples, C
classes, E epochs. The inputs are the arrays of
:class:`fitscope.train.EnsembleResult`: ``masks`` ``(K, n)`` bool membership,
per-epoch records ``(E, K, n)``, ``train_logits`` ``(K, n, C)`` and
``test_logits`` ``(K, m, C)``; correctness is ``logits.argmax(-1) == labels``.

- memorization and influence (Feldman & Zhang 2020) with 95% intervals: :func:`memorization_scores`,
  :func:`influence_scores`, :func:`high_influence_pairs` and, in blocks of
  training rows without the ``(n, m)`` matrix and under a target false-discovery
  rate (a permutation null), :func:`high_influence_pairs_streamed`; the intervals
  themselves: :func:`wilson_interval` (a rate), :func:`newcombe_interval` (a difference of two rates);
- holdout C-score (Jiang et al. 2021): :func:`cscore_holdout`;
- C-score proxies: :func:`learning_speed`, :func:`kernel_density`, :func:`relative_distance`;
- label issues: :func:`out_of_fold_probs`, :func:`combine_oof_probs` (several families' out-of-fold
  probabilities mixed, a :class:`FamilyMixture`), :func:`label_issue_scores`, :func:`detection_metrics`;
  the cleanlab baseline on the same probabilities: :func:`cleanlab_issues`, :func:`mask_metrics`;
- calibration: :func:`reliability_bins` (a :class:`ReliabilityBins`) and
  :func:`expected_calibration_error` (15 equal-width bins by default, :data:`ECE_BINS`);
- membership inference (LiRA, Carlini et al. 2022, and the loss-threshold baseline): :func:`lira_score`,
  :func:`lira_online`, :func:`lira_offline`, :func:`lira_leave_one_out`, :func:`loss_threshold_scores`,
  :func:`membership_metrics` (a :class:`MembershipMetrics`).

Bad arrays raise :class:`~fitscope.errors.DataError`, bad options
:class:`~fitscope.errors.ConfigError`, each with a one-line message.
"""

from fitscope.estimators.calibration import ECE_BINS, ReliabilityBins, expected_calibration_error, reliability_bins
from fitscope.estimators.cleanlab_baseline import CleanlabResult, cleanlab_issues, mask_metrics
from fitscope.estimators.cscore import cscore_holdout
from fitscope.estimators.label_issues import (
    DEFAULT_FAMILY_WEIGHTING,
    DEFAULT_WEIGHTS,
    FAMILY_WEIGHTINGS,
    FamilyMixture,
    combine_oof_probs,
    detection_metrics,
    label_issue_scores,
    out_of_fold_probs,
)
from fitscope.estimators.membership import (
    MembershipMetrics,
    lira_leave_one_out,
    lira_offline,
    lira_online,
    lira_score,
    loss_threshold_scores,
    membership_metrics,
)
from fitscope.estimators.memorization import (
    high_influence_pairs,
    high_influence_pairs_streamed,
    influence_scores,
    memorization_scores,
)
from fitscope.estimators.intervals import newcombe_interval, wilson_interval
from fitscope.estimators.neighbours import NeighbourConflicts, late_examples, nearest_neighbour, neighbour_conflicts
from fitscope.estimators.subsets import min_models, subset_masks
from fitscope.estimators.proxies import kernel_density, learning_speed, median_bandwidth, relative_distance
from fitscope.estimators.results import (
    CScoreResult,
    InfluencePairs,
    InfluenceResult,
    LabelIssueResult,
    MemorizationResult,
    ProxyScores,
)

__all__ = [
    "ECE_BINS",
    "ReliabilityBins",
    "expected_calibration_error",
    "reliability_bins",
    "NeighbourConflicts",
    "late_examples",
    "nearest_neighbour",
    "neighbour_conflicts",
    "min_models",
    "subset_masks",
    "DEFAULT_FAMILY_WEIGHTING",
    "DEFAULT_WEIGHTS",
    "FAMILY_WEIGHTINGS",
    "FamilyMixture",
    "CScoreResult",
    "CleanlabResult",
    "InfluencePairs",
    "InfluenceResult",
    "LabelIssueResult",
    "MembershipMetrics",
    "MemorizationResult",
    "ProxyScores",
    "cleanlab_issues",
    "combine_oof_probs",
    "cscore_holdout",
    "detection_metrics",
    "high_influence_pairs",
    "high_influence_pairs_streamed",
    "influence_scores",
    "kernel_density",
    "label_issue_scores",
    "learning_speed",
    "lira_leave_one_out",
    "lira_offline",
    "lira_online",
    "lira_score",
    "loss_threshold_scores",
    "median_bandwidth",
    "mask_metrics",
    "membership_metrics",
    "memorization_scores",
    "newcombe_interval",
    "out_of_fold_probs",
    "relative_distance",
    "wilson_interval",
]
