"""The backdoor study: units against an independent retraining, tables, report, bad input and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.backdoor import (
    STUDY,
    backdoor,
    make_config,
    plan_tasks,
    prepare,
    run_unit,
    single_image_row,
    support_rows,
)
from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.plain_models import train_plain

#: a tiny run: one seed, the clean control and 10% poisoned rows, few steps of each inversion
TINY = dict(data="digits", model="mlp:16x1", seeds=[0], fractions=[0.1], epochs=3, support=40, nc_steps=20,
            si_steps=20, si_noise_samples=4, si_all_classes=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_poisoned_unit_equals_poisoning_and_training_by_hand():
    cfg = make_config(**TINY)
    prepared = prepare(cfg)
    clean_task, task = plan_tasks(cfg, prepared.state)
    assert (clean_task.key, task.key) == ("clean-s0", "poison-0.1-s0")
    out = run_unit(task, **prepared.shared)
    x, y = prepared.shared["x_train"], prepared.shared["y_train"]
    x_test, y_test = prepared.shared["x_test"], prepared.shared["y_test"]
    # the same poisoning written out: round(0.1 n) rows not of class 0, the 3x3 bottom-right corner set to 1
    rng = np.random.default_rng(derive_seed(derive_seed(0, "poison", "0.1"), "poison"))
    rows = np.sort(rng.choice(np.flatnonzero(y != 0), size=round(0.1 * len(y)), replace=False))
    np.testing.assert_array_equal(out["poisoned_rows"], rows)
    xp, yp = x.copy(), y.copy()
    xp[rows, :, 5:, 5:] = 1.0
    yp[rows] = 0
    model = build_plain("mlp:16x1", (1, 8, 8), 10, seed=derive_seed(0, "model"))
    model = train_plain(model, xp, yp, epochs=3, batch_size=64, lr=0.05, seed=derive_seed(0, "batches")).model
    with torch.no_grad():
        clean_pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
        stamped = x_test.copy()
        stamped[:, :, 5:, 5:] = 1.0
        attacked = model(torch.from_numpy(stamped[y_test != 0])).argmax(1).numpy()
    assert float(out["clean_acc"]) == pytest.approx((clean_pred == y_test).mean())
    assert float(out["asr"]) == pytest.approx((attacked == 0).mean())
    # the inversions ran on the seed's support rows and single image
    assert out["nc_masks"].shape == (10, 8, 8) and out["anomaly_index"].shape == (10,)
    row = single_image_row(y, 0, seed=0)
    np.testing.assert_array_equal(out["si_image"], x[row])
    assert y[row] != 0 and len(support_rows(y, 40, seed=0)) == 40
    assert float(out["si_norm"]) <= cfg.si_eps + 1e-5


def test_a_tiny_run_writes_tables_and_a_report_with_the_figures(tmp_path):
    run, outcome = backdoor(make_config(**TINY), tmp_path / "run", threads=1)
    models = pd.read_parquet(run.path / "models.parquet")
    classes = pd.read_parquet(run.path / "classes.parquet")
    settings = pd.read_parquet(run.path / "settings.parquet")
    assert models.unit.tolist() == ["clean-s0", "poison-0.1-s0"]
    assert models.poisoned_rows.tolist() == [0, round(0.1 * 1437)]
    assert len(classes) == 20 and classes.is_target.sum() == 2
    assert models.clean_acc_drop.iloc[1] == pytest.approx(models.clean_acc.iloc[0] - models.clean_acc.iloc[1])
    # the anomaly index in the table is the stored one, and the flags follow from it
    stored = np.load(run.path / "units" / "poison-0.1-s0.npz")
    part = classes[classes.unit == "poison-0.1-s0"].sort_values("class")
    np.testing.assert_allclose(part.anomaly_index, stored["anomaly_index"])
    median = np.median(part.mask_norm)
    np.testing.assert_array_equal(part.flagged, (part.anomaly_index > 2) & (part.mask_norm < median))
    assert settings.kind.tolist() == ["clean", "poisoned"]
    html = (run.path / "report.html").read_text()
    assert run.meta["status"] == "done" and "The trigger sends test inputs of other classes to class 0" in html
    assert html.count("data:image/png;base64,") == 5  # trigger, attack, masks, anomaly, SmoothInv
    assert outcome.summary["10% poisoned: attack success"] == pytest.approx(models.asr.iloc[1])


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(fractions=[0.0]), "--fractions: expected poisoning fractions in (0, 1), got 0"),
        (dict(fractions=[0.05, 1.0]), "--fractions: expected poisoning fractions in (0, 1), got 1"),
        (dict(fractions=[]), "--fractions: expected at least one poisoning fraction"),
        (dict(methods=["spectral"]), "--methods: expected inversion methods among neural-cleanse, smoothinv, "
                                     "got 'spectral'"),
        (dict(trigger_position="middle"), "--trigger-position: expected one of bottom-right"),
        (dict(si_eps=0), "--si-eps"),
        (dict(threads=1), "--threads"),  # placement is not config
    ],
)
def test_bad_config_is_one_line_naming_the_flag(values, needle):
    with pytest.raises(ConfigError) as info:
        make_config(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_quick_is_a_small_setting_and_the_study_is_registered():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.seeds, cfg.fractions, cfg.epochs, cfg.si_all_classes) == ([0], [0.05, 0.1], 20, False)
    assert get_study("backdoor") is STUDY and STUDY.command == "fitscope backdoor"


def test_neural_cleanse_defaults_to_every_training_row_until_converged():
    cfg = make_config()
    assert cfg.support is None and cfg.nc_steps == 1000
    y = np.arange(50) % 10
    np.testing.assert_array_equal(support_rows(y, None, seed=3), np.arange(50))
    np.testing.assert_array_equal(support_rows(y, 50, seed=3), np.arange(50))
    rows = support_rows(y, 20, seed=3)
    assert len(rows) == 20 and len(set(rows)) == 20 and (np.diff(rows) > 0).all()
    tasks = plan_tasks(cfg, prepare(cfg).state)
    assert all(t.support is None and t.nc["steps"] == 1000 for t in tasks)


# --------------------------------------------------------------------------- command line

ARGS = ["backdoor", "--model", "mlp:16x1", "--seeds", "0", "--fractions", "0.1", "--epochs", "2", "--support", "30",
        "--nc-steps", "10", "--si-steps", "10", "--si-noise-samples", "2", "--si-target-only", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--trigger-size", "9"], "--trigger-size: expected a patch that fits the input 8x8 (at most 8), got 9"),
        (["--trigger-position", "6,6"], "--trigger-position: expected 2 first indices with the 3-wide patch"),
        (["--trigger-position", "0,0,0"], "--trigger-position: expected 2 first indices"),
        (["--fractions", "0"], "--fractions: expected poisoning fractions in (0, 1), got 0"),
        (["--fractions", "1.5"], "--fractions: expected poisoning fractions in (0, 1), got 1.5"),
        (["--fractions", "0.0001"], "--fractions: expected shares of the 1437 training rows between 1 row"),
        (["--target", "10"], "--target: expected a class in [0, 9] of digits, got 10"),
        (["--methods", "neural-cleanse,magic"], "--methods: expected inversion methods among"),
        (["--trigger-value", "2"], "--trigger-value: expected a value in the data's range [0, 1], got 2"),
        (["--data", "iris"], "--data: expected images or signals"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(ARGS + ["--out", str(out)] + extra, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "10% poisoned: attack success" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "backdoor" and sorted(meta["units"]) == ["clean-s0", "poison-0.1-s0"]
    code, captured = run_main(["backdoor", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err
    code, captured = run_main(["backdoor", "--out", str(out), "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "--epochs 3 differs from the run's 2" in captured.err
