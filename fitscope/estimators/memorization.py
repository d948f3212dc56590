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
from fitscope.estimators.results import InfluencePairs, InfluenceResult, MemorizationResult
from fitscope.estimators.validation import check_scores
from fitscope.validation import check_binary, check_int, check_mask, check_number

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
    correct = check_binary(correct, "correct", axes=("K", "n"))
    in_subset = check_mask(in_subset, "in_subset", axes=("K", "n"), shape=correct.shape, like="correct",
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


def _influence_blocks(correct_test: np.ndarray, in_subset: np.ndarray, block_rows: int):
    """Yield ``(rows, infl, se)`` for consecutive blocks of training rows; arrays are ``(b, m)`` float32.

    The checked inputs of :func:`influence_scores`. One matrix product per block,
    ``in_subset[:, rows].T @ correct_test``: sums of 0/1 products, exact in float32
    for K < 2**24, so every entry is the same whatever the blocking.
    """
    k = correct_test.shape[0]
    n = in_subset.shape[1]
    c = correct_test.astype(np.float32)
    total = c.sum(axis=0)  # (m,) correct models per test example
    n_in = np.count_nonzero(in_subset, axis=0).astype(np.int64)
    n_out = k - n_in
    for start in range(0, n, block_rows):  # blocks of rows, not a loop over pairs
        rows = slice(start, min(start + block_rows, n))
        ni = n_in[rows, None].astype(np.float32)
        no = n_out[rows, None].astype(np.float32)
        p_in = in_subset[:, rows].T.astype(np.float32) @ c  # (b, m) hits among the models holding i
        with np.errstate(invalid="ignore", divide="ignore"):  # in place: five (b, m) blocks in all
            p_out = total - p_in
            p_out /= no
            p_in /= ni
            infl = p_in - p_out
            se = 1 - p_in
            se *= p_in
            se /= ni
            var_out = 1 - p_out
            var_out *= p_out
            var_out /= no
            se += var_out
            np.sqrt(se, out=se)
        bad = (n_in[rows] == 0) | (n_out[rows] == 0)
        infl[bad] = np.nan
        se[bad] = np.nan
        yield rows, infl, se


def _check_influence_inputs(correct_test, in_subset, block_rows):
    correct_test = check_binary(correct_test, "correct_test", axes=("K", "m"))
    k = correct_test.shape[0]
    in_subset = check_mask(in_subset, "in_subset", axes=("K", "n"), shape=(k, None), like="correct_test",
                           meaning=_IN_SUBSET)
    m = correct_test.shape[1]
    block_rows = max(1, _BLOCK_ENTRIES // m) if block_rows is None else check_int(block_rows, "block_rows")
    return correct_test, in_subset, block_rows


def influence_scores(correct_test, in_subset, *, block_rows: int | None = None) -> InfluenceResult:
    """Feldman-Zhang influence of every training example on every test example, with standard errors.

    Computed with one matrix product per block of training rows,
    ``in_subset[:, rows].T @ correct_test`` (float32, exact for K < 2**24),
    so memory is the two ``(n, m)`` float32 outputs plus one block. For data
    sets where ``(n, m)`` does not fit, use :func:`high_influence_pairs_streamed`,
    which keeps only the pairs above the thresholds.

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
    correct_test, in_subset, block_rows = _check_influence_inputs(correct_test, in_subset, block_rows)
    k = correct_test.shape[0]
    n, m = in_subset.shape[1], correct_test.shape[1]
    n_in = np.count_nonzero(in_subset, axis=0).astype(np.int64)
    infl = np.empty((n, m), np.float32)
    se = np.empty((n, m), np.float32)
    for rows, block, block_se in _influence_blocks(correct_test, in_subset, block_rows):
        infl[rows] = block
        se[rows] = block_se
    return InfluenceResult(infl=infl, se=se, n_in=n_in, n_out=k - n_in, n_models=int(k))


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
    infl_threshold = check_number(infl_threshold, "infl_threshold")
    mem_threshold = check_number(mem_threshold, "mem_threshold")
    n = result.infl.shape[0]
    mem_arr = None if mem is None else check_scores(mem, "mem", n, like="result.infl rows")
    keep = result.infl >= infl_threshold  # NaN compares False
    if mem_arr is not None:
        keep &= (mem_arr >= mem_threshold)[:, None]
    train_idx, test_idx = np.nonzero(keep)
    return _pairs_frame(train_idx, test_idx, result.infl[train_idx, test_idx], result.se[train_idx, test_idx],
                        mem_arr)


def _pairs_frame(train_idx, test_idx, infl, se, mem_arr) -> pd.DataFrame:
    """The pairs table, most influential first (ties by train then test index)."""
    order = np.lexsort((test_idx, train_idx, -infl))
    train_idx = np.asarray(train_idx)[order].astype(np.int64)
    return pd.DataFrame({
        "train_index": train_idx,
        "test_index": np.asarray(test_idx)[order].astype(np.int64),
        "infl": np.asarray(infl, np.float32)[order],
        "infl_se": np.asarray(se, np.float32)[order],
        "mem": mem_arr[train_idx] if mem_arr is not None else np.full(len(train_idx), np.nan),
    })


def high_influence_pairs_streamed(correct_test, in_subset, mem=None, *, infl_threshold: float = 0.15,
                                  mem_threshold: float = 0.25, block_rows: int | None = None
                                  ) -> InfluencePairs:
    """The high-influence (train, test) pairs without ever holding the ``(n, m)`` influence matrix.

    The same pairs, values and order as
    ``high_influence_pairs(influence_scores(correct_test, in_subset), mem, ...)``,
    computed block by block: each block of ``block_rows`` training rows gives
    its ``(block_rows, m)`` influence and standard errors (one matrix product),
    keeps the entries above the thresholds and is dropped. Memory is a few
    ``(block_rows, m)`` float32 temporaries plus the pairs kept. Rows whose
    memorization is below ``mem_threshold`` are still computed (for the mean
    standard error) but keep no pair.

    Args:
        correct_test: ``(K, m)`` bool (or 0/1): model k is correct on test example j.
        in_subset: ``(K, n)`` bool membership masks of the same K models.
        mem: optional ``(n,)`` memorization (array or :class:`MemorizationResult`); keeps
            pairs whose train example has ``mem >= mem_threshold`` (NaN never passes).
        infl_threshold: keep pairs with ``infl >= infl_threshold``.
        mem_threshold: see ``mem``.
        block_rows: training rows per block; default about 2 million ``(row, test)``
            entries per block (8 MB per float32 temporary).

    Returns:
        :class:`InfluencePairs`: ``pairs`` (the DataFrame of :func:`high_influence_pairs`),
        ``mean_se`` (mean standard error over every defined pair), ``n_models``,
        ``n_undefined`` (train rows without an estimate) and the ``block_rows`` used.

    Raises:
        DataError: wrong shapes, ``in_subset`` not bool, ``correct_test`` not 0/1, ``mem`` not ``(n,)``.
        ConfigError: a threshold is not a finite number, ``block_rows`` not a positive integer.
    """
    correct_test, in_subset, block_rows = _check_influence_inputs(correct_test, in_subset, block_rows)
    infl_threshold = check_number(infl_threshold, "infl_threshold")
    mem_threshold = check_number(mem_threshold, "mem_threshold")
    k, n = in_subset.shape
    mem_arr = None if mem is None else check_scores(mem, "mem", n, like="in_subset columns")
    row_ok = np.ones(n, bool) if mem_arr is None else mem_arr >= mem_threshold
    found: list[tuple[np.ndarray, ...]] = []
    se_sum, se_count = 0.0, 0
    for rows, infl, se in _influence_blocks(correct_test, in_subset, block_rows):
        defined = ~np.isnan(se)
        se_sum += float(se[defined].sum(dtype=np.float64))
        se_count += int(np.count_nonzero(defined))
        keep = infl >= infl_threshold  # NaN compares False
        keep &= row_ok[rows, None]
        r, t = np.nonzero(keep)
        if len(r):
            found.append((r + rows.start, t, infl[r, t], se[r, t]))
    if found:
        train_idx, test_idx, values, ses = (np.concatenate(parts) for parts in zip(*found))
    else:
        train_idx = test_idx = np.zeros(0, np.int64)
        values = ses = np.zeros(0, np.float32)
    n_in = np.count_nonzero(in_subset, axis=0)
    return InfluencePairs(
        pairs=_pairs_frame(train_idx, test_idx, values, ses, mem_arr),
        mean_se=se_sum / se_count if se_count else float("nan"),
        n_models=int(k), n_undefined=int(np.count_nonzero((n_in == 0) | (n_in == k))),
        infl_threshold=infl_threshold, mem_threshold=mem_threshold if mem_arr is not None else None,
        block_rows=int(block_rows),
    )
