"""The structural parts: weight compander, soft orthogonality, polarization and L1 on BN scales, channel pruning."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.models import build
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.objective import check_regularizers, soft_cross_entropy
from fitscope.train.regularizers.compander import ensemble_layers
from fitscope.train.regularizers.ortho import orthogonality_error
from fitscope.train.regularizers.pruning import bn_layers, prune_channels
from regularizer_checks import FAMILIES, assert_together_equals_alone, make_state, tiny_problem

IDX = np.stack([np.arange(0, 8), np.arange(8, 16)])  # the rows of one step of 2 models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny models run fastest on one thread (on a busy machine, spinning threads wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _step(objective, x, y, idx=IDX):
    idx_t = torch.from_numpy(idx)
    objective(torch.from_numpy(x)[idx_t], torch.from_numpy(y)[idx_t], idx_t)


def _fan_in(layer) -> int:
    return layer.in_features if hasattr(layer, "in_features") else layer.in_channels * layer.kernel_size ** layer.dim


def _per_model_rows(weight: np.ndarray, k: int) -> list[np.ndarray]:
    """Model k's block of an ensemble weight (first axis K, or K*C_out)."""
    rows = weight.shape[0] // k
    return [weight[i * rows:(i + 1) * rows] for i in range(k)]


# ------------------------------------------------------------------ weight compander


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_compander_weights_are_the_formula_of_the_raw_weights(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    _, model, state, objective = make_state(spec, x, y, "compander:bound=2,gain=3,learn=1")
    assert objective.uses_autograd_objective  # the hand-written MLP step cannot see the reparameterization
    layers = ensemble_layers(model)
    assert layers and all(hasattr(layer, "parametrizations") for layer in layers)
    for layer in layers:
        comp = layer.parametrizations.weight[0]
        with torch.no_grad():  # a different bound and gain per model: each model's rows use its own
            comp.log_bound.copy_(torch.log(torch.tensor([2.0, 0.5])))
            comp.log_gain.copy_(torch.log(torch.tensor([3.0, 1.5])))
        raw = layer.parametrizations.weight.original.detach().numpy().astype(np.float64)
        s = 1.0 / math.sqrt(_fan_in(layer))
        for k, (block, bound, gain) in enumerate(zip(_per_model_rows(raw, 2), (2.0, 0.5), (3.0, 1.5))):
            expected = bound * s * np.tanh(gain * block / (bound * s))
            got = _per_model_rows(layer.weight.detach().numpy(), 2)[k]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
            assert np.abs(got).max() < bound * s  # bounded
    # biases and BN scales are left alone
    assert not any(hasattr(m, "parametrizations") for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_compander_gradient_is_the_chain_rule(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    _, model, _, objective = make_state(spec, x, y, "compander:bound=1.5,gain=2")
    _step(objective, x, y)
    # the same network without the part, its weights set to f(raw) by hand: dL/dw there, times f'(raw)
    plain = build(spec, shape, 3, seeds=[0, 1])
    expected = {}
    with torch.no_grad():
        for mine, theirs in zip(ensemble_layers(model), ensemble_layers(plain)):
            raw = mine.parametrizations.weight.original.detach().double()
            a = 1.5 / math.sqrt(_fan_in(mine))
            theirs.weight.copy_(a * torch.tanh(2 * raw / a))
            expected[theirs] = 2 * (1 - torch.tanh(2 * raw / a) ** 2)  # f'(raw)
    idx_t = torch.from_numpy(IDX)
    logits = plain(torch.from_numpy(x)[idx_t])
    loss = soft_cross_entropy(logits, torch.nn.functional.one_hot(torch.from_numpy(y)[idx_t], 3).float()).sum()
    loss.backward()
    for mine, theirs in zip(ensemble_layers(model), ensemble_layers(plain)):
        want = (theirs.weight.grad.double() * expected[theirs]).float()
        torch.testing.assert_close(mine.parametrizations.weight.original.grad, want, rtol=1e-4, atol=1e-6)


def test_compander_learned_hyperparameters_get_gradients_and_change():
    x, y = tiny_problem((6,))
    _, model, _, objective = make_state("mlp:8", x, y, "compander:learn=1")
    _step(objective, x, y)
    comps = [layer.parametrizations.weight[0] for layer in ensemble_layers(model)]
    assert all(c.log_bound.grad is not None and c.log_gain.grad is not None for c in comps)
    assert all(c.log_gain.grad.abs().min() > 0 for c in comps)
    fixed = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=3, batch_size=8, regularizers="compander"),
                           seeds=[0, 1])
    learned = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=3, batch_size=8,
                                                               regularizers="compander:learn=1"), seeds=[0, 1])
    np.testing.assert_allclose(fixed.measures["compander/gain"], [1.5, 1.5], rtol=1e-6)
    assert np.all(np.abs(learned.measures["compander/gain"] - 1.5) > 1e-4)
    assert np.all(np.abs(learned.measures["compander/bound"] - 2.0) > 1e-4)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_compander_models_together_equal_each_alone(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, "compander:learn=1")


