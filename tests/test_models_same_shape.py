"""Networks whose output has their input's shape: layers, initialisation, parameter counts, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.models.same_shape import build_same_shape, same_shape_parameters


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("arch, shape, depth", [("fc", (1, 6, 6), 1), ("fc", (1, 6, 6), 3), ("fc", (5,), 2),
                                                ("cnn", (1, 6, 6), 1), ("cnn", (2, 6, 6), 4), ("cnn", (1, 10), 3)])
def test_output_has_the_input_shape_and_the_count_matches(arch, shape, depth):
    net = build_same_shape(arch, shape, depth=depth, width=12, channels=3, kernel=3, seed=0)
    assert net(torch.zeros(2, *shape)).shape == (2, *shape)
    weights = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))]
    assert len(weights) == depth and sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == depth - 1
    assert _count(net) == same_shape_parameters(arch, shape, depth=depth, width=12, channels=3, kernel=3)
    if arch == "cnn":
        assert isinstance(weights[0], torch.nn.Conv2d if len(shape) == 3 else torch.nn.Conv1d)
        assert weights[0].in_channels == weights[-1].out_channels == shape[0]


def test_depth_one_is_a_linear_map_and_he_init_has_variance_two_over_fan_in():
    net = build_same_shape("fc", (1, 16, 16), depth=3, width=400, seed=1)
    first = net.layer1
    assert (first.in_features, first.out_features) == (256, 400)
    assert abs(first.weight.var().item() * 256 / 2 - 1) < 0.05 and (first.bias == 0).all()
    torch_default = build_same_shape("fc", (1, 16, 16), depth=3, width=400, seed=1, init="torch")
    assert abs(torch_default.layer1.weight.var().item() * 256 * 3 - 1) < 0.05  # U(+-1/sqrt(fan_in))
    one = build_same_shape("cnn", (1, 8, 8), depth=1, seed=0)
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(one(2 * x) - one(torch.zeros_like(x)), 2 * (one(x) - one(torch.zeros_like(x))), atol=1e-5)
    # the same seed, the same weights; the global RNG untouched
    state = torch.random.get_rng_state()
    again = build_same_shape("fc", (1, 16, 16), depth=3, width=400, seed=1)
    assert torch.equal(again.layer2.weight, net.layer2.weight) and torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(arch="rnn"), "arch: expected one of fc, cnn"), (dict(depth=0), "depth: expected an integer in [1, 50]"),
    (dict(depth=51), "depth: expected an integer in [1, 50]"), (dict(kernel=4), "kernel: expected an odd"),
    (dict(init="xavier"), "init: expected one of he, torch"),
])
def test_bad_arguments_are_one_line_errors(kwargs, needle):
    args = dict(arch="cnn", input_shape=(1, 8, 8), depth=2, seed=0) | kwargs
    with pytest.raises(ConfigError) as info:
        build_same_shape(**args)
    assert needle in str(info.value)
    with pytest.raises(ConfigError, match="an image"):
        build_same_shape("cnn", (math.prod((1, 8, 8)),), depth=2, seed=0)
