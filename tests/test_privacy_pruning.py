"""Pruning as DP: magnitude pruning of one layer vs Gaussian noise on its outputs at matched accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fitscope.privacy.pruning as pruning
from device_checks import assert_follows_placement
from fitscope.errors import ConfigError
from fitscope.privacy.pruning import (
    activation_std,
    match_utility,
    noisy_accuracy,
    noisy_activations,
    prune_layer,
    pruning_vs_noise,
)
from fitscope.train.plain_models import accuracy, build_plain, predict_plain, train_plain
from reference_metrics import brute_force_auc


def _spy_on_membership_metrics(monkeypatch) -> list[tuple[float, float]]:
    """Record, for every membership_metrics call in pruning, (its AUC, the AUC by definition of its input)."""
    import fitscope.privacy.pruning as pruning_module

    real, calls = pruning_module.membership_metrics, []

    def spy(scores, is_member):
        out = real(scores, is_member)
        calls.append((out.auc, brute_force_auc(scores, is_member)))
        return out

    monkeypatch.setattr(pruning_module, "membership_metrics", spy)
    return calls


def _blobs(n: int, seed: int = 0, k: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(scale=3.0, size=(k, 6))
    return (centers[y] + rng.normal(size=(n, 6))).astype(np.float32), y


def test_prune_layer_zeros_the_smallest_weights_of_that_layer_only():
    model = build_plain("mlp:16x2", (6,), 4, seed=0)
    w = model.fc2.weight.detach().clone()
    pruned = prune_layer(model, "fc2", 0.75)
    pw = pruned.fc2.weight.detach()
    zero = pw == 0
    assert int(zero.sum()) == round(0.75 * w.numel())
    assert w.abs()[zero].max() <= w.abs()[~zero].min()  # magnitude pruning
    assert torch.equal(pw[~zero], w[~zero])
    assert torch.equal(pruned.fc1.weight, model.fc1.weight) and torch.equal(pruned.fc2.bias, model.fc2.bias)
    assert torch.equal(model.fc2.weight, w)  # the original is untouched
    assert not any("mask" in name for name, _ in pruned.named_buffers())  # pruning made permanent


def test_prune_bad_input():
    model = build_plain("mlp:4x1", (6,), 2, seed=0)
    with pytest.raises(ConfigError, match=r"^fraction: expected a number in \[0, 1\], got 1.5$"):
        prune_layer(model, "fc1", 1.5)
    with pytest.raises(ConfigError, match="layer: expected the name of a layer"):
        prune_layer(model, "fc9", 0.5)
    with pytest.raises(ConfigError, match="layer with weights"):
        prune_layer(model, "relu1", 0.5)
    with pytest.raises(ConfigError, match=r"^sigma: expected a number in \[0, inf\), got -1.0$"):
        noisy_activations(model, "fc1", -1.0, seed=0)


def test_noisy_activations_adds_seeded_gaussian_noise_of_std_sigma():
    model = build_plain("mlp:8x1", (6,), 50, seed=0)
    x = torch.randn(200, 6)
    with torch.no_grad():
        clean = model.eval()(x)
        a = noisy_activations(model, "out", 0.3, seed=5)(x)
        b = noisy_activations(model, "out", 0.3, seed=5)(x)
        c = noisy_activations(model, "out", 0.3, seed=6)(x)
        zero = noisy_activations(model, "out", 0.0, seed=5)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(zero, clean)
    assert float((a - clean).std()) == pytest.approx(0.3, rel=0.05)
    assert abs(float((a - clean).mean())) < 0.02
    assert torch.equal(model.eval()(x), clean)  # no hook left on the original


def test_match_utility_finds_the_largest_sigma_at_the_target_accuracy():
    x, y = _blobs(300)
    model = build_plain("mlp:32x1", (6,), 4, seed=0)
    train_plain(model, x[:200], y[:200], epochs=10, seed=0)
    clean = accuracy(predict_plain(model, x[200:]), y[200:])
    target = clean - 0.15
    sigma = match_utility(model, "fc1", target, x[200:], y[200:], seed=3)
    assert sigma > 0
    acc = lambda s: noisy_accuracy(model, "fc1", s, x[200:], y[200:], seed=3)  # noqa: E731
    assert acc(sigma) >= target
    assert acc(sigma * 1.5) < target + 0.05  # just past the boundary the accuracy is at the target, not above
    assert acc(sigma * 3) < target
    assert activation_std(model, "fc1", x[200:]) > 0
    assert match_utility(model, "fc1", 1.01, x[200:], y[200:], seed=3) == 0.0  # unreachable target


@pytest.mark.slow
def test_pruning_vs_noise_table(monkeypatch):
    calls = _spy_on_membership_metrics(monkeypatch)
    x, y = _blobs(240, seed=1)
    res = pruning_vs_noise(x[:160], y[:160], x[160:], y[160:], spec="mlp:32x2", fractions=(0.5, 0.95),
                           epochs=8, seed=0)
    assert res.layer == "fc2" and res.members == 80 and res.non_members == 80
    assert [r["fraction"] for r in res.rows] == [0.5, 0.95]
    for r in res.rows:
        assert r["noisy_test_acc"] >= r["pruned_test_acc"]  # matched: noise costs no more accuracy than pruning
        assert r["sigma"] >= 0
    # calls: the unpruned model, then per fraction the pruned and the noisy model; each AUC is its definition's
    assert len(calls) == 1 + 2 * len(res.rows)
    for reported, reference in calls:
        assert reported == pytest.approx(reference, abs=1e-12)
    assert res.baseline["auc"] == calls[0][0]
    assert [(r["pruned_auc"], r["noisy_auc"]) for r in res.rows] == [(a[0], b[0]) for a, b in zip(calls[1::2],
                                                                                                   calls[2::2])]
    assert list(res.to_frame().columns)[:3] == ["fraction", "pruned_test_acc", "pruned_auc"]
    again = pruning_vs_noise(x[:160], y[:160], x[160:], y[160:], spec="mlp:32x2", fractions=(0.5, 0.95),
                             epochs=8, seed=0)
    assert again.rows == res.rows


@pytest.mark.slow
def test_pruning_vs_noise_with_lira_shadow_models(monkeypatch):
    calls = _spy_on_membership_metrics(monkeypatch)
    x, y = _blobs(200, seed=2)
    res = pruning_vs_noise(x[:120], y[:120], x[120:], y[120:], spec="mlp:16x1", fractions=(0.9,), epochs=5,
                           models=6, seed=0)
    row = res.rows[0]
    assert {"pruned_lira_auc", "noisy_lira_auc", "pruned_lira_tpr_at_1pct", "noisy_lira_tpr_at_1pct"} <= set(row)
    # the last three calls are LiRA's: unpruned, pruned, noisy; each AUC is its definition's
    for reported, reference in calls:
        assert reported == pytest.approx(reference, abs=1e-12)
    assert [res.baseline["lira_auc"], row["pruned_lira_auc"], row["noisy_lira_auc"]] == [c[0] for c in calls[-3:]]
    assert res.config["models"] == 6


def test_pruning_vs_noise_needs_enough_shadow_models():
    x, y = _blobs(40)
    with pytest.raises(ConfigError, match="models: expected 0 .* or an integer >= 5"):
        pruning_vs_noise(x[:30], y[:30], x[30:], y[30:], models=2, epochs=1)


def test_pruning_vs_noise_follows_the_device_placement(monkeypatch):
    x, y = _blobs(60, seed=3)
    assert_follows_placement(monkeypatch, pruning, lambda **device: pruning_vs_noise(
        x[:40], y[:40], x[40:], y[40:], spec="mlp:8x1", fractions=(0.5,), epochs=2, repeats=2, seed=1,
        **device).rows)


@pytest.mark.parametrize("call", ["activation_std", "noisy_accuracy", "match_utility"])
def test_noise_helpers_follow_the_device_placement(monkeypatch, call):
    x, y = _blobs(40, seed=4)
    model = build_plain("mlp:8x1", (6,), 4, seed=0)

    def run(**device):
        if call == "activation_std":
            return activation_std(model, "fc1", x, **device)
        if call == "noisy_accuracy":
            return noisy_accuracy(model, "fc1", 0.5, x, y, seed=2, repeats=2, **device)
        return match_utility(model, "fc1", 0.2, x, y, seed=2, repeats=2, iterations=3, **device)

    assert_follows_placement(monkeypatch, pruning, run)
