"""RR-with-prior against its exact output distribution, and LP-MST on a small problem."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.privacy.label_dp import lp_mst, rr_output_distribution, rr_with_prior
from fitscope.train import TrainConfig


def _random_priors(n, k, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.3), size=n)
    p[0] = 1.0 / k  # uniform
    p[1] = np.eye(k)[2]  # certain
    p[2, :] = 0.0
    p[2, :2] = 0.5  # a tie
    return p


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_uniform_prior_is_classic_randomized_response(eps):
    k, n = 10, 40000
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    out = rr_with_prior(y, np.full((n, k), 1.0 / k), eps, seed=1)
    keep = math.exp(eps) / (math.exp(eps) + k - 1)
    assert (out == y).mean() == pytest.approx(keep, abs=4 * math.sqrt(keep * (1 - keep) / n))
    # every other label equally likely
    wrong = out[out != y]
    counts = np.bincount((wrong - y[out != y]) % k, minlength=k)[1:]
    assert counts.min() > 0.85 * counts.mean()
    dist = rr_output_distribution(np.full((1, k), 1.0 / k), eps)[0]
    np.testing.assert_allclose(np.diag(dist), keep)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)


@pytest.mark.parametrize("eps", [0.3, 1.0, 3.0, 8.0])
def test_output_distribution_is_exactly_eps_label_dp(eps):
    dist = rr_output_distribution(_random_priors(200, 6, seed=int(eps * 10)), eps)
    np.testing.assert_allclose(dist.sum(axis=2), 1.0, atol=1e-12)
    # for every example and output: max over labels / min over labels <= e^eps (0 only if all are 0)
    hi, lo = dist.max(axis=1), dist.min(axis=1)
    assert ((hi == 0) | (lo > 0)).all()
    ratio = hi[hi > 0] / lo[hi > 0]
    assert ratio.max() <= math.exp(eps) * (1 + 1e-9)
    assert ratio.max() >= math.exp(eps) * (1 - 1e-9)  # the bound is attained: the mechanism is not over-noised


def test_sampler_follows_the_analytic_distribution():
    priors = _random_priors(6, 5, seed=3)
    eps, reps = 1.5, 20000
    dist = rr_output_distribution(priors, eps)
    for y0 in range(5):
        labels = np.full(6 * reps, y0)
        out = rr_with_prior(labels, np.repeat(priors, reps, axis=0), eps, seed=y0).reshape(6, reps)
        freq = np.stack([np.bincount(row, minlength=5) / reps for row in out])
        np.testing.assert_allclose(freq, dist[:, y0, :], atol=0.015)


def test_top_k_choice_matches_the_definition():
    eps = 1.0
    prior = np.array([[0.5, 0.3, 0.1, 0.05, 0.05]])
    values = [math.exp(eps) / (math.exp(eps) + k - 1) * np.sort(prior[0])[::-1][:k].sum() for k in range(1, 6)]
    k_best = int(np.argmax(values)) + 1
    dist = rr_output_distribution(prior, eps)[0]
    assert (dist[0] > 0).sum() == k_best  # outputs only the top k
    assert dist[4, :k_best] == pytest.approx(np.full(k_best, 1 / k_best))  # a label outside: uniform top k


def test_deterministic_given_the_seed():
    y = np.arange(50) % 4
    p = np.full((50, 4), 0.25)
    np.testing.assert_array_equal(rr_with_prior(y, p, 1.0, seed=7), rr_with_prior(y, p, 1.0, seed=7))
    assert not np.array_equal(rr_with_prior(y, p, 1.0, seed=7), rr_with_prior(y, p, 1.0, seed=8))


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(eps=0.0), ConfigError, r"^eps: expected a number in \(0, inf\), got 0.0$"),
    (dict(eps=-1), ConfigError, r"^eps: expected a number in \(0, inf\), got -1$"),
    (dict(eps=float("inf")), ConfigError, "eps"),
    (dict(priors=np.full((4, 3), 0.3)), DataError, "priors: expected every row to sum to 1"),
    (dict(priors=np.full((3, 3), 1 / 3)), DataError, "priors"),
    (dict(labels=np.array([0, 1, 2, 3])), DataError, "labels: expected class indices below C = 3"),
    (dict(seed=-1), ConfigError, r"^seed: expected an integer in \[0, 2\*\*32\), got -1$"),
])
def test_bad_input_is_one_line(kwargs, error, needle):
    args = dict(labels=np.array([0, 1, 2, 0]), priors=np.full((4, 3), 1 / 3), eps=1.0, seed=0) | kwargs
    with pytest.raises(error, match=needle) as info:
        rr_with_prior(**args)
    assert "\n" not in str(info.value)


def _blobs(n, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, 8))
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(0, 1, (n, 8))).astype(np.float32), y


@pytest.mark.slow
def test_lp_mst_learns_through_the_noise_and_two_stages_keep_more_labels():
    x_all, y_all = _blobs(900)
    x, y, xt, yt = x_all[:600], y_all[:600], x_all[600:], y_all[600:]
    cfg = TrainConfig(epochs=15, optimizer="adam", lr=3e-3, batch_size=64, record=False)
    one = lp_mst(x, y, eps=1.0, stages=1, spec="mlp:32x1", train_config=cfg, seed=0, x_test=xt, y_test=yt,
                 reveal_private_stats=True)
    two = lp_mst(x, y, eps=1.0, stages=2, spec="mlp:32x1", train_config=cfg, seed=0, x_test=xt, y_test=yt,
                 reveal_private_stats=True)
    keep = math.e / (math.e + 3)
    assert one.keep_rate[0] == pytest.approx(keep, abs=0.08)
    assert one.test_acc > 0.8  # far above the noisy labels' accuracy (about 0.48)
    assert two.stages == 2 and set(np.unique(two.stage)) == {0, 1}
    assert two.mean_k[1] < 4 and two.keep_rate[1] > two.keep_rate[0] + 0.15  # the learned prior narrows top-k
    assert two.noisy_labels.shape == (600,) and two.train_probs.shape == (600, 4)
    assert two.eps == 1.0
    with pytest.raises(ConfigError, match="stages"):
        lp_mst(x, y, eps=1.0, stages=0, spec="mlp:32x1", train_config=cfg, seed=0)
    with pytest.raises(ConfigError, match="eps"):
        lp_mst(x, y, eps=-2, stages=1, spec="mlp:32x1", train_config=cfg, seed=0)


def test_lp_mst_keeps_statistics_of_the_true_labels_out_unless_asked():
    # keep_rate reads the true labels: outside the eps claim, so it is None unless reveal_private_stats=True
    x_all, y_all = _blobs(160)
    x, y, xt, yt = x_all[:120], y_all[:120], x_all[120:], y_all[120:]
    cfg = TrainConfig(epochs=1, optimizer="adam", lr=3e-3, batch_size=64, record=False)
    kw = dict(eps=1.0, stages=2, spec="mlp:8x1", train_config=cfg, seed=3, x_test=xt, y_test=yt)
    hidden = lp_mst(x, y, **kw)
    assert hidden.keep_rate is None
    shown = lp_mst(x, y, **kw, reveal_private_stats=True)
    expected = [float((shown.noisy_labels[shown.stage == t] == y[shown.stage == t]).mean()) for t in range(2)]
    np.testing.assert_array_equal(shown.keep_rate, expected)
    # the flag changes nothing else: the same noisy labels, stages and models
    np.testing.assert_array_equal(hidden.noisy_labels, shown.noisy_labels)
    np.testing.assert_array_equal(hidden.train_probs, shown.train_probs)
    assert hidden.test_acc == shown.test_acc
