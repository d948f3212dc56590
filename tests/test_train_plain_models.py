"""Plain (single, Opacus-compatible) models from a spec, and the plain training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

import fitscope.train.plain_models as plain_models
from device_checks import assert_follows_placement
from fitscope.errors import ConfigError, DataError
from fitscope.train.plain_models import build_plain, group_count, predict_plain, train_plain

CASES = [
    ("mlp:16x2", (12,), "fc2", 16),
    ("mlp:16-8,dropout=0.5", (1, 8, 8), "fc2", 8),
    ("cnn:4-8", (1, 8, 8), "conv2", 8),
    ("cnn:4x3,dropout=0.25", (3, 8, 8), "conv3", 4),
    ("cnn1d:4x2,kernel=3", (2, 16), "conv2", 4),
]


@pytest.mark.parametrize("spec,shape,hidden,dim", CASES)
def test_shapes_layers_and_opacus_compatibility(spec, shape, hidden, dim):
    model = build_plain(spec, shape, 5, seed=0)
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 5)
    assert model.features(x).shape == (3, dim) == (3, model.feature_dim)
    assert model.hidden_layer == hidden
    assert isinstance(model.get_submodule(hidden), (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_seed_fixes_the_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_plain("cnn:4-8", (1, 8, 8), 3, seed=7)
    after = torch.rand(1)
    b = build_plain("cnn:4-8", (1, 8, 8), 3, seed=7)
    c = build_plain("cnn:4-8", (1, 8, 8), 3, seed=8)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_group_count_divides_channels():
    assert [group_count(c) for c in (1, 3, 8, 12, 32, 7)] == [1, 3, 8, 6, 8, 7]


@pytest.mark.parametrize("spec,shape,match", [
    ("resnet:4x2", (1, 8, 8), "resnet"),
    ("cnn:4-8", (12,), "needs images"),
    ("mlp:x", (12,), "spec: expected FAMILY:SHAPE"),
])
def test_bad_specs(spec, shape, match):
    with pytest.raises(ConfigError, match=match):
        build_plain(spec, shape, 3, seed=0)


def test_train_plain_fits_blobs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    centers = np.array([[3, 0], [-3, 3], [0, -3]], np.float32)
    x = (centers[y] + rng.normal(size=(240, 2))).astype(np.float32)
    model = build_plain("mlp:16x1", (2,), 3, seed=0)
    res = train_plain(model, x[:160], y[:160], epochs=15, batch_size=32, lr=0.05, seed=0,
                      x_test=x[160:], y_test=y[160:])
    assert res.test_acc.shape == (15,)
    assert res.test_acc[-1] > 0.9
    assert res.train_logits.shape == (160, 3) and res.test_logits.shape == (80, 3)
    np.testing.assert_allclose(predict_plain(model, x[160:]), res.test_logits)


def test_train_plain_bad_input():
    model = build_plain("mlp:4x1", (2,), 2, seed=0)
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="epochs"):
        train_plain(model, x, y, epochs=0, seed=0)
    with pytest.raises(DataError):
        train_plain(model, x, y[:3], epochs=1, seed=0)
    with pytest.raises(DataError, match=r"^y_test: expected both x_test and y_test or neither, got None$"):
        train_plain(model, x, y, epochs=1, seed=0, x_test=x)


def test_one_builder_and_opacus_needs_the_group_norm_default():
    import fitscope.models
    import fitscope.train.plain_models

    assert fitscope.train.plain_models.build_plain is fitscope.models.build_plain  # re-exported, not a copy
    group = build_plain("cnn:4-8", (1, 8, 8), 3, seed=0)
    batch = build_plain("cnn:4-8", (1, 8, 8), 3, seed=0, norm="batch")
    assert group.norm == "group" and batch.norm == "batch"
    assert ModuleValidator.validate(group, strict=False) == []
    assert ModuleValidator.validate(batch, strict=False) != []  # Opacus rejects BatchNorm


def _blobs(n: int = 48):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, n)
    return (np.array([[2, 0], [-2, 2], [0, -2]], np.float32)[y] + rng.normal(size=(n, 2))).astype(np.float32), y


def test_train_plain_follows_the_device_placement(monkeypatch):
    x, y = _blobs()

    def run(**device):
        r = train_plain(build_plain("mlp:8x1", (2,), 3, seed=0), x[:32], y[:32], epochs=2, batch_size=8, seed=1,
                        x_test=x[32:], y_test=y[32:], **device)
        assert next(r.model.parameters()).device == torch.device("cpu")
        return r.train_acc, r.test_acc, r.train_logits, r.test_logits, r.model.state_dict()

    assert_follows_placement(monkeypatch, plain_models, run)


def test_predict_plain_follows_the_device_placement(monkeypatch):
    x, _ = _blobs()
    model = build_plain("mlp:8x1", (2,), 3, seed=0)
    assert_follows_placement(monkeypatch, plain_models, lambda **device: predict_plain(model, x, batch_size=7,
                                                                                        **device))


def test_dropout_is_seeded_by_the_call_and_leaves_the_global_generator_alone():
    from fitscope.models.plain import build_plain
    from fitscope.train.plain_models import train_plain

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 3

    def run():
        model = build_plain("mlp:16,dropout=0.5", (6,), 3, seed=1)
        return train_plain(model, x, y, epochs=2, batch_size=8, seed=4).train_logits

    torch.manual_seed(123)
    first = run()
    after = torch.rand(1)
    torch.manual_seed(999)  # a different global state: the same model comes out
    np.testing.assert_array_equal(first, run())
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the call did not advance the caller's generator
