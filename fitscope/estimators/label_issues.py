"""Label-issue detection: a per-example score that the given label is wrong, and its evaluation.

Notation: K models, n training examples, C classes, F model families;
``labels`` ``(n,)`` are the given (possibly noisy) labels, ``pred_probs``
``(n, C)`` out-of-fold predicted probabilities (from models that did not
train on the example).

- :func:`out_of_fold_probs`: out-of-fold probabilities from the subset models
  the audit trains anyway: the mean softmax over the models whose subset
  does not hold the example.
- :func:`combine_oof_probs`: one ``(n, C)`` mixture of several families'
  out-of-fold probabilities (the audit's networks, and for tabular inputs the
  scikit-learn families of :func:`fitscope.train.sklearn_oof_probs`).
- :func:`label_issue_scores`: rank-average of suspicion signals.
- :func:`detection_metrics`: AUROC, precision and recall at the true noise count.

The score, in two steps, neither of which sees which labels are truly wrong:

1. *Families.* When ``pred_probs`` is a mapping ``{family: (n, C)}``, the
   families are mixed, ``p = sum_f w_f p_f``, with the weights that make the
   mixture the most likely model of the given labels (``weighting="likelihood"``,
   :data:`DEFAULT_FAMILY_WEIGHTING`: maximum likelihood over the simplex by EM,
   ``max_w sum_i log sum_f w_f p_f[i, y_i]``); ``"mean"`` weighs them
   equally. The given labels are noisy, but the noise is the same for every
   family, so the family that predicts them best out of fold is the one that
   models the true classes best; a mixture is better calibrated than its members.
2. *Signals.* Each signal is oriented so that higher = more suspicious,
   turned into a rank scaled to (0, 1) over the examples where it is defined
   (ties averaged), and the score is the weighted mean of the ranks an example
   has (:data:`DEFAULT_WEIGHTS`):

    ==================== ======================================= ==============
    signal               suspicion                               default weight
    ==================== ======================================= ==============
    self_confidence      1 - p[y]              (out-of-fold)     1
    normalized_margin    -(p[y] - max_{c!=y} p[c]) (out-of-fold) 1
    mem                  mem                   (when given)      0 (off)
    cscore               -cscore               (when given)      0.25
    learning_speed       -learning_speed       (when given)      4
    margin               -margin               (when given)      0 (off)
    hidden_density       -hidden_density       (when given)      0 (off)
    ==================== ======================================= ==============

   Learning speed (how early the networks fit the given label, in their own
   training subsets) carries the most weight: it is the one signal that is not
   another out-of-fold opinion of the same label, and a wrong label is learned
   late, if at all. When it is not given (scikit-learn families alone) the
   out-of-fold signals decide alone.

The default weights and family weighting were chosen once, in advance, by
``bench/label_issue_rule.py`` on data sets and noise settings that
``bench/label_issues.py`` does not report (``make_classification`` and
``make_blobs`` sets of other shapes and seeds, digits with 25% pair flips,
mnist1d with 30% uniform flips): among a fixed grid of rules, the one at least
as good as the best cleanlab variant (cleanlab fed any single family's
out-of-fold probabilities) on the most of those sets, ties broken by the
mean AUROC margin over it (the chosen rule: at least as high on 13 of 13, mean
AUROC margin +0.011); the grid, every rule's figures and the choice are
in ``bench/results/label_issue_rule.json`` (a test keeps these defaults equal
to the recorded choice). Nothing is fitted per data set except the family
mixture of step 1.

The score is monotone in every signal (raising any suspicion never lowers
it). An example missing a signal (a NaN row of ``pred_probs``, a NaN
memorization) is scored from the others, weights renormalized; with none it
gets NaN. Pass ``weights`` to change any weight (0 drops a signal).

Memorization is evidence only when the models fit their training subsets: a
mislabeled example that no model fits has ``mem`` near 0, below that of
atypical but correct examples, and then pushes the score the wrong way (a
rank average cannot tell a weak signal from a strong one). Give ``mem`` when
the subset models reach ~100% training accuracy, or lower its weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.results import LabelIssueResult
from fitscope.estimators.validation import check_labels_and_probs, check_scores
from fitscope.validation import (
    check_binary,
    check_choice,
    check_int,
    check_mask,
    check_number,
    check_real,
    message,
)

# Default models per softmax block: about this many float64 entries (32 MB).
_BLOCK_ENTRIES = 4_000_000

#: Default weight of each signal in :func:`label_issue_scores`: the rule chosen by ``bench/label_issue_rule.py``
#: (``bench/results/label_issue_rule.json``, key ``chosen``). Hidden-space density stays off (0): the earlier
#: benchmark found it helped on hard cases and hurt on easy ones, and the rule bench does not compute it.
DEFAULT_WEIGHTS: dict[str, float] = {
    "self_confidence": 1.0,
    "normalized_margin": 1.0,
    "mem": 0.0,
    "cscore": 0.25,
    "learning_speed": 4.0,
    "margin": 0.0,
    "hidden_density": 0.0,
}

#: How :func:`combine_oof_probs` (and :func:`label_issue_scores` given several families) weighs the families.
FAMILY_WEIGHTINGS = ("likelihood", "mean")
#: The default of :data:`FAMILY_WEIGHTINGS`, chosen with :data:`DEFAULT_WEIGHTS`.
DEFAULT_FAMILY_WEIGHTING = "likelihood"

# Floor of a family's probability of the given label in the likelihood (a 0 would make log(0)).
_P_FLOOR = 1e-12


@dataclass(frozen=True)
class FamilyMixture:
    """Several families' out-of-fold probabilities mixed into one (:func:`combine_oof_probs`).

    Attributes:
        probs: ``(n, C)`` float64 mixture ``sum_f w_f p_f`` (weights renormalized over the
            families with a prediction for the row; an all-NaN row where none has one).
        families: the F family names, in the order given.
        weights: ``(F,)`` float64 mixture weights, summing to 1.
        accuracy: ``(F,)`` float64 each family's out-of-fold accuracy on the given labels
            (rows with a prediction).
        log_likelihood: mean log-probability of the given labels under the mixture
            (rows where every family has a prediction).
        weighting: ``"likelihood"`` or ``"mean"``.
        iterations: EM iterations run (0 for ``"mean"``).
    """

    probs: np.ndarray
    families: tuple[str, ...]
    weights: np.ndarray
    accuracy: np.ndarray
    log_likelihood: float
    weighting: str
    iterations: int

    def weight_of(self) -> dict[str, float]:
        """``{family: weight}``."""
        return {f: float(w) for f, w in zip(self.families, self.weights)}


def out_of_fold_probs(logits, in_subset, *, block_models: int | None = None) -> np.ndarray:
    """Out-of-fold predicted probabilities: mean softmax over the models that did not train on the example.

    Args:
        logits: ``(K, n, C)`` real: the K subset models' logits on the n training
            examples (``EnsembleResult.train_logits``).
        in_subset: ``(K, n)`` bool membership masks (``EnsembleResult.masks``).
        block_models: models per softmax block; default so that a block holds
            about 4 million float64 entries (``block_models * n * C``, 32 MB).

    Returns:
        ``(n, C)`` float64 rows summing to 1; an all-NaN row for an example that
        every model trained on.

    Raises:
        DataError: wrong shapes, non-finite logits, non-bool ``in_subset``.
        ConfigError: ``block_models`` is not a positive integer.
    """
    raw = logits
    logits = check_real(logits, "logits", axes=("K", "n", "C"), check_values=False)  # values: checked on the sums
    k, n, c = logits.shape
    in_subset = check_mask(in_subset, "in_subset", axes=("K", "n"), shape=(k, n), like="logits",
                           meaning="True = example i is in model k's training subset")
    if block_models is None:
        block_models = max(1, _BLOCK_ENTRIES // (n * c))
    else:
        block_models = check_int(block_models, "block_models")
    held_out = ~in_subset
    total = np.zeros((n, c))
    for start in range(0, k, block_models):  # blocks of models
        z = logits[start:start + block_models].astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        total += np.einsum("kn,knc->nc", held_out[start:start + block_models].astype(np.float64), z)
    if not np.isfinite(total).all():  # a non-finite logit makes its softmax NaN; name the first
        check_real(raw, "logits", axes=("K", "n", "C"))
    count = np.count_nonzero(held_out, axis=0)
    out = np.full((n, c), np.nan)
    np.divide(total, count[:, None], out=out, where=count[:, None] > 0)
    return out


def _suspicion_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` scaled to (0, 1) over the non-NaN entries, ``(rank - 0.5) / n_valid``; NaN kept."""
    out = np.full(values.shape, np.nan)
    valid = ~np.isnan(values)
    if valid.any():
        out[valid] = (rankdata(values[valid]) - 0.5) / np.count_nonzero(valid)
    return out


