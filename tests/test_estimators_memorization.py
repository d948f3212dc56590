"""Memorization and influence estimates on arrays whose answer is known by construction."""

from __future__ import annotations

import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from scipy.stats import binomtest

from fitscope.errors import ConfigError, DataError
from fitscope.estimators import (
    InfluencePairs,
    InfluenceResult,
    MemorizationResult,
    high_influence_pairs,
    high_influence_pairs_streamed,
    influence_scores,
    memorization_scores,
)
from fitscope.estimators.intervals import wilson_interval
from fitscope.estimators.memorization import PAIR_COLUMNS


def _masks(rng: np.random.Generator, k: int, n: int, ratio: float = 0.5) -> np.ndarray:
    return rng.random((k, n)) < ratio


def test_memorized_versus_always_correct():
    rng = np.random.default_rng(0)
    in_subset = _masks(rng, 200, 4)
    correct = np.empty_like(in_subset)
    correct[:, 0] = in_subset[:, 0]  # right only when trained on: memorized
    correct[:, 1] = True  # always right: typical
    correct[:, 2] = False  # never right
    correct[:, 3] = ~in_subset[:, 3]  # right only when held out
    result = memorization_scores(correct, in_subset)
    assert isinstance(result, MemorizationResult)
    np.testing.assert_allclose(result.mem, [1.0, 0.0, 0.0, -1.0])
    # every rate here is 0 or 1, yet no interval collapses to a point
    assert (result.mem_hi - result.mem_lo > 0.01).all() and (result.mem_se > 0).all()
    assert (result.mem_lo <= result.mem).all() and (result.mem <= result.mem_hi).all()
    np.testing.assert_allclose(result.mem_hi[0], 1.0) and np.testing.assert_allclose(result.mem_lo[3], -1.0)
    np.testing.assert_array_equal(result.n_in + result.n_out, 200)
    np.testing.assert_array_equal(result.n_in, in_subset.sum(axis=0))
    assert result.n_models == 200 and result.n_examples == 4 and result.method == "feldman-zhang"
    assert result.n_undefined == 0 and result.confidence == 0.95


def test_two_models_do_not_give_a_certain_memorization():
    """The issue's case: mem = 1 from two models had standard error 0; its interval is now most of [-1, 1]."""
    result = memorization_scores(np.array([[True], [False]]), np.array([[True], [False]]))
    z = 1.959963984540054
    c = z * z / (1 + z * z)  # the Wilson interval of 1 of 1 is [1 - c, 1], of 0 of 1 is [0, c]
    assert result.mem[0] == 1.0
    np.testing.assert_allclose([result.p_in_lo[0], result.p_in_hi[0]], [1 - c, 1.0])
    np.testing.assert_allclose([result.p_out_lo[0], result.p_out_hi[0]], [0.0, c])
    np.testing.assert_allclose(result.mem_lo[0], 1 - np.sqrt(2) * c)  # Newcombe: 1 - sqrt(c^2 + c^2) = -0.122
    np.testing.assert_allclose(result.mem_hi[0], 1.0)
    np.testing.assert_allclose(result.mem_se[0], np.sqrt(2) * c / (2 * z))


