"""Layer re-initialisation and re-randomisation (Zhang, Bengio, Singer 2019) on any torch module.

Checks: the layers of an MLP, a ResNet and a hand-made module; re-initialising every layer to the epoch-0 state
gives back the initial network's outputs exactly, re-initialising to the final state changes nothing; a
re-randomised layer has the spread of torch's initialisation formula, depends on its seed alone and leaves the
other layers and batch norm's running statistics alone; the grid of :func:`layer_robustness` against a
brute-force loop; and the paper's finding on a tiny MLP: the first layer is more critical than the last hidden one.
"""

from __future__ import annotations

import math
from copy import deepcopy as copy_module

import numpy as np
import pytest
import torch
from torch import nn

from fitscope.data import load
from fitscope.dynamics import (
    layer_groups,
    layer_robustness,
    reinitialize,
    rerandomize,
    snapshot,
)
from fitscope.errors import ConfigError
from fitscope.models import build, build_plain
from fitscope.train.plain_models import eval_logits, train_plain


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class OneResNet(nn.Module):
    """A one-model fitscope ResNet as a plain module (as the study wraps it)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.net = build("resnet:4x2,blocks=2", (1, 8, 8), 10, seeds=[seed], norm="batch")

    def forward(self, x):
        return self.net.forward_shared(x)[0]


def _perturb(model: nn.Module, seed: int) -> None:
    """Move every parameter and batch-norm statistic, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.mul_(1.5).add_(0.2)


