"""Cascading randomization re-draws exactly the layers it names, top first; random labels; the finding, tiny."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitscope.data import load
from fitscope.errors import ConfigError
from fitscope.explain import (
    cascade_layers,
    cascading_models,
    cascading_randomization,
    random_labels,
    retrain_on_random_labels,
    saliency_maps,
    spearman_similarity,
)
from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.plain_models import train_plain


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_cascade_goes_top_down_and_changes_exactly_the_layers_it_names():
    model = build_plain("cnn:4-8", (1, 8, 8), 10, seed=0)
    original = _state(model)
    assert cascade_layers(model) == ["out", "norm2", "conv2", "norm1", "conv1"]
    seen = []
    for depth, names, current in cascading_models(model, seed=7):
        assert names == cascade_layers(model)[:depth]
        state = _state(current)
        for key, value in state.items():
            layer = key.rsplit(".", 1)[0]
            changed = not torch.equal(value, original[key])
            # a norm layer re-drawn from its own init (scale 1, shift 0) changes only if training moved it: here the
            # model is fresh, so its norm layers keep their values; conv and linear layers draw new weights
            if layer in names and layer.startswith(("conv", "out")):
                assert changed, (depth, key)
            if layer not in names:
                assert not changed, (depth, key)
        seen.append(state)
    assert len(seen) == 6
    # the original is untouched; each layer's draw depends only on (seed, layer): the same at every later depth
    assert all(torch.equal(v, original[k]) for k, v in _state(model).items())
    assert torch.equal(seen[1]["out.weight"], seen[5]["out.weight"])
    assert torch.equal(seen[3]["conv2.weight"], seen[5]["conv2.weight"])
    # the draw is the layer's own reset_parameters under torch's generator seeded derive_seed(seed, "layer", name)
    fresh = torch.nn.Conv2d(4, 8, 3, padding=1)
    torch.manual_seed(derive_seed(7, "layer", "conv2"))
    fresh.reset_parameters()
    assert torch.equal(seen[5]["conv2.weight"], fresh.weight.detach())


def test_a_trained_models_norm_layers_are_reset_and_the_layers_argument_is_checked():
    model = build_plain("cnn:4-8", (1, 8, 8), 10, seed=0)
    with torch.no_grad():
        model.norm2.weight.mul_(3.0)
    *_, (depth, names, last) = list((d, n, _state(m)) for d, n, m in cascading_models(model, layers=["norm2"],
                                                                                      seed=1))
    assert depth == 1 and names == ["norm2"]
    assert torch.equal(last["norm2.weight"], torch.ones(8)) and torch.equal(last["conv2.weight"],
                                                                             model.conv2.weight.detach())
    with pytest.raises(ConfigError, match="^layers: expected names of modules with parameters"):
        next(iter(cascading_models(model, layers=["relu1"], seed=1)))


def test_cascading_randomization_maps_are_the_maps_of_each_randomized_model():
    model = build_plain("cnn:4-8", (1, 8, 8), 10, seed=0)
    x = np.random.default_rng(0).uniform(size=(3, 1, 8, 8)).astype(np.float32)
    out = cascading_randomization(model, x, [1, 2, 3], methods=["gradient", "cgi"], seed=5)
    assert out.layers == cascade_layers(model) and out.maps["cgi"].shape == (6, 3, 1, 8, 8)
    np.testing.assert_allclose(out.maps["gradient"][0], saliency_maps(model, x, [1, 2, 3], method="gradient"))
    # depth 2 by hand: out and norm2 re-drawn
    by_hand = build_plain("cnn:4-8", (1, 8, 8), 10, seed=0)
    for name in ("out", "norm2"):
        torch.manual_seed(derive_seed(5, "layer", name))
        getattr(by_hand, name).reset_parameters()
    np.testing.assert_allclose(out.maps["cgi"][2], saliency_maps(by_hand, x, [1, 2, 3], method="cgi"), rtol=1e-6)


def test_random_labels_permute_the_labels_and_the_model_is_trained_on_them():
    y = np.repeat(np.arange(4), 10)
    permuted = random_labels(y, seed=3)
    assert np.array_equal(np.bincount(permuted), np.bincount(y)) and (permuted != y).mean() > 0.5
    assert np.array_equal(permuted, random_labels(y, seed=3))
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    model = build_plain("mlp:64x1", (6,), 4, seed=0)
    result, labels = retrain_on_random_labels(model, x, y, epochs=60, batch_size=8, seed=9)
    assert np.array_equal(labels, random_labels(y, seed=derive_seed(9, "labels")))
    # it memorized the permuted labels, not the original ones
    predicted = result.train_logits.argmax(1)
    assert (predicted == labels).mean() > 0.9 > (predicted == y).mean()


def test_tiny_instance_cgi_changes_under_full_randomization_where_gradient_x_input_stays():
    data = load("digits", seed=0)
    rows = np.random.default_rng(derive_seed(0, "rows")).choice(len(data.y_train), 400, replace=False)
    model = build_plain("cnn:8-16", (1, 8, 8), 10, seed=1)
    train_plain(model, data.x_train[rows], data.y_train[rows], epochs=8, seed=2)
    x, y = data.x_test[:12], data.y_test[:12]
    out = cascading_randomization(model, x, y, methods=["gradient_x_input", "cgi"], seed=3)
    full = {m: float(np.nanmean(spearman_similarity(out.maps[m][0], out.maps[m][-1], absolute=True)))
            for m in out.maps}
    assert full["cgi"] <= 0.3 and full["gradient_x_input"] >= 0.7, full
