"""Saliency maps: each Captum method against a hand computation, CGI against a brute-force per-class loop, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.explain import competitive_gradient_x_input, gradient_x_input_all_classes, saliency_maps
from fitscope.explain.saliency import competition
from fitscope.models import build_plain


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def linear_model(features: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    """logits = W x + b on a flattened ``(1, 2, 3)`` input."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))


class Quadratic(nn.Module):
    """logit_c = sum_i A[c, i] x_i^2: its gradient 2 A[c] * x is linear in x, so SmoothGrad has a closed form."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x):
        return (x.flatten(1) ** 2) @ self.a.T


def _inputs(n: int = 4, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 2, 3)).astype(np.float32)


def test_gradient_of_a_linear_model_is_the_target_weight_row():
    model, x = linear_model(), _inputs()
    target = np.array([0, 2, 1, 2])
    w = model[1].weight.detach().numpy()
    maps = saliency_maps(model, x, target, method="gradient")
    np.testing.assert_allclose(maps.reshape(4, -1), w[target], rtol=1e-6)


def test_gradient_x_input_of_a_linear_model_is_input_times_weight():
    model, x = linear_model(), _inputs()
    w = model[1].weight.detach().numpy()
    maps = saliency_maps(model, x, 1, method="gradient_x_input")
    np.testing.assert_allclose(maps.reshape(4, -1), x.reshape(4, -1) * w[1], rtol=1e-6)


def test_integrated_gradients_of_a_linear_model_is_input_minus_baseline_times_weight():
    model, x = linear_model(), _inputs()
    baseline = np.full((1, 2, 3), 0.3, np.float32)
    target = np.array([2, 0, 1, 1])
    w = model[1].weight.detach().numpy()
    maps = saliency_maps(model, x, target, method="integrated_gradients", baseline=baseline, steps=5)
    np.testing.assert_allclose(maps.reshape(4, -1), (x - baseline).reshape(4, -1) * w[target], rtol=1e-5,
                               atol=1e-6)
    # completeness: the map sums to f(x) - f(baseline) of the target logit
    with torch.no_grad():
        gap = (model(torch.from_numpy(x)) - model(torch.from_numpy(np.broadcast_to(baseline, x.shape).copy())))
    np.testing.assert_allclose(maps.reshape(4, -1).sum(1), gap.numpy()[np.arange(4), target], rtol=1e-5, atol=1e-6)


def test_smoothgrad_is_the_mean_gradient_over_the_seeded_noise():
    a = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 6)).astype(np.float32))
    model, x, samples, sigma, seed = Quadratic(a), _inputs(), 5, 0.4, 11
    maps = saliency_maps(model, x, 2, method="smoothgrad", samples=samples, sigma=sigma, seed=seed)
    # Captum's draw: torch.normal(0, sigma) of shape (n * samples, *input_shape) from the seeded generator,
    # added to the inputs repeated sample-wise (repeat_interleave)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    noise = torch.normal(0.0, torch.full((4 * samples, 1, 2, 3), sigma)).numpy()
    torch.random.set_rng_state(gen_state)
    noisy = np.repeat(x, samples, axis=0) + noise
    expected = (2 * a[2].numpy() * noisy.reshape(4, samples, 6)).mean(1)
    np.testing.assert_allclose(maps.reshape(4, -1), expected, rtol=1e-5, atol=1e-6)
    # the same seed gives the same map, another seed another; the global RNG is left alone
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    again = saliency_maps(model, x, 2, method="smoothgrad", samples=samples, sigma=sigma, seed=seed)
    assert torch.rand(1) == before
    np.testing.assert_array_equal(again, maps)
    other = saliency_maps(model, x, 2, method="smoothgrad", samples=samples, sigma=sigma, seed=seed + 1)
    assert not np.allclose(other, maps)


def test_cgi_matches_a_brute_force_per_class_loop():
    from captum.attr import InputXGradient

    model = build_plain("cnn:4-8", (1, 8, 8), 5, seed=3).eval()
    x = np.random.default_rng(0).uniform(size=(3, 1, 8, 8)).astype(np.float32)
    target = np.array([4, 0, 2])
    maps = competitive_gradient_x_input(model, x, target)
    xt = torch.from_numpy(x).requires_grad_(True)
    per_class = np.stack([InputXGradient(model).attribute(xt, target=c).detach().numpy() for c in range(5)])
    np.testing.assert_allclose(gradient_x_input_all_classes(model, x), per_class, rtol=1e-5, atol=1e-7)
    expected = np.zeros_like(x)
    for j in range(3):
        for pixel in np.ndindex(*x.shape[1:]):
            scores = [per_class[c, j][pixel] for c in range(5)]
            own = scores[target[j]]
            if (own > 0 and own >= max(scores)) or (own < 0 and own <= min(scores)):
                expected[j][pixel] = own
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    assert 0 < (maps != 0).mean() < 0.8  # some pixels won, many lost


def test_competition_on_hand_made_scores():
    # 3 classes, one row, 4 pixels: class 1's score wins pixel 0 (positive), loses 1, wins 2 (most negative),
    # loses 3 (negative but not the smallest)
    scores = np.array([[[0.1, 0.5, -0.1, -0.9]],
                       [[0.4, 0.2, -0.7, -0.3]],
                       [[-0.2, 0.1, 0.0, 0.2]]])
    np.testing.assert_allclose(competition(scores, [1]), [[0.4, 0.0, -0.7, 0.0]])
    np.testing.assert_allclose(competition(scores, [0]), [[0.0, 0.5, 0.0, -0.9]])


def test_cgi_of_a_linear_model_keeps_a_pixel_only_where_its_class_weight_wins():
    model, x = linear_model(), np.abs(_inputs())  # positive inputs: the sign of x * w is the sign of w
    w = model[1].weight.detach().numpy()
    maps = saliency_maps(model, x, 0, method="cgi").reshape(4, -1)
    flat = x.reshape(4, -1)
    keep = ((w[0] > 0) & (w[0] >= w.max(0))) | ((w[0] < 0) & (w[0] <= w.min(0)))
    np.testing.assert_allclose(maps, np.where(keep, flat * w[0], 0.0), rtol=1e-6)


@pytest.mark.parametrize("call, needle", [
    (lambda: saliency_maps(nn.Sequential(nn.Flatten(), nn.Linear(6, 1)), _inputs(), 0, method="cgi"),
     "model: expected a classifier with at least 2 outputs for cgi"),
    (lambda: saliency_maps(linear_model(), _inputs(), 0, method="lrp"), "method: expected one of gradient"),
    (lambda: saliency_maps(linear_model(), _inputs(), 3, method="gradient"), "target: expected an integer in [0, 2]"),
    (lambda: saliency_maps(linear_model(), _inputs(), [0, 1, 5, 0], method="cgi"),
     "target: expected an integer in [0, 2]"),
    (lambda: saliency_maps(linear_model(), _inputs(), [0, 1], method="gradient"), "target: expected an integer"),
    (lambda: saliency_maps(linear_model(), _inputs(), 0, method="smoothgrad", sigma=-1), "sigma: expected"),
])
def test_refusals_are_one_line_naming_the_argument(call, needle):
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)
