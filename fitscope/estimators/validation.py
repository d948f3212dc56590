"""The estimators' own input checks: scores that may come as result objects, labels with their probabilities.

The generic checks (arrays of a shape, masks, 0/1 indicators, labels,
probabilities, numbers, integers) live in :mod:`fitscope.validation`, with
the one message form ``<argument>: expected <...>, got <...>``; array
problems raise :class:`~fitscope.errors.DataError`, scalar options
:class:`~fitscope.errors.ConfigError`. The public estimator functions call
these once; the code behind them trusts what passed.
"""

from __future__ import annotations

import numpy as np

from fitscope.errors import DataError
from fitscope.estimators.results import CScoreResult, LabelIssueResult, MemorizationResult, ProxyScores
from fitscope.validation import check_labels, check_probs, check_real, message


def check_scores(value, name: str, n: int, *, like: str = "labels") -> np.ndarray:
    """One real score per example ``(n,)``; NaN allowed (= unknown for that example). Returned as float64.

    Accepts the result objects of this package too: a
    :class:`~fitscope.estimators.MemorizationResult` gives ``.mem``, a
    :class:`~fitscope.estimators.CScoreResult` gives ``.cscore`` and a
    :class:`~fitscope.estimators.ProxyScores` or
    :class:`~fitscope.estimators.LabelIssueResult` gives ``.scores``.
    """
    if isinstance(value, MemorizationResult):
        value = value.mem
    elif isinstance(value, CScoreResult):
        value = value.cscore
    elif isinstance(value, (ProxyScores, LabelIssueResult)):
        value = value.scores
    return check_real(value, name, axes=("n",), shape=(n,), like=like, allow_nan=True).astype(np.float64)


def check_labels_and_probs(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """Given labels ``(n,)`` and predicted probabilities ``(n, C)``, checked together.

    Labels must be class indices below C (the columns of ``pred_probs``).
    Returns ``(labels as int64, pred_probs as float64)``.
    """
    labels = check_labels(labels, "labels")
    probs = check_probs(pred_probs, "pred_probs", labels.shape[0])
    c = probs.shape[1]
    if labels.max() >= c:
        i = int(np.argmax(labels >= c))
        raise DataError(message("labels", f"class indices below C = {c} (the columns of pred_probs)",
                                f"{int(labels[i])} at index {i}"))
    return labels, probs
