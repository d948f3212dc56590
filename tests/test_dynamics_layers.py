"""The layers study: a unit against an independent re-computation, the tables, the report, config and CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.dynamics_layers import (
    STUDY,
    build_net,
    dynamics_layers,
    layer_label,
    make_config,
    plan_tasks,
    prepare,
    probe_net,
)
from fitscope.models import build_plain
from fitscope.train.plain_models import eval_logits, train_plain

#: a tiny run with both families, for the tables, the report and the CLI
TINY = dict(nets=["mlp:16x2", "resnet:4x2"], models=1, epochs=2, checkpoints=[0, 1, 2])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- a unit


def test_a_unit_matches_training_and_resetting_by_hand():
    cfg = make_config(nets=["mlp:16x2"], models=1, epochs=3, checkpoints=[0, 2, 3], draws=2)
    prepared = prepare(cfg)
    (task,) = plan_tasks(cfg, (1, 8, 8), 10)
    out = probe_net(task, **prepared.shared)
    s = prepared.shared
    # the same network trained by train_plain, with its state copied by hand at epochs 0 and 2
    model = build_plain("mlp:16x2", (1, 8, 8), 10, seed=task.model_seed, norm="batch")
    states = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    train_plain(model, s["x_train"], s["y_train"], epochs=2, batch_size=32, lr=0.05, seed=task.order_seed)
    states[2] = {k: v.clone() for k, v in model.state_dict().items()}
    model = build_plain("mlp:16x2", (1, 8, 8), 10, seed=task.model_seed, norm="batch")
    train_plain(model, s["x_train"], s["y_train"], epochs=3, batch_size=32, lr=0.05, seed=task.order_seed)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    xt, yt = torch.from_numpy(s["x_test"]), s["y_test"]

    def error() -> float:
        return float((eval_logits(model, xt).argmax(1).numpy() != yt).mean())

    assert out["trained"] == error()
    assert out["layers"].tolist() == ["fc1", "fc2", "out"] and out["epochs"].tolist() == [0, 2, 3]
    for i, layer in enumerate(["fc1", "fc2", "out"]):
        for j, epoch in enumerate([0, 2]):
            model.load_state_dict(final)
            getattr(model, layer).weight.data.copy_(states[epoch][f"{layer}.weight"])
            getattr(model, layer).bias.data.copy_(states[epoch][f"{layer}.bias"])
            assert out["reinit"][i, j] == error(), (layer, epoch)
        # re-initialising to the final checkpoint leaves the trained network
        assert out["reinit"][i, 2] == out["trained"]
    assert out["rerandom"].shape == (3, 2)
    model.load_state_dict(final)
    first, bias = model.fc1.weight.detach().clone(), model.fc1.bias.detach().clone()
    assert out["distance"][0, 0] == pytest.approx(
        float((first.double() - states[0]["fc1.weight"].double()).norm() ** 2 + (
            bias.double() - states[0]["fc1.bias"].double()).norm() ** 2) ** 0.5
        / float(torch.cat([states[0]["fc1.weight"].reshape(-1), states[0]["fc1.bias"]]).double().norm()), rel=1e-9)


def test_networks_labels_and_seeds():
    net = build_net("resnet:4x2,blocks=2", (1, 8, 8), 10, seed=0)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert [layer_label(n, "resnet:4x2,blocks=2") for n in ("net.stem", "net.blocks.0", "net.blocks.3", "net.out")] \
        == ["stem", "stage1.block1", "stage2.block2", "out"]
    assert layer_label("fc1", "mlp:16x2") == "fc1"
    tasks = plan_tasks(make_config(nets=["mlp:16x2", "resnet:4x2"], models=2), (1, 8, 8), 10)
    assert [t.key for t in tasks] == ["mlp-16x2-m0", "mlp-16x2-m1", "resnet-4x2-m0", "resnet-4x2-m1"]
    assert tasks[0].model_seed == tasks[2].model_seed != tasks[1].model_seed  # model k: one seed across specs
    assert len({t.rerandom_seed for t in tasks}) == 4


# --------------------------------------------------------------------------- the whole study


def test_a_tiny_run_writes_tables_and_a_report_with_a_heatmap_per_net(tmp_path):
    run, outcome = dynamics_layers(make_config(**TINY), tmp_path / "run", threads=1)
    cells = pd.read_parquet(run.path / "cells.parquet")
    layers = pd.read_parquet(run.path / "layers.parquet")
    training = pd.read_parquet(run.path / "training.parquet")
    assert layers.layer.tolist() == ["fc1", "fc2", "out", "stem", "stage1.block1", "stage2.block1", "out"]
    assert len(cells) == 7 * (3 + 1) and len(training) == 2 * 2
    final = cells[(cells.kind == "reinit") & (cells.epoch == 2)]
    assert (final.error == final.trained).all()  # reset to the last checkpoint = the trained network
    np.testing.assert_allclose(layers.rise, layers.reinit_first - layers.trained)
    assert (layers.critical == (layers.rise > 0.05)).all()
    assert layers.reinit_first.tolist() == layers.reinit_e0.tolist()
    html = (run.path / "report.html").read_text()
    assert run.meta["status"] == "done" and outcome.summary["checkpoint the layers are reset to for 'critical'"] \
        == "epoch 0"
    assert html.count("data:image/png;base64,") == 4  # two heatmaps, distance, training
    assert "Batch-norm statistics" in html and "resetting the first layer (fc1)" in html


def test_the_verdict_names_critical_and_robust_layers():
    from fitscope.report.dynamics_layers import verdict

    layers = pd.DataFrame(dict(net=["mlp:8x2"] * 3, index=[0, 1, 2], layer=["fc1", "fc2", "out"],
                               trained=[0.05] * 3, reinit_first=[0.5, 0.06, 0.07], rise=[0.45, 0.01, 0.02],
                               rerandom=[0.9, 0.8, 0.85], critical=[True, False, False]))
    assert verdict(dict(layers=layers, first_epoch=0)) == (
        "In mlp:8x2 (trained test error 5%), resetting the first layer (fc1) to its initial weights gave 50%, while "
        "the worst of the 2 later layers (out) gave 7%: 1 of 3 layers critical (fc1), the others robust. "
        "Re-randomising a layer (a fresh draw instead of its own initial weights) gave a higher error than "
        "re-initialising it for 3 of 3 layers.")


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(nets=["vgg:16"]), "--nets: expected FAMILY:SHAPE"),
        (dict(nets=["vgg:16"]), "unknown family 'vgg'"),
        (dict(nets=[]), "--nets: expected at least one model spec"),
        (dict(nets=["mlp:8x2", "mlp:8-8"]), "--nets: expected distinct model specs"),
        (dict(epochs=0), "--epochs"),
        (dict(epochs=5000), "--epochs"),
        (dict(epochs=5, checkpoints=[0, 5, 8]), "--checkpoints: expected epochs in [0, 5] (--epochs), got 8"),
        (dict(checkpoints=[-1, 2]), "--checkpoints: expected epochs in [0, 30] (--epochs), got -1"),
        (dict(checkpoints=[]), "--checkpoints: expected at least one checkpoint epoch"),
        (dict(checkpoints=[1, 1]), "--checkpoints: expected distinct checkpoint epochs"),
        (dict(lr=0), "--lr"),
        (dict(critical=1.5), "--critical"),
        (dict(threads=1), "--threads"),  # placement is not config
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.models, cfg.epochs, cfg.checkpoints, cfg.nets) == (1, 10, [0, 1, 2, 5, 10],
                                                                    ["mlp:256x3", "resnet:16x3,blocks=2"])
    assert get_study("dynamics-layers") is STUDY and STUDY.command == "fitscope dynamics layers"


# --------------------------------------------------------------------------- command line

ARGS = ["dynamics", "layers", "--nets", "mlp:8x1", "--models", "1", "--epochs", "2", "--checkpoints", "0,2",
        "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--nets", "vgg:16"], "--nets: expected FAMILY:SHAPE"),
        (["--nets", "cnn1d:8"], "--nets: expected a family for images of shape 1x8x8"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "2000"], "--epochs"),
        (["--checkpoints", "0,5"], "--checkpoints: expected epochs in [0, 2] (--epochs), got 5"),
        (["--checkpoints", "0,x"], "--checkpoints: expected comma-separated integers"),
        (["--data", "nope"], "nope"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "mlp:8x1: critical layers" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "dynamics-layers" and sorted(meta["units"]) == ["mlp-8x1-m0"]
    code, captured = run_main(["dynamics", "layers", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 1 finished units, training 0" in captured.err
