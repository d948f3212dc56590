"""Memorization and influence estimates of Feldman & Zhang (2020) from subset models.

Notation: K models, each trained on a random subset of the n training
examples; m test examples. ``in_subset[k, i]`` is True when example i is in
model k's training subset (``EnsembleResult.masks``). ``correct[k, i]`` says
whether model k classifies train example i correctly with its given label,
``correct_test[k, j]`` the same for test example j (e.g.
``train_logits.argmax(-1) == y_train``).

    mem(i)       = P[correct on i | i in S]  - P[correct on i | i not in S]
    infl(i -> j) = P[correct on j | i in S]  - P[correct on j | i not in S]

Each probability is the mean correctness over the models of that group; the
standard error of a difference is
``sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)``. An example that
is in every subset or in none has no estimate: NaN, counted in the result's
``n_undefined`` (no warning is raised). The same K models give every i and
every (i, j) pair at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.errors import DataError
from fitscope.estimators.results import InfluenceResult, MemorizationResult
from fitscope.estimators.validation import check_binary, check_int, check_mask, check_number, check_scores

_IN_SUBSET = "True = example i is in model k's training subset"
# Default rows per influence block: about this many (n, m) entries per float32 temporary (8 MB).
_BLOCK_ENTRIES = 2_000_000


def _mean_where(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``total / count`` as float64 with NaN where ``count == 0`` (no warning)."""
    out = np.full(np.shape(total), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _diff_se(p_in: np.ndarray, p_out: np.ndarray, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
    """Standard error of ``p_in - p_out`` for two Bernoulli means; NaN propagates from the means."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out)


def memorization_scores(correct, in_subset) -> MemorizationResult:
    """Feldman-Zhang memorization estimate of every training example, with its standard error.

    Args:
        correct: ``(K, n)`` bool (or 0/1): model k is correct on train example i
            (the final model; e.g. ``train_logits.argmax(-1) == y_train``, or the
            last epoch of the records).
        in_subset: ``(K, n)`` bool membership masks (``EnsembleResult.masks``).

    Returns:
        :class:`MemorizationResult` with ``mem``, ``mem_se``, ``p_in``, ``p_out``
        (each ``(n,)``), the counts ``n_in``, ``n_out`` and ``n_models`` = K.
        Examples with ``n_in == 0`` or ``n_out == 0`` get NaN.

    Raises:
        DataError: an argument is not a 2-D array of the shape above, ``in_subset``
            is not bool, or ``correct`` holds values other than 0 and 1.
    """
    correct = check_binary("correct", correct, ("K", "n"))
    in_subset = check_mask("in_subset", in_subset, ("K", "n"), correct.shape, like="correct",
                           meaning=_IN_SUBSET)
    k = correct.shape[0]
    n_in = np.count_nonzero(in_subset, axis=0).astype(np.int64)
    n_out = k - n_in
    hits_in = np.count_nonzero(correct & in_subset, axis=0)
    hits_out = np.count_nonzero(correct, axis=0) - hits_in
    p_in = _mean_where(hits_in, n_in)
    p_out = _mean_where(hits_out, n_out)
    mem = p_in - p_out
    return MemorizationResult(mem=mem, mem_se=_diff_se(p_in, p_out, n_in, n_out), p_in=p_in, p_out=p_out,
                              n_in=n_in, n_out=n_out, n_models=int(k))


def influence_scores(correct_test, in_subset, *, block_rows: int | None = None) -> InfluenceResult:
    """Feldman-Zhang influence of every training example on every test example, with standard errors.

    Computed with one matrix product per block of training rows,
    ``in_subset[:, rows].T @ correct_test`` (float32, exact for K < 2**24),
    so memory is the two ``(n, m)`` float32 outputs plus one block.

    Args:
        correct_test: ``(K, m)`` bool (or 0/1): model k is correct on test example j.
        in_subset: ``(K, n)`` bool membership masks of the same K models.
        block_rows: training rows per matrix product; default about 2 million
            ``(row, test)`` entries per block (bounds the temporaries).

    Returns:
        :class:`InfluenceResult` with ``infl`` and ``se``, each ``(n, m)`` float32
        (rows of NaN for examples in every subset or in none), and ``n_in``, ``n_out``.

    Raises:
        DataError: wrong shapes, ``in_subset`` not bool, ``correct_test`` not 0/1.
        ConfigError: ``block_rows`` is not a positive integer.
    """
    correct_test = check_binary("correct_test", correct_test, ("K", "m"))
    k = correct_test.shape[0]
    in_subset = check_mask("in_subset", in_subset, ("K", "n"), (k, None), like="correct_test",
                           meaning=_IN_SUBSET)
    n, m = in_subset.shape[1], correct_test.shape[1]
    block_rows = max(1, _BLOCK_ENTRIES // m) if block_rows is None else check_int("block_rows", block_rows)
    c = correct_test.astype(np.float32)
    total = c.sum(axis=0)  # (m,) correct models per test example
    n_in = np.count_nonzero(in_subset, axis=0).astype(np.int64)
    n_out = k - n_in
    infl = np.empty((n, m), np.float32)
    se = np.empty((n, m), np.float32)
    for start in range(0, n, block_rows):  # blocks of rows, not a loop over pairs
        rows = slice(start, min(start + block_rows, n))
        ni = n_in[rows, None].astype(np.float32)
        no = n_out[rows, None].astype(np.float32)
        hits_in = in_subset[:, rows].T.astype(np.float32) @ c  # (b, m)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_out = (total - hits_in) / no
            p_in = hits_in / ni
            infl[rows] = p_in - p_out
            se[rows] = np.sqrt(p_in * (1 - p_in) / ni + p_out * (1 - p_out) / no)
        bad = (n_in[rows] == 0) | (n_out[rows] == 0)
        infl[rows][bad] = np.nan
        se[rows][bad] = np.nan
    return InfluenceResult(infl=infl, se=se, n_in=n_in, n_out=n_out, n_models=int(k))


def high_influence_pairs(result: InfluenceResult, mem=None, *, infl_threshold: float = 0.15,
                         mem_threshold: float = 0.25) -> pd.DataFrame:
    """The (train, test) pairs with influence at or above a threshold, most influential first.

    The defaults are the thresholds of Feldman & Zhang's published pairs
    (``infl >= 0.15`` and ``mem >= 0.25``). The memorization filter applies only
    when ``mem`` is given.

    Args:
        result: the output of :func:`influence_scores`, ``(n, m)``.
        mem: optional ``(n,)`` memorization scores (an array or a
            :class:`MemorizationResult`); keeps pairs whose train example has
            ``mem >= mem_threshold`` (NaN memorization never passes).
        infl_threshold: keep pairs with ``infl >= infl_threshold``.
        mem_threshold: see ``mem``.

    Returns:
        DataFrame with columns ``train_index`` (int64), ``test_index`` (int64),
        ``infl``, ``infl_se`` (float32), ``mem`` (float64, NaN without ``mem``),
        sorted by ``infl`` descending (ties by train then test index).

    Raises:
        ConfigError: a threshold is not a finite number.
        DataError: ``result`` is not an :class:`InfluenceResult` or ``mem`` is not ``(n,)``.
    """
    if not isinstance(result, InfluenceResult):
        raise DataError(f"result: expected an InfluenceResult from influence_scores, got {type(result).__name__}")
    infl_threshold = check_number("infl_threshold", infl_threshold)
    mem_threshold = check_number("mem_threshold", mem_threshold)
    n = result.infl.shape[0]
    keep = result.infl >= infl_threshold  # NaN compares False
    mem_arr = None
    if mem is not None:
        mem_arr = check_scores("mem", mem, n, like="result.infl rows")
        keep &= (mem_arr >= mem_threshold)[:, None]
    train_idx, test_idx = np.nonzero(keep)
    values = result.infl[train_idx, test_idx]
    order = np.lexsort((test_idx, train_idx, -values))
    train_idx, test_idx = train_idx[order].astype(np.int64), test_idx[order].astype(np.int64)
    return pd.DataFrame({
        "train_index": train_idx,
        "test_index": test_idx,
        "infl": result.infl[train_idx, test_idx],
        "infl_se": result.se[train_idx, test_idx],
        "mem": mem_arr[train_idx] if mem_arr is not None else np.full(len(train_idx), np.nan),
    })