# ------------------------------------------------------------------ soft orthogonality


def _hand_ortho(model, k: int) -> np.ndarray:
    """Per model, sum over the layers but the output of ||G - I||_F^2, G of the smaller side (numpy)."""
    total = np.zeros(k)
    for layer in ensemble_layers(model):
        if layer is model.out:
            continue
        w = layer.weight.detach().numpy().astype(np.float64)
        for i, block in enumerate(_per_model_rows(w, k)):
            # linear: the (in, out) matrix of model i; conv: (C_out, C_in*kh*kw)
            m = block[0] if hasattr(layer, "in_features") else block.reshape(block.shape[0], -1)
            g = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
            total[i] += ((g - np.eye(len(g))) ** 2).sum()
    return total


@pytest.mark.parametrize("spec, shape", [("mlp:8-4", (6,)), ("cnn:16-4", (1, 6, 6)), ("resnet:4x1", (1, 6, 6))])
def test_ortho_penalty_is_the_hand_sum_over_models_and_layers(spec, shape):
    x, y = tiny_problem(shape)
    parts, model, state, _ = make_state(spec, x, y, "ortho:lambda=0.3")
    got = parts[0].penalty(state).detach().numpy()
    np.testing.assert_allclose(got, 0.3 * _hand_ortho(model, 2), rtol=1e-5)


def test_ortho_gradient_is_the_closed_form():
    x, y = tiny_problem((6,))
    # hidden layers (6, 4): columns Gram W^T W; (4, 8): rows Gram W W^T
    parts, model, state, objective = make_state("mlp:4-8", x, y, "ortho:lambda=0.2")
    _step(objective, x, y)
    with_penalty = [layer.weight.grad.clone() for layer in model.hidden]
    _, plain_model, _, plain_objective = make_state("mlp:4-8", x, y, "ce")
    _step(plain_objective, x, y)
    eye4 = torch.eye(4)
    for i, layer in enumerate(model.hidden):
        w = layer.weight.detach()
        if i == 0:  # 4 lambda W (W^T W - I)
            closed = 4 * 0.2 * w @ (w.transpose(1, 2) @ w - eye4)
        else:  # 4 lambda (W W^T - I) W
            closed = 4 * 0.2 * (w @ w.transpose(1, 2) - eye4) @ w
        torch.testing.assert_close(with_penalty[i] - plain_model.hidden[i].weight.grad, closed, rtol=1e-4,
                                   atol=1e-6)
    # the output layer is left out: only the cross-entropy reaches it
    torch.testing.assert_close(model.out.weight.grad, plain_model.out.weight.grad)


def test_orthogonality_error_is_zero_for_orthonormal_layers_and_is_the_measure():
    model = build("mlp:8-4", (6,), 3, seeds=[0, 1])
    with torch.no_grad():
        for layer in model.hidden:
            for k in range(2):
                torch.nn.init.orthogonal_(layer.weight[k])
    np.testing.assert_allclose(orthogonality_error(model), [0, 0], atol=1e-6)
    # a hand value: W = 2 I (4 x 4) -> ||4I - I||_F / ||I||_F = 3
    single = build("mlp:4", (4,), 3, seeds=[0])
    with torch.no_grad():
        single.hidden[0].weight.copy_(2 * torch.eye(4)[None])
    np.testing.assert_allclose(orthogonality_error(single), [3.0])
    np.testing.assert_allclose(orthogonality_error(single.hidden[0]), [3.0])  # a bare ensemble layer
    x, y = tiny_problem((1, 6, 6))
    res = train_ensemble("cnn:4-8", x, y, config=TrainConfig(epochs=2, batch_size=8, regularizers="ortho"),
                         seeds=[0, 1], keep_model=True)
    np.testing.assert_allclose(res.measures["ortho/error"], orthogonality_error(res.model), rtol=1e-6)
    plain = train_ensemble("cnn:4-8", x, y, config=TrainConfig(epochs=2, batch_size=8), seeds=[0, 1],
                           keep_model=True)
    assert np.all(res.measures["ortho/error"] < orthogonality_error(plain.model))


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_ortho_models_together_equal_each_alone(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, "ortho:lambda=0.1")


