"""DP-SGD through Opacus: clipping against batch-size-1 gradients, the noise level, epsilon, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fitscope.train.dp_sgd as dp_sgd
from device_checks import assert_follows_placement
from fitscope.errors import ConfigError
from fitscope.seeding import derive_seed
from fitscope.train.dp_sgd import PrivacyWarning, make_dp_sgd, train_dp_sgd
from fitscope.train.plain_models import build_plain


def _blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (np.where(y[:, None] == 1, 2.0, -2.0) + rng.normal(size=(n, 2))).astype(np.float32)
    return x, y


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_clipping_matches_clipped_batch_size_one_gradients():
    x, y = _blobs(16)
    c = 0.05  # small, so that clipping is active for every example
    model = build_plain("mlp:8x1", (2,), 2, seed=0)
    reference = copy.deepcopy(model)
    run = make_dp_sgd(model, x, y, eps=1.0, delta=1e-3, max_grad_norm=c, epochs=1, batch_size=8, lr=0.1, seed=0,
                      accountant="rdp")
    xb, yb = torch.from_numpy(x[:6]), torch.from_numpy(y[:6])
    F.cross_entropy(run.module(xb), yb).backward()
    run.optimizer.clip_and_accumulate()

    expected = [torch.zeros_like(p) for p in reference.parameters()]
    raw_norms = []
    for i in range(6):  # batch-size-1 gradients, clipped by hand to norm c
        reference.zero_grad()
        F.cross_entropy(reference(xb[i:i + 1]), yb[i:i + 1]).backward()
        grads = [p.grad.clone() for p in reference.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        raw_norms.append(float(norm))
        factor = min(1.0, c / (float(norm) + 1e-6))
        for e, g in zip(expected, grads):
            e += factor * g
    assert min(raw_norms) > c  # every example was clipped
    for p, e in zip(run.optimizer.params, expected):
        torch.testing.assert_close(p.summed_grad, e, atol=1e-6, rtol=1e-4)
    total = torch.sqrt(sum((p.summed_grad**2).sum() for p in run.optimizer.params))
    assert float(total) <= 6 * c + 1e-6


def test_noise_std_is_noise_multiplier_times_clip_norm():
    x, y = _blobs(64)
    model = build_plain("mlp:64x1", (2,), 64, seed=0)  # ~4.3k parameters to estimate a std from
    run = make_dp_sgd(model, x, y, eps=2.0, delta=1e-3, max_grad_norm=0.7, epochs=2, batch_size=16, lr=0.1, seed=0,
                      accountant="rdp")
    for p in run.optimizer.params:
        p.summed_grad = torch.zeros_like(p)
    run.optimizer.add_noise()
    noise = torch.cat([p.grad.flatten() for p in run.optimizer.params])
    expected = run.optimizer.noise_multiplier * 0.7
    assert run.optimizer.noise_multiplier > 0.5
    assert abs(float(noise.std()) / expected - 1) < 0.05
    assert abs(float(noise.mean())) < 0.1 * expected


@pytest.mark.slow
def test_learns_separable_problem_within_the_privacy_budget():
    x, y = _blobs(300)
    kwargs = dict(eps=3.0, delta=1e-3, max_grad_norm=1.0, epochs=4, batch_size=32, lr=0.5, seed=1,
                  x_test=x[200:], y_test=y[200:])
    res = train_dp_sgd("mlp:16x1", x[:200], y[:200], **kwargs)
    assert res.test_acc.shape == (4,)
    assert res.test_acc[-1] > 0.8  # chance is 0.5
    assert 0 < res.eps <= 3.0 and res.target_eps == 3.0 and res.privacy()["epsilon"] == res.eps
    assert res.delta == 1e-3 and res.accountant == "prv" and res.noise_multiplier > 0
    assert res.steps > 0 and res.sample_rate == pytest.approx(1 / 7)
    assert not hasattr(next(res.model.parameters()), "grad_sample") or \
        next(res.model.parameters()).grad_sample is None
    again = train_dp_sgd("mlp:16x1", x[:200], y[:200], **kwargs)
    np.testing.assert_array_equal(res.test_logits, again.test_logits)  # seeded: replays exactly


def test_rdp_accountant_and_smaller_eps_means_more_noise():
    x, y = _blobs(100)
    kw = dict(delta=1e-3, epochs=1, batch_size=20, seed=0, accountant="rdp")
    loose = train_dp_sgd("mlp:4x1", x, y, eps=8.0, **kw)
    tight = train_dp_sgd("mlp:4x1", x, y, eps=0.5, **kw)
    assert tight.accountant == "rdp" and tight.eps <= 0.5
    assert tight.noise_multiplier > loose.noise_multiplier


@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=0), r"^eps: expected a number in \(0, inf\), got 0$"),
    (dict(eps=-1), r"^eps: expected a number in \(0, inf\), got -1$"),
    (dict(delta=0), r"^delta: expected a number in \(0, 1\), got 0$"),
    (dict(delta=1.0), r"^delta: expected a number in \(0, 1\), got 1.0$"),
    (dict(max_grad_norm=0), r"^max_grad_norm: expected a number in \(0, inf\), got 0$"),
    (dict(accountant="gdp"), r"^accountant: expected one of prv, rdp, got 'gdp'$"),
    (dict(epochs=0), r"^epochs: expected an integer >= 1, got 0$"),
    (dict(momentum=1.0), r"^momentum: expected a number in \[0, 1\), got 1.0$"),
    (dict(seed=2**32), r"^seed: expected an integer in \[0, 2\*\*32\), got 4294967296$"),
])
def test_bad_settings_are_one_line_config_errors(kwargs, match):
    x, y = _blobs(20)
    settings = dict(eps=1.0, delta=1e-3, max_grad_norm=1.0, epochs=1, seed=0) | kwargs
    with pytest.raises(ConfigError, match=match) as err:
        train_dp_sgd("mlp:4x1", x, y, **settings)
    assert "\n" not in str(err.value)


def test_delta_not_below_one_over_n_warns():
    x, y = _blobs(20)
    with pytest.warns(PrivacyWarning, match="delta=0.1 >= 1/n"):
        train_dp_sgd("mlp:4x1", x, y, eps=1.0, delta=0.1, epochs=1, batch_size=10, seed=0, accountant="rdp")


def test_private_label_statistics_are_withheld_unless_asked_for():
    x, y = _blobs(100)
    kw = dict(eps=4.0, delta=1e-3, epochs=2, batch_size=20, seed=3, x_test=x[:20], y_test=y[:20])
    seen: list[dict] = []
    hidden = train_dp_sgd("mlp:4x1", x, y, progress=seen.append, **kw)
    assert hidden.reveal_private_stats is False
    assert hidden.train_acc.shape == (2,) and np.isnan(hidden.train_acc).all()
    assert all(np.isnan(info["train_acc"]) for info in seen) and len(seen) == 2
    assert not np.isnan(hidden.test_acc).any()  # public test rows are still evaluated

    shown = train_dp_sgd("mlp:4x1", x, y, reveal_private_stats=True, **kw)
    assert shown.reveal_private_stats is True
    # the revealed value is the accuracy of the final logits on the private labels, by hand
    assert shown.train_acc[-1] == pytest.approx(float(np.mean(shown.train_logits.argmax(1) == y)))
    np.testing.assert_array_equal(shown.train_logits, hidden.train_logits)  # the flag changes no training
    with pytest.raises(ConfigError, match=r"^reveal_private_stats: expected True or False, got 'yes'$"):
        train_dp_sgd("mlp:4x1", x, y, reveal_private_stats="yes", **kw)


def _no_accounting(monkeypatch, sigma: float = 1.0) -> None:
    """Skip the accountant's maths (most of a tiny run's time): the noise multiplier is ``sigma``, epsilon 1."""
    import opacus.privacy_engine
    from opacus.accountants import RDPAccountant

    monkeypatch.setattr(opacus.privacy_engine, "get_noise_multiplier", lambda **_: sigma)
    monkeypatch.setattr(RDPAccountant, "get_epsilon", lambda self, delta, **_: 1.0)


def test_train_dp_sgd_follows_the_device_placement(monkeypatch):
    _no_accounting(monkeypatch)
    x, y = _blobs(32)

    def run(**device):
        r = train_dp_sgd("mlp:4x1", x, y, eps=2.0, delta=1e-3, epochs=2, batch_size=8, seed=0, x_test=x[:8],
                         y_test=y[:8], accountant="rdp", reveal_private_stats=True, **device)
        return r.train_acc, r.test_acc, r.train_logits, r.test_logits, r.eps, r.steps, r.model.state_dict()

    assert_follows_placement(monkeypatch, dp_sgd, run)


def test_make_dp_sgd_follows_the_device_placement(monkeypatch):
    _no_accounting(monkeypatch)
    x, y = _blobs(16)

    def run(**device):
        r = make_dp_sgd(build_plain("mlp:4x1", (2,), 2, seed=0), x, y, eps=1.0, delta=1e-3, max_grad_norm=0.5,
                        epochs=1, batch_size=4, lr=0.1, seed=0, accountant="rdp", **device)
        return list(r.batches()), r.x, r.y

    assert_follows_placement(monkeypatch, dp_sgd, run)


def test_dp_sgd_draws_batches_and_noise_on_cpu_generators(monkeypatch):
    # what makes the draws the same on every device: Opacus's sampler and noise, from the seeded CPU generators
    _no_accounting(monkeypatch, sigma=0.8)
    x, y = _blobs(16)
    run = make_dp_sgd(build_plain("mlp:4x1", (2,), 2, seed=0), x, y, eps=1.0, delta=1e-3, max_grad_norm=0.5,
                      epochs=1, batch_size=4, lr=0.1, seed=3, accountant="rdp", device="cpu")
    sampler = run.loader.batch_sampler.generator  # the Poisson sampler's (and the loader's) generator
    assert sampler.device.type == "cpu" and run.optimizer.generator.device.type == "cpu"
    state = sampler.get_state()
    rows = [idx for (idx,) in run.loader]  # an epoch of index batches, then the same epoch again as rows
    sampler.set_state(state)
    batches = list(run.batches())
    assert len(batches) == len(rows) == 4
    for (xb, yb), idx in zip(batches, rows):
        assert torch.equal(xb, torch.from_numpy(x)[idx]) and torch.equal(yb, torch.from_numpy(y)[idx])
    for p in run.optimizer.params:
        p.summed_grad = torch.zeros_like(p)
    gen = torch.Generator().manual_seed(derive_seed(3, "dp-sgd-noise"))
    std = run.optimizer.noise_multiplier * 0.5
    expected = [torch.normal(0.0, std, p.shape, generator=gen) for p in run.optimizer.params]
    run.optimizer.add_noise()
    for p, e in zip(run.optimizer.params, expected):
        assert torch.equal(p.grad, e)
