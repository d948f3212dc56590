"""InstaHide encoding: shapes, weights, labels, sign mask, determinism, bad input, training."""

import numpy as np
import pytest

import fitscope.train.device
from device_checks import assert_follows_placement
from fitscope.errors import ConfigError, DataError
from fitscope.privacy.instahide import (
    center_inputs,
    draw_weights,
    instahide_encode,
    predict_instahide,
    train_instahide,
)


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 1, 4, 4)).astype(np.float32)
    y = np.arange(n) % 3
    return x, y


def test_shapes_weights_and_mixing():
    x, y = _data()
    enc = instahide_encode(x, y, k=3, seed=0, sign_mask=False, n_encodings=30)
    assert enc.encodings.shape == (30, 1, 4, 4) and enc.labels.shape == (30, 3)
    assert enc.sources.shape == enc.weights.shape == (30, 3)
    np.testing.assert_allclose(enc.weights.sum(axis=1), 1.0)
    assert enc.weights.max() <= 0.65 + 1e-12
    np.testing.assert_array_equal(enc.sources[:, 0], np.arange(30) % 12)
    xc = center_inputs(x).reshape(12, -1)
    mix = np.einsum("ej,ejd->ed", enc.weights, xc[enc.sources])
    np.testing.assert_allclose(enc.encodings.reshape(30, -1), mix, atol=1e-6)
    # Inside-dataset labels: the weights' mix of one-hot labels (sums to 1).
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(enc.labels, np.einsum("ej,ejc->ec", enc.weights, onehot[enc.sources]), atol=1e-6)


def test_centering_maps_to_minus_one_one():
    np.testing.assert_allclose(center_inputs(np.array([[0.0, 0.5, 1.0]])), [[-1.0, 0.0, 1.0]])
    with pytest.raises(DataError, match="input_range"):
        center_inputs(np.array([[0.0, 2.0]]))


def test_sign_mask_flips_only_signs():
    x, y = _data()
    plain = instahide_encode(x, y, k=2, seed=5, sign_mask=False)
    masked = instahide_encode(x, y, k=2, seed=5, sign_mask=True)
    np.testing.assert_allclose(np.abs(masked.encodings), np.abs(plain.encodings), atol=1e-7)
    np.testing.assert_allclose(masked.encodings, plain.encodings * masked.signs, atol=1e-7)
    assert set(np.unique(masked.signs)) == {-1, 1}
    assert (masked.signs == -1).mean() == pytest.approx(0.5, abs=0.15)


def test_deterministic_by_seed():
    x, y = _data()
    a = instahide_encode(x, y, k=3, seed=1)
    b = instahide_encode(x, y, k=3, seed=1)
    c = instahide_encode(x, y, k=3, seed=2)
    np.testing.assert_array_equal(a.encodings, b.encodings)
    np.testing.assert_array_equal(a.sources, b.sources)
    assert not np.array_equal(a.encodings, c.encodings)


def test_cross_dataset_labels_mix_private_members_only():
    x, y = _data()
    public = np.random.default_rng(9).uniform(0, 1, size=(20, 1, 4, 4))
    enc = instahide_encode(x, y, k=4, seed=0, public=public, n_encodings=24)
    assert enc.k_private == 2  # (k + 1) // 2, the reference code's default
    np.testing.assert_array_equal(enc.is_public, np.tile([False, False, True, True], (24, 1)))
    onehot = np.eye(3)[y]
    expected = sum(enc.weights[:, j : j + 1] * onehot[enc.sources[:, j]] for j in range(2))
    np.testing.assert_allclose(enc.labels, expected, atol=1e-6)
    assert (enc.labels.sum(axis=1) < 1).all() and (enc.weights[:, :2].sum(axis=1) >= 0.3 - 1e-12).all()
    renorm = instahide_encode(x, y, k=4, seed=0, public=public, n_encodings=24, renormalize_labels=True)
    np.testing.assert_allclose(renorm.labels.sum(axis=1), 1.0, atol=1e-6)


