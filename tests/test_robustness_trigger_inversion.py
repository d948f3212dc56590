"""Neural Cleanse, its anomaly index and SmoothInv on a hand-built backdoored linear model (and its clean twin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import median_abs_deviation
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness import (
    MAD_CONSISTENCY,
    anomaly_index,
    neural_cleanse,
    patch_mask,
    smoothed_probs,
    smoothinv,
    top_positions_overlap,
)

SIDE, CLASSES = 8, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

PATCH = patch_mask((1, SIDE, SIDE), size=2)  # the bottom-right 2x2


def _regions() -> np.ndarray:
    """Class c's region: the first 3 pixels of row c (never under the patch, rows and columns 6-7)."""
    regions = np.zeros((CLASSES, SIDE, SIDE), np.float32)
    for c in range(CLASSES):
        regions[c, c, 0:3] = 1.0  # row c, first three columns: never under the patch
    return regions


#: each class's weight on its region: unequal, so that the classes' trigger norms spread as real ones do
WEIGHTS = 2.0 + 0.03 * np.array([0, 1, -1, 2, -2, 3, -3, 0.5], np.float32)


def linear_model(backdoor: bool) -> nn.Module:
    """Logit c = WEIGHTS[c] x . region_c; with ``backdoor``, class 0 also gets 6 x each patch pixel."""
    weights = WEIGHTS[:, None, None] * _regions()
    if backdoor:
        weights[0] += 6.0 * PATCH
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(weights.reshape(CLASSES, -1)))
        model[1].bias.zero_()
    return model


def support(n_per_class: int = 6, seed: int = 0):
    """Clean images: the own class's region lit (0.8 to 1), low noise elsewhere, the patch dark."""
    rng = np.random.default_rng(seed)
    regions = _regions()
    x, y = [], []
    for c in range(CLASSES):
        for _ in range(n_per_class):
            img = 0.1 * rng.random((SIDE, SIDE)) * (1 - PATCH) + regions[c] * rng.uniform(0.8, 1.0)
            x.append(np.clip(img, 0, 1)[None])
            y.append(c)
    return np.asarray(x, np.float32), np.asarray(y)


def test_anomaly_index_against_a_hand_computation_and_scipy():
    norms = np.array([10.0, 11.0, 9.0, 10.5, 9.5, 3.0, 20.0])
    median = 10.0  # sorted: 3, 9, 9.5, 10, 10.5, 11, 20
    deviations = np.abs(norms - median)  # 0, 1, 1, 0.5, 0.5, 7, 10 -> median 1
    mad = 1.4826 * 1.0
    out = anomaly_index(norms)
    assert out.median == median and out.mad == pytest.approx(mad)
    np.testing.assert_allclose(out.index, deviations / mad)
    assert out.mad == pytest.approx(median_abs_deviation(norms, scale="normal"), rel=1e-4)
    # 3.0 is an outlier on the small side (7 / 1.4826 = 4.72 > 2): flagged; 20.0 is one on the large side: not
    np.testing.assert_array_equal(out.flagged, [False] * 5 + [True, False])
    assert MAD_CONSISTENCY == 1.4826
    with pytest.raises(ConfigError, match="norms: expected a 1-D array of at least 3 finite norms"):
        anomaly_index([1.0, 2.0])


def test_neural_cleanse_recovers_the_planted_trigger_and_flags_its_class():
    x, y = support()
    model = linear_model(backdoor=True)
    out = neural_cleanse(model, x, y, steps=200, seed=0)
    assert out.reached.all() and (out.success >= 0.99).all()
    # the target needs a fraction of the patch (6 per pixel beats about 2 x 3 per region); the others a region
    assert out.norms[0] < 0.5 * np.median(out.norms[1:])
    mask0 = out.masks[0]
    assert mask0[PATCH > 0].sum() > 0.8 * mask0.sum()  # the target's mask sits on the patch
    assert top_positions_overlap(mask0, PATCH)["precision"] >= 0.5
    assert out.anomaly.flagged.tolist() == [True] + [False] * (CLASSES - 1)
    # the independent outlier test on the returned norms says the same
    med = np.median(out.norms)
    assert (med - out.norms[0]) / median_abs_deviation(out.norms, scale="normal") > 2


@pytest.mark.parametrize("backdoor", [True, False])
def test_neural_cleanse_stops_once_the_norms_have_settled(backdoor):
    """The early stop ends every class at a converged optimum: twice its steps move no norm by more than 1%.

    A stop that came too soon (e.g. 50 steps without a 1% gain, counted from the start) or a fixed budget
    of 200 steps leaves norms that fall by 5% to 85% more with longer runs on this model.
    """
    x, y = support()
    model = linear_model(backdoor=backdoor)
    out = neural_cleanse(model, x, y, seed=0)
    assert out.converged.all() and (out.steps_run < 1000).all(), out.steps_run
    longer = neural_cleanse(model, x, y, seed=0, steps=2 * int(out.steps_run.max()), early_stop=False)
    assert longer.converged.sum() == 0 and (longer.steps_run == 2 * out.steps_run.max()).all()
    np.testing.assert_allclose(out.norms, longer.norms, rtol=0.01)
    assert out.anomaly.flagged.tolist() == [backdoor] + [False] * (CLASSES - 1)


def test_the_clean_control_flags_no_class():
    x, y = support()
    out = neural_cleanse(linear_model(backdoor=False), x, y, steps=200, seed=0)
    assert out.reached.all()
    assert not out.anomaly.flagged.any(), out.norms


def test_smoothinv_recovers_the_patch_region_from_one_image():
    x, y = support()
    model = linear_model(backdoor=True)
    image = x[y == 2][0]
    out = smoothinv(model, image, target=0, sigma=0.25, eps=2.0, steps=80, noise_samples=8, seed=0)
    assert out.norm <= 2.0 + 1e-5 and out.smoothed_prob > 0.9 > out.base_prob
    assert top_positions_overlap(np.abs(out.perturbation), PATCH)["precision"] == 1.0
    assert (out.x_adv >= 0).all() and (out.x_adv <= 1).all()
    # on the clean twin the same budget has no patch to find: its largest entries are elsewhere
    clean = smoothinv(linear_model(backdoor=False), image, target=0, sigma=0.25, eps=2.0, steps=80,
                      noise_samples=8, seed=0)
    assert top_positions_overlap(np.abs(clean.perturbation), PATCH)["precision"] == 0.0


def test_smoothed_probs_is_the_mean_softmax_over_the_noise():
    model = linear_model(backdoor=True)
    x = torch.from_numpy(support()[0][:2])
    noise = torch.randn((5, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(0))
    by_hand = torch.stack([torch.stack([torch.softmax(model(x[i:i + 1] + 0.3 * noise[j:j + 1])[0], 0)
                                        for j in range(5)]).mean(0) for i in range(2)])
    torch.testing.assert_close(smoothed_probs(model, x, sigma=0.3, noise=noise), by_hand)
