"""The false-discovery rate of high-influence pairs: a permutation null on data whose truth is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fitscope.estimators import high_influence_pairs_streamed, subset_masks
from fitscope.estimators.influence_fdr import NullCounts, bin_edge, bin_index, models_for_target, q_values, select


def _null_counts(per_permutation: list[list[tuple[float, float]]]) -> NullCounts:
    """Null counts from ``(infl_lo, infl)`` values, one list per permutation."""
    null = NullCounts()
    for values in per_permutation:
        if values:
            lo, infl = np.array(values).T
            null.add(lo, infl)
        null.finish_permutation()
    return null


def test_q_values_and_selection_by_hand():
    # two permutations: null statistics 0.35 | 0.25, 0.15
    null = _null_counts([[(0.35, 0.5)], [(0.25, 0.4), (0.15, 0.3)]])
    assert null.permutations == 2 and null.totals == [1, 2] and null.total == 3
    stat = np.array([0.3, 0.5, 0.2, 0.4])
    # V(t) = (1 + null >= t) / 2; FDR = V / R:  0.5: 0.5/1, 0.4: 0.5/2, 0.3: 1/3, 0.2: 1.5/4
    fdr = {0.5: 0.5, 0.4: 0.25, 0.3: 1 / 3, 0.2: 0.375}
    q = q_values(stat, null)
    # q = the smallest FDR at or below the value: 0.5 -> min(0.5, 0.25, 1/3, 0.375)
    expected = {0.5: 0.25, 0.4: 0.25, 0.3: 1 / 3, 0.2: 0.375}
    np.testing.assert_allclose(q, [expected[s] for s in stat])
    assert all(q[i] <= fdr[s] for i, s in enumerate(stat))
    q2, keep, threshold, kept_fdr = select(stat, null, 0.3)
    np.testing.assert_array_equal(keep, [False, True, False, True])
    assert threshold == 0.4 and kept_fdr == pytest.approx(0.25)
    _, keep, threshold, kept_fdr = select(stat, null, 0.2)  # nothing reaches 20%
    assert not keep.any() and threshold == math.inf and math.isnan(kept_fdr)
    # ties count together: two candidates at 0.4 make R = 2 at that threshold
    np.testing.assert_allclose(q_values(np.array([0.4, 0.4]), null), [0.25, 0.25])
    assert len(q_values(np.zeros(0), null)) == 0


def test_null_values_count_at_their_bins_lower_edge():
    value = 0.3
    edge = bin_edge(int(bin_index(value)))
    assert edge <= value < edge + 2 / 2**14
    null = _null_counts([[(value, value)]])
    # a threshold just above the value but in its bin still counts it (a conservative rounding)
    assert null.tail([value + 1e-6])[0] == 1 and null.tail([edge + 2 / 2**14])[0] == 0
    assert bin_index(1.0) == 2**14 - 1 and bin_index(-1.0) == 0


def test_models_for_target_by_hand():
    # null influences 0.3, 0.2 | 0.16 over two permutations; 20 candidates at threshold 0.15, K = 100
    null = _null_counts([[(0.1, 0.3), (0.05, 0.2)], [(0.02, 0.16)]])
    # V = (1 + 3) / 2 = 2, sd of (2, 1) = 0.707: S = 20 - 2 - 1.414; allowed V = 0.1 S / 0.9 = 1.84 < 2
    # -> the null pair at 0.16 must drop below the threshold: 0.15 sqrt(K' / K) just above 0.16
    edge = bin_edge(int(bin_index(0.16)) + 1)
    expected = math.ceil(100 * (edge / 0.15) ** 2)
    assert expected == 114
    assert models_for_target(null, 20, infl_threshold=0.15, n_models=100, target=0.1) == expected
    assert models_for_target(null, 40, infl_threshold=0.15, n_models=100, target=0.1) == 100  # already within
    assert models_for_target(null, 4, infl_threshold=0.15, n_models=100, target=0.1) is None  # no excess
    # the kept list's true pairs count as evidence when the excess is lost in the spread
    assert models_for_target(null, 4, infl_threshold=0.15, n_models=100, target=0.1, kept=20,
                             kept_fdr=0.05) is not None
    assert models_for_target(null, 20, infl_threshold=0.0, n_models=100, target=0.1) is None


def _random_case(seed: int, k: int, *, n: int = 300, m: int = 120, planted=()):
    """Random subsets, test correctness independent of membership except the ``planted`` (i, j, strength)."""
    rng = np.random.default_rng(seed)
    in_subset = subset_masks(n, 0.7, k, seed=seed)
    correct_test = rng.random((k, m)) < 0.8
    for i, j, strength in planted:
        correct_test[:, j] = np.where(rng.random(k) < strength, in_subset[:, i], rng.random(k) < 0.8)
    return correct_test, in_subset


@pytest.mark.parametrize("k", [48, 200])
def test_random_memberships_keep_an_empty_list_or_one_within_its_fdr(k):
    """No real influence: the fixed thresholds pass hundreds of pairs; the FDR list is empty in most repeats.

    With no real pair every kept pair is false, so the FDR of the procedure is the chance that
    anything is kept at all: about the 10% target (measured 7-12% over 40-100 repeats).
    """
    seeds = range(16)
    kept = []
    for seed in seeds:
        correct_test, in_subset = _random_case(seed, k)
        out = high_influence_pairs_streamed(correct_test, in_subset, np.full(300, 0.5), seed=seed)
        assert out.n_candidates > 100  # the old list: hundreds of chance pairs
        assert out.candidates_fdr > 0.8  # and the estimate says so
        assert len(out.pairs) <= 2
        if len(out.pairs):
            assert out.fdr <= 0.1 and (out.pairs.fdr <= 0.1).all()
        kept.append(len(out.pairs))
    nonempty = sum(1 for c in kept if c)
    print(f"K={k}: kept pairs per repeat {kept}")
    assert nonempty <= 4, kept  # expected about 1.6 of 16


def test_planted_influence_is_found_at_its_fdr():
    planted = [(7, 3, 0.6), (20, 5, 0.6), (33, 9, 0.6), (50, 12, 0.6), (60, 20, 0.6), (99, 100, 0.6)]
    truth = {(i, j) for i, j, _ in planted}
    false_share = []
    for seed in range(8):
        correct_test, in_subset = _random_case(seed, 200, planted=planted)
        out = high_influence_pairs_streamed(correct_test, in_subset, seed=100 + seed)
        found = set(zip(out.pairs.train_index.tolist(), out.pairs.test_index.tolist()))
        assert truth <= found, seed  # every planted pair is kept
        false_share.append(len(found - truth) / len(found))
        assert out.fdr <= 0.1 and np.isfinite(out.fdr_threshold)
        assert (out.pairs.infl_lo >= out.fdr_threshold).all() and (out.pairs.fdr <= 0.1).all()
        assert out.n_candidates > 100 and out.candidates_fdr > 0.8  # most fixed-threshold pairs are chance
        assert out.models_for_target is not None and out.models_for_target > 200
    assert np.mean(false_share) <= 0.2, false_share  # the target is 10% on average


def test_same_seed_same_pairs_and_metadata_is_json():
    correct_test, in_subset = _random_case(3, 100, planted=[(1, 2, 0.8), (4, 5, 0.8)])
    a = high_influence_pairs_streamed(correct_test, in_subset, seed=5, permutations=10)
    b = high_influence_pairs_streamed(correct_test, in_subset, seed=5, permutations=10, block_rows=7)
    assert len(a.pairs) >= 2 and a.pairs.equals(b.pairs) and a.candidates.equals(b.candidates)
    assert a.fdr == b.fdr and a.models_for_target == b.models_for_target
    # with P permutations a list of R pairs has an estimated FDR of at least 1 / (P R): P = 4 cannot keep 2 at 10%
    few = high_influence_pairs_streamed(correct_test, in_subset, seed=5, permutations=4)
    assert len(few.pairs) == 0 or 1 / (4 * len(few.pairs)) <= 0.1
    meta = json.loads(json.dumps(a.metadata()))
    assert meta["fdr_target"] == 0.1 and meta["permutations"] == 10 and meta["seed"] == 5
    assert meta["n_kept"] == len(a.pairs) and meta["n_candidates"] == a.n_candidates
    assert meta["statistic"] == "infl_lo" and meta["confidence"] == 0.95
    none = high_influence_pairs_streamed(correct_test, in_subset, fdr=None)
    assert none.permutations == 0 and none.pairs is none.candidates and none.pairs.fdr.isna().all()
    assert none.metadata()["fdr_target"] is None


def test_per_example_aggregates_equal_the_dense_matrix():
    """Each train row's and test column's largest influence, kept while streaming, against the full (n, m) matrix."""
    from fitscope.estimators import influence_scores

    rng = np.random.default_rng(5)
    k, n, m = 40, 57, 23
    masks = subset_masks(n, 0.5, k, seed=2)
    correct = rng.random((k, m)) < 0.6
    masks[:, 3] = True  # row 3 in every subset: undefined
    dense = influence_scores(correct, masks).infl
    out = high_influence_pairs_streamed(correct, masks, fdr=None, block_rows=5)
    rows = np.isfinite(dense).all(axis=1)
    assert not rows[3] and np.isnan(out.train_max[3]) and out.train_argmax[3] == -1
    assert np.array_equal(out.train_max[rows], dense[rows].max(axis=1).astype(np.float32))
    assert np.array_equal(out.train_argmax[rows], dense[rows].argmax(axis=1))
    defined = np.where(rows[:, None], dense, -np.inf)
    assert np.array_equal(out.test_max, defined.max(axis=0).astype(np.float32))
    assert np.array_equal(out.test_argmax, defined.argmax(axis=0))