def _wilson_scipy(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return ci.low, ci.high


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_wilson_interval_matches_scipy_on_every_count(confidence):
    n = np.concatenate([np.full(m + 1, m) for m in range(1, 61)])
    k = np.concatenate([np.arange(m + 1) for m in range(1, 61)])
    lo, hi = wilson_interval(k, n, confidence=confidence)
    expected = np.array([_wilson_scipy(a, b, confidence) for a, b in zip(k, n)])
    np.testing.assert_allclose(lo, expected[:, 0], atol=1e-12)
    np.testing.assert_allclose(hi, expected[:, 1], atol=1e-12)
    assert (lo[k == 0] == 0).all() and (hi[k == n] == 1).all() and (hi - lo > 0).all()
    lo0, hi0 = wilson_interval(3, 0)  # no trials: no interval
    assert np.isnan(lo0) and np.isnan(hi0)


def test_hand_computed_small_case_accepts_01_ints():
    in_subset = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    correct = np.array([[1, 1], [0, 1], [1, 0], [0, 1]])  # 0/1 ints are fine for correctness
    result = memorization_scores(correct, in_subset)
    # example 0: in {0,1} -> 1/2, out {2,3} -> 1/2; example 1: in {1,2} -> 1/2, out {0,3} -> 1
    np.testing.assert_allclose(result.p_in, [0.5, 0.5])
    np.testing.assert_allclose(result.p_out, [0.5, 1.0])
    np.testing.assert_allclose(result.mem, [0.0, -0.5])
    # Newcombe's method 10 from scipy's Wilson intervals, written out
    for i, (k_in, k_out) in enumerate([(1, 1), (1, 2)]):
        (l1, u1), (l2, u2) = _wilson_scipy(k_in, 2), _wilson_scipy(k_out, 2)
        p1, p2 = k_in / 2, k_out / 2
        assert result.mem_lo[i] == pytest.approx(p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), abs=1e-12)
        assert result.mem_hi[i] == pytest.approx(p1 - p2 + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), abs=1e-12)
        assert (result.p_in_lo[i], result.p_in_hi[i]) == pytest.approx((l1, u1), abs=1e-12)
        assert (result.p_out_lo[i], result.p_out_hi[i]) == pytest.approx((l2, u2), abs=1e-12)
    np.testing.assert_allclose(result.mem_se, (result.mem_hi - result.mem_lo) / (2 * 1.959963984540054))
    frame = result.to_frame()
    assert list(frame.columns) == ["index", "mem", "mem_lo", "mem_hi", "mem_se", "p_in", "p_in_lo", "p_in_hi",
                                   "p_out", "p_out_lo", "p_out_hi", "n_in", "n_out"]
    assert len(frame) == 2
    narrow = memorization_scores(correct, in_subset, confidence=0.5)
    assert (narrow.mem_hi - narrow.mem_lo < result.mem_hi - result.mem_lo).all() and narrow.confidence == 0.5


def _bernoulli_mem(rng: np.random.Generator, k: int, n: int, p_in: float, p_out: float) -> MemorizationResult:
    in_subset = _masks(rng, k, n, 0.7)
    u = rng.random((k, n))
    correct = np.where(in_subset, u < p_in, u < p_out)
    return memorization_scores(correct, in_subset)


def test_standard_error_is_calibrated_and_shrinks_as_one_over_sqrt_k():
    rng = np.random.default_rng(1)
    small = _bernoulli_mem(rng, 100, 2000, 0.9, 0.3)
    large = _bernoulli_mem(rng, 1600, 2000, 0.9, 0.3)
    assert abs(np.mean(large.mem) - 0.6) < 0.01
    # 16x the models: a 4x smaller standard error
    ratio = np.mean(small.mem_se) / np.mean(large.mem_se)
    assert 3.8 < ratio < 4.2
    # the reported standard error matches the spread of the estimates
    for result in (small, large):
        assert 0.9 < np.std(result.mem) / np.mean(result.mem_se) < 1.1


_Z95 = 1.959963984540054


def _covers(lo, hi, truth) -> float:
    """Share of the intervals ``[lo, hi]`` that hold ``truth`` (a rounding slack of 1e-12)."""
    return float(np.mean((lo <= truth + 1e-12) & (truth - 1e-12 <= hi)))