def combine_oof_probs(family_probs: Mapping, labels, *, weighting: str = DEFAULT_FAMILY_WEIGHTING,
                      max_iter: int = 1000, tol: float = 1e-9) -> FamilyMixture:
    """Mix several model families' out-of-fold probabilities into one ``(n, C)`` (see the module docstring).

    ``"likelihood"`` weights maximize the mean log-probability of the given labels,
    ``mean_i log sum_f w_f p_f[i, y_i]``, over the simplex, by EM (each step
    ``w_f <- mean_i w_f p_f[i, y_i] / sum_g w_g p_g[i, y_i]``, which never lowers the
    likelihood), fitted on the rows where every family has a prediction; a family's
    probability of the given label is floored at 1e-12. ``"mean"``: equal weights.

    Args:
        family_probs: ``{family: (n, C) out-of-fold probabilities}`` (all-NaN rows allowed), at
            least one family, every array of the same shape.
        labels: ``(n,)`` given labels, integers in [0, C).
        weighting: one of :data:`FAMILY_WEIGHTINGS`.
        max_iter: most EM iterations.
        tol: stop when no weight moves by more than this.

    Returns:
        :class:`FamilyMixture`.

    Raises:
        DataError: no family, shapes that differ, bad probabilities or labels.
        ConfigError: an unknown ``weighting``, a bad ``max_iter`` or ``tol``.
    """
    weighting = check_choice(weighting, "weighting", FAMILY_WEIGHTINGS)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_number(tol, "tol", low=0.0, high=1.0, open_low=True)
    if not isinstance(family_probs, Mapping) or not family_probs:
        got = "an empty mapping" if isinstance(family_probs, Mapping) else type(family_probs).__name__
        raise DataError(message("pred_probs", "a mapping {family: (n, C) probabilities} with at least one family",
                                got))
    families = tuple(str(f) for f in family_probs)
    checked = []
    for name, probs in family_probs.items():
        try:
            labels_checked, p = check_labels_and_probs(labels, probs)
        except DataError as err:
            raise DataError(f"pred_probs[{name!r}]: {str(err).removeprefix('pred_probs: ')}") from None
        if checked and p.shape != checked[0].shape:
            raise DataError(message(f"pred_probs[{name!r}]", f"shape {checked[0].shape} like "
                                    f"pred_probs[{families[0]!r}]", f"shape {p.shape}"))
        checked.append(p)
    labels = labels_checked
    stack = np.stack(checked)  # (F, n, C)
    f_count, n, _ = stack.shape
    have = ~np.isnan(stack[:, :, 0])  # (F, n)
    rows = np.arange(n)
    given = stack[:, rows, labels]  # (F, n), NaN where a family has no prediction
    accuracy = np.array([np.mean(stack[f, have[f]].argmax(axis=1) == labels[have[f]]) if have[f].any()
                         else np.nan for f in range(f_count)])
    complete = have.all(axis=0)
    weights = np.full(f_count, 1.0 / f_count)
    iterations = 0
    fit_on = np.maximum(given[:, complete], _P_FLOOR)  # (F, n_complete)
    if weighting == "likelihood" and f_count > 1 and complete.any():
        for iterations in range(1, max_iter + 1):
            joint = weights[:, None] * fit_on
            new = (joint / joint.sum(axis=0, keepdims=True)).mean(axis=1)
            moved = float(np.abs(new - weights).max())
            weights = new
            if moved <= tol:
                break
    log_likelihood = float(np.mean(np.log(weights @ fit_on))) if complete.any() else float("nan")
    mass = np.where(have, weights[:, None], 0.0)  # (F, n)
    total = mass.sum(axis=0)
    mixed = np.einsum("fn,fnc->nc", mass, np.nan_to_num(stack, nan=0.0))
    out = np.full(mixed.shape, np.nan)
    np.divide(mixed, total[:, None], out=out, where=total[:, None] > 0)
    return FamilyMixture(probs=out, families=families, weights=weights, accuracy=accuracy,
                         log_likelihood=log_likelihood, weighting=weighting, iterations=iterations)


