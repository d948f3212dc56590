"""The seed-agreement study: its estimates against brute force over model pairs, its units, report and CLI."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import assert_refused, run_main
from fitscope.data import load
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.seed_agreement import (
    STUDY,
    example_disagreement,
    make_config,
    model_seeds,
    pairwise_disagreement,
    plan_chunks,
    seed_agreement,
    vote_counts,
)
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble

SMALL = dict(model="mlp:16x1", models=5, chunk=2, epochs=2)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One small study of digits (5 models in units of 2, 2, 1), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("seeds") / "run"
    run, outcome = seed_agreement(make_config(**SMALL), out, threads=1)
    return run, outcome


def stored_predictions(run) -> np.ndarray:
    """The ``(N, m)`` test predictions, read straight from the unit files (not through the study)."""
    files = sorted((run.path / "units").glob("models-*.npz"))
    assert [f.stem for f in files] == ["models-000", "models-001", "models-002"]
    parts = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            parts.append(z["test_pred"])
    return np.concatenate(parts)


# --------------------------------------------------------------------------- config and plan


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(models=1), "models"),
        (dict(chunk=0), "chunk"),
        (dict(epochs=0), "epochs"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(lr=0), "lr"),
        (dict(seed=-1), "seed"),
        (dict(threads=1), "threads"),  # placement is not config: the runner takes it
        (dict(unknown=1), "unknown"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(values, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make_config(**values)
    assert "\n" not in str(info.value)


def test_quick_is_a_small_setting():
    cfg = STUDY.make_config({}, quick=True)
    assert (cfg.models, cfg.chunk, cfg.epochs) == (8, 4, 8)
    assert STUDY.make_config({"epochs": 3}, quick=True).epochs == 3


def test_model_seeds_do_not_depend_on_the_chunk_size():
    a = plan_chunks(make_config(models=7, chunk=3), n_classes=10)
    b = plan_chunks(make_config(models=7, chunk=5), n_classes=10)
    assert [len(c.seeds) for c in a] == [3, 3, 1] and [c.first for c in a] == [0, 3, 6]
    assert [s for c in a for s in c.seeds] == [s for c in b for s in c.seeds] == model_seeds(make_config(models=7))
    assert len(set(model_seeds(make_config(models=7)))) == 7  # every model has its own seed
    assert model_seeds(make_config(models=3, seed=1)) != model_seeds(make_config(models=3, seed=0))


# --------------------------------------------------------------------------- estimators on hand-made predictions


def test_disagreement_of_a_hand_made_vote():
    # 4 models, 4 examples, 3 classes
    predictions = np.array([[0, 1, 2, 0],
                            [0, 1, 1, 1],
                            [0, 2, 0, 1],
                            [0, 2, 0, 2]])
    counts = vote_counts(predictions, 3)
    assert counts.tolist() == [[4, 0, 0], [0, 2, 2], [2, 1, 1], [1, 2, 1]]
    per = example_disagreement(predictions, 3)
    assert per["majority"].tolist() == [0, 1, 0, 1]  # a 2-2 tie goes to the lowest class
    assert np.allclose(per["disagreement"], [0.0, 0.5, 0.5, 0.5])
    # ordered pairs of distinct models that differ, of 4 * 3 = 12: 0, 8, 10, 10
    assert np.allclose(per["pairwise_disagreement"], [0.0, 8 / 12, 10 / 12, 10 / 12])
    assert per["distinct"].tolist() == [1, 2, 3, 3]
    matrix = pairwise_disagreement(predictions)
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 0)
    assert matrix[0, 1] == 0.5 and matrix[2, 3] == 0.25 and matrix[0, 3] == 0.75


def test_one_model_cannot_disagree():
    with pytest.raises(ValueError, match="at least 2 models"):
        example_disagreement(np.zeros((1, 5), np.int64), 2)


# --------------------------------------------------------------------------- the study against brute force


def test_tables_match_brute_force_over_model_pairs(small_run):
    run, outcome = small_run
    P = stored_predictions(run)
    n, m = P.shape
    y = load("digits", seed=0).y_test
    examples = pd.read_parquet(run.path / "examples.parquet")
    models = pd.read_parquet(run.path / "models.parquet")
    pairs = pd.read_parquet(run.path / "pairs.parquet")
    assert (n, m) == (5, len(y)) and len(examples) == m and len(models) == n and len(pairs) == n * (n - 1) // 2

    # per pair of models: the share of test examples on which they differ
    brute_pairs = {(a, b): sum(P[a, e] != P[b, e] for e in range(m)) / m
                   for a, b in itertools.combinations(range(n), 2)}
    got = {(int(r.model_a), int(r.model_b)): r.disagreement for r in pairs.itertuples()}
    assert got.keys() == brute_pairs.keys()
    assert all(abs(got[k] - brute_pairs[k]) < 1e-12 for k in got)

    # per example: ordered pairs of distinct models that differ; the majority and the share against it
    for e in range(m):
        votes = Counter(int(P[k, e]) for k in range(n))
        differ = sum(P[a, e] != P[b, e] for a in range(n) for b in range(n) if a != b)
        most = max(votes.values())
        majority = min(c for c, v in votes.items() if v == most)
        row = examples.iloc[e]
        assert int(row["index"]) == e and int(row["label"]) == y[e]
        assert row["pairwise_disagreement"] == pytest.approx(differ / (n * (n - 1)), abs=1e-12)
        assert int(row["majority"]) == majority and bool(row["majority_correct"]) == (majority == y[e])
        assert row["disagreement"] == pytest.approx(1 - most / n, abs=1e-12)
        assert int(row["distinct"]) == len(votes)
        assert row["correct_fraction"] == pytest.approx(sum(P[k, e] == y[e] for k in range(n)) / n, abs=1e-12)

    # per model: test accuracy and seed
    for k in range(n):
        assert models["test_acc"][k] == pytest.approx(sum(P[k, e] == y[e] for e in range(m)) / m, abs=1e-12)
    assert models["seed"].tolist() == [derive_seed(0, "model", k) for k in range(n)]
    assert models["unit"].tolist() == ["models-000"] * 2 + ["models-001"] * 2 + ["models-002"]

    # the headline numbers
    s = run.meta["summary"]
    mean_pair = sum(brute_pairs.values()) / len(brute_pairs)
    assert s["mean pairwise disagreement"] == pytest.approx(mean_pair, abs=1e-12)
    # the mean over pairs equals the mean over examples of the per-example pairwise disagreement
    assert examples["pairwise_disagreement"].mean() == pytest.approx(mean_pair, abs=1e-12)
    assert s["examples with any disagreement"] == pytest.approx(
        sum(len(set(P[:, e])) > 1 for e in range(m)) / m, abs=1e-12)
    assert s["mean test accuracy"] == pytest.approx(float((P == y).mean()), abs=1e-12)
    assert s["models"] == n and s["test examples"] == m
    assert 0 < mean_pair < 1  # small models after 2 epochs: seeds do disagree
    assert outcome.summary == s


def test_units_hold_what_train_ensemble_gives_for_those_seeds(small_run, monkeypatch):
    """Model k of the study is train_ensemble with seed derive_seed(seed, "model", k): nothing else differs."""
    run, _ = small_run
    data = load("digits", seed=0)
    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "1")  # the study ran with threads=1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_ensemble("mlp:16x1", data.x_train, data.y_train,
                                config=TrainConfig(epochs=2, batch_size=128, optimizer="adam", lr=0.003, record=False),
                                seeds=[derive_seed(0, "model", 2), derive_seed(0, "model", 3)],
                                x_test=data.x_test, y_test=data.y_test, n_classes=10)
    finally:
        torch.set_num_threads(before)
    unit = run.load_unit("models-001")
    assert np.array_equal(unit["test_pred"], result.test_logits.argmax(-1))
    assert np.array_equal(unit["seeds"], [derive_seed(0, "model", 2), derive_seed(0, "model", 3)])
    assert not np.array_equal(unit["test_pred"][0], unit["test_pred"][1])


def test_report_shows_the_figures_and_the_unstable_examples(small_run):
    run, outcome = small_run
    html = (run.path / "report.html").read_text()
    assert "Two mlp:16x1 models that differ only in their seed disagree on" in html  # the verdict
    for section in ('id="summary"', 'id="disagreement"', 'id="unstable"', 'id="models"'):
        assert section in html
    unstable = int((outcome.examples["distinct"] > 1).sum())
    tiles = len(re.findall(r'<div class="tile', html))
    assert tiles == min(16, unstable) and tiles > 0  # digits are images: the unstable examples are drawn
    assert html.count("data:image/png;base64,") == 2 + tiles  # histogram, accuracy per model, tiles
    assert "models-002" in html and run.meta["status"] == "done"


def test_vector_data_report_has_no_images(tmp_path):
    run, outcome = seed_agreement(make_config(data="iris", model="mlp:8x1", models=3, chunk=2, epochs=1),
                                  tmp_path / "iris", threads=1)
    html = (run.path / "report.html").read_text()
    assert '<div class="tile' not in html and html.count("data:image/png;base64,") == 2
    assert len(outcome.examples) == len(load("iris", seed=0).y_test)


def test_the_study_is_registered():
    assert get_study("seed-agreement") is STUDY


# --------------------------------------------------------------------------- command line


ARGS = ["seed-agreement", "--model", "mlp:16x1", "--models", "4", "--chunk", "2", "--epochs", "1", "--threads", "1"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "nope"], "nope"),
        (["--model", "transformer:9"], "transformer"),
        (["--model", "cnn:8"], "cnn"),  # digits fit a cnn; iris does not
        (["--models", "1"], "models"),
        (["--optimizer", "lbfgs"], "optimizer"),
        (["--data", "iris", "--label-column", "species"], "label_column"),
        (["--executor", "dask"], "executor"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    argv = ARGS + ["--out", str(out)] + extra
    if extra[:2] == ["--model", "cnn:8"]:
        argv += ["--data", "iris"]
    assert_refused(argv, out, needle, capsys)


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and "mean pairwise disagreement" in captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "seed-agreement" and meta["config"]["models"] == 4 and sorted(meta["units"]) == [
        "models-000", "models-001"]
    code, captured = run_main(["seed-agreement", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err
    code, captured = run_main(["seed-agreement", "--out", str(out), "--resume", "--models", "6"], capsys)
    assert code == 2 and "--models 6 differs from the run's 4" in captured.err
