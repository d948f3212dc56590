"""Similarity of saliency maps against Quantus, scipy and scikit-image computed directly, and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from fitscope.errors import ConfigError, DataError
from fitscope.explain import spearman_similarity, ssim_similarity, top_k_overlap
from fitscope.explain.similarity import normalize_absolute, similarities


def _maps(shape=(5, 1, 8, 8), seed=0, zeros=0.3) -> tuple[np.ndarray, np.ndarray]:
    """Two related signed maps with ties (a share of exact zeros, as CGI and gradient x input on digits make)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape)
    b = 0.6 * a + rng.normal(size=shape)
    a[rng.uniform(size=shape) < zeros] = 0.0
    b[rng.uniform(size=shape) < zeros] = 0.0
    return a, b


@pytest.mark.parametrize("absolute", [True, False])
def test_spearman_matches_scipy_and_quantus_row_by_row(absolute):
    from quantus.functions.similarity_func import correlation_spearman

    a, b = _maps()
    ours = spearman_similarity(a, b, absolute=absolute)
    fa, fb = a.reshape(5, -1), b.reshape(5, -1)
    if absolute:
        fa, fb = np.abs(fa), np.abs(fb)
    scipy_values = [spearmanr(fa[i], fb[i])[0] for i in range(5)]
    quantus_values = [correlation_spearman(fa[i], fb[i]) for i in range(5)]
    np.testing.assert_allclose(ours, scipy_values, rtol=1e-10)
    np.testing.assert_allclose(ours, quantus_values, rtol=1e-10)
    # quantus's batched form agrees too
    np.testing.assert_allclose(ours, correlation_spearman(fa, fb, batched=True), rtol=1e-10)


def test_spearman_of_a_constant_map_is_nan_and_of_a_monotone_transform_is_one():
    a, _ = _maps(shape=(3, 1, 40), zeros=0.0)
    b = a.copy()
    b[1] = 0.0
    out = spearman_similarity(a, np.exp(a) * (b != 0) + (b == 0) * 0.0, absolute=False)
    assert out[0] == pytest.approx(1.0) and np.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_ssim_matches_scikit_image_on_the_normalized_maps_and_quantus():
    from quantus.functions.similarity_func import ssim as quantus_ssim

    a, b = _maps()
    a[:, 0, 0, 0] = 0.0  # every normalized map spans [0, 1], so Quantus' data range (max - min) is 1 as ours
    b[:, 0, 0, 0] = 0.0
    ours = ssim_similarity(a, b)
    na, nb = np.abs(a) / np.abs(a).reshape(5, -1).max(1)[:, None, None, None], \
        np.abs(b) / np.abs(b).reshape(5, -1).max(1)[:, None, None, None]
    direct = [structural_similarity(na[i, 0], nb[i, 0], data_range=1.0) for i in range(5)]
    np.testing.assert_allclose(ours, direct, rtol=1e-10)
    np.testing.assert_allclose(ours, [quantus_ssim(na[i, 0], nb[i, 0]) for i in range(5)], rtol=1e-10)
    assert ssim_similarity(a, a) == pytest.approx(np.ones(5))


def test_ssim_of_signals_is_one_dimensional_with_a_seven_wide_window():
    a, b = _maps(shape=(3, 1, 40))
    ours = ssim_similarity(a, b)
    na, nb = normalize_absolute(a), normalize_absolute(b)
    np.testing.assert_allclose(ours, [structural_similarity(na[i, 0], nb[i, 0], data_range=1.0, win_size=7)
                                      for i in range(3)], rtol=1e-10)
    zero = a.copy()
    zero[2] = 0.0
    assert np.isnan(ssim_similarity(zero, b)[2])


def test_top_k_overlap_against_sets():
    a, b = _maps(zeros=0.0)
    k = 7
    expected = []
    for i in range(5):
        fa, fb = np.abs(a[i].ravel()), np.abs(b[i].ravel())
        top_a = set(sorted(range(64), key=lambda j: -fa[j])[:k])
        top_b = set(sorted(range(64), key=lambda j: -fb[j])[:k])
        expected.append(len(top_a & top_b) / k)
    np.testing.assert_allclose(top_k_overlap(a, b, k=k), expected)
    # Quantus' top-k intersection (a localisation metric: the share of a's k largest that fall in a mask), with
    # b's k largest |values| as the mask, is the same overlap
    from quantus import TopKIntersection

    mask = np.zeros((5, 64))
    np.put_along_axis(mask, np.argsort(-np.abs(b.reshape(5, -1)), axis=1)[:, :k], 1.0, axis=1)
    quantus_values = TopKIntersection(k=k, disable_warnings=True).evaluate_batch(
        a_batch=np.abs(a).reshape(5, -1), s_batch=mask)
    np.testing.assert_allclose(top_k_overlap(a, b, k=k), quantus_values)
    # a hand example: the 2 largest |values| of a are features 0 and 3, of b features 3 and 1
    assert top_k_overlap(np.array([[5.0, 0.1, 0.2, -4.0]]), np.array([[0.0, 3.0, 0.1, -9.0]]), k=2)[0] == 0.5


def test_similarities_has_every_metric_and_bad_input_names_the_argument():
    a, b = _maps()
    out = similarities(a, b, k=5)
    assert list(out) == ["spearman_abs", "spearman", "ssim", "top_k"] and all(v.shape == (5,) for v in out.values())
    with pytest.raises(DataError, match="^b: expected maps of the shape of a"):
        spearman_similarity(a, b[:3], absolute=True)
    with pytest.raises(ConfigError, match=r"^k: expected an integer in \[1, 64\]"):
        top_k_overlap(a, b, k=65)