def label_issue_scores(labels, pred_probs, *, mem=None, cscore=None, learning_speed=None, margin=None,
                       hidden_density=None, weights: Mapping[str, float] | None = None,
                       family_weighting: str = DEFAULT_FAMILY_WEIGHTING) -> LabelIssueResult:
    """Score every training example for "the given label is wrong" (higher = more likely wrong).

    See the module docstring for the families' mixture, the signals, their orientation and default weights.
    Nothing here sees which labels are truly wrong.

    Args:
        labels: ``(n,)`` given labels, integers in [0, C).
        pred_probs: ``(n, C)`` out-of-fold predicted probabilities, rows summing to 1
            (all-NaN rows allowed: no prediction for that example), e.g.
            :func:`out_of_fold_probs` or ``cross_val_predict(..., method="predict_proba")``;
            or ``{family: (n, C)}``, mixed by :func:`combine_oof_probs` (call it yourself to
            see the family weights; passing its ``probs`` gives the same scores).
        mem: optional ``(n,)`` memorization (high = suspicious); array or :class:`MemorizationResult`.
        cscore: optional ``(n,)`` C-score (low = suspicious); array or :class:`CScoreResult`.
        learning_speed: optional ``(n,)`` learning speed (low = suspicious); array or :class:`ProxyScores`.
        margin: optional ``(n,)`` training margin of the given label, e.g. the records'
            margin averaged over epochs and models (low = suspicious).
        hidden_density: optional ``(n,)`` kernel density of the example among its given class in a
            trained model's hidden space (low = suspicious); array or :class:`ProxyScores`.
        weights: optional ``{signal: weight >= 0}`` overriding :data:`DEFAULT_WEIGHTS`.
        family_weighting: how several families are mixed, one of :data:`FAMILY_WEIGHTINGS`.

    Returns:
        :class:`LabelIssueResult` with ``scores`` ``(n,)``, the ``signals`` used, their
        ``weights`` and ``ranks`` ``(S, n)``, and the out-of-fold ``given_label_prob``
        and ``normalized_margin`` (of the mixture, for several families).

    Raises:
        DataError: shapes, labels outside [0, C), probabilities outside [0, 1] or
            rows not summing to 1, non-finite extra signals (NaN is allowed).
        ConfigError: an unknown signal name or a negative weight in ``weights``,
            every weight of the available signals is 0, or an unknown ``family_weighting``.
    """
    if isinstance(pred_probs, Mapping):
        pred_probs = combine_oof_probs(pred_probs, labels, weighting=family_weighting).probs
    else:
        check_choice(family_weighting, "family_weighting", FAMILY_WEIGHTINGS)
    labels, probs = check_labels_and_probs(labels, pred_probs)
    n, c = probs.shape
    w = dict(DEFAULT_WEIGHTS)
    for key, value in (weights or {}).items():
        if key not in DEFAULT_WEIGHTS:
            raise ConfigError(f"weights: expected keys among {', '.join(DEFAULT_WEIGHTS)}, got {key!r}")
        w[key] = check_number(value, f"weights[{key!r}]", low=0.0, high=np.inf, open_high=True)

    rows = np.arange(n)
    given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    norm_margin = given - others.max(axis=1)  # NaN rows stay NaN

    suspicion: dict[str, np.ndarray] = {"self_confidence": 1.0 - given, "normalized_margin": -norm_margin}
    extras = {"mem": (mem, 1.0), "cscore": (cscore, -1.0), "learning_speed": (learning_speed, -1.0),
              "margin": (margin, -1.0), "hidden_density": (hidden_density, -1.0)}
    for key, (value, sign) in extras.items():
        if value is not None:
            suspicion[key] = sign * check_scores(value, key, n)
    names = tuple(key for key in suspicion if w[key] > 0)
    if not names:
        raise ConfigError(f"weights: expected a positive weight for at least one of {', '.join(suspicion)}, "
                          "got all 0")
    ranks = np.stack([_suspicion_ranks(suspicion[key]) for key in names])
    weight_arr = np.asarray([w[key] for key in names])
    present = ~np.isnan(ranks)
    mass = (present * weight_arr[:, None]).sum(axis=0)
    weighted = np.where(present, ranks, 0.0) * weight_arr[:, None]
    scores = np.full(n, np.nan)
    np.divide(weighted.sum(axis=0), mass, out=scores, where=mass > 0)
    return LabelIssueResult(scores=scores, signals=names, weights=weight_arr, ranks=ranks,
                            given_label_prob=given, normalized_margin=norm_margin)


