"""The streamed influence pairs hold blocks, not the n_train x n_test matrix, through the permutation null too."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fitscope.estimators import high_influence_pairs_streamed
from fitscope.estimators.subsets import subset_masks

K, M, BLOCK = 200, 1000, 200


def _peak(n: int) -> tuple[int, int]:
    """Peak traced bytes of one call with 5 permutations, every row in the null (no memorization filter)."""
    rng = np.random.default_rng(n)
    masks = subset_masks(n, 0.7, K, seed=n)
    correct_test = rng.random((K, M)) < 0.95  # chance influences of about 0.03: next to no candidate
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = high_influence_pairs_streamed(correct_test, masks, fdr=0.1, permutations=5, block_rows=BLOCK, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.permutations == 5 and result.n_candidates < 2000  # of up to 16 million pairs
    return peak, result.n_candidates


def test_memory_does_not_grow_with_the_pairs():
    small, _ = _peak(2000)
    large, _ = _peak(16000)  # 8 times the pairs: 16 million, 64 MB as one float32 matrix
    block = BLOCK * M * 4
    assert large < 12 * block + K * 16000  # a few (block, m) float32 temporaries and the (K, n) masks, not (n, m)
    assert large - small < 1.5 * K * (16000 - 2000)  # what grows is the null's copy of the masks, K x n bools
    assert large < 16000 * M * 4 / 4
