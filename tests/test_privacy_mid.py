"""MID (variational information bottleneck head) and the decoder model-inversion attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fitscope.privacy.inversion as inversion
import fitscope.privacy.mid as mid
from device_checks import assert_follows_placement
from fitscope.errors import ConfigError
from fitscope.models import build_plain
from fitscope.privacy.inversion import inversion_attack, mean_ssim, released_outputs, train_inversion_decoder
from fitscope.privacy.mid import build_mid, mid_tradeoff, train_mid


def _images(n: int, seed: int = 0, k: int = 3):
    """Class prototypes (random 4x4 patterns) plus noise, clipped to [0, 1]: ``(n, 1, 4, 4)``."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(size=(k, 1, 4, 4))
    y = rng.integers(0, k, n)
    x = np.clip(protos[y] + rng.normal(scale=0.15, size=(n, 1, 4, 4)), 0, 1).astype(np.float32)
    return x, y


def test_kl_matches_closed_form_and_eval_uses_the_mean():
    model = build_mid("mlp:8x1", (1, 4, 4), 3, bottleneck=5, seed=0)
    assert model.bottleneck == 5 and not hasattr(model.body, "out")
    x = torch.rand(7, 1, 4, 4)
    with torch.no_grad():
        model.encoder.weight.zero_()
        model.encoder.bias.zero_()
        model.encoder.bias[:5] = 1.0  # mu = 1, log-variance = 0: KL = 0.5 * sum(mu^2) = 2.5
        model.eval()
        a, b = model(x), model(x)
        assert float(model.kl) == pytest.approx(2.5)
        torch.testing.assert_close(a, model.classifier(torch.ones(7, 5)))
        assert torch.equal(a, b)
        model.train()
        model.generator = torch.Generator().manual_seed(0)
        s1 = model(x)
        model.generator = torch.Generator().manual_seed(0)
        s2 = model(x)
        s3 = model(x)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)  # sampled z in training, seeded


def test_beta_squeezes_the_bottleneck_and_training_is_seeded():
    x, y = _images(240)
    kw = dict(epochs=12, bottleneck=4, seed=0, x_test=x[160:], y_test=y[160:])
    free = train_mid("mlp:16x1", x[:160], y[:160], beta=0.0, **kw)
    tight = train_mid("mlp:16x1", x[:160], y[:160], beta=1.0, **kw)
    assert free.test_acc[-1] > 0.9  # three classes
    assert tight.kl < free.kl / 5
    again = train_mid("mlp:16x1", x[:160], y[:160], beta=0.0, **kw)
    np.testing.assert_array_equal(free.test_logits, again.test_logits)
    with pytest.raises(ConfigError, match=r"^beta: expected a number in \[0, inf\), got -1$"):
        train_mid("mlp:16x1", x, y, beta=-1, epochs=1)


class _Fixed(nn.Module):
    """A 'model' whose logits are a fixed linear map of the pixels (or constant)."""

    def __init__(self, informative: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 16)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(16) * 4.0 if informative else torch.zeros(16, 16))
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def test_inversion_attack_recovers_inputs_only_from_informative_outputs():
    x, y = _images(400, seed=2)
    info = inversion_attack(_Fixed(True), x[:200], y[:200], x[200:], y[200:], decoder_epochs=60, seed=0)
    blind = inversion_attack(_Fixed(False), x[:200], y[:200], x[200:], y[200:], decoder_epochs=60, seed=0)
    assert info.reconstructions.shape == (200, 1, 4, 4)
    assert info.mse < 0.5 * blind.mse
    assert info.ssim > blind.ssim
    assert info.eval_acc > 0.9 and blind.eval_acc < 0.6  # constant outputs: one image for every row
    assert blind.mse == pytest.approx(float(((x[200:].mean(0) - x[:200]) ** 2).mean()), rel=0.2)
    assert info.class_mean_mse < blind.mse  # knowing the label beats knowing nothing
    assert released_outputs(_Fixed(True), x[:3]).shape == (3, 16)


def test_mean_ssim():
    a = np.random.default_rng(0).uniform(size=(3, 2, 8, 8))
    np.testing.assert_allclose(mean_ssim(a, a), 1.0)
    assert mean_ssim(a, 1 - a).max() < 0.5
    assert np.isnan(mean_ssim(np.zeros((2, 5)), np.zeros((2, 5)))).all()


@pytest.mark.slow
def test_mid_tradeoff_table():
    x, y = _images(300, seed=3)
    res = mid_tradeoff(x[:200], y[:200], x[200:], y[200:], betas=(0.0, 3.0), spec="mlp:16x1", epochs=10,
                       decoder_epochs=30, seed=0)
    assert res.private == 100 and res.aux == 100
    assert [r["beta"] for r in res.rows] == [0.0, 3.0]
    free, squeezed = res.rows
    assert squeezed["kl"] < free["kl"]
    assert free["test_acc"] > 0.9
    assert {"mse", "ssim", "eval_acc", "class_mean_ssim"} <= set(res.to_frame().columns)


def test_train_mid_follows_the_device_placement(monkeypatch):
    x, y = _images(40, seed=5)

    def run(**device):
        r = train_mid("mlp:8x1", x[:30], y[:30], beta=0.01, epochs=2, batch_size=8, seed=1, x_test=x[30:],
                      y_test=y[30:], **device)
        return r.train_acc, r.test_acc, r.kl, r.train_logits, r.test_logits, r.model.state_dict()

    assert_follows_placement(monkeypatch, mid, run)


def test_mid_tradeoff_follows_the_device_placement(monkeypatch):
    x, y = _images(40, seed=6)
    assert_follows_placement(monkeypatch, mid, lambda **device: mid_tradeoff(
        x[:24], y[:24], x[24:], y[24:], betas=(0.01,), spec="mlp:8x1", epochs=1, decoder_epochs=1, seed=2,
        **device).rows)


@pytest.mark.parametrize("call", ["inversion_attack", "train_inversion_decoder", "released_outputs"])
def test_inversion_follows_the_device_placement(monkeypatch, call):
    x, y = _images(24, seed=7)
    target = build_plain("mlp:8x1", (1, 4, 4), 3, seed=0)
    evaluator = build_plain("mlp:8x1", (1, 4, 4), 3, seed=1)

    def run(**device):
        if call == "inversion_attack":
            r = inversion_attack(target, x[:12], y[:12], x[12:], y[12:], evaluator=evaluator, decoder_epochs=2,
                                 seed=3, **device)
            return r.reconstructions, r.row()
        if call == "train_inversion_decoder":
            return train_inversion_decoder(np.eye(3, dtype=np.float32)[y], x, hidden=8, epochs=2, batch_size=8,
                                           seed=4, **device).state_dict()
        return released_outputs(target, x, **device)

    assert_follows_placement(monkeypatch, inversion, run)
