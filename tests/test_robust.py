"""The ``robust`` study (fitscope.experiments.robust): units against a direct computation, report, CLI.

References: a main unit recomputed with train_ensemble and pgd_attack called directly with the derived seeds;
the L0 unit's defended accuracy recomputed with FourierIHTDefense and the attacks.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.data import load
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.robust import (
    QUICK, STUDY, EnsembleMember, make_config, plan_tasks, robust,
)
from fitscope.robustness import FourierIHTDefense, iht_recover, l0_pixel_attack, pgd_attack, predict_labels
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble

TINY = dict(specs=["mlp:16x1"], norms=["inf"], epochs=2, eps_curve=[0.05, 0.1], attack_steps=3, restarts=1,
            mlp_widths=[8, 32], cnn_widths=[], l0_spec="mlp:16x1", l0_attacks=["pixels"], l0_budgets=[1, 2],
            l0_steps=2, iht_rounds=3, fourier_k=20, defense_pixels=2)
ARGS = ["robust", "--specs", "mlp:16x1", "--norms", "inf", "--epochs", "1", "--eps-curve", "0.1", "--attack-steps",
        "2", "--restarts", "1", "--mlp-widths", "8", "--cnn-widths", "", "--l0-spec", "mlp:16x1", "--l0-attacks",
        "pixels", "--l0-budgets", "1", "--l0-steps", "1", "--iht-rounds", "2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "run"
    run, outcome = robust(make_config(**TINY), out)
    return out, run, outcome


def test_the_main_unit_equals_training_and_attacking_directly(tiny_run):
    out, _, outcome = tiny_run
    data = load("digits", seed=0)
    cfg = make_config(**TINY)
    task = next(t for t in plan_tasks(cfg, data.input_shape, data.n_classes, 0.0, 1.0) if t.training == "pgd-inf")
    assert task.model_seed == derive_seed(0, "model", "mlp:16x1")
    res = train_ensemble("mlp:16x1", data.x_train, data.y_train, config=TrainConfig(
        epochs=2, batch_size=64, optimizer="adam", lr=1e-3, record="none",
        regularizers="pgd:eps=0.1,norm=inf,steps=7,low=0,high=1"), seeds=[task.model_seed], n_classes=10,
        keep_model=True)
    net = EnsembleMember(res.model)
    adv = pgd_attack(net, data.x_test, data.y_test, eps=0.1, steps=3, low=0.0, high=1.0,
                     seed=derive_seed(task.attack_seed, "inf", 0.1))
    expected = float((predict_labels(net, adv) == data.y_test).mean())
    stored = np.load(out / "units" / f"{task.key}.npz")
    assert float(stored["linf_acc"]) == pytest.approx(expected)
    row = outcome.models.set_index("training").loc["pgd-inf"]
    assert row.linf_acc == pytest.approx(expected)
    assert row.clean_acc == pytest.approx(float((predict_labels(net, data.x_test) == data.y_test).mean()))
    curve = outcome.curves[outcome.curves.training == "pgd-inf"].set_index("eps").robust_acc
    assert curve[0.1] == pytest.approx(expected) and curve[0.0] == pytest.approx(row.clean_acc)


def test_the_l0_unit_equals_the_defense_recomputed(tiny_run):
    out, _, outcome = tiny_run
    data = load("digits", seed=0)
    cfg = make_config(**TINY)
    task = next(t for t in plan_tasks(cfg, data.input_shape, data.n_classes, 0.0, 1.0) if t.key == "l0-fourier")
    x_fit = iht_recover(torch.from_numpy(data.x_train), k=20, pixels=2, rounds=3)[0].numpy()
    res = train_ensemble("mlp:16x1", x_fit, data.y_train, config=TrainConfig(
        epochs=2, batch_size=64, optimizer="adam", lr=1e-3, record="none"), seeds=[task.model_seed], n_classes=10,
        keep_model=True)
    net = EnsembleMember(res.model)
    defended = FourierIHTDefense(net, k=20, pixels=2, input_shape=(1, 8, 8), rounds=3)
    seed = derive_seed(task.attack_seed, "pixels", 2)
    box = dict(low=0.0, high=1.0)
    right = predict_labels(defended, l0_pixel_attack(defended, data.x_test, data.y_test, pixels=2, steps=2,
                                                     seed=seed, **box)) == data.y_test
    right &= predict_labels(defended, l0_pixel_attack(net, data.x_test, data.y_test, pixels=2, steps=2, seed=seed,
                                                      **box)) == data.y_test
    table = outcome.l0.set_index(["defense", "attack", "budget"]).accuracy
    assert table[("fourier", "pixels", 2)] == pytest.approx(float(right.mean()))
    assert sorted(json.loads((out / "run.json").read_text())["units"]) == sorted(
        ["main-mlp_16x1-standard", "main-mlp_16x1-pgdinf", "width-mlp-0008", "width-mlp-0032", "l0-none",
         "l0-fourier"])


def test_tables_summary_and_report(tiny_run):
    out, _, outcome = tiny_run
    widths = pd.read_parquet(out / "widths.parquet")
    assert list(widths.width) == [8, 32] and (widths.parameters.diff().dropna() > 0).all()
    assert set(pd.read_parquet(out / "l0.parquet").defense) == {"none", "fourier"}
    key = "mlp:16x1: gain of PGD training (points)"
    models = outcome.models.set_index("training")
    assert outcome.summary[key] == pytest.approx(round(100 * (models.loc["pgd-inf", "linf_acc"]
                                                               - models.loc["standard", "linf_acc"]), 1))
    html = (out / "report.html").read_text()
    assert 'id="verdict"' in html and "PGD training raised" in html
    assert html.count("data:image/png;base64") >= 5  # curve, width x2, L0, examples


def test_quick_is_small_and_registered():
    assert get_study("robust") is STUDY and STUDY.quick is QUICK
    cfg = make_config(**QUICK)
    assert cfg.specs == ["mlp:128x2"] and cfg.cnn_widths == [] and cfg.norms == ["inf"]


@pytest.mark.parametrize("values, needle", [
    (dict(norms=["1"]), "norms"),
    (dict(eps=-0.1), "eps"),
    (dict(attack_steps=0), "attack-steps"),
    (dict(l0_attacks=["blur"]), "l0-attacks"),
])
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("extra, needle", [
    (["--norms", "1"], "--norms: expected"),
    (["--eps", "-0.1"], "--eps: expected"),
    (["--eps", "1.5"], "--eps: expected an L-inf radius in (0, 1]"),
    (["--attack-steps", "0"], "--attack-steps: expected"),
    (["--train-steps", "0"], "--train-steps: expected"),
    (["--l0-budgets", "65"], "--l0-budgets: expected at most the 64 pixels"),
    (["--l0-attacks", "blur"], "--l0-attacks: expected"),
    (["--patch-sizes", "9", "--l0-attacks", "patch"], "--patch-sizes: expected patch sides of at most 8"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "gain of PGD training" in captured.err
    assert all((out / f"{name}.parquet").is_file() for name in ("models", "curves", "widths", "l0"))
    code, captured = run_main(["robust", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 5 finished units, training 0" in captured.err
    code, captured = run_main(["robust", "--out", str(out), "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "--epochs 3 differs from the run's 1" in captured.err
