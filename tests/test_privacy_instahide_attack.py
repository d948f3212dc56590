"""Reconstruction attack on InstaHide: exact recovery in noise-free toy cases, scoring, bad input."""

import numpy as np
import pytest
from scipy.linalg import hadamard

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.instahide import center_inputs, instahide_encode
from fitscope.privacy.instahide_attack import instahide_attack, instahide_study, recovery_scores


def _orthogonal_sources():
    """4 orthogonal sources of 16 pixels with values +-0.8 (in [-1, 1]) and their [0, 1] inputs."""
    xc = 0.8 * hadamard(16)[[1, 2, 4, 8]].astype(np.float64)
    return xc, ((xc + 1) / 2).reshape(4, 1, 4, 4)


def _match_error(recovered, truth):
    """Largest pixel error after matching each true source to its nearest recovered one."""
    r = recovered.reshape(len(recovered), -1)
    dist = np.abs(truth[:, None, :] - r[None]).max(axis=-1)
    return dist.min(axis=1).max()


def test_recovers_orthogonal_sources_exactly_without_mask():
    xc, x = _orthogonal_sources()
    enc = instahide_encode(x, np.arange(4), k=2, seed=0, sign_mask=False, n_encodings=40)
    res = instahide_attack(enc.encodings, n_sources=4, k=2, sign_mask=False, seed=0, rounds=2, steps=200)
    assert res.loss < 1e-10
    assert _match_error(res.recovered, xc) < 1e-5
    score = recovery_scores(xc.reshape(4, 4, 4), res.recovered[:, 0], threshold=0.99)
    assert score.recovery_rate == 1.0 and score.mean_ssim > 0.99


def test_with_mask_recovers_sources_up_to_one_sign_per_pixel():
    rng = np.random.default_rng(1)
    xc = rng.choice([-0.8, 0.8], size=(6, 16))
    x = ((xc + 1) / 2).reshape(6, 1, 4, 4)
    enc = instahide_encode(x, np.arange(6), k=2, seed=3, sign_mask=True, n_encodings=60)
    # The attacker's prior: one noisy look-alike per source (it only seeds the member search).
    prior = np.clip(xc + 0.3 * rng.standard_normal((6, 16)), -1, 1).reshape(6, 1, 4, 4)
    res = instahide_attack(enc.encodings, n_sources=6, k=2, sign_mask=True, seed=0, prior=prior,
                           rounds=2, steps=600)
    r = res.recovered.reshape(6, -1)
    # |.| hides one sign per pixel shared by every source: undo it with the true sources, then compare.
    order = [int(np.argmax(np.abs(r @ s))) for s in xc]
    sign = np.sign((r[order] * xc).sum(axis=0))
    assert np.abs(r[order] * sign - xc).max() < 0.05
    assert res.loss < 1e-4
    again = instahide_attack(enc.encodings, n_sources=6, k=2, sign_mask=True, seed=0, prior=prior,
                             rounds=2, steps=600)
    np.testing.assert_array_equal(again.recovered, res.recovered)  # deterministic given the seed


def test_scores_count_threshold_and_baseline():
    rng = np.random.default_rng(0)
    orig = rng.uniform(-1, 1, size=(5, 8, 8))
    rec = orig.copy()
    rec[3:] = rng.uniform(-1, 1, size=(2, 8, 8))  # two originals not recovered
    score = recovery_scores(orig, rec, threshold=0.9, baseline=rng.uniform(-1, 1, size=(4, 8, 8)))
    assert score.recovery_rate == pytest.approx(0.6)
    assert score.beats_baseline_rate == pytest.approx(0.6)
    np.testing.assert_array_equal(score.match[:3], [0, 1, 2])


def test_bad_input():
    enc = np.zeros((10, 1, 4, 4))
    with pytest.raises(ConfigError, match="k must be an integer >= 2"):
        instahide_attack(enc, n_sources=3, k=1, sign_mask=False, seed=0)
    with pytest.raises(ConfigError, match="n_sources must be an integer >= 2"):
        instahide_attack(enc, n_sources=1, k=2, sign_mask=False, seed=0)
    with pytest.raises(ConfigError, match="prior"):
        instahide_attack(enc, n_sources=3, k=2, sign_mask=True, seed=0)
    with pytest.raises(DataError, match="NaN"):
        instahide_attack(np.full((4, 16), np.nan), n_sources=2, k=2, sign_mask=False, seed=0)
    with pytest.raises(ConfigError, match="threshold"):
        recovery_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), threshold=2)


def test_study_table_on_tiny_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(8, 1, 4, 4))
    public = rng.uniform(0, 1, size=(8, 1, 4, 4))
    table = instahide_study(x, np.arange(8) % 2, public=public, seed=0, ks=(2,), n_private=6,
                            encodings_per_image=4, rounds=1, steps=20)
    assert list(table["sign_mask"]) == [False, True]
    assert {"recovery_rate@0.5", "recovery_rate@0.9", "mean_ssim", "beats_baseline_rate",
            "member_accuracy"} <= set(table.columns)
    assert (table["recovery_rate@0.9"] <= table["recovery_rate@0.5"]).all()
    assert center_inputs(x).shape == x.shape
