"""The holdout consistency score (C-score) of Jiang, Zhang, Talwar & Mozer (2021).

Notation: n training examples; R subset ratios s in (0, 1); at ratio s, K_s
models each trained on a random s-fraction of the n examples.

    C(x_i, y_i) = E_s E_{D of size s*n, i not in D} P[f(x_i; D) = y_i]

Holdout estimator: at each ratio, the mean correctness on example i over the
models whose subset did *not* hold i (``per_ratio``, NaN where every model of
that ratio trained on i); the C-score is the mean of those over ratios,
skipping the NaN ratios of each example (NaN when all are). Ratios are weighted
equally whatever their number of models. The correctness arrays are the same
kind :func:`~fitscope.estimators.memorization_scores` takes, so the
memorization models (ratio 0.7) can be one of the ratios.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.results import CScoreResult
from fitscope.validation import check_binary, check_mask, check_number


def cscore_holdout(correct_by_ratio: Mapping) -> CScoreResult:
    """Holdout C-score of every training example from subset models at several ratios.

    Args:
        correct_by_ratio: ``{ratio: (correct, in_subset)}``, one entry per subset
            ratio in (0, 1): ``correct`` ``(K_s, n)`` bool (or 0/1), model k
            correct on example i; ``in_subset`` ``(K_s, n)`` bool, example i in
            model k's training subset. n is the same for every ratio; K_s may differ.

    Returns:
        :class:`CScoreResult`: ``cscore`` ``(n,)``, ``per_ratio`` and ``counts``
        ``(R, n)`` (held-out mean correctness and number of held-out models),
        ``ratios`` ``(R,)`` ascending and ``n_models`` ``(R,)``.

    Raises:
        ConfigError: no ratios, or a ratio that is not a number in (0, 1).
        DataError: an entry is not a ``(correct, in_subset)`` pair, shapes disagree,
            ``in_subset`` is not bool or ``correct`` is not 0/1.
    """
    if not isinstance(correct_by_ratio, Mapping):
        raise DataError(f"correct_by_ratio: expected a dict {{ratio: (correct, in_subset)}}, "
                        f"got {type(correct_by_ratio).__name__}")
    if len(correct_by_ratio) == 0:
        raise ConfigError("correct_by_ratio: expected at least one subset ratio, got an empty dict")
    ratios = [check_number(r, "correct_by_ratio key (a subset ratio)", low=0.0, high=1.0, open_low=True, open_high=True)
              for r in correct_by_ratio]
    order = np.argsort(ratios, kind="stable")
    items = list(correct_by_ratio.items())
    n = None
    per_ratio, counts, n_models = [], [], []
    for idx in order:
        key, pair = items[idx]
        where = f"correct_by_ratio[{key!r}]"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"{where}: expected a pair (correct, in_subset), got {type(pair).__name__}"
                            + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else ""))
        correct = check_binary(pair[0], f"{where} correct", axes=("K_s", "n"), shape=(None, n),
                               like=None if n is None else "the other ratios")
        if n is None:
            n = correct.shape[1]
        in_subset = check_mask(pair[1], f"{where} in_subset", axes=("K_s", "n"), shape=correct.shape,
                               like="correct", meaning="True = example i is in model k's training subset")
        held_out = ~in_subset
        count = np.count_nonzero(held_out, axis=0)
        hits = np.count_nonzero(correct & held_out, axis=0)
        mean = np.full(n, np.nan)
        np.divide(hits, count, out=mean, where=count > 0)
        per_ratio.append(mean)
        counts.append(count.astype(np.int64))
        n_models.append(correct.shape[0])
    per_ratio_arr = np.stack(per_ratio)
    defined = ~np.isnan(per_ratio_arr)
    n_defined = defined.sum(axis=0)
    cscore = np.full(n, np.nan)
    np.divide(np.where(defined, per_ratio_arr, 0.0).sum(axis=0), n_defined, out=cscore, where=n_defined > 0)
    return CScoreResult(cscore=cscore, per_ratio=per_ratio_arr, counts=np.stack(counts),
                        ratios=np.asarray(ratios, np.float64)[order], n_models=np.asarray(n_models, np.int64))