# ------------------------------------------------------------------ polarization, L1 on BN scales


def _set_gates(model, seed: int = 0) -> list[np.ndarray]:
    """Distinct random gates in (0, 1), none at a layer's mean; returns them per layer as (K, C)."""
    rng = np.random.default_rng(seed)
    out = []
    with torch.no_grad():
        for layer in bn_layers(model):
            g = rng.uniform(0.05, 0.95, size=layer.weight.shape).astype(np.float32)
            layer.weight.copy_(torch.from_numpy(g))
            layer.bias.copy_(torch.from_numpy(rng.normal(size=layer.bias.shape).astype(np.float32)))
            out.append(g.reshape(2, -1).astype(np.float64))
    return out


@pytest.mark.parametrize("layer_mean", [1, 0])
def test_polarize_penalty_and_its_gradient_are_the_hand_formulas(layer_mean):
    x, y = tiny_problem((1, 6, 6))
    parts, model, state, _ = make_state("cnn:4-6", x, y, f"polarize:lambda=0.3,t=1.2,layer={layer_mean}")
    g = _set_gates(model)
    pen = parts[0].penalty(state)
    if layer_mean:
        groups = [[gl] for gl in g]
    else:
        groups = [g]
    want = np.zeros(2)
    grads = []
    for group in groups:
        allg = np.concatenate(group, axis=1)
        mean = allg.mean(axis=1, keepdims=True)
        want += 1.2 * np.abs(allg).sum(1) - np.abs(allg - mean).sum(1)
        # d/dg_i: t sign(g_i) - sign(g_i - mean) + mean_j sign(g_j - mean)
        s = np.sign(allg - mean)
        grads.append(0.3 * (1.2 * np.sign(allg) - s + s.mean(axis=1, keepdims=True)))
    np.testing.assert_allclose(pen.detach().numpy(), 0.3 * want, rtol=1e-5)
    pen.sum().backward()
    grad = np.concatenate(grads, axis=1)
    got = np.concatenate([layer.weight.grad.numpy().reshape(2, -1) for layer in bn_layers(model)], axis=1)
    np.testing.assert_allclose(got, grad, rtol=1e-5, atol=1e-7)


def test_l1bn_penalty_and_gradient():
    x, y = tiny_problem((1, 6, 6))
    parts, model, state, _ = make_state("resnet:4x1", x, y, "l1bn:lambda=0.2")
    g = _set_gates(model)
    pen = parts[0].penalty(state)
    np.testing.assert_allclose(pen.detach().numpy(), 0.2 * sum(np.abs(gl).sum(1) for gl in g), rtol=1e-5)
    pen.sum().backward()
    for layer, gl in zip(bn_layers(model), g):
        np.testing.assert_allclose(layer.weight.grad.numpy().reshape(2, -1), 0.2 * np.sign(gl))


@pytest.mark.parametrize("name", ["polarize", "l1bn"])
def test_gate_parts_need_batch_norm(name):
    x, y = tiny_problem((6,))
    with pytest.raises(ConfigError) as err:
        train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=1, regularizers=name), seeds=[0])
    assert str(err.value) == f"{name}: expected a model with batch norm (cnn, cnn1d, resnet), got mlp:8"


def test_polarize_keeps_gates_in_unit_interval_and_switches_off_zero_gates():
    x, y = tiny_problem((1, 6, 6))
    res = train_ensemble("cnn:4-6", x, y, config=TrainConfig(epochs=4, batch_size=8,
                                                             regularizers="polarize:lambda=0.5"),
                         seeds=[0, 1], keep_model=True)
    g = np.concatenate([layer.weight.detach().numpy() for layer in bn_layers(res.model)])
    b = np.concatenate([layer.bias.detach().numpy() for layer in bn_layers(res.model)])
    assert g.min() >= 0 and g.max() <= 1 and (g == 0).sum() > 0
    assert np.all(b[g == 0] == 0)  # a gate at 0 is an off channel
    np.testing.assert_allclose(res.measures["polarize/pruned"],
                               [(gm == 0).mean() for gm in _gates_per_model(res.model)])