def _coverage(k: int, p_in: float, p_out: float, seed: int, columns: int = 20_000) -> dict:
    """Coverage of the 95% intervals over ``columns`` simulated examples with true rates ``p_in``, ``p_out``.

    Each column is one repeat: K models, each holding the example with probability 0.7 (so
    n_in is about 0.7 K), correct with probability p_in when they hold it, p_out otherwise.
    Also the plug-in (Wald) interval ``estimate +- 1.96 sqrt(p (1 - p) / n)`` of the same draws.
    """
    rng = np.random.default_rng(seed)
    in_subset = _masks(rng, k, columns, 0.7)
    u = rng.random((k, columns))
    r = memorization_scores(np.where(in_subset, u < p_in, u < p_out), in_subset)

    def wald(p, n):
        return _Z95 * np.sqrt(p * (1 - p) / n)

    w_mem = _Z95 * np.sqrt(r.p_in * (1 - r.p_in) / r.n_in + r.p_out * (1 - r.p_out) / r.n_out)
    return dict(
        p_in=_covers(r.p_in_lo, r.p_in_hi, p_in), p_out=_covers(r.p_out_lo, r.p_out_hi, p_out),
        mem=_covers(r.mem_lo, r.mem_hi, p_in - p_out),
        p_in_plugin=_covers(r.p_in - wald(r.p_in, r.n_in), r.p_in + wald(r.p_in, r.n_in), p_in),
        p_out_plugin=_covers(r.p_out - wald(r.p_out, r.n_out), r.p_out + wald(r.p_out, r.n_out), p_out),
        mem_plugin=_covers(r.mem - w_mem, r.mem + w_mem, p_in - p_out),
    )


@pytest.mark.parametrize("k", [50, 200])
def test_intervals_cover_known_rates_and_the_plug_in_does_not(k):
    """95% intervals on simulated Bernoulli correctness with known rates (20,000 repeats per case).

    Per rate (Wilson): 0.02 and 0.5 are covered in 93-97% of repeats. A rate of exactly 0 or 1 is
    covered every time: the interval always holds the boundary, so the 93-97% target cannot hold
    there (nor can any interval that contains the boundary). For the difference (Newcombe) the
    target holds except when both rates are small, where the interval is conservative (about
    98-99% at 0.02 vs 0.02). The plug-in interval of the old standard error falls below 93% at
    small rates: at 0.02 it covers 26-70% of the time, and it collapsed to a point at 0 and 1.
    """
    table = {}
    for p_in, p_out in [(0.0, 0.0), (0.02, 0.02), (0.5, 0.5), (1.0, 1.0), (1.0, 0.02), (0.98, 0.02),
                        (0.5, 0.02), (1.0, 0.0)]:
        table[(p_in, p_out)] = cov = _coverage(k, p_in, p_out, seed=k)
        print(f"K={k} p_in={p_in} p_out={p_out} " + " ".join(f"{name}={v:.4f}" for name, v in cov.items()))
        for rate, name in ((p_in, "p_in"), (p_out, "p_out")):
            if rate in (0.0, 1.0):
                assert cov[name] == 1.0, (rate, name)
            else:
                assert 0.93 <= cov[name] <= 0.97, (rate, name, cov[name])
        if p_in == p_out == 0.02:
            assert 0.97 < cov["mem"] <= 0.995  # conservative where both rates are small
        elif p_in - p_out in (0.0, 1.0) and p_in in (0.0, 1.0):
            assert cov["mem"] == 1.0  # 0 - 0, 1 - 1, 1 - 0: the interval always holds the boundary difference
        else:
            assert 0.93 <= cov["mem"] <= 0.97, (p_in, p_out, cov["mem"])
    # the test can fail: the plug-in interval of the old standard error misses small rates
    assert table[(0.02, 0.02)]["p_in_plugin"] < 0.93 and table[(0.02, 0.02)]["p_out_plugin"] < 0.93
    assert table[(1.0, 0.02)]["mem_plugin"] < 0.93 and table[(0.98, 0.02)]["mem_plugin"] < 0.93


