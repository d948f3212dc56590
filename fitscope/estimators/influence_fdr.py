"""The false-discovery rate of a list of high-influence pairs, from a permutation null.

Notation: K models, n training examples, m test examples, P permutations.
A *candidate* is a (train i, test j) pair that passes the fixed thresholds
(``infl >= infl_threshold`` and, with memorization given, ``mem[i] >= mem_threshold``).
Each candidate's statistic is ``infl_lo``, the lower end of its Newcombe
interval (:mod:`fitscope.estimators.intervals`): an influence that is large
*and* precisely measured ranks high, a large one from few or noisy models does not.

The null: permute the model axis of the test correctness relative to the
memberships (one permutation for all rows and columns, seeded), which is the
same as permuting ``in_subset``'s models. That destroys any real dependence of
test correctness on membership and keeps everything else: each test example's
accuracy, each training example's ``n_in``/``n_out``, the correlation of test
examples within a model, the subsets' structure. Recomputing every pair on the
permuted arrays gives the null candidates: those passing the same thresholds.

For a threshold ``t`` on the statistic:

    R(t) = observed candidates with infl_lo >= t
    V(t) = (1 + null candidates with infl_lo >= t, summed over the P permutations) / P
    FDR(t) = min(1, V(t) / max(1, R(t)))

``V(t)`` estimates how many of the ``R(t)`` would pass by chance: the mean
null count per permutation, plus one pseudo-count over all permutations (as
the ``+1`` of a permutation p-value), so that with finitely many permutations
a list is never estimated to hold no chance pair and a single lucky pair
above every null pair is not called certain (with P = 50 and a 10% target, a
lone top pair needs at most four null pairs above it in the 50 permutations).
The pseudo-count sets a floor: a list of R pairs has an estimated FDR of at least
``1 / (P R)``, so a target q can keep a single pair only with ``P >= 1 / q``
permutations. The list kept at target ``q`` is every candidate at or above the smallest observed ``t`` with
``FDR(t) <= q`` (none if there is no such ``t``). Each candidate's ``fdr`` is its
q-value: the smallest ``FDR(t)`` over thresholds ``t`` at or below its statistic,
so the list at any target ``q'`` is ``fdr <= q'``.

Null statistics are counted in a histogram of :data:`BINS` bins over [-1, 1]
(no null pair is kept); a null value is counted at its bin's lower edge,
which can only raise ``V`` (a conservative rounding of at most 2/BINS).

Models needed for the target (:func:`models_for_target`), a projection, not a
measurement. Assumptions: (1) the real pairs among the candidates keep
influences above the threshold as K grows; their number S is the larger of
two lower estimates: the excess ``R - V - 2 sd`` of the R candidates at the
fixed thresholds over the null count V, less twice the standard deviation of
the null count across permutations (under no real influence R is one more
draw of that count, so an excess within its spread is no evidence of real
pairs), and the kept list's expected true pairs ``kept (1 - FDR)``; (2) the
chance influences of null pairs shrink like ``1 / sqrt(K)`` (their variance is
``p (1 - p) (1 / n_in + 1 / n_out)``, with ``n_in + n_out = K``), so at K'
models a null pair with influence ``x`` at K would have ``x sqrt(K / K')``.
The fixed-threshold list's projected FDR at K' is ``V(K') / (V(K') + S)`` with
``V(K')`` the null count (with the ``+1``) above ``infl_threshold sqrt(K' / K)``;
the projection is the smallest K' where that is at most the target. Without evidence of real
pairs (``S <= 0``), with fewer than 2 permutations, or when the target is below
what P permutations can resolve (the pseudo-count alone, ``1 / P``, exceeds the
allowed null count ``target S / (1 - target)``) no number of models is projected (None).
"""

from __future__ import annotations

import math

import numpy as np

#: histogram bins over [-1, 1] for null statistics (bin width 2 / BINS = 0.00012)
BINS = 2**14


def bin_index(values: np.ndarray) -> np.ndarray:
    """The histogram bin of each value in [-1, 1]: bin b covers ``[-1 + 2b/BINS, -1 + 2(b+1)/BINS)``, 1 in the last."""
    idx = np.floor((np.asarray(values, np.float64) + 1.0) * (BINS / 2)).astype(np.int64)
    return np.clip(idx, 0, BINS - 1)


def bin_edge(index: int) -> float:
    """The lower edge of bin ``index``."""
    return -1.0 + 2.0 * index / BINS


