"""Label-issue detection: a per-example score that the given label is wrong, and its evaluation.

Notation: K models, n training examples, C classes; ``labels`` ``(n,)`` are
the given (possibly noisy) labels, ``pred_probs`` ``(n, C)`` out-of-fold
predicted probabilities (from models that did not train on the example).

- :func:`out_of_fold_probs`: out-of-fold probabilities from the subset models
  the audit trains anyway: the mean softmax over the models whose subset
  does not hold the example.
- :func:`label_issue_scores`: rank-average of suspicion signals.
- :func:`detection_metrics`: AUROC, precision and recall at the true noise count.

The score. Each signal is oriented so that higher = more suspicious, turned
into a rank scaled to (0, 1) over the examples where it is defined (ties
averaged), and the score is the weighted mean of the ranks an example has:

    ==================== ======================================= ======
    signal               suspicion                               weight
    ==================== ======================================= ======
    self_confidence      1 - p[y]              (out-of-fold)     1.0
    normalized_margin    -(p[y] - max_{c!=y} p[c]) (out-of-fold) 1.0
    mem                  mem                   (when given)      0.25
    cscore               -cscore               (when given)      0.25
    learning_speed       -learning_speed       (when given)      0.25
    margin               -margin               (when given)      0.25
    hidden_density       -hidden_density       (when given)      0 (off)
    ==================== ======================================= ======

The hidden-space density is accepted but off by default (weight 0; see
``bench/results/label_issues*.json``: it helped on the hard cases and hurt
slightly on the easy ones); pass ``weights={"hidden_density": 0.25}`` to use it.
The out-of-fold signals carry the most weight: a model that never saw the
example and still disagrees with its label is the most direct evidence. The
score is monotone in every signal (raising any suspicion never lowers it). An
example missing a signal (a NaN row of ``pred_probs``, a NaN memorization)
is scored from the others, weights renormalized; with none it gets NaN.
Pass ``weights`` to change any weight (0 drops a signal).

Memorization is evidence only when the models fit their training subsets: a
mislabeled example that no model fits has ``mem`` near 0, below that of
atypical but correct examples, and then pushes the score the wrong way (a
rank average cannot tell a weak signal from a strong one). Give ``mem`` when
the subset models reach ~100% training accuracy, or lower its weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.results import LabelIssueResult
from fitscope.estimators.validation import check_labels_and_probs, check_scores
from fitscope.validation import check_binary, check_int, check_mask, check_number, check_real

# Default models per softmax block: about this many float64 entries (32 MB).
_BLOCK_ENTRIES = 4_000_000

#: Default weight of each signal in :func:`label_issue_scores`.
DEFAULT_WEIGHTS: dict[str, float] = {
    "self_confidence": 1.0,
    "normalized_margin": 1.0,
    "mem": 0.25,
    "cscore": 0.25,
    "learning_speed": 0.25,
    "margin": 0.25,
    # Off by default: measured on bench/label_issues.py, weight 0.25 gained on pair flips and 40% noise
    # (AUROC +0.0004 to +0.0010) but lost on the easy cases (-0.0001 to -0.0003), there falling below cleanlab.
    "hidden_density": 0.0,
}


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


def label_issue_scores(labels, pred_probs, *, mem=None, cscore=None, learning_speed=None, margin=None,
                       hidden_density=None, weights: Mapping[str, float] | None = None) -> LabelIssueResult:
    """Score every training example for "the given label is wrong" (higher = more likely wrong).

    See the module docstring for the signals, their orientation and default weights.

    Args:
        labels: ``(n,)`` given labels, integers in [0, C).
        pred_probs: ``(n, C)`` out-of-fold predicted probabilities, rows summing to 1
            (all-NaN rows allowed: no prediction for that example), e.g.
            :func:`out_of_fold_probs` or ``cross_val_predict(..., method="predict_proba")``.
        mem: optional ``(n,)`` memorization (high = suspicious); array or :class:`MemorizationResult`.
        cscore: optional ``(n,)`` C-score (low = suspicious); array or :class:`CScoreResult`.
        learning_speed: optional ``(n,)`` learning speed (low = suspicious); array or :class:`ProxyScores`.
        margin: optional ``(n,)`` training margin of the given label, e.g. the records'
            margin averaged over epochs and models (low = suspicious).
        hidden_density: optional ``(n,)`` kernel density of the example among its given class in a
            trained model's hidden space (low = suspicious); array or :class:`ProxyScores`.
        weights: optional ``{signal: weight >= 0}`` overriding :data:`DEFAULT_WEIGHTS`.

    Returns:
        :class:`LabelIssueResult` with ``scores`` ``(n,)``, the ``signals`` used, their
        ``weights`` and ``ranks`` ``(S, n)``, and the out-of-fold ``given_label_prob``
        and ``normalized_margin``.

    Raises:
        DataError: shapes, labels outside [0, C), probabilities outside [0, 1] or
            rows not summing to 1, non-finite extra signals (NaN is allowed).
        ConfigError: an unknown signal name or a negative weight in ``weights``,
            or every weight of the available signals is 0.
    """
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