def test_examples_in_every_subset_or_none_are_nan_and_counted_without_warnings():
    rng = np.random.default_rng(2)
    in_subset = _masks(rng, 30, 5)
    in_subset[:, 1] = True
    in_subset[:, 3] = False
    correct = rng.random((30, 5)) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = memorization_scores(correct, in_subset)
    assert result.n_undefined == 2
    assert np.isnan(result.mem[[1, 3]]).all() and np.isnan(result.mem_se[[1, 3]]).all()
    assert np.isnan(result.p_out[1]) and not np.isnan(result.p_in[1])
    assert np.isnan(result.p_in[3]) and not np.isnan(result.p_out[3])
    assert np.isfinite(result.mem[[0, 2, 4]]).all()


def test_influence_recovers_a_planted_dependency():
    rng = np.random.default_rng(3)
    k, n, m = 400, 30, 20
    in_subset = _masks(rng, k, n)
    correct_test = rng.random((k, m)) < 0.5
    correct_test[:, 3] = in_subset[:, 7]  # test 3 is right exactly when train 7 was trained on
    result = influence_scores(correct_test, in_subset)
    assert isinstance(result, InfluenceResult)
    assert result.infl.shape == (n, m) and result.infl.dtype == np.float32 and result.se.dtype == np.float32
    assert result.infl_lo.dtype == np.float32 and result.infl_hi.shape == (n, m)
    assert np.unravel_index(np.argmax(result.infl), result.infl.shape) == (7, 3)
    assert result.infl[7, 3] == pytest.approx(1.0)
    # the planted pair's interval stays clear of 0; the lower bounds rank it first too
    assert result.infl_lo[7, 3] > 0.9 and np.unravel_index(np.argmax(result.infl_lo), (n, m)) == (7, 3)
    others = np.ones((n, m), bool)
    others[7, 3] = False
    assert np.abs(result.infl[others]).max() < 0.3
    # the estimated standard error fits the null pairs' spread
    assert 0.8 < np.std(result.infl[others]) / np.mean(result.se[others]) < 1.2


def test_influence_matches_a_brute_force_loop_on_a_tiny_case():
    rng = np.random.default_rng(4)
    k, n, m = 13, 6, 5
    in_subset = _masks(rng, k, n)
    in_subset[:, 2] = True  # undefined row
    correct_test = rng.random((k, m)) < 0.6
    result = influence_scores(correct_test, in_subset, block_rows=4)
    expected = np.full((n, m), np.nan)
    expected_lo = np.full((n, m), np.nan)
    expected_hi = np.full((n, m), np.nan)
    for i in range(n):
        for j in range(m):
            inn, out = correct_test[in_subset[:, i], j], correct_test[~in_subset[:, i], j]
            if len(inn) and len(out):
                p1, p2 = inn.mean(), out.mean()
                (l1, u1), (l2, u2) = _wilson_scipy(inn.sum(), len(inn)), _wilson_scipy(out.sum(), len(out))
                expected[i, j] = p1 - p2
                expected_lo[i, j] = p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
                expected_hi[i, j] = p1 - p2 + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    np.testing.assert_allclose(result.infl, expected, atol=1e-6)
    np.testing.assert_allclose(result.infl_lo, expected_lo, atol=1e-6)
    np.testing.assert_allclose(result.infl_hi, expected_hi, atol=1e-6)
    np.testing.assert_allclose(result.se, (expected_hi - expected_lo) / (2 * _Z95), atol=1e-6)
    assert result.n_undefined == 1
    # memorization is the influence of an example on itself, interval included
    same = influence_scores(in_subset.copy(), in_subset)
    mem = memorization_scores(in_subset, in_subset)
    np.testing.assert_allclose(np.diag(same.infl), mem.mem, atol=1e-6)
    np.testing.assert_allclose(np.diag(same.infl_lo), mem.mem_lo, atol=1e-6)
    np.testing.assert_allclose(np.diag(same.infl_hi), mem.mem_hi, atol=1e-6)


