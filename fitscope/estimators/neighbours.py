"""Nearest training neighbours and their labels: which examples sit next to an example of another label.

Notation: K models (or label vectors), n training examples, D feature
dimensions, E epochs. ``features`` are ``(n, D)`` (or ``(n, *shape)``,
flattened): the inputs themselves or a hidden representation.

- :func:`neighbour_conflicts`: each example's nearest *other* training
  example (Euclidean), its distance, and whether its label differs, for one
  label vector ``(n,)`` or K of them ``(K, n)`` (label noise drawn per model
  over shared inputs).
- :func:`late_examples`: the examples a model still gets wrong at a given
  fraction of its time to fit (from the per-epoch correctness records).

Together they test why the last examples take long to fit under label noise:
if the examples still wrong late have a nearest neighbour of another label
far more often than the examples overall, near-duplicate inputs with
conflicting labels are what the network fits last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from fitscope.errors import DataError
from fitscope.validation import check_binary, check_features, check_labels, check_number


@dataclass(frozen=True)
class NeighbourConflicts:
    """Each example's nearest other example and whether their labels differ.

    Attributes:
        neighbour: ``(n,)`` int64 index of the nearest other example (ties: sklearn's order).
        distance: ``(n,)`` float64 Euclidean distance to it.
        conflict: ``(K, n)`` bool, True where the label of example i under label
            vector k differs from its neighbour's label under the same vector
            (``(1, n)`` for a single label vector).
    """

    neighbour: np.ndarray
    distance: np.ndarray
    conflict: np.ndarray

    def _rows(self, rows) -> np.ndarray:
        """``rows`` as a ``(K, n)`` bool selection (None = every (k, i))."""
        if rows is None:
            return np.ones(self.conflict.shape, bool)
        mask = np.asarray(rows)
        if mask.dtype != np.bool_:
            raise DataError(f"rows: expected a bool array (True = example selected), got dtype {mask.dtype}")
        if mask.shape == self.conflict.shape[1:]:
            mask = np.broadcast_to(mask, self.conflict.shape)
        if mask.shape != self.conflict.shape:
            raise DataError(f"rows: expected shape (n,) or (K, n) = {self.conflict.shape}, got {mask.shape}")
        return mask

    def count(self, rows=None) -> int:
        """How many (label vector, example) pairs ``rows`` selects (``(n,)`` or ``(K, n)`` bool; None = all)."""
        return int(self._rows(rows).sum())

    def rate(self, rows=None) -> float:
        """Share of the selected (label vector, example) pairs whose nearest neighbour has another label.

        ``rows``: ``(n,)`` or ``(K, n)`` bool (None = every pair). NaN when nothing is selected.
        """
        mask = self._rows(rows)
        return float(self.conflict[mask].mean()) if mask.any() else float("nan")

    def distance_median(self, rows=None) -> float:
        """Median nearest-neighbour distance over the selected pairs (an example counts once per vector selecting it)."""
        mask = self._rows(rows)
        if not mask.any():
            return float("nan")
        return float(np.median(np.broadcast_to(self.distance, mask.shape)[mask]))


def nearest_neighbour(features) -> tuple[np.ndarray, np.ndarray]:
    """Index and Euclidean distance of each example's nearest *other* example.

    An example is never its own neighbour, but an exact duplicate of it is one
    (at distance 0). Uses ``sklearn.neighbors.NearestNeighbors``.

    Args:
        features: ``(n, D)`` (or ``(n, *shape)``) real, finite, n >= 2.

    Returns:
        ``(neighbour, distance)``: ``(n,)`` int64 and ``(n,)`` float64.

    Raises:
        DataError: bad features or fewer than 2 examples.
    """
    x = check_features(features, "features")
    if x.shape[0] < 2:
        raise DataError(f"features: expected at least 2 examples to have a neighbour, got {x.shape[0]}")
    # kneighbors() without a query leaves each point out of its own neighbours (duplicates stay in).
    dist, idx = NearestNeighbors(n_neighbors=1).fit(x).kneighbors()
    return idx[:, 0].astype(np.int64), dist[:, 0].astype(np.float64)


def neighbour_conflicts(features, labels) -> NeighbourConflicts:
    """Nearest other example of every example, and whether its label differs, for one or K label vectors.

    The neighbours depend on the inputs only, so they are searched once and
    compared under every label vector (e.g. one per model of a label-noise
    ensemble that shares its inputs).

    Args:
        features: ``(n, D)`` (or ``(n, *shape)``) real, finite, n >= 2.
        labels: ``(n,)`` or ``(K, n)`` non-negative integer labels.

    Returns:
        :class:`NeighbourConflicts` (``conflict`` is ``(K, n)``; ``(1, n)`` for ``(n,)`` labels).

    Raises:
        DataError: bad features or labels, or labels of another length than the features.
    """
    neighbour, distance = nearest_neighbour(features)
    n = len(neighbour)
    y = np.asarray(labels)
    if y.ndim == 1:
        y = check_labels(y, "labels", n, like="features")[None, :]
    elif y.ndim == 2:
        y = np.stack([check_labels(row, f"labels[{k}]", n, like="features") for k, row in enumerate(y)])
    else:
        raise DataError(f"labels: expected shape (n,) or (K, n) with n = {n}, got {y.shape}")
    return NeighbourConflicts(neighbour=neighbour, distance=distance, conflict=y[:, neighbour] != y)


def late_examples(correct_records, epochs_to_fit, *, at: float = 0.8) -> np.ndarray:
    """The examples each model still gets wrong at a fraction ``at`` of its time to fit.

    Model k is looked at after epoch ``max(1, floor(at * T_k))`` (1-based),
    where ``T_k = epochs_to_fit[k]`` when the model fit its training rows, else
    the number of recorded epochs E (a model that never fit is looked at the
    same fraction of the way through its training).

    Args:
        correct_records: ``(E, K, n)`` bool (or 0/1): model k correct on example i after epoch e.
        epochs_to_fit: ``(K,)`` int, the 1-based epoch at which model k first
            reached 100% training accuracy, or a value <= 0 for "never".
        at: the fraction of the time to fit, in (0, 1].

    Returns:
        ``(K, n)`` bool: True where model k is still wrong on example i then.

    Raises:
        DataError: bad shapes or values.
        ConfigError: ``at`` outside (0, 1].
    """
    correct = check_binary(correct_records, "correct_records", axes=("E", "K", "n")).astype(bool)
    e, k, _ = correct.shape
    at = check_number(at, "at", low=0.0, high=1.0, open_low=True)
    fit = np.asarray(epochs_to_fit)
    if fit.shape != (k,) or fit.dtype.kind not in "iu":
        raise DataError(f"epochs_to_fit: expected an integer array of shape (K,) = ({k},) like correct_records, "
                        f"got dtype {fit.dtype} and shape {fit.shape}")
    if (fit > e).any():
        i = int(np.argmax(fit > e))
        raise DataError(f"epochs_to_fit: expected at most E = {e} recorded epochs, got {int(fit[i])} at index {i}")
    horizon = np.where(fit > 0, fit, e)
    epoch = np.maximum(1, np.floor(at * horizon).astype(np.int64))
    return ~correct[epoch - 1, np.arange(k)]