def test_weight_cap_holds():
    w = draw_weights(500, 4, max_weight=0.4, seed=0)
    assert w.max() <= 0.4 and np.allclose(w.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(k=0), ConfigError, r"^k: expected an integer >= 1, got 0$"),
        (dict(k=13), ConfigError,
         r"^k: expected at most the 12 private examples for Inside-dataset InstaHide, got 13$"),
        (dict(k=2, max_weight=0.5), ConfigError, r"^max_weight: expected a number in \(1/k, 1\] = \(0.5, 1\] for k=2, "
                                                 r"got 0.5$"),
        (dict(k=2, max_weight=1.2), ConfigError, r"max_weight: expected a number in \(1/k, 1\]"),
        (dict(k=2, y=np.arange(5)), DataError, r"^y: expected an integer array of shape \(n,\) = \(12,\) like x, "
                                               r"got shape \(5,\)$"),
        (dict(k=2, public=np.zeros((3, 1, 5, 5))), DataError, "public: expected shape"),
        (dict(k=2, n_encodings=0), ConfigError, r"^n_encodings: expected an integer >= 1, got 0$"),
        (dict(k=2, seed=-1), ConfigError, r"^seed: expected an integer in \[0, 2\*\*32\), got -1$"),
    ],
)
def test_bad_input(kwargs, error, match):
    x, y = _data()
    kwargs.setdefault("y", y)
    with pytest.raises(error, match=match):
        instahide_encode(x, **({"seed": 0} | kwargs))


def test_too_few_public_members():
    x, y = _data()
    with pytest.raises(ConfigError, match=r"^public: expected at least k - k_private = 3 examples .*, got 2 examples$"):
        instahide_encode(x, y, k=6, seed=0, public=np.zeros((2, 1, 4, 4)))


def test_training_runs_and_plain_baseline_learns():
    rng = np.random.default_rng(0)
    # Two well-separated classes of 4x4 images.
    y = np.arange(60) % 2
    x = np.clip(0.5 + 0.4 * (2 * y[:, None] - 1) * np.ones((60, 16)) + 0.05 * rng.standard_normal((60, 16)), 0, 1)
    x = x.reshape(60, 1, 4, 4).astype(np.float32)
    seen = []
    plain = train_instahide("mlp:32x1", x, y, k=1, sign_mask=False, seed=0, x_test=x, y_test=y, epochs=15,
                            batch_size=16, lr=1e-2)
    assert plain.final_test_acc == 1.0
    masked = train_instahide("mlp:32x1", x, y, k=2, seed=0, x_test=x, y_test=y, epochs=3, batch_size=16,
                             on_epoch=lambda e, enc: seen.append(enc.encodings.copy()))
    assert masked.test_acc.shape == (3,) and len(seen) == 3
    assert not np.array_equal(seen[0], seen[1])  # fresh encodings every epoch
    with pytest.raises(ConfigError, match="^k: expected an integer >= 1, got 0$"):
        train_instahide("mlp:32x1", x, y, k=0, seed=0, x_test=x, y_test=y, epochs=1)


def test_predict_instahide_centres_raw_inputs_like_training_does():
    import torch

    rng = np.random.default_rng(1)
    y = np.arange(40) % 2
    x = (2 + 3 * rng.random((40, 1, 4, 4))).astype(np.float32)  # raw inputs in [2, 5]
    r = train_instahide("mlp:16x1", x, y, k=2, seed=0, x_test=x, y_test=y, epochs=2, batch_size=16,
                        input_range=(2.0, 5.0), keep_model=True)
    logits = predict_instahide(r.model, x, input_range=(2.0, 5.0), batch_size=7)  # 7: batches of unequal size
    assert logits.shape == (40, 2) and logits.dtype == np.float32 and not r.model.training
    with torch.no_grad():
        expected = r.model(torch.as_tensor(center_inputs(x, input_range=(2.0, 5.0))).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert float((logits.argmax(1) == y).mean()) == pytest.approx(r.final_test_acc)


def test_predict_instahide_follows_the_device_placement(monkeypatch):
    x, y = _data(n=20)
    r = train_instahide("mlp:8x1", x, y, k=2, seed=0, x_test=x, y_test=y, epochs=1, batch_size=8, keep_model=True)
    # predict_instahide imports the rule when called: it is spied on where it is defined
    assert_follows_placement(monkeypatch, fitscope.train.device,
                             lambda **device: predict_instahide(r.model, x, batch_size=7, **device))