def test_influence_blocks_do_not_change_the_result():
    rng = np.random.default_rng(5)
    in_subset = _masks(rng, 50, 37)
    correct_test = rng.random((50, 11)) < 0.4
    a = influence_scores(correct_test, in_subset, block_rows=1)
    b = influence_scores(correct_test, in_subset, block_rows=5)
    c = influence_scores(correct_test, in_subset)
    np.testing.assert_array_equal(a.infl, c.infl)
    np.testing.assert_array_equal(b.se, c.se)
    np.testing.assert_array_equal(a.infl_lo, c.infl_lo)
    np.testing.assert_array_equal(b.infl_hi, c.infl_hi)


def _toy_influence() -> InfluenceResult:
    infl = np.array([[0.5, 0.15, 0.1], [0.2, np.nan, 0.9], [0.3, 0.16, -0.4]], np.float32)
    infl[1] = np.nan
    return InfluenceResult(infl=infl, infl_lo=infl - 0.1, infl_hi=infl + 0.1, se=np.full((3, 3), 0.05, np.float32),
                           n_in=np.array([3, 5, 2]), n_out=np.array([2, 0, 3]), n_models=5)


def test_high_influence_pairs_thresholds_sorting_and_mem_filter():
    result = _toy_influence()
    pairs = high_influence_pairs(result)  # paper defaults: infl >= 0.15, no mem filter
    assert list(pairs.columns) == PAIR_COLUMNS
    assert PAIR_COLUMNS == ["train_index", "test_index", "infl", "infl_lo", "infl_hi", "infl_se", "mem", "fdr"]
    np.testing.assert_allclose(pairs.infl_lo, pairs.infl - 0.1, atol=1e-6)
    assert pairs["fdr"].isna().all()  # no null here: the dense table has no FDR
    assert pairs[["train_index", "test_index"]].values.tolist() == [[0, 0], [2, 0], [2, 1], [0, 1]]
    assert pairs["infl"].is_monotonic_decreasing and pairs["mem"].isna().all()
    assert pairs["train_index"].dtype == np.int64
    mem = np.array([0.25, 1.0, 0.1])
    filtered = high_influence_pairs(result, mem)  # mem >= 0.25 keeps train 0 only
    assert filtered[["train_index", "test_index"]].values.tolist() == [[0, 0], [0, 1]]
    np.testing.assert_allclose(filtered["mem"], 0.25)
    strict = high_influence_pairs(result, mem, infl_threshold=0.3, mem_threshold=0.0)
    assert strict[["train_index", "test_index"]].values.tolist() == [[0, 0], [2, 0]]
    empty = high_influence_pairs(result, infl_threshold=0.95)
    assert isinstance(empty, pd.DataFrame) and len(empty) == 0


def test_high_influence_pairs_takes_a_memorization_result():
    rng = np.random.default_rng(6)
    in_subset = _masks(rng, 200, 8)
    correct = in_subset.copy()  # every train example memorized
    correct_test = rng.random((200, 4)) < 0.5
    correct_test[:, 1] = in_subset[:, 5]
    infl = influence_scores(correct_test, in_subset)
    pairs = high_influence_pairs(infl, memorization_scores(correct, in_subset))
    assert pairs.iloc[0][["train_index", "test_index"]].tolist() == [5, 1]
    assert pairs.iloc[0]["mem"] == 1.0