def _train_mode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Outputs in train mode (batch norm on the batch's statistics), on a copy: the model's running ones stay."""
    copy = copy_module(model).train()
    return copy(x).detach()


# --------------------------------------------------------------------------- layers


def test_layers_of_an_mlp_a_resnet_and_a_module_with_norms():
    mlp = build_plain("mlp:16x3", (1, 8, 8), 10, seed=0)
    assert [(g.name, g.parameters) for g in layer_groups(mlp)] == [
        ("fc1", ("fc1.weight", "fc1.bias")), ("fc2", ("fc2.weight", "fc2.bias")),
        ("fc3", ("fc3.weight", "fc3.bias")), ("out", ("out.weight", "out.bias"))]
    assert layer_groups(mlp)[0].size == 64 * 16 + 16
    # the stem's batch norm joins the stem; each residual block (with its shortcut and norms) is one layer
    groups = layer_groups(OneResNet(0))
    assert [g.name for g in groups] == ["net.stem", "net.blocks.0", "net.blocks.1", "net.blocks.2",
                                        "net.blocks.3", "net.out"]
    assert groups[0].modules == ("net.stem", "net.stem_bn")
    assert "net.blocks.2.shortcut.1.weight" in groups[3].parameters
    # every parameter belongs to exactly one layer
    model = OneResNet(0)
    names = [p for g in layer_groups(model) for p in g.parameters]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    # a conv net of stock layers: conv + batch norm, conv + group norm; blocks= overrides the automatic rule
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4),
                        nn.Flatten(), nn.Linear(64, 3))
    assert [g.modules for g in layer_groups(seq)] == [("0", "1"), ("3", "4"), ("6",)]
    assert [g.name for g in layer_groups(model, blocks=["net.blocks"])] == ["net.stem", "net.blocks", "net.out"]
    with pytest.raises(ConfigError, match="blocks: expected names of modules of the model, got 'nope'"):
        layer_groups(model, blocks=["nope"])


# --------------------------------------------------------------------------- re-initialisation


@pytest.mark.parametrize("make", [lambda: build_plain("mlp:16x3", (1, 8, 8), 10, seed=3, norm="batch"),
                                  lambda: OneResNet(3)], ids=["mlp", "resnet"])
def test_reinitialising_every_layer_to_epoch_0_gives_back_the_initial_network_and_to_the_end_changes_nothing(make):
    model = make()
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    initial = snapshot(model)
    before_train_mode = _train_mode(model, x)  # batch statistics: independent of the running ones
    model.eval()
    before_eval = model(x).detach()
    _perturb(model, 1)
    final = snapshot(model)
    model.eval()
    trained_out = model(x).detach()
    assert not torch.allclose(trained_out, before_eval)
    for group in layer_groups(model):  # to the final state: nothing changes
        reinitialize(model, group, final)
    assert torch.equal(model(x).detach(), trained_out)
    for group in layer_groups(model):  # every layer to epoch 0, parameters only
        reinitialize(model, group, initial)
    for name, p in model.named_parameters():
        assert torch.equal(p, initial[name]), name
    assert torch.equal(_train_mode(model, x), before_train_mode)
    # the running statistics stayed trained (the paper's choice) until asked for
    for name, b in model.named_buffers():
        if b.is_floating_point():
            assert torch.equal(b, final[name]) and not torch.equal(b, initial[name]), name
    model.load_state_dict(final)
    for group in layer_groups(model):
        reinitialize(model, group, initial, buffers=True)
    model.eval()
    assert torch.equal(model(x).detach(), before_eval)


def test_reinitialising_one_layer_touches_that_layer_only_and_bad_states_are_refused():
    model = build_plain("mlp:16x3", (1, 8, 8), 10, seed=0)
    initial = snapshot(model)
    _perturb(model, 2)
    final = snapshot(model)
    reinitialize(model, "fc2", initial)
    for name, p in model.named_parameters():
        assert torch.equal(p, initial[name] if name.startswith("fc2.") else final[name]), name
    with pytest.raises(ConfigError, match="layer: expected one of the model's layers"):
        reinitialize(model, "fc9", initial)
    with pytest.raises(ConfigError, match="state: expected a checkpoint holding 'fc1.weight'"):
        reinitialize(model, "fc1", {})
    with pytest.raises(ConfigError, match=r"state: expected 'fc1.bias' of shape \(16,\)"):
        reinitialize(model, "fc1", {**initial, "fc1.bias": torch.zeros(3)})


# --------------------------------------------------------------------------- re-randomisation


def test_rerandomising_draws_from_the_initialisation_distribution_and_depends_on_its_seed_alone():
    model = build_plain("mlp:400x2", (1, 8, 8), 10, seed=0)
    trained = snapshot(model)
    rerandomize(model, "fc2", seed=11)
    w, b = model.fc2.weight.detach(), model.fc2.bias.detach()
    # torch's default for nn.Linear: kaiming_uniform(a=sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std bound/sqrt 3
    bound = 1 / math.sqrt(400)
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    assert w.abs().max().item() <= bound and b.abs().max().item() <= bound
    assert not torch.equal(w, trained["fc2.weight"])  # a fresh draw, not the layer's own initial weights
    for name, p in model.named_parameters():
        if not name.startswith("fc2."):
            assert torch.equal(p, trained[name]), name
    again = build_plain("mlp:400x2", (1, 8, 8), 10, seed=0)
    torch.manual_seed(123)  # the global generator's state plays no part
    state = torch.random.get_rng_state()
    rerandomize(again, "fc2", seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again.fc2.weight, w)
    rerandomize(again, "fc2", seed=12)
    assert not torch.equal(again.fc2.weight, w)


def test_rerandomising_keeps_batch_norm_statistics_and_takes_a_fresh_model_when_layers_cannot_reset():
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    _perturb(model, 0)
    stats = model[1].running_mean.clone(), model[1].running_var.clone()
    rerandomize(model, "0", seed=1)
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].running_var, stats[1])
    assert torch.equal(model[1].weight, torch.ones(6)) and torch.equal(model[1].bias, torch.zeros(6))
    # fitscope's ensemble layers have no reset_parameters: a fresh network of the same spec supplies the draw
    resnet = OneResNet(0)
    with pytest.raises(ConfigError, match="layer: expected modules with reset_parameters"):
        rerandomize(resnet, "net.stem", seed=5)
    rerandomize(resnet, "net.blocks.1", seed=5, fresh=OneResNet)
    fresh = OneResNet(5).state_dict()
    assert torch.equal(resnet.net.blocks[1].conv1.weight, fresh["net.blocks.1.conv1.weight"])
    assert not torch.equal(resnet.net.stem.weight, fresh["net.stem.weight"])


# --------------------------------------------------------------------------- the grid and the finding


def test_the_grid_matches_a_brute_force_loop_and_leaves_the_model_as_it_came():
    model = build_plain("mlp:8x2", (1, 8, 8), 10, seed=0)
    states = {0: snapshot(model)}
    _perturb(model, 1)
    states[4] = snapshot(model)
    _perturb(model, 2)
    final = snapshot(model)
    x = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(50) % 10

    def error(net):
        return float((eval_logits(net, x).argmax(1) != y).float().mean())

    result = layer_robustness(model, states, error, seed=7, draws=2)
    for name, value in model.state_dict().items():
        assert torch.equal(value, final[name]), name
    assert [g.name for g in result.layers] == ["fc1", "fc2", "out"] and result.epochs.tolist() == [0, 4]
    assert result.trained == error(model)
    from fitscope.seeding import derive_seed

    for i, group in enumerate(result.layers):
        for j, epoch in enumerate((0, 4)):
            copy = build_plain("mlp:8x2", (1, 8, 8), 10, seed=0)
            copy.load_state_dict(final)
            for pname in group.parameters:
                copy.get_parameter(pname).data.copy_(states[epoch][pname])
            assert result.reinit[i, j] == error(copy)
            a = torch.cat([final[p].reshape(-1) for p in group.parameters]).double()
            b = torch.cat([states[epoch][p].reshape(-1) for p in group.parameters]).double()
            assert result.distance[i, j] == pytest.approx(float((a - b).norm() / b.norm()), rel=1e-12)
        for d in range(2):
            copy = build_plain("mlp:8x2", (1, 8, 8), 10, seed=0)
            copy.load_state_dict(final)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(7, i, d))
                copy.get_submodule(group.name).reset_parameters()
            assert result.rerandom[i, d] == error(copy)
    table = result.table()
    assert len(table) == 3 * (2 + 2) and set(table.kind) == {"reinit", "rerandom"}
    with pytest.raises(ConfigError, match="checkpoints: expected at least one"):
        layer_robustness(model, {}, error)
    with pytest.raises(ConfigError, match="draws: expected at least 1"):
        layer_robustness(model, states, error, seed=0, draws=0)


def test_a_tiny_mlp_on_digits_has_a_critical_first_layer_and_a_robust_last_hidden_layer():
    data = load("digits", seed=0)
    model = build_plain("mlp:128x3", data.input_shape, data.n_classes, seed=0)
    states = {0: snapshot(model)}
    train_plain(model, data.x_train, data.y_train, epochs=8, batch_size=32, lr=0.05, seed=1)
    xt, yt = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    def error(net):
        return float((eval_logits(net, xt).argmax(1) != yt).float().mean())

    result = layer_robustness(model, states, error, seed=2)
    rise = result.reinit[:, 0] - result.trained
    names = [g.name for g in result.layers]
    assert names == ["fc1", "fc2", "fc3", "out"]
    assert result.trained < 0.1
    assert rise[0] > 0.05 and rise[0] > 3 * max(rise[2], 0.005), rise  # fc1 critical, fc3 (last hidden) robust
    assert rise[2] < 0.05, rise
    assert np.all(result.rerandom[:3, 0] > result.reinit[:3, 0])  # a fresh draw hurts more than the layer's own init
