"""Memorization and influence estimates on arrays whose answer is known by construction."""

from __future__ import annotations

import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

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
    np.testing.assert_allclose(result.mem_se, 0.0)
    np.testing.assert_array_equal(result.n_in + result.n_out, 200)
    np.testing.assert_array_equal(result.n_in, in_subset.sum(axis=0))
    assert result.n_models == 200 and result.n_examples == 4 and result.method == "feldman-zhang"
    assert result.n_undefined == 0


def test_hand_computed_small_case_accepts_01_ints():
    in_subset = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
    correct = np.array([[1, 1], [0, 1], [1, 0], [0, 1]])  # 0/1 ints are fine for correctness
    result = memorization_scores(correct, in_subset)
    # example 0: in {0,1} -> 1/2, out {2,3} -> 1/2; example 1: in {1,2} -> 1/2, out {0,3} -> 1
    np.testing.assert_allclose(result.p_in, [0.5, 0.5])
    np.testing.assert_allclose(result.p_out, [0.5, 1.0])
    np.testing.assert_allclose(result.mem, [0.0, -0.5])
    np.testing.assert_allclose(result.mem_se, [np.sqrt(0.25 / 2 + 0.25 / 2), np.sqrt(0.25 / 2)])
    frame = result.to_frame()
    assert list(frame.columns) == ["index", "mem", "mem_se", "p_in", "p_out", "n_in", "n_out"]
    assert len(frame) == 2


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
    assert np.unravel_index(np.argmax(result.infl), result.infl.shape) == (7, 3)
    assert result.infl[7, 3] == pytest.approx(1.0)
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
    expected_se = np.full((n, m), np.nan)
    for i in range(n):
        for j in range(m):
            inn, out = correct_test[in_subset[:, i], j], correct_test[~in_subset[:, i], j]
            if len(inn) and len(out):
                expected[i, j] = inn.mean() - out.mean()
                expected_se[i, j] = np.sqrt(inn.mean() * (1 - inn.mean()) / len(inn)
                                            + out.mean() * (1 - out.mean()) / len(out))
    np.testing.assert_allclose(result.infl, expected, atol=1e-6)
    np.testing.assert_allclose(result.se, expected_se, atol=1e-6)
    assert result.n_undefined == 1
    # memorization is the influence of an example on itself
    same = influence_scores(in_subset.copy(), in_subset)
    mem = memorization_scores(in_subset, in_subset)
    np.testing.assert_allclose(np.diag(same.infl), mem.mem, atol=1e-6)


def test_influence_blocks_do_not_change_the_result():
    rng = np.random.default_rng(5)
    in_subset = _masks(rng, 50, 37)
    correct_test = rng.random((50, 11)) < 0.4
    a = influence_scores(correct_test, in_subset, block_rows=1)
    b = influence_scores(correct_test, in_subset, block_rows=5)
    c = influence_scores(correct_test, in_subset)
    np.testing.assert_array_equal(a.infl, c.infl)
    np.testing.assert_array_equal(b.se, c.se)


def _toy_influence() -> InfluenceResult:
    infl = np.array([[0.5, 0.15, 0.1], [0.2, np.nan, 0.9], [0.3, 0.16, -0.4]], np.float32)
    infl[1] = np.nan
    return InfluenceResult(infl=infl, se=np.full((3, 3), 0.05, np.float32), n_in=np.array([3, 5, 2]),
                           n_out=np.array([2, 0, 3]), n_models=5)


def test_high_influence_pairs_thresholds_sorting_and_mem_filter():
    result = _toy_influence()
    pairs = high_influence_pairs(result)  # paper defaults: infl >= 0.15, no mem filter
    assert list(pairs.columns) == ["train_index", "test_index", "infl", "infl_se", "mem"]
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
                                             mem_threshold=0.3, block_rows=block_rows)
    assert isinstance(streamed, InfluencePairs)
    assert len(dense) > 4  # the planted pairs and some noise pass the low threshold
    pd.testing.assert_frame_equal(streamed.pairs, dense)
    assert streamed.mean_se == pytest.approx(float(np.nanmean(dense_infl.se.astype(np.float64))), rel=1e-6)
    assert streamed.n_undefined == 1 and streamed.n_models == 120
    assert streamed.mem_threshold == (0.3 if with_mem else None)
    top = streamed.pairs.iloc[0]
    assert (int(top.train_index), int(top.test_index)) in {(7, 3), (7, 5), (20, 0), (40, 16)}


def test_streamed_pairs_with_nothing_above_the_threshold_is_an_empty_table():
    _, correct_test, in_subset = _planted_case(9)
    out = high_influence_pairs_streamed(correct_test, in_subset, infl_threshold=1.5)
    assert len(out.pairs) == 0
    assert list(out.pairs.columns) == ["train_index", "test_index", "infl", "infl_se", "mem"]
    assert out.pairs.train_index.dtype == np.int64 and out.pairs.infl.dtype == np.float32


def test_streamed_pairs_memory_is_bounded_by_the_block_not_n_by_m():
    rng = np.random.default_rng(10)
    k, n, m = 40, 3000, 2000  # a dense float32 (n, m) matrix is 24 MB
    in_subset = _masks(rng, k, n)
    correct_test = rng.random((k, m)) < 0.5
    tracemalloc.start()
    try:
        out = high_influence_pairs_streamed(correct_test, in_subset, infl_threshold=0.9, block_rows=50)
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