def _gates_per_model(model) -> list[np.ndarray]:
    k = model.n_models
    return list(np.concatenate([layer.weight.detach().numpy().reshape(k, -1) for layer in bn_layers(model)], 1))


def test_polarize_sparsity_prunes_in_one_pass():
    x, y = tiny_problem((1, 6, 6))
    res = train_ensemble("cnn:4-6", x, y, config=TrainConfig(epochs=4, batch_size=8,
                                                             regularizers="polarize:sparsity=0.5,prune_at=0.5"),
                         seeds=[0, 1], keep_model=True)
    for layer in bn_layers(res.model):  # half of every layer's channels of every model: gamma = beta = 0
        off = (layer.weight.detach() == 0) & (layer.bias.detach() == 0)
        assert np.all(off.view(2, -1).sum(1).numpy() >= layer.weight.numel() // 4)
    assert np.all(res.measures["polarize/pruned"] >= 0.5)
    check_regularizers("cnn:4", (1, 6, 6), 3, "polarize:sparsity=0.5+l1bn:sparsity=0.5")  # a study's check: fine
    with pytest.raises(ConfigError, match="l1bn: expected a model with batch norm"):
        check_regularizers("mlp:8", (6,), 3, "l1bn")


def test_prune_channels_zeros_the_smallest_gates_and_they_contribute_nothing():
    x, _ = tiny_problem((1, 6, 6))
    model = build("cnn:4-6", (1, 6, 6), 3, seeds=[0, 1])
    g = _set_gates(model, seed=3)
    model.eval()
    out = prune_channels(model, fraction=0.4)
    allg = np.concatenate(g, axis=1)
    n = allg.shape[1]
    for k in range(2):  # exactly the round(0.4 n) smallest |gamma| of each model
        want = np.zeros(n, bool)
        want[np.argsort(allg[k])[: round(0.4 * n)]] = True
        np.testing.assert_array_equal(out["masks"][k], want)
    np.testing.assert_allclose(out["fraction"], [round(0.4 * n) / n] * 2)
    xt = torch.from_numpy(x[:5])
    with torch.no_grad():
        before = model.forward_shared(xt)
        # change the weights that read the pruned channels: the next conv's inputs, the output layer's rows
        changed = copy.deepcopy(model)
        c0, c1 = model.convs[0].out_channels, model.convs[1].out_channels
        for k in range(2):
            for c in np.flatnonzero(out["masks"][k, :c0]):
                changed.convs[1].weight[k * c1:(k + 1) * c1, c] += 5.0
            for c in np.flatnonzero(out["masks"][k, c0:]):
                changed.out.weight[k, c] += 5.0
        torch.testing.assert_close(changed.forward_shared(xt), before)
        # ... while a kept channel's do matter
        kept = int(np.flatnonzero(~out["masks"][0, c0:])[0])
        changed.out.weight[0, kept] += 5.0
        assert not torch.allclose(changed.forward_shared(xt), before)
    assert out["masks"].shape == (2, n)
    # threshold and per-layer forms
    model = build("cnn:4-6", (1, 6, 6), 3, seeds=[0, 1])
    g = np.concatenate(_set_gates(model, seed=4), axis=1)
    np.testing.assert_array_equal(prune_channels(model, threshold=0.5)["masks"], g <= 0.5)
    model = build("cnn:4-6", (1, 6, 6), 3, seeds=[0, 1])
    _set_gates(model, seed=5)
    per = prune_channels(model, fraction=0.5, per_layer=True)
    assert [p.tolist() for p in per["per_layer"]] == [[0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ConfigError, match="exactly one of fraction= or threshold="):
        prune_channels(model)
    with pytest.raises(ConfigError, match="a model with batch norm"):
        prune_channels(build("mlp:8", (6,), 3, seeds=[0]), fraction=0.5)


@pytest.mark.parametrize("parts", ["polarize:lambda=0.05", "polarize:lambda=0.05,sparsity=0.5,prune_at=0.5",
                                   "l1bn:lambda=0.05"])
def test_gate_parts_models_together_equal_each_alone(parts):
    spec, shape = FAMILIES["cnn"]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, parts, epochs=3)


def test_gate_parts_on_resnet_and_cnn1d_together_equal_alone():
    for family in ("resnet", "cnn1d"):
        spec, shape = FAMILIES[family]
        x, y = tiny_problem(shape)
        assert_together_equals_alone(spec, x, y, "polarize:lambda=0.05")
