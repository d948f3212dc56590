"""The randomization study end to end, on small settings of built-in digits."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from fitscope.data import corrupt, load
from fitscope.errors import ConfigError, DataError, RunError
from fitscope.experiments.randomization import (
    CHECK_90,
    CHECK_ALL,
    CHECK_LATE,
    LATE_AT,
    findings,
    make_config,
    model_seeds,
    plan_units,
    randomization_study,
    train_ensemble_task,
)
from fitscope.seeding import derive_seed
from fitscope.train import train_ensemble, unpack_correct

SMALL = dict(
    model="mlp:64x1",
    corruptions=["none", "random_labels", "gaussian"],
    noise_levels=[0.0, 0.5, 1.0],
    regularizers=["none", "wd"],
    seeds=[0],
    epochs=4,
    batch_size=64,
)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """The SMALL study, every part, run once for the tests that read it (or copy it)."""
    cfg = make_config(**SMALL)
    run, outcome = randomization_study(cfg, tmp_path_factory.mktemp("rand") / "rand")
    return cfg, run, outcome


@pytest.fixture(scope="module")
def noise_study(tmp_path_factory):
    """The SMALL noise sweep alone, run once for the tests that read it."""
    cfg = make_config(**dict(SMALL, parts=["noise"]))
    run, outcome = randomization_study(cfg, tmp_path_factory.mktemp("noise") / "noise")
    return cfg, run, outcome


def test_plan_covers_every_part_and_records_ground_truth():
    cfg = make_config(**SMALL)
    data = load("digits", seed=0)
    units = plan_units(cfg, data)
    keys = [u.key for u in units]
    assert keys == ["curves-none", "curves-random_labels", "curves-gaussian", "noise", "reg-none", "reg-wd"]
    noise = units[3]
    assert noise.labels.shape == (3, len(data.y_train))
    # p = 0 keeps every label, p = 1 leaves about 1/K of them by chance
    assert np.array_equal(noise.labels[0], data.y_train)
    assert 0.8 < (noise.labels[2] != data.y_train).mean() < 0.98
    assert [row["labels_changed"] for row in noise.rows][0] == 0.0
    assert noise.rows[1]["labels_changed"] == pytest.approx(0.5 * 0.9, abs=0.05)
    # corruptions are a function of the config only
    again = plan_units(cfg, data)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(units, again))


def test_an_input_corruption_is_drawn_inside_the_task_from_its_seed():
    cfg = make_config(**dict(SMALL, model="mlp:16x1", epochs=2, corruptions=["shuffled_pixels"], parts=["curves"]))
    data = load("digits", seed=0)
    (unit,) = plan_units(cfg, data)
    assert unit.inputs == ("shuffled_pixels", derive_seed(cfg.data_seed, "curves", "shuffled_pixels"))
    ticks = []
    got = train_ensemble_task((unit, cfg.model, data.n_classes), x_train=data.x_train, y_train=data.y_train,
                              x_test=data.x_test, y_test=data.y_test, progress=ticks.append)
    shuffled = corrupt(data, "shuffled_pixels", noise=1.0, seed=unit.inputs[1]).dataset
    want = train_ensemble(cfg.model, shuffled.x_train, unit.labels, config=unit.train, seeds=model_seeds(unit),
                          x_test=shuffled.x_test, y_test=shuffled.y_test, n_classes=data.n_classes)
    np.testing.assert_array_equal(got["train_logits"], want.train_logits)
    np.testing.assert_array_equal(got["test_acc"], want.test_acc)
    clean = train_ensemble(cfg.model, data.x_train, unit.labels, config=unit.train, seeds=model_seeds(unit),
                           x_test=data.x_test, y_test=data.y_test, n_classes=data.n_classes)
    assert not np.array_equal(got["train_logits"], clean.train_logits)
    assert ticks == [len(unit.rows) * e for e in range(1, int(got["epochs_run"]) + 1)]


def test_study_writes_tables_and_report(small_study):
    cfg, run, outcome = small_study
    results = pd.read_parquet(run.path / "results.parquet")
    for column in ("corruption", "noise", "train_acc", "test_acc", "epochs_to_fit", "final_loss", "seed",
                   "regularizers", "labels_changed", "epochs_to_90pct"):
        assert column in results.columns
    # 3 curves + 3 noise levels + 2 regularizer settings x (true, random)
    assert len(results) == 3 + 3 + 4
    # accuracies are fractions of the training rows; the 90% point comes no later than the fit of every row
    n_train = len(load(cfg.data, seed=cfg.data_seed).y_train)
    np.testing.assert_allclose(results.train_acc * n_train, np.round(results.train_acc * n_train), atol=1e-6)
    fitted = results.epochs_to_fit > 0
    assert (results.epochs_to_90pct[fitted].between(1, results.epochs_to_fit[fitted])).all()
    assert (results.train_acc[results.epochs_to_90pct < 0] < 0.9).all()
    assert (results.epochs_to_90pct[results.corruption == "random_labels"] < 0).all()  # 4 epochs: no memorizing
    html = (run.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "Regularizers" in html and "random labels" in html
    assert run.meta["status"] == "done"
    assert outcome.trained_units and not outcome.reused_units


def test_same_seed_same_results(noise_study, tmp_path):
    cfg, _, a = noise_study
    _, b = randomization_study(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(a.results, b.results)


def test_resume_reuses_units_and_refuses_other_config(small_study, tmp_path):
    cfg, run, _ = small_study
    shutil.copytree(run.path, tmp_path / "r")
    (tmp_path / "r" / "report.html").unlink()
    _, again = randomization_study(cfg, tmp_path / "r", resume=True)
    assert again.trained_units == [] and len(again.reused_units) == 6
    assert "Resumed run" in (tmp_path / "r" / "report.html").read_text()
    other = make_config(**dict(SMALL, epochs=5))
    with pytest.raises(RunError, match="was made with a different config"):
        randomization_study(other, tmp_path / "r", resume=True)


@pytest.mark.parametrize(
    "values, name",
    [
        (dict(noise_levels=[0.0, 1.5]), "noise_levels"),
        (dict(corruptions=["blur"]), "corruptions"),
        (dict(regularizers=["l1"]), "regularizers"),
        (dict(seeds=[]), "seeds"),
        (dict(epochs=0), "epochs"),
        (dict(unknown=1), "unknown"),
    ],
)
def test_bad_config_names_the_field(values, name):
    with pytest.raises(ConfigError, match=name):
        make_config(**values)


def test_bad_data_leaves_no_run_directory(tmp_path):
    cfg = make_config(**dict(SMALL, data="no-such-set"))
    with pytest.raises(DataError, match="no-such-set"):
        randomization_study(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_findings_are_measured_from_results():
    results = pd.DataFrame(
        [
            dict(part="curves", corruption="random_labels", regularizers="none", noise=1.0, train_acc=1.0,
                 test_acc=0.11, epochs_to_fit=30),
            dict(part="curves", corruption="none", regularizers="none", noise=0.0, train_acc=1.0,
                 test_acc=0.97, epochs_to_fit=5),
        ]
        + [
            dict(part="noise", corruption="labels", regularizers="none", noise=p, train_acc=1.0, test_acc=0.5,
                 epochs_to_fit=e, epochs_to_90pct=e // 2, epochs_run=40)
            for p, e in [(0.0, 5), (0.5, 12), (1.0, 30)]
        ]
    )
    late = pd.DataFrame([dict(noise=0.0, late_examples=4, late_conflicting=1, pairs=100, all_conflicting=2),
                         dict(noise=0.5, late_examples=6, late_conflicting=5, pairs=100, all_conflicting=30),
                         dict(noise=1.0, late_examples=10, late_conflicting=9, pairs=100, all_conflicting=90)])
    checks = {c["check"]: c for c in findings(results, n_classes=10, late=late)}
    assert all(c["holds"] for c in checks.values())
    assert checks["random labels: test accuracy minus chance"]["value"] == pytest.approx(0.01)
    assert checks[CHECK_90]["value"] == pytest.approx(1.0)  # 2, 6, 15 epochs to 90%: perfectly monotone
    assert checks[CHECK_ALL]["value"] == pytest.approx(12 / 5)  # fastest p > 0 over p = 0
    assert checks[CHECK_LATE]["value"] == pytest.approx(14 / 16)  # pooled over p > 0 only
    assert "0.600" in checks[CHECK_LATE]["target"]  # (30 + 90) / 200 over all examples


def test_findings_state_the_90pct_criterion_and_the_jump_not_the_old_claim():
    rows = [dict(part="noise", corruption="labels", regularizers="none", noise=p, train_acc=1.0, test_acc=0.5,
                 epochs_to_fit=e, epochs_to_90pct=e90, epochs_run=90)
            for p, e, e90 in [(0.0, 15, 3), (0.2, 70, 5), (0.6, 55, 9), (1.0, -1, 20)]]
    checks = findings(pd.DataFrame(rows), n_classes=10)
    names = [c["check"] for c in checks]
    assert names == [CHECK_90, CHECK_ALL]
    assert "90% train accuracy" in CHECK_90 and "Spearman rho" in CHECK_90
    assert not any("100%" in n and "rho" in n for n in names)  # the old "epochs to fit grow with p" check
    # p = 1 never fit: counted at the budget + 1 = 91; the fastest p > 0 is p = 0.6 (55 epochs)
    assert checks[1]["value"] == pytest.approx(55 / 15) and checks[1]["holds"]
    slow_clean = [dict(r, epochs_to_fit=40) if r["noise"] == 0 else r for r in rows]
    jump = findings(pd.DataFrame(slow_clean), n_classes=10)[1]
    assert jump["value"] == pytest.approx(55 / 40) and not jump["holds"]


def test_late_examples_finding_matches_brute_force_on_the_stored_records(noise_study):
    cfg, run, outcome = noise_study
    arrays = run.load_unit("noise")
    data = load(cfg.data, seed=cfg.data_seed)
    unit = next(u for u in plan_units(cfg, data) if u.key == "noise")
    n = len(data.y_train)
    assert "records_loss" not in arrays  # only the packed correctness is stored
    correct = unpack_correct(arrays["records_correct"], n)
    fit = arrays["epochs_to_fit"]
    x = data.x_train.reshape(n, -1).astype(np.float64)
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d2, np.inf)
    nb = d2.argmin(1)
    late_hits = late_total = all_hits = all_total = 0
    for k, row in enumerate(unit.rows):
        if row["noise"] == 0:
            continue
        horizon = fit[k] if fit[k] > 0 else correct.shape[0]
        late = ~correct[max(1, int(LATE_AT * horizon)) - 1, k]
        conflict = unit.labels[k][nb] != unit.labels[k]
        late_hits, late_total = late_hits + conflict[late].sum(), late_total + late.sum()
        all_hits, all_total = all_hits + conflict.sum(), all_total + n
    checks = {c["check"]: c for c in outcome.findings}
    assert late_total > 0
    assert checks[CHECK_LATE]["value"] == pytest.approx(late_hits / late_total)
    assert f"{all_hits / all_total:.3f}" in checks[CHECK_LATE]["target"]
    assert (run.path / "late_examples.parquet").exists()
    html = (run.path / "report.html").read_text()
    assert "nearest training neighbour carries another label" in html and "90% training accuracy" in html


@pytest.mark.slow
def test_default_mlp_reproduces_the_shape_on_digits(tmp_path):
    """The issue's figures on digits with the default MLP (true and random labels, noise sweep)."""
    cfg = make_config(corruptions=["none", "random_labels"], parts=["curves", "noise"],
                      seeds=[0])
    run, outcome = randomization_study(cfg, tmp_path / "full")
    checks = {c["check"]: c for c in outcome.findings}
    assert checks == {c["check"]: c for c in findings(outcome.results, 10, outcome.late_examples)}
    for name in ("random labels: train accuracy (min over seeds)", "random labels: test accuracy minus chance",
                 "true labels: test accuracy", CHECK_90, CHECK_ALL, CHECK_LATE):
        assert checks[name]["holds"], (name, checks[name]["value"])
    # Time to the last example (100%) plateaus for p > 0 on digits (near-duplicate images with
    # conflicting labels set it), but every noisy level still takes longer than clean labels.
    noise = outcome.results[outcome.results.part == "noise"]
    clean = noise[noise.noise == 0].epochs_to_fit.max()
    assert (noise[noise.noise > 0].epochs_to_fit.replace(-1, 10**6) > clean).all()


def test_noise_only_verdict_states_the_90pct_growth_and_the_jump():
    from fitscope.report.randomization import verdict

    checks = [dict(check=CHECK_90, value=0.63, holds=True), dict(check=CHECK_ALL, value=3.4, holds=True)]
    text = verdict(dict(data=dict(n_classes=10), findings=checks))
    assert text == ("Time to 90% training accuracy grows with the label corruption p (Spearman rho 0.63 over models); "
                    "time to fit every example jumps at p > 0 (3.4x the time at p = 0 for the fastest p > 0).")
