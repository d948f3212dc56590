"""Cheap proxies of the C-score (Jiang et al. 2021): one score per example, higher = more typical.

Notation: E epochs, K models, n training examples, D feature dimensions, C
classes. ``features`` are ``(n, D)`` (or ``(n, *shape)``, flattened): the
inputs themselves or a trained model's hidden representation.

- :func:`learning_speed`: mean over epochs (and models) of the per-epoch
  correctness, or of a per-epoch confidence, recorded while training (from
  the full records or from the per-model counts the training summary accumulates).
  Examples learnt early and kept are regular; the strongest proxy in the paper.
- :func:`kernel_density`: leave-one-out RBF kernel density of an example among
  the other examples of its class.
- :func:`relative_distance`: mean distance to the k nearest other-class
  examples over the mean distance to the k nearest same-class examples.

Every proxy returns a :class:`~fitscope.estimators.ProxyScores` whose
``params`` hold the settings it resolved; scores are NaN where a proxy is
undefined for an example (said in each docstring) and counted in ``n_undefined``.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from fitscope.errors import ConfigError, DataError
from fitscope.estimators.results import ProxyScores
from fitscope.validation import (
    check_binary,
    check_features,
    check_int,
    check_labels,
    check_mask,
    check_number,
    check_real,
    check_seed,
    first_index,
    message,
    shorten,
)

# Rows of a kernel block are sized so that one block holds about this many float64 entries (32 MB).
_BLOCK_ENTRIES = 4_000_000
# The median heuristic looks at the pairwise distances of at most this many examples.
_MEDIAN_SAMPLE = 2000


def learning_speed(correct_records=None, *, in_subset=None, confidence=None, correct_counts=None,
                   epochs: int | None = None) -> ProxyScores:
    """Learning speed: mean over epochs and models of per-epoch correctness (or confidence).

    ``score(i) = sum_k sum_e correct[e, k, i] / (E K)`` (over the models whose subset holds i
    when ``in_subset`` is given). Give exactly one of ``correct_records``, ``confidence`` and
    ``correct_counts``. From the training engine: the summary's per-model counts
    ``correct_counts=result.summary.correct_epochs, epochs=result.summary.epochs`` (the default
    ``TrainConfig(record="summary")``; the same scores, bit for bit, as the full records give), or
    with ``record="full"`` ``records.correct_array()`` for correctness, ``np.exp(-records.loss)``
    (the probability of the given label) or ``records.margin`` for confidence.

    Args:
        correct_records: ``(E, K, n)`` bool (or 0/1): model k correct on example i after epoch e.
        in_subset: optional ``(K, n)`` bool; when given, average only over the models
            whose training subset holds the example (the example's own learning
            curve). Examples in no subset get NaN.
        confidence: ``(E, K, n)`` real, finite: a per-epoch confidence instead of correctness.
        correct_counts: ``(K, n)`` integers in ``[0, epochs]``: after how many of the E epochs
            model k was correct on example i (``RecordSummary.correct_epochs``); needs ``epochs``.
        epochs: E, the epochs ``correct_counts`` counted over (only with ``correct_counts``).

    Returns:
        :class:`ProxyScores` with ``method="learning_speed"`` and
        ``params = {"signal": "correct" | "confidence", "epochs": E, "n_models": K,
        "restricted_to_subset": bool}``.

    Raises:
        ConfigError: not exactly one of ``correct_records``, ``confidence`` and ``correct_counts``;
            ``epochs`` missing with ``correct_counts``, given without it, or not a positive integer.
        DataError: shapes, a non-bool ``in_subset``, non-0/1 correctness, non-finite confidence,
            counts that are not integers in ``[0, epochs]``.
    """
    if correct_counts is None and (correct_records is None) == (confidence is None):
        got = "both" if correct_records is not None else "neither"
        raise ConfigError(f"correct_records, confidence: expected exactly one of them, got {got}")
    if correct_counts is not None and (correct_records is not None or confidence is not None):
        other = "correct_records" if correct_records is not None else "confidence"
        raise ConfigError(f"correct_records, confidence, correct_counts: expected exactly one of them, "
                          f"got correct_counts and {other}")
    if (epochs is not None) != (correct_counts is not None):
        raise ConfigError(message("epochs", "the epochs counted over with correct_counts, and only with it",
                                  f"epochs={shorten(epochs)} with correct_counts "
                                  f"{'missing' if correct_counts is None else 'given'}"))
    if correct_counts is not None:
        e = check_int(epochs, "epochs")
        counts = check_real(correct_counts, "correct_counts", axes=("K", "n"))
        outside = (counts < 0) | (counts > e)
        if counts.dtype.kind == "f":
            outside |= counts != np.round(counts)
        if outside.any():
            raise DataError(message("correct_counts", f"integer counts of epochs in [0, {e}]",
                                    f"{shorten(counts[outside][0])} at {first_index(outside)}"))
        del outside
        # (K, n) epochs correct: integers, kept in their own dtype (no float64 copy of K x n); every sum
        # below is an exact integer, so the scores are those of the (E, K, n) records bit for bit
        per_model = counts if counts.dtype.kind in "iu" else counts.astype(np.int64)
        signal, name = "correct", "correct_counts"
        k, n = per_model.shape
    else:
        if correct_records is not None:
            values = check_binary(correct_records, "correct_records", axes=("E", "K", "n"))
            signal = "correct"
            per_model = np.count_nonzero(values, axis=0).astype(np.float64)  # (K, n) epochs correct
        else:
            values = check_real(confidence, "confidence", axes=("E", "K", "n"), check_values=False)
            signal = "confidence"
            per_model = values.sum(axis=0, dtype=np.float64)  # (K, n)
            if not np.isfinite(per_model).all():  # a non-finite entry spoils its sum; name the first
                check_real(values, "confidence", axes=("E", "K", "n"))
        e, k, n = values.shape
        name = "correct_records" if signal == "correct" else "confidence"
    total = np.float64 if per_model.dtype.kind == "f" else np.int64
    if in_subset is None:
        scores = per_model.sum(axis=0, dtype=total) / (e * k)
    else:
        mask = check_mask(in_subset, "in_subset", axes=("K", "n"), shape=(k, n), like=name,
                          meaning="True = example i is in model k's training subset")
        count = np.count_nonzero(mask, axis=0)
        scores = np.full(n, np.nan)
        np.divide(np.where(mask, per_model, 0).sum(axis=0, dtype=total), e * count, out=scores, where=count > 0)
    return ProxyScores(scores=scores, method="learning_speed",
                       params={"signal": signal, "epochs": int(e), "n_models": int(k),
                               "restricted_to_subset": in_subset is not None})


def _features_and_labels(features, labels) -> tuple[np.ndarray, np.ndarray]:
    """Check ``features`` ``(n, ...)`` and ``labels`` ``(n,)``; return ``(n, D)`` features and int64 labels."""
    x = check_features(features, "features")
    return x, check_labels(labels, "labels", x.shape[0], like="features")


def _class_groups(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each class's examples, in class order (a loop over C classes, not examples)."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order, starts[1:])


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def median_bandwidth(features, *, seed: int = 0) -> float:
    """Median heuristic: the median Euclidean distance between pairs of distinct examples.

    Uses every pair when n <= 2000, otherwise the pairs of 2000 examples drawn
    without replacement with ``numpy.random.default_rng(seed)``.

    Args:
        features: ``(n, D)`` (or ``(n, *shape)``) real.
        seed: seed of the subsample (used only when n > 2000).

    Raises:
        DataError: fewer than 2 examples, or the median distance is 0 (most pairs are duplicates).
    """
    x = check_features(features, "features")
    seed = check_seed(seed)
    n = x.shape[0]
    if n < 2:
        raise DataError(f"features: expected at least 2 examples for the median heuristic, got {n}")
    if n > _MEDIAN_SAMPLE:
        x = x[np.sort(np.random.default_rng(seed).choice(n, _MEDIAN_SAMPLE, replace=False))]
    x = x.astype(np.float64)
    sq = _sq_norms(x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    iu = np.triu_indices(x.shape[0], k=1)
    h = float(np.median(np.sqrt(np.maximum(d2[iu], 0.0))))
    if not h > 0:
        raise DataError("features: expected distinct examples for the median-heuristic bandwidth, "
                        "got a median pairwise distance of 0 (pass bandwidth=...)")
    return h


def kernel_density(features, labels, *, bandwidth=None, same_class: bool = True,
                   block_rows: int | None = None, seed: int = 0) -> ProxyScores:
    """Leave-one-out RBF kernel density of each example among its class (higher = more typical).

    ``density(i) = mean_{j != i, y_j = y_i} exp(-||x_i - x_j||^2 / (2 h^2))``,
    a class-conditional density estimate up to a constant. With
    ``same_class=False`` the mean runs over every other example. Computed in
    blocks of rows, so no ``(n, n)`` matrix is made: memory is one
    ``(block_rows, n_c)`` float64 block per class.

    Args:
        features: ``(n, D)`` (or ``(n, *shape)``) real: inputs or hidden activations.
        labels: ``(n,)`` non-negative integer class labels.
        bandwidth: the RBF width h > 0; default :func:`median_bandwidth` of ``features``.
        same_class: average over same-class neighbours (default) or over all.
        block_rows: rows per block; default sized to about 32 MB per block.
        seed: seed of the median heuristic's subsample (only for n > 2000).

    Returns:
        :class:`ProxyScores` with ``method="kernel_density"`` and ``params``
        ``bandwidth``, ``bandwidth_from`` (``"median heuristic"`` or ``"given"``),
        ``same_class``. NaN for an example alone in its class.

    Raises:
        DataError: bad shapes or values, or a zero median distance.
        ConfigError: ``bandwidth`` not a positive number, ``block_rows`` not a positive integer.
    """
    x, y = _features_and_labels(features, labels)
    if bandwidth is None:
        h, source = median_bandwidth(x, seed=seed), "median heuristic"
    else:
        h = check_number(bandwidth, "bandwidth", low=0.0, open_low=True, high=np.inf, open_high=True)
        source = "given"
    if block_rows is not None:
        block_rows = check_int(block_rows, "block_rows")
    groups = _class_groups(y) if same_class else [np.arange(len(y))]
    scale = -1.0 / (2.0 * h * h)
    density = np.full(len(y), np.nan)
    for idx in groups:  # one pass per class
        nc = len(idx)
        if nc < 2:
            continue
        xc = x[idx].astype(np.float64)
        sq = _sq_norms(xc)
        b = block_rows or max(1, _BLOCK_ENTRIES // nc)
        sums = np.empty(nc)
        for start in range(0, nc, b):  # blocks of rows
            stop = min(start + b, nc)
            block = xc[start:stop] @ xc.T
            block *= -2.0
            block += sq[start:stop, None]
            block += sq[None, :]
            np.maximum(block, 0.0, out=block)
            block *= scale
            np.exp(block, out=block)
            rows = np.arange(stop - start)
            block[rows, start + rows] = 0.0  # leave self out
            sums[start:stop] = block.sum(axis=1)
        density[idx] = sums / (nc - 1)
    return ProxyScores(scores=density, method="kernel_density",
                       params={"bandwidth": float(h), "bandwidth_from": source, "same_class": bool(same_class)})


def relative_distance(features, labels, *, k: int = 5) -> ProxyScores:
    """Other-class over same-class nearest-neighbour distance (higher = more typical).

    ``score(i) = mean distance to the k nearest examples of other classes /
    mean distance to the k nearest other examples of i's class`` (Euclidean,
    ``sklearn.neighbors.NearestNeighbors``; an example is not its own
    neighbour). An example with k exact same-class duplicates scores ``inf``
    (1.0 when its k other-class neighbours are duplicates too).

    Args:
        features: ``(n, D)`` (or ``(n, *shape)``) real.
        labels: ``(n,)`` non-negative integer class labels, at least 2 classes.
        k: neighbours on each side.

    Returns:
        :class:`ProxyScores` with ``method="relative_distance"``, ``params={"k": k}``;
        NaN for examples of a class with at most k members or with fewer than
        k examples outside it.

    Raises:
        DataError: bad shapes or values, or a single class.
        ConfigError: ``k`` not a positive integer.
    """
    x, y = _features_and_labels(features, labels)
    k = check_int(k, "k")
    groups = _class_groups(y)
    if len(groups) < 2:
        raise DataError(f"labels: expected at least 2 classes for relative_distance, got only class {int(y[0])}")
    n = len(y)
    same = np.full(n, np.nan)
    other = np.full(n, np.nan)
    for idx in groups:  # one neighbour search per class
        nc = len(idx)
        if nc - 1 >= k:
            same[idx] = NearestNeighbors(n_neighbors=k).fit(x[idx]).kneighbors()[0].mean(axis=1)
        rest = np.ones(n, bool)
        rest[idx] = False
        if n - nc >= k:
            other[idx] = NearestNeighbors(n_neighbors=k).fit(x[rest]).kneighbors(x[idx])[0].mean(axis=1)
    scores = np.full(n, np.nan)
    np.divide(other, same, out=scores, where=same > 0)
    zero = same == 0
    scores[zero] = np.select([other[zero] > 0, other[zero] == 0], [np.inf, 1.0], np.nan)
    return ProxyScores(scores=scores, method="relative_distance", params={"k": k})