def detection_metrics(scores, is_noisy) -> dict:
    """How well ``scores`` find the noisy labels: AUROC and precision/recall at the true noise count.

    ``k`` is the number of noisy examples; the top k are the k highest scores
    (ties broken by index, NaN scores ranked last). With that k, precision and
    recall at k are equal; both are reported.

    Args:
        scores: ``(n,)`` real, higher = more likely noisy (NaN = least suspicious);
            an array or a :class:`LabelIssueResult`.
        is_noisy: ``(n,)`` bool (or 0/1): the label of example i was corrupted.

    Returns:
        ``{"auroc": float, "precision_at_k": float, "recall_at_k": float, "k": int}``
        (AUROC from ``sklearn.metrics.roc_auc_score``).

    Raises:
        DataError: shapes differ, ``is_noisy`` is not 0/1, or it holds no noisy
            or no clean example (AUROC is undefined).
    """
    noisy = check_binary(is_noisy, "is_noisy", axes=("n",))
    n = noisy.shape[0]
    s = check_scores(scores, "scores", n, like="is_noisy")
    k = int(np.count_nonzero(noisy))
    if k == 0 or k == n:
        raise DataError(f"is_noisy: expected both noisy and clean examples, got {k} noisy of {n}")
    nan = np.isnan(s)
    if nan.any():
        floor = np.min(s[~nan]) - 1.0 if (~nan).any() else 0.0
        s = np.where(nan, floor, s)
    top = np.argsort(-s, kind="stable")[:k]
    hits = int(np.count_nonzero(noisy[top]))
    return {"auroc": float(roc_auc_score(noisy, s)), "precision_at_k": hits / k, "recall_at_k": hits / k, "k": k}