class NullCounts:
    """Histograms of the null candidates' statistic and influence, summed over permutations."""

    def __init__(self) -> None:
        self.stat = np.zeros(BINS, np.int64)
        self.infl = np.zeros(BINS, np.int64)
        self.permutations = 0
        self.totals: list[int] = []  # null candidates of each permutation

    def add(self, stat: np.ndarray, infl: np.ndarray) -> None:
        """Count the null candidates of one block of the current permutation: their ``infl_lo`` and ``infl``."""
        if len(stat):
            self.stat += np.bincount(bin_index(stat), minlength=BINS)
            self.infl += np.bincount(bin_index(infl), minlength=BINS)

    def finish_permutation(self) -> None:
        """Close one permutation (after all its blocks were added)."""
        self.permutations += 1
        self.totals.append(self.total - sum(self.totals))

    def tail(self, values, which: str = "stat") -> np.ndarray:
        """Null candidates (summed over permutations) at or above each of ``values`` (at its bin's lower edge)."""
        hist = self.stat if which == "stat" else self.infl
        tail = np.cumsum(hist[::-1])[::-1]
        return tail[bin_index(values)]

    @property
    def total(self) -> int:
        """Null candidates summed over permutations."""
        return int(self.stat.sum())


def expected_null(count, permutations: int) -> np.ndarray:
    """``(1 + count) / P``: the null count per list from ``count`` summed over P permutations, plus one pseudo-count."""
    return (1.0 + np.asarray(count, np.float64)) / permutations


def q_values(stat: np.ndarray, null: NullCounts) -> np.ndarray:
    """The q-value of every candidate: the smallest estimated FDR of a list that reaches down to it.

    Args:
        stat: ``(R,)`` the observed candidates' statistics (``infl_lo``).
        null: the null counts over ``null.permutations`` permutations.

    Returns:
        ``(R,)`` float64 in (0, 1].
    """
    stat = np.asarray(stat, np.float64)
    r = len(stat)
    if r == 0:
        return np.zeros(0)
    order = np.argsort(-stat, kind="stable")
    s = stat[order]
    # R(t) at each sorted value, ties counted together: the number of values >= s[i]
    rank = np.searchsorted(-s, -s, side="right")
    fdr = np.minimum(1.0, expected_null(null.tail(s), null.permutations) / rank)
    q_sorted = np.minimum.accumulate(fdr[::-1])[::-1]  # min over this and every lower threshold
    q = np.empty(r)
    q[order] = q_sorted
    return q


def select(stat: np.ndarray, null: NullCounts, target: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(q, keep, threshold, fdr)``: q-values, the kept mask, the statistic threshold and the kept list's FDR.

    ``threshold`` is the smallest observed statistic with ``FDR <= target`` (``inf``
    when nothing is kept); ``fdr`` is the estimated FDR of the kept list at that
    threshold (NaN when nothing is kept).
    """
    q = q_values(stat, null)
    keep = q <= target
    if not keep.any():
        return q, keep, math.inf, math.nan
    stat = np.asarray(stat, np.float64)
    threshold = float(stat[keep].min())
    kept = int(np.count_nonzero(stat >= threshold))
    fdr = float(min(1.0, expected_null(null.tail([threshold])[0], null.permutations) / kept))
    return q, stat >= threshold, threshold, fdr


def models_for_target(null: NullCounts, n_candidates: int, *, infl_threshold: float, n_models: int,
                      target: float, kept: int = 0, kept_fdr: float = math.nan) -> int | None:
    """Projected models for the fixed-threshold list to reach FDR ``target`` (see the module docstring).

    Returns K itself when the list is already within the target, None when the
    candidates show no real pairs (``S <= 0``), P < 2, or ``infl_threshold <= 0`` (the
    projection rescales the threshold), else ``ceil(K (x / infl_threshold)^2)``
    with ``x`` the lowest influence a null pair may exceed while the list stays within the target.
    """
    if null.permutations < 2 or infl_threshold <= 0:
        return None
    v_now = float(expected_null(null.total, null.permutations))
    real = n_candidates - v_now - 2 * float(np.std(null.totals, ddof=1))
    if kept and np.isfinite(kept_fdr):
        real = max(real, kept * (1 - kept_fdr))
    if real <= 0:
        return None
    allowed = target * real / (1 - target)  # V / (V + S) <= target  <=>  V <= target S / (1 - target)
    if v_now <= allowed:
        return int(n_models)
    tail = expected_null(np.cumsum(null.infl[::-1])[::-1], null.permutations)  # null count at or above each bin
    ok = np.flatnonzero(tail <= allowed)
    if not len(ok):  # even no null pair at all leaves the pseudo-count above the allowed count
        return None
    # null influences from this edge up are the ones that may still pass; bins count at their lower edge
    edge = max(bin_edge(int(ok[0])), infl_threshold)
    return int(math.ceil(n_models * (edge / infl_threshold) ** 2))
