"""The regularizer registry, its grammar, and the objective's plain path; label smoothing as the first part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitscope.errors import ConfigError
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.objective import soft_cross_entropy
from fitscope.train.regularizers import (
    REGULARIZERS,
    format_regularizers,
    parse_regularizers,
    regularizers_table,
)
from regularizer_checks import FAMILIES, assert_together_equals_alone, make_state, objective_logit_grads, tiny_problem


def test_grammar_round_trips_and_fills_defaults():
    parts = parse_regularizers("ls:eps=0.2 + wd")
    assert parts == [{"name": "ls", "eps": 0.2}, {"name": "wd", "decay": 5e-4}]
    assert parse_regularizers(format_regularizers(parts)) == parts
    assert parse_regularizers("ce") == [] and format_regularizers([]) == "ce"
    assert TrainConfig(regularizers="ls").regularizers == [{"name": "ls", "eps": 0.1}]


@pytest.mark.parametrize("text, expected", [
    ("nope", "regularizers: expected one of wd, dropout"),
    ("ls:eps=1.5", "ls:eps: expected a value in (0, 1), got 1.5"),
    ("ls:eps=abc", "ls:eps: expected a number in (0, 1), got 'abc'"),
    ("ls:temp=2", "ls:temp: expected a hyperparameter of ls (eps), got unknown 'temp'"),
    ("ls+ls", "regularizers: expected each part once, got ls twice"),
    ("ls:eps", "regularizers: expected NAME=VALUE after 'ls:'"),
])
def test_bad_parts_are_one_line_config_errors(text, expected):
    with pytest.raises(ConfigError) as err:
        TrainConfig(regularizers=text)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_legacy_field_and_its_part_together_are_refused():
    with pytest.raises(ConfigError, match="either weight_decay or the regularizer 'wd'"):
        TrainConfig(weight_decay=1e-3, regularizers="wd")
    assert TrainConfig(weight_decay=1e-3).parts() == [{"name": "wd", "decay": 1e-3}]


def test_the_table_lists_every_part_with_ranges():
    rows = regularizers_table()
    assert [r["name"] for r in rows] == list(REGULARIZERS)
    ls = next(r for r in rows if r["name"] == "ls")
    assert ls["hyperparameters"] == "eps=0.1 in (0, 1)"


def test_wd_part_equals_the_weight_decay_field():
    x, y = tiny_problem((6,))
    a = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8, weight_decay=0.01), seeds=[1])
    b = train_ensemble("mlp:8", x, y, config=TrainConfig(epochs=2, batch_size=8, regularizers="wd:decay=0.01"),
                       seeds=[1])
    np.testing.assert_array_equal(a.train_logits, b.train_logits)


def test_soft_cross_entropy_equals_torch_on_hard_and_soft_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g)
    y = torch.randint(0, 4, (2, 5), generator=g)
    hard = F.one_hot(y, 4).float()
    ref = F.cross_entropy(logits.reshape(-1, 4), y.reshape(-1), reduction="none").reshape(2, 5).mean(1)
    torch.testing.assert_close(soft_cross_entropy(logits, hard), ref)
    soft = torch.softmax(torch.randn(2, 5, 4, generator=g), -1)
    ref = F.cross_entropy(logits.reshape(-1, 4), soft.reshape(-1, 4), reduction="none").reshape(2, 5).mean(1)
    torch.testing.assert_close(soft_cross_entropy(logits, soft), ref)


# ------------------------------------------------------------------ label smoothing


def test_label_smoothing_gradient_is_softmax_minus_smoothed_target():
    x, y = tiny_problem((6,))
    _, _, _, objective = make_state("mlp:8", x, y, "ls:eps=0.3")
    idx = np.stack([np.arange(0, 8), np.arange(8, 16)])
    logits, grad = objective_logit_grads(objective, x, y, idx)
    target = F.one_hot(torch.from_numpy(y[idx]), 3).float() * 0.7 + 0.1
    # d/dz of mean_b CE(z, t) = (softmax(z) - t) / b
    torch.testing.assert_close(grad, (torch.softmax(logits, -1) - target) / 8)
    # and torch's own label smoothing gives the same loss
    ref = F.cross_entropy(logits.reshape(-1, 3), torch.from_numpy(y[idx]).reshape(-1), label_smoothing=0.3)
    torch.testing.assert_close(soft_cross_entropy(logits, target).mean(), ref)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_label_smoothing_models_together_equal_each_alone(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, "ls:eps=0.2")


def test_a_part_that_replaces_the_loss_or_wraps_the_step_must_define_the_hook():
    from fitscope.train.regularizers.base import Regularizer

    with pytest.raises(TypeError, match="sets replaces_loss but does not define loss"):
        type("NoLoss", (Regularizer,), {"replaces_loss": True})
    with pytest.raises(TypeError, match="sets wraps_step but does not define step"):
        type("NoStep", (Regularizer,), {"wraps_step": True})
    part = type("Plain", (Regularizer,), {"name": "plain"})()
    with pytest.raises(TypeError, match="does not replace the loss"):
        part.loss(None, None, None)