@pytest.mark.parametrize("call, error, message", [
    (lambda c, s: memorization_scores(c, s[:, :-1]), DataError,
     "in_subset: expected a bool array of shape (K, n) = (6, 5) like correct, got shape (6, 4)"),
    (lambda c, s: memorization_scores(c, s.astype(np.int64)), DataError,
     "in_subset: expected a bool array (True = example i is in model k's training subset), got dtype int64"),
    (lambda c, s: memorization_scores(c[0], s), DataError,
     "correct: expected a 2-D bool or 0/1 array (K, n), got shape (5,)"),
    (lambda c, s: memorization_scores(np.where(c, 0.5, 0.0), s), DataError,
     "correct: expected bool or 0/1 values, got 0.5 at [0, 0]"),
    (lambda c, s: memorization_scores(np.zeros((0, 5), bool), s[:0]), DataError,
     "correct: expected at least one entry on every axis (K, n), got shape (0, 5)"),
    (lambda c, s: influence_scores(c[:5], s), DataError,
     "in_subset: expected a 2-D bool array (K, n) with K = 5 like correct_test, got shape (6, 5)"),
    (lambda c, s: influence_scores(c, s, block_rows=0), ConfigError,
     "block_rows: expected an integer >= 1, got 0"),
    (lambda c, s: high_influence_pairs(c), DataError,
     "result: expected an InfluenceResult from influence_scores, got ndarray"),
])
def test_errors_name_argument_expected_and_got(call, error, message):
    correct = np.ones((6, 5), bool)
    in_subset = np.ones((6, 5), bool)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(correct, in_subset)


def test_high_influence_pairs_option_errors():
    result = _toy_influence()
    with pytest.raises(ConfigError, match=r"^infl_threshold: expected a number in \[-inf, inf\], got nan$"):
        high_influence_pairs(result, infl_threshold=float("nan"))
    with pytest.raises(ConfigError, match=r"^mem_threshold: expected a number .*, got '0.2'$"):
        high_influence_pairs(result, np.zeros(3), mem_threshold="0.2")
    with pytest.raises(DataError, match=re.escape("mem: expected a real array of shape (n,) = (3,) like "
                                                  "result.infl rows, got shape (4,)")):
        high_influence_pairs(result, np.zeros(4))


def _planted_case(seed: int, k: int = 120, n: int = 41, m: int = 17):
    """Random subsets with a few train -> test dependencies planted, one row in every subset (undefined)."""
    rng = np.random.default_rng(seed)
    in_subset = _masks(rng, k, n, 0.7)
    in_subset[:, 4] = True
    correct_test = rng.random((k, m)) < 0.6
    for i, j in ((7, 3), (7, 5), (20, 0), (40, 16)):
        correct_test[:, j] = in_subset[:, i] | (rng.random(k) < 0.2)
    correct = np.where(in_subset, rng.random((k, n)) < 0.95, rng.random((k, n)) < 0.5)
    return correct, correct_test, in_subset


@pytest.mark.parametrize("block_rows", [1, 3, 16, 41, 1000, None])
@pytest.mark.parametrize("with_mem", [False, True])
def test_streamed_pairs_equal_the_dense_ones(block_rows, with_mem):
    correct, correct_test, in_subset = _planted_case(8)
    mem = memorization_scores(correct, in_subset) if with_mem else None
    dense_infl = influence_scores(correct_test, in_subset)
    dense = high_influence_pairs(dense_infl, mem, infl_threshold=0.1, mem_threshold=0.3)
    streamed = high_influence_pairs_streamed(correct_test, in_subset, mem, infl_threshold=0.1,
                                             mem_threshold=0.3, block_rows=block_rows, fdr=None)
    assert isinstance(streamed, InfluencePairs)
    assert len(dense) > 4  # the planted pairs and some noise pass the low threshold
    pd.testing.assert_frame_equal(streamed.pairs, dense)
    assert streamed.permutations == 0 and streamed.fdr_target is None and streamed.n_candidates == len(dense)
    # with a target FDR: a subset of the same rows, now with q-values, whatever the blocking
    kept = high_influence_pairs_streamed(correct_test, in_subset, mem, infl_threshold=0.1, mem_threshold=0.3,
                                         block_rows=block_rows, seed=1)
    pd.testing.assert_frame_equal(kept.candidates.drop(columns="fdr"), dense.drop(columns="fdr"))
    reference = high_influence_pairs_streamed(correct_test, in_subset, mem, infl_threshold=0.1,
                                              mem_threshold=0.3, seed=1)
    pd.testing.assert_frame_equal(kept.pairs, reference.pairs)
    assert 0 < len(kept.pairs) < len(dense) and (kept.pairs.fdr <= 0.1).all()
    assert streamed.mean_se == pytest.approx(float(np.nanmean(dense_infl.se.astype(np.float64))), rel=1e-6)
    assert streamed.n_undefined == 1 and streamed.n_models == 120
    assert streamed.mem_threshold == (0.3 if with_mem else None)
    top = streamed.pairs.iloc[0]
    assert (int(top.train_index), int(top.test_index)) in {(7, 3), (7, 5), (20, 0), (40, 16)}


