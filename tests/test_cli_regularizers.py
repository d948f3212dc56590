"""`fitscope regularizers list`, and --regularizers on every training study: recorded, used, refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_main
from fitscope.cli.lists import parse_settings
from fitscope.data import load
from fitscope.experiments.randomization import make_config as randomization_config
from fitscope.experiments.randomization import setting_parts
from fitscope.experiments.seed_agreement import make_config, seed_agreement
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.regularizers import REGULARIZERS


def test_list_shows_every_part_and_the_grammar(capsys):
    code, out = run_main(["regularizers", "list"], capsys)
    assert code in (0, None)
    for name in REGULARIZERS:
        assert f" {name} " in out.out
    assert "elr:lambda=3,beta=0.7+mixup:alpha=0.2" in out.out


@pytest.mark.parametrize("command", ["audit", "seed-agreement", "leak", "randomization", "train"])
@pytest.mark.parametrize("text, needle", [
    ("nope", "--regularizers: expected one of wd, dropout"),
    ("ls:eps=3", "--regularizers ls:eps: expected a value in (0, 1), got 3"),
])
def test_every_training_study_refuses_a_bad_part_in_one_line(command, text, needle, tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main([command, "--regularizers", text, "--out", str(out)], capsys)
    assert code == 2
    assert needle in captured.err and captured.err.count("\n") == 1
    assert not out.exists()


def test_a_part_that_does_not_apply_to_the_model_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(["seed-agreement", "--model", "mlp:8", "--regularizers", "polarize",
                               "--out", str(out)], capsys)
    assert code == 2 and "polarize: expected a model with batch norm" in captured.err
    assert not out.exists()


def test_the_study_trains_with_the_recorded_parts(tmp_path):
    """A seed-agreement unit equals train_ensemble with the same parts, and differs from plain cross-entropy."""
    cfg = make_config(model="mlp:16x1", models=2, chunk=2, epochs=2, regularizers="ls:eps=0.3")
    run, _ = seed_agreement(cfg, tmp_path / "run", threads=1)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["regularizers"]
    assert recorded == [{"name": "ls", "eps": 0.3}]
    data = load("digits", seed=0)
    seeds = [derive_seed(0, "model", 0), derive_seed(0, "model", 1)]

    def preds(regularizers):
        return train_ensemble("mlp:16x1", data.x_train, data.y_train, seeds=seeds, x_test=data.x_test,
                              y_test=data.y_test, n_classes=10,
                              config=TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=0.003,
                                                 record=False, regularizers=regularizers)).test_logits.argmax(-1)

    stored = run.load_unit("models-000")["test_pred"]
    with_ls = preds("ls:eps=0.3")
    np.testing.assert_array_equal(stored, with_ls)
    assert not np.array_equal(with_ls, preds("ce"))


def test_randomization_settings_are_parts_with_the_study_values():
    cfg = randomization_config(weight_decay=1e-3, dropout=0.2, regularizers=["none", "wd+dropout", "mixup:alpha=0.4"])
    assert setting_parts(cfg, "none") == []
    assert setting_parts(cfg, "wd+dropout") == [{"name": "wd", "decay": 1e-3}, {"name": "dropout", "p": 0.2}]
    assert setting_parts(cfg, "augment") == [{"name": "augment", "flip": 0}]
    assert setting_parts(cfg, "wd:decay=0.01") == [{"name": "wd", "decay": 0.01}]
    assert setting_parts(cfg, "mixup:alpha=0.4") == [{"name": "mixup", "alpha": 0.4}]


def test_settings_keep_their_own_commas():
    assert parse_settings("none,elr:lambda=3,beta=0.7,wd+dropout,ls:eps=0.1+elr:lambda=1,beta=0.5") == [
        "none", "elr:lambda=3,beta=0.7", "wd+dropout", "ls:eps=0.1+elr:lambda=1,beta=0.5"]
