"""Memorization and influence estimates of Feldman & Zhang (2020) from subset models, with intervals.

Notation: K models, each trained on a random subset of the n training
examples; m test examples. ``in_subset[k, i]`` is True when example i is in
model k's training subset (``EnsembleResult.masks``). ``correct[k, i]`` says
whether model k classifies train example i correctly with its given label,
``correct_test[k, j]`` the same for test example j (e.g.
``train_logits.argmax(-1) == y_train``).

    mem(i)       = P[correct on i | i in S]  - P[correct on i | i not in S]
    infl(i -> j) = P[correct on j | i in S]  - P[correct on j | i not in S]

Each probability is the mean correctness over the models of that group
(``p_in`` from the ``n_in`` models whose subset holds i, ``p_out`` from the
other ``n_out``). Intervals (95% by default, ``confidence``): each rate gets its
Wilson score interval and the difference Newcombe's hybrid score interval
built from the two (:mod:`fitscope.estimators.intervals`); the two groups are
disjoint sets of independently trained models, so the rates are independent.
Unlike the plug-in ``sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)``,
these do not collapse to a point when a rate is 0 or 1 (mem = 1 from two models
has the interval [-0.12, 1], not 1 +- 0). The ``*_se`` columns are
``(upper - lower) / (2 z)``, the standard error of a normal interval as wide
as the reported one: a spread for ranking and averaging that is honest at the
boundary; the bounds themselves are the interval.

An example that is in every subset or in none has no estimate: NaN, counted
in the result's ``n_undefined`` (no warning is raised). The same K models give
every i and every (i, j) pair at once.

High-influence pairs: the fixed thresholds of Feldman & Zhang (``infl >= 0.15``,
``mem >= 0.25``) pass many chance pairs when K is in the tens or hundreds.
:func:`high_influence_pairs_streamed` estimates the false-discovery rate of
the list with a permutation null and keeps the pairs under a target FDR
(:mod:`fitscope.estimators.influence_fdr`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.errors import DataError
from fitscope.estimators import influence_fdr
from fitscope.estimators.intervals import interval_se, newcombe_interval, wilson_offsets, z_value
from fitscope.estimators.results import InfluencePairs, InfluenceResult, MemorizationResult
from fitscope.estimators.validation import check_scores
from fitscope.seeding import derive_seed
from fitscope.validation import (
    check_binary,
    check_fraction,
    check_int,
    check_mask,
    check_number,
    check_seed,
)

_IN_SUBSET = "True = example i is in model k's training subset"
# Default rows per influence block: about this many (n, m) entries per float32 temporary (8 MB).
_BLOCK_ENTRIES = 2_000_000
#: Columns of every pairs table, in order.
PAIR_COLUMNS = ["train_index", "test_index", "infl", "infl_lo", "infl_hi", "infl_se", "mem", "fdr"]


def _mean_where(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``total / count`` as float64 with NaN where ``count == 0`` (no warning)."""
    out = np.full(np.shape(total), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def memorization_scores(correct, in_subset, *, confidence: float = 0.95) -> MemorizationResult:
    """Feldman-Zhang memorization estimate of every training example, with its confidence interval.

    ``p_in`` and ``p_out`` get Wilson score intervals and ``mem = p_in - p_out``
    Newcombe's hybrid score interval (method 10) built from them; see the module docstring.

    Args:
        correct: ``(K, n)`` bool (or 0/1): model k is correct on train example i
            (the final model; e.g. ``train_logits.argmax(-1) == y_train``, or the
            last epoch of the records).
        in_subset: ``(K, n)`` bool membership masks (``EnsembleResult.masks``).
        confidence: two-sided level of the intervals, in (0, 1).

    Returns:
        :class:`MemorizationResult` with ``mem``, ``mem_lo``, ``mem_hi``, ``mem_se``,
        ``p_in`` (``p_in_lo``, ``p_in_hi``), ``p_out`` (``p_out_lo``, ``p_out_hi``),
        each ``(n,)``, the counts ``n_in``, ``n_out``, ``n_models`` = K and ``confidence``.
        Examples with ``n_in == 0`` or ``n_out == 0`` get NaN.

    Raises:
        DataError: an argument is not a 2-D array of the shape above, ``in_subset``
            is not bool, or ``correct`` holds values other than 0 and 1.
        ConfigError: ``confidence`` is not in (0, 1).
    """
    z = z_value(confidence)
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
    below_in, above_in = wilson_offsets(p_in, n_in, z)
    below_out, above_out = wilson_offsets(p_out, n_out, z)
    mem = p_in - p_out
    mem_lo, mem_hi = newcombe_interval(p_in, below_in, above_in, p_out, below_out, above_out)
    return MemorizationResult(
        mem=mem, mem_lo=mem_lo, mem_hi=mem_hi, mem_se=interval_se(mem_lo, mem_hi, z),
        p_in=p_in, p_in_lo=np.clip(p_in - below_in, 0, 1), p_in_hi=np.clip(p_in + above_in, 0, 1),
        p_out=p_out, p_out_lo=np.clip(p_out - below_out, 0, 1), p_out_hi=np.clip(p_out + above_out, 0, 1),
        n_in=n_in, n_out=n_out, n_models=int(k), confidence=float(confidence))


def _influence_blocks(correct_test: np.ndarray, in_subset: np.ndarray, block_rows: int, z: float):
    """Yield ``(rows, infl, lo, hi)`` for consecutive blocks of training rows; arrays are ``(b, m)`` float32.

    The checked inputs of :func:`influence_scores`. One matrix product per block,
    ``in_subset[:, rows].T @ correct_test``: sums of 0/1 products, exact in float32
    for K < 2**24, so every entry is the same whatever the blocking. ``lo`` and ``hi``
    are the Newcombe interval of ``infl`` (Wilson intervals of the two rates).
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
        with np.errstate(invalid="ignore", divide="ignore"):  # in place where it can be: at most six (b, m) blocks
            p_out = total - p_in
            p_out /= no
            p_in /= ni
            infl = p_in - p_out
            below_in, above_in = wilson_offsets(p_in, ni, z, overwrite=True)  # p_in's memory becomes below_in
            below_out, above_out = wilson_offsets(p_out, no, z, overwrite=True)
            del p_in, p_out
            lo = np.hypot(below_in, above_out, out=below_in)
            del above_out
            np.subtract(infl, lo, out=lo)
            hi = np.hypot(above_in, below_out, out=above_in)
            del below_out
            hi += infl
        np.clip(lo, -1, 1, out=lo)
        np.clip(hi, -1, 1, out=hi)
        bad = (n_in[rows] == 0) | (n_out[rows] == 0)
        infl[bad] = np.nan
        lo[bad] = np.nan
        hi[bad] = np.nan
        yield rows, infl, lo, hi
        del infl, lo, hi  # the caller has them: not held while the next block is computed


def _check_influence_inputs(correct_test, in_subset, block_rows):
    correct_test = check_binary(correct_test, "correct_test", axes=("K", "m"))
    k = correct_test.shape[0]
    in_subset = check_mask(in_subset, "in_subset", axes=("K", "n"), shape=(k, None), like="correct_test",
                           meaning=_IN_SUBSET)
    m = correct_test.shape[1]
    block_rows = max(1, _BLOCK_ENTRIES // m) if block_rows is None else check_int(block_rows, "block_rows")
    return correct_test, in_subset, block_rows


def influence_scores(correct_test, in_subset, *, block_rows: int | None = None,
                     confidence: float = 0.95) -> InfluenceResult:
    """Feldman-Zhang influence of every training example on every test example, with confidence intervals.

    Computed with one matrix product per block of training rows,
    ``in_subset[:, rows].T @ correct_test`` (float32, exact for K < 2**24),
    so memory is the four ``(n, m)`` float32 outputs plus one block. For data
    sets where ``(n, m)`` does not fit, use :func:`high_influence_pairs_streamed`,
    which keeps only the pairs above the thresholds.

    Args:
        correct_test: ``(K, m)`` bool (or 0/1): model k is correct on test example j.
        in_subset: ``(K, n)`` bool membership masks of the same K models.
        block_rows: training rows per matrix product; default about 2 million
            ``(row, test)`` entries per block (bounds the temporaries).
        confidence: two-sided level of the intervals, in (0, 1).

    Returns:
        :class:`InfluenceResult` with ``infl``, ``infl_lo``, ``infl_hi`` (the Newcombe
        interval) and ``se`` (``(infl_hi - infl_lo) / (2 z)``), each ``(n, m)`` float32
        (rows of NaN for examples in every subset or in none), and ``n_in``, ``n_out``.

    Raises:
        DataError: wrong shapes, ``in_subset`` not bool, ``correct_test`` not 0/1.
        ConfigError: ``block_rows`` is not a positive integer, ``confidence`` not in (0, 1).
    """
    z = z_value(confidence)
    correct_test, in_subset, block_rows = _check_influence_inputs(correct_test, in_subset, block_rows)
    k = correct_test.shape[0]
    n, m = in_subset.shape[1], correct_test.shape[1]
    n_in = np.count_nonzero(in_subset, axis=0).astype(np.int64)
    infl = np.empty((n, m), np.float32)
    lo = np.empty((n, m), np.float32)
    hi = np.empty((n, m), np.float32)
    for rows, block, block_lo, block_hi in _influence_blocks(correct_test, in_subset, block_rows, z):
        infl[rows] = block
        lo[rows] = block_lo
        hi[rows] = block_hi
    se = interval_se(lo, hi, np.float32(z)).astype(np.float32)
    return InfluenceResult(infl=infl, infl_lo=lo, infl_hi=hi, se=se, n_in=n_in, n_out=k - n_in,
                           n_models=int(k), confidence=float(confidence))


def high_influence_pairs(result: InfluenceResult, mem=None, *, infl_threshold: float = 0.15,
                         mem_threshold: float = 0.25) -> pd.DataFrame:
    """The (train, test) pairs with influence at or above a threshold, most influential first (no FDR).

    The defaults are the thresholds of Feldman & Zhang's published pairs
    (``infl >= 0.15`` and ``mem >= 0.25``). The memorization filter applies only
    when ``mem`` is given. With tens or hundreds of models many of these pairs
    are chance; :func:`high_influence_pairs_streamed` (which needs the
    correctness and membership arrays, not only the influence) estimates the
    list's false-discovery rate and keeps the pairs under a target.

    Args:
        result: the output of :func:`influence_scores`, ``(n, m)``.
        mem: optional ``(n,)`` memorization scores (an array or a
            :class:`MemorizationResult`); keeps pairs whose train example has
            ``mem >= mem_threshold`` (NaN memorization never passes).
        infl_threshold: keep pairs with ``infl >= infl_threshold``.
        mem_threshold: see ``mem``.

    Returns:
        DataFrame with columns :data:`PAIR_COLUMNS`: ``train_index``, ``test_index`` (int64),
        ``infl``, ``infl_lo``, ``infl_hi``, ``infl_se`` (float32), ``mem`` (float64, NaN
        without ``mem``) and ``fdr`` (float64, NaN: no null computed here), sorted by
        ``infl`` descending (ties by train then test index).

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
    return _pairs_frame(train_idx, test_idx, result.infl[train_idx, test_idx], result.infl_lo[train_idx, test_idx],
                        result.infl_hi[train_idx, test_idx], result.se[train_idx, test_idx], mem_arr)


def _pairs_frame(train_idx, test_idx, infl, lo, hi, se, mem_arr, fdr=None) -> pd.DataFrame:
    """The pairs table, most influential first (ties by train then test index)."""
    infl = np.asarray(infl, np.float32)
    order = np.lexsort((test_idx, train_idx, -infl))
    train_idx = np.asarray(train_idx)[order].astype(np.int64)
    return pd.DataFrame({
        "train_index": train_idx,
        "test_index": np.asarray(test_idx)[order].astype(np.int64),
        "infl": infl[order],
        "infl_lo": np.asarray(lo, np.float32)[order],
        "infl_hi": np.asarray(hi, np.float32)[order],
        "infl_se": np.asarray(se, np.float32)[order],
        "mem": mem_arr[train_idx] if mem_arr is not None else np.full(len(train_idx), np.nan),
        "fdr": np.full(len(train_idx), np.nan) if fdr is None else np.asarray(fdr, np.float64)[order],
    })


def high_influence_pairs_streamed(correct_test, in_subset, mem=None, *, infl_threshold: float = 0.15,
                                  mem_threshold: float = 0.25, fdr: float | None = 0.10, permutations: int = 50,
                                  block_rows: int | None = None, confidence: float = 0.95,
                                  seed: int = 0) -> InfluencePairs:
    """The high-influence (train, test) pairs under a target false-discovery rate, without the ``(n, m)`` matrix.

    Candidates are the pairs with ``infl >= infl_threshold`` and (with ``mem``)
    ``mem >= mem_threshold``, the fixed thresholds of Feldman & Zhang. Each
    gets its Newcombe interval ``[infl_lo, infl_hi]``. With ``fdr`` given, the
    candidates' statistic ``infl_lo`` is compared with ``permutations`` null
    runs in which the model axis of ``correct_test`` is permuted relative to
    ``in_subset`` (no real influence left, everything else kept); the estimated
    FDR of the list at each threshold is the null count over the observed
    count, each candidate's ``fdr`` is its q-value, and the pairs with
    ``fdr <= target`` are kept (the smallest threshold whose list has FDR at
    most the target; see :mod:`fitscope.estimators.influence_fdr`, which also
    documents the projected number of models). With ``fdr=None`` no null is
    computed and the candidates are returned as they are: the same pairs,
    values and order as ``high_influence_pairs(influence_scores(...), mem, ...)``.

    Computed block by block: each block of ``block_rows`` training rows gives
    its ``(block_rows, m)`` influence and bounds (one matrix product), keeps
    the candidates and is dropped; each permutation repeats that pass and
    keeps only histogram counts. Memory is a few ``(block_rows, m)`` float32
    temporaries plus the candidates; time is ``permutations + 1`` passes.
    Rows whose memorization is below ``mem_threshold`` are still computed (for
    the mean standard error) but give no candidate.

    Args:
        correct_test: ``(K, m)`` bool (or 0/1): model k is correct on test example j.
        in_subset: ``(K, n)`` bool membership masks of the same K models.
        mem: optional ``(n,)`` memorization (array or :class:`MemorizationResult`); keeps
            pairs whose train example has ``mem >= mem_threshold`` (NaN never passes).
        infl_threshold: candidates have ``infl >= infl_threshold``.
        mem_threshold: see ``mem``.
        fdr: target false-discovery rate of the kept list, in (0, 1); None keeps every candidate.
        permutations: null permutations P >= 1 when ``fdr`` is given; each costs one more pass over the
            blocks. With fewer, the cut-off of the kept list moves more with the seed (at 20 a run on
            digits kept 10 to 23 pairs depending on it); a target q keeps a lone pair only with P >= 1 / q.
        block_rows: training rows per block; default about 2 million ``(row, test)``
            entries per block (8 MB per float32 temporary).
        confidence: two-sided level of the intervals, in (0, 1).
        seed: seed of the permutations (permutation p uses ``derive_seed(seed, "permutation", p)``).

    Returns:
        :class:`InfluencePairs`: ``pairs`` (the kept pairs, columns :data:`PAIR_COLUMNS`,
        most influential first), ``candidates`` (every candidate, same columns), the
        FDR of each list, the statistic threshold, the projected models for the target,
        ``mean_se`` over every defined pair, ``n_models``, ``n_undefined`` and the settings.

    Raises:
        DataError: wrong shapes, ``in_subset`` not bool, ``correct_test`` not 0/1, ``mem`` not ``(n,)``.
        ConfigError: a threshold is not a finite number, ``fdr`` or ``confidence`` not in (0, 1),
            ``permutations`` or ``block_rows`` not a positive integer, a bad ``seed``.
    """
    z = z_value(confidence)
    correct_test, in_subset, block_rows = _check_influence_inputs(correct_test, in_subset, block_rows)
    infl_threshold = check_number(infl_threshold, "infl_threshold")
    mem_threshold = check_number(mem_threshold, "mem_threshold")
    target = None if fdr is None else check_fraction(fdr, "fdr", open_low=True, open_high=True)
    permutations = check_int(permutations, "permutations")
    seed = check_seed(seed)
    k, n = in_subset.shape
    mem_arr = None if mem is None else check_scores(mem, "mem", n, like="in_subset columns")
    row_ok = np.ones(n, bool) if mem_arr is None else mem_arr >= mem_threshold

    found: list[tuple[np.ndarray, ...]] = []
    se_sum, se_count = 0.0, 0
    m = correct_test.shape[1]
    # per-example aggregates, kept as the blocks pass: each train row's and each test column's largest influence
    train_max = np.full(n, np.nan, np.float32)
    train_argmax = np.full(n, -1, np.int64)
    test_max = np.full(m, -np.inf, np.float32)
    test_argmax = np.full(m, -1, np.int64)
    index_type = np.int32 if max(n, m) < 2**31 else np.int64  # candidates' indices: half the memory
    for rows, infl, lo, hi in _influence_blocks(correct_test, in_subset, block_rows, z):
        width = np.subtract(hi, lo).sum(axis=1, dtype=np.float64)  # a row is defined whole or not at all
        defined = ~np.isnan(width)
        se_sum += float(width[defined].sum()) / (2 * z)
        se_count += int(np.count_nonzero(defined)) * infl.shape[1]
        if defined.any():
            scored = np.where(defined[:, None], infl, -np.inf)  # undefined rows never win a column
            best = np.argmax(scored, axis=1)
            row_best = infl[np.arange(len(best)), best]
            train_max[rows] = np.where(defined, row_best, np.nan)
            train_argmax[rows] = np.where(defined, best, -1)
            col = np.argmax(scored, axis=0)
            del scored
            col_best = np.where(defined[col], infl[col, np.arange(m)], -np.inf)
            better = col_best > test_max
            test_max[better] = col_best[better]
            test_argmax[better] = col[better] + rows.start
        keep = infl >= infl_threshold  # NaN compares False
        keep &= row_ok[rows, None]
        r, t = np.nonzero(keep)
        if len(r):
            found.append(((r + rows.start).astype(index_type), t.astype(index_type), infl[r, t], lo[r, t],
                          hi[r, t]))
        del infl, lo, hi, width, keep  # not held while the next block is computed
    test_max[test_argmax < 0] = np.nan
    if found:
        train_idx, test_idx, values, lows, highs = (np.concatenate(parts) for parts in zip(*found))
    else:
        train_idx = test_idx = np.zeros(0, np.int64)
        values = lows = highs = np.zeros(0, np.float32)
    ses = interval_se(lows, highs, np.float32(z)).astype(np.float32)
    n_in = np.count_nonzero(in_subset, axis=0)
    common = dict(mean_se=se_sum / se_count if se_count else float("nan"), n_models=int(k),
                  n_undefined=int(np.count_nonzero((n_in == 0) | (n_in == k))), infl_threshold=infl_threshold,
                  mem_threshold=mem_threshold if mem_arr is not None else None, block_rows=int(block_rows),
                  confidence=float(confidence), n_candidates=int(len(values)), train_max=train_max,
                  train_argmax=train_argmax, test_max=test_max, test_argmax=test_argmax)
    if target is None:
        frame = _pairs_frame(train_idx, test_idx, values, lows, highs, ses, mem_arr)
        return InfluencePairs(pairs=frame, candidates=frame, **common)

    null = influence_fdr.NullCounts()
    rows_null = in_subset[:, row_ok]  # rows the memorization filter drops give no null candidate either
    for p in range(permutations):
        order = np.random.default_rng(derive_seed(seed, "permutation", p)).permutation(k)
        shuffled = correct_test[order]
        for _, infl, lo, _ in _influence_blocks(shuffled, rows_null, block_rows, z):
            keep = infl >= infl_threshold  # NaN compares False
            null.add(lo[keep], infl[keep])
            del infl, lo, keep
        null.finish_permutation()
    q, kept, threshold, kept_fdr = influence_fdr.select(lows, null, target)
    candidates = _pairs_frame(train_idx, test_idx, values, lows, highs, ses, mem_arr, fdr=q)
    pairs = _pairs_frame(train_idx[kept], test_idx[kept], values[kept], lows[kept], highs[kept], ses[kept],
                         mem_arr, fdr=q[kept])
    null_mean = float(influence_fdr.expected_null(null.total, permutations))
    return InfluencePairs(
        pairs=pairs, candidates=candidates, fdr_target=target, fdr=kept_fdr, fdr_threshold=threshold,
        candidates_fdr=float(min(1.0, null_mean / len(values))) if len(values) else float("nan"),
        null_candidates=float(null_mean), permutations=permutations, seed=seed,
        models_for_target=influence_fdr.models_for_target(null, len(values), infl_threshold=infl_threshold,
                                                          n_models=k, target=target, kept=len(pairs),
                                                          kept_fdr=kept_fdr),
        **common)
