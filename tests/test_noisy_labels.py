"""The noisy-labels study: ECE and memorized noise against hand counts, cleaning against a recomputed score,
a unit against train_ensemble called directly, the CLI run (tables and report) and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_main
from fitscope.cli import main
from fitscope.data import flip_labels, load
from fitscope.errors import ConfigError, DataError
from fitscope.estimators import (
    cleanlab_issues,
    expected_calibration_error,
    label_issue_scores,
    learning_speed,
    out_of_fold_probs,
    reliability_bins,
)
from fitscope.experiments.noisy_labels import (
    candidates,
    detect_label_issues,
    detection_plan,
    make_config,
    memorized_noise,
    parse_method,
    parse_method_params,
    validation_rows,
)
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble

# --------------------------------------------------------------------------- estimators on hand-made arrays


def test_ece_against_a_hand_computation():
    # 15 bins of width 1/15, each (lo, hi] (the first also holds 0):
    #   0.05 -> bin 0; 0.30, 0.32 -> bin 4; 0.90 -> bin 13; 0.95, 1.0 -> bin 14
    conf = np.array([0.05, 0.30, 0.32, 0.90, 0.95, 1.00])
    right = np.array([0, 1, 0, 1, 1, 0], bool)
    # |acc - conf| per bin times its share of the 6 predictions:
    #   bin 0: |0 - 0.05| * 1/6, bin 4: |0.5 - 0.31| * 2/6, bin 13: |1 - 0.9| * 1/6, bin 14: |0.5 - 0.975| * 2/6
    hand = (0.05 + 2 * 0.19 + 0.10 + 2 * 0.475) / 6
    assert expected_calibration_error(conf, right) == pytest.approx(hand, abs=1e-12)
    bins = reliability_bins(conf, right)
    assert bins.count.tolist() == [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    assert bins.accuracy[4] == 0.5 and bins.confidence[4] == pytest.approx(0.31)
    assert np.isnan(bins.accuracy[1]) and bins.edges[1] == pytest.approx(1 / 15)
    # one bin: the gap between mean accuracy and mean confidence; perfect calibration: 0
    assert expected_calibration_error(conf, right, bins=1) == pytest.approx(abs(0.5 - conf.mean()))
    assert expected_calibration_error([0.0, 1.0], [False, True]) == 0.0
    with pytest.raises(DataError, match="confidence"):
        expected_calibration_error([1.5], [True])


def test_memorized_noise_against_a_hand_count():
    # 2 epochs, 2 models, 5 rows; "correct" = the prediction equals the given (for flipped rows: wrong) label
    correct = np.array([[[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]],
                        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]], bool)
    flipped = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]], bool)
    out = memorized_noise(correct, flipped)
    # model 0, epoch 1: flipped rows 0, 1, 4 -> correct on row 0 only -> 1/3; epoch 2: rows 0, 1 -> 2/3
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(1 / 3) and out[1, 0] == pytest.approx(2 / 3)
    assert np.isnan(out[:, 1]).all()  # model 1 has no flipped row
    assert memorized_noise(correct[-1], flipped)[0] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- methods and settings


def test_methods_parse_and_bad_names_list_the_known_ones():
    assert parse_method("ce").parts == () and parse_method("clean+ce").name == "clean"
    m = parse_method("clean+elr")
    assert m.clean and m.parts == ("elr",) and m.name == "clean+elr"
    with pytest.raises(ConfigError, match=r"methods: expected ce, clean or regularizer parts \(wd, .*elr.*\)"):
        parse_method("focal")
    with pytest.raises(ConfigError, match="clean first"):
        parse_method("elr+clean")
    with pytest.raises(ConfigError, match="at most one loss"):
        parse_method("gce+sce")


def test_grids_are_tried_unless_fixed_or_off():
    grid = [p[0]["lambda"] for p in candidates(make_config(methods=["elr"]), parse_method("elr"))]
    assert grid == [3.0, 1.0]  # the default first: a tie keeps it
    fixed = candidates(make_config(methods=["elr"], method_params="elr:lambda=2"), parse_method("elr"))
    assert [p[0]["lambda"] for p in fixed] == [2.0]
    assert len(candidates(make_config(methods=["elr"], tune=False), parse_method("elr"))) == 1
    assert candidates(make_config(methods=["ce"]), parse_method("ce")) == [[]]
    assert parse_method_params("elr:lambda=3,beta=0.7+gce:q=0.5") == {"elr": {"lambda": 3.0, "beta": 0.7},
                                                                      "gce": {"q": 0.5}}


# --------------------------------------------------------------------------- cleaning


def test_clean_drops_exactly_the_worst_rows_of_the_recomputed_score():
    data = load("digits", seed=0)
    x, y = data.x_train[:240], data.y_train[:240]
    seeds = [0, 1]
    labels = np.stack([flip_labels(y, 0.3, 10, seed=s)[0] for s in seeds])
    held = np.stack([validation_rows(len(y), 0.1, seed=s) for s in seeds])
    train = dict(epochs=4, batch_size=32, optimizer="adam", lr=0.01, schedule="constant", early_stop="none")
    found = detect_label_issues("mlp:32x1", x, labels, ~held, seeds=seeds, folds=3, train=train, n_classes=10)

    # the score recomputed from an ensemble trained here: models s*3+f on seed s's rows outside fold f
    masks, det_seeds = detection_plan(~held, 3, seeds=seeds)
    assert masks.shape == (6, 240) and not (masks & held.repeat(3, axis=0)).any()
    assert (masks.reshape(2, 3, 240).sum(axis=1) == 2 * (~held)).all()  # each training row in 2 of the 3 models
    res = train_ensemble("mlp:32x1", x, labels.repeat(3, axis=0), config=TrainConfig(**train, record="summary"),
                         seeds=det_seeds, masks=masks, n_classes=10)
    for i in range(2):
        block = slice(3 * i, 3 * i + 3)
        rows = np.flatnonzero(~held[i])
        oof = out_of_fold_probs(res.train_logits[block], masks[block])[rows]
        speed = learning_speed(correct_counts=res.summary.correct_epochs[block], epochs=4,
                               in_subset=masks[block]).scores[rows]
        score = label_issue_scores(labels[i, rows], oof, learning_speed=speed).scores
        count = cleanlab_issues(labels[i, rows], oof).n_flagged
        np.testing.assert_allclose(found["score"][i, rows], score)
        assert np.isnan(found["score"][i, held[i]]).all()
        assert found["estimated"][i] == count and found["dropped"][i].sum() == count > 0
        dropped = found["dropped"][i, rows]
        # every dropped row scores at least as high as every kept training row; none is a validation row
        assert score[dropped].min() >= score[~dropped].max()
        assert not found["dropped"][i, held[i]].any()


# --------------------------------------------------------------------------- a run through the CLI

SMALL = ["noisy-labels", "--data", "digits", "--train-rows", "300", "--model", "mlp:32x1", "--methods",
         "ce,ls,clean", "--noise", "0,0.4", "--noise-mode", "uniform", "--seeds", "0,1", "--epochs", "3",
         "--no-tune", "--threads", "1"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One tiny run through the CLI (3 methods x 2 settings = 6 units), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("nl") / "run"
    with pytest.raises(SystemExit) as info:
        main(SMALL + ["--out", str(out)])
    assert info.value.code in (0, None)
    return out


def test_cli_run_writes_the_tables_and_the_report(cli_run):
    out = cli_run
    for name in ("results", "curves", "reliability", "selection"):
        assert (out / f"{name}.parquet").is_file(), name
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and len(meta["units"]) == 6
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 3 * 2 * 2 and "seconds" not in results.columns  # wall time: seconds.json only
    assert set(json.loads((out / "seconds.json").read_text())) == set(meta["units"])
    assert sorted(results.noise_mode.unique()) == ["none", "uniform"]
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == len(results) * 3 and curves.epoch.max() == 3
    reliability = pd.read_parquet(out / "reliability.parquet")
    assert len(reliability) == 3 * 2 * 15
    html = (out / "report.html").read_text()
    for needle in ("Test accuracy against noise", "quoted from the paper", "Reliability diagrams", "Memorized noise",
                   "What cleaning dropped", "91.2%", "11.8% \u2192 1.8%"):
        assert needle in html, needle


def test_a_unit_equals_train_ensemble_called_directly(cli_run):
    """ce at 40% uniform noise: the labels, validation rows and models rebuilt here from the documented seeds."""
    data = load("digits", seed=0)
    rng = np.random.default_rng(derive_seed(0, "train_rows"))
    rows = np.sort(rng.choice(len(data.y_train), 300, replace=False))
    x, y = data.x_train[rows], data.y_train[rows]
    seeds = [0, 1]
    noisy = [flip_labels(y, 0.4, 10, mode="uniform", seed=derive_seed(s, "noise", "uniform", "0.4")) for s in seeds]
    labels = np.stack([lab for lab, _ in noisy])
    flipped = np.zeros((2, 300), bool)
    for i, (_, f) in enumerate(noisy):
        flipped[i, f] = True
    held = np.stack([validation_rows(300, 0.1, seed=s) for s in seeds])
    config = TrainConfig(epochs=3, batch_size=128, optimizer="adam", lr=0.003, record="full")
    res = train_ensemble("mlp:32x1", x, labels, config=config, seeds=[derive_seed(s, "model") for s in seeds],
                         masks=~held, x_test=data.x_test, y_test=data.y_test, n_classes=10)
    results = pd.read_parquet(cli_run / "results.parquet")
    mine = results[(results.method == "ce") & (results.noise == 0.4)].sort_values("seed")
    correct = res.records.correct_array()  # (E, K, n) against the given labels
    for i in range(2):
        test_acc = float((res.test_logits[i].argmax(-1) == data.y_test).mean())
        val = (correct[:, i] & held[i]).sum(axis=1) / held[i].sum()
        wrong_rows = flipped[i] & ~held[i]
        memorized = (correct[-1, i] & wrong_rows).sum() / wrong_rows.sum()
        row = mine.iloc[i]
        assert row.test_acc == pytest.approx(test_acc)
        assert row.best_val_epoch == int(np.argmax(val)) + 1 and row.final_val_acc == pytest.approx(val[-1])
        assert row.memorized == pytest.approx(memorized) and row.flipped_rows == wrong_rows.sum()
        assert row.test_acc_at_best_val == pytest.approx(res.test_acc[i, int(np.argmax(val))])
        # ECE from the softmax of the test logits, 15 bins, brute force over the bins
        p = np.exp(res.test_logits[i] - res.test_logits[i].max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        conf, right = p.max(-1), p.argmax(-1) == data.y_test
        ece = sum(abs(right[m].mean() - conf[m].mean()) * m.mean()
                  for b in range(15) if (m := (conf > b / 15) & (conf <= (b + 1) / 15)).any())
        assert row.ece == pytest.approx(ece, abs=1e-5)


def test_clean_unit_drops_the_worst_scored_rows(cli_run):
    results = pd.read_parquet(cli_run / "results.parquet")
    with np.load(cli_run / "units" / "clean-uniform-40.npz") as z:
        score, dropped, estimated, held = z["clean_score"], z["clean_dropped"], z["clean_estimated"], z["validation"]
        trained = z["trained_rows"]
    for i in range(2):
        train = ~held[i]
        assert dropped[i].sum() == estimated[i] and not (dropped[i] & held[i]).any()
        assert score[i, dropped[i]].min() >= score[i, train & ~dropped[i]].max()
        assert trained[i] == train.sum() - estimated[i]
    clean = results[(results.method == "clean") & (results.noise == 0.4)].sort_values("seed")
    assert clean.dropped.tolist() == estimated.astype(float).tolist()


def test_cli_resume_reuses_every_unit(cli_run, capsys):
    code, captured = run_main(["noisy-labels", "--out", str(cli_run), "--resume"], capsys)
    assert code in (0, None) and "reused 6 finished units, training 0" in captured.err


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--methods", "ce,focal"], ["--methods", "focal", "elr", "gce", "clean"]),
        (["--methods", "elr", "--method-params", "elr:lambda=-1"], ["elr:lambda", "(0, 100]", "-1"]),
        (["--methods", "elr", "--method-params", "elr:gamma=2"], ["elr:gamma", "lambda"]),
        (["--methods", "ce", "--method-params", "gce:q=0.5"], ["--method-params", "gce"]),
        (["--methods", "polarize"], ["--methods", "polarize", "batch norm"]),
        (["--noise", "0,1"], ["--noise", "[0, 1)"]),
        (["--noise", "-0.1"], ["--noise", "[0, 1)"]),
        (["--noise-mode", "diagonal"], ["--noise-mode", "uniform", "pair"]),
        (["--data", "nope"], ["nope"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needles):
    out = tmp_path / "run"
    argv = ["noisy-labels", "--data", "digits", "--model", "mlp:16x1", "--epochs", "2", "--threads", "1",
            "--out", str(out)] + extra
    code, captured = run_main(argv, capsys)
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