def test_streamed_pairs_with_nothing_above_the_threshold_is_an_empty_table():
    _, correct_test, in_subset = _planted_case(9)
    out = high_influence_pairs_streamed(correct_test, in_subset, infl_threshold=1.5)
    assert len(out.pairs) == 0 and out.n_candidates == 0
    assert list(out.pairs.columns) == PAIR_COLUMNS
    assert out.pairs.train_index.dtype == np.int64 and out.pairs.infl.dtype == np.float32
    assert out.pairs.fdr.dtype == np.float64
    assert np.isnan(out.fdr) and out.fdr_threshold == np.inf and out.models_for_target is None
    assert out.metadata()["n_kept"] == 0 and out.metadata()["fdr"] is None


def test_streamed_pairs_memory_is_bounded_by_the_block_not_n_by_m():
    rng = np.random.default_rng(10)
    k, n, m = 40, 3000, 2000  # a dense float32 (n, m) matrix is 24 MB
    in_subset = _masks(rng, k, n)
    correct_test = rng.random((k, m)) < 0.5
    tracemalloc.start()
    try:  # 10 null permutations (default 50): 11 passes over the blocks, each with the same peak
        out = high_influence_pairs_streamed(correct_test, in_subset, infl_threshold=0.9, block_rows=50,
                                            permutations=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    block_bytes = 50 * m * 4
    assert peak < 10 * block_bytes < n * m * 4 / 5, f"peak {peak / 1e6:.1f} MB"
    assert out.block_rows == 50


def test_streamed_pairs_errors():
    _, correct_test, in_subset = _planted_case(11)
    with pytest.raises(ConfigError, match="^block_rows: expected an integer >= 1, got 0$"):
        high_influence_pairs_streamed(correct_test, in_subset, block_rows=0)
    with pytest.raises(ConfigError, match="^infl_threshold: expected a number"):
        high_influence_pairs_streamed(correct_test, in_subset, infl_threshold=float("nan"))
    with pytest.raises(DataError, match=re.escape("mem: expected a real array of shape (n,) = (41,)")):
        high_influence_pairs_streamed(correct_test, in_subset, np.zeros(5))
    with pytest.raises(DataError, match="in_subset: expected a 2-D bool array"):
        high_influence_pairs_streamed(correct_test[:3], in_subset)
    with pytest.raises(ConfigError, match=r"^fdr: expected a number in \(0, 1\), got 0$"):
        high_influence_pairs_streamed(correct_test, in_subset, fdr=0)
    with pytest.raises(ConfigError, match="^permutations: expected an integer >= 1, got 0$"):
        high_influence_pairs_streamed(correct_test, in_subset, permutations=0)
    with pytest.raises(ConfigError, match=r"^confidence: expected a number in \(0, 1\), got 1.0$"):
        high_influence_pairs_streamed(correct_test, in_subset, confidence=1.0)
    with pytest.raises(ConfigError, match="^seed: expected"):
        high_influence_pairs_streamed(correct_test, in_subset, seed=-1)
    with pytest.raises(ConfigError, match=r"^confidence: expected a number in \(0, 1\), got 95$"):
        memorization_scores(np.ones((3, 2), bool), np.ones((3, 2), bool), confidence=95)
