"""The data audit end to end, on small settings of built-in data sets."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from fitscope.errors import ConfigError, FitscopeError, RunError
from fitscope.experiments.audit import (
    AuditConfig,
    audit,
    make_config,
    min_models,
    penultimate_features,
    plan_units,
    subset_masks,
)
from fitscope.runs.executors import env_threads, machine_cpus
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble

SMALL = dict(model="mlp:64x1", models=24, ratio=0.7, cscore_ratios=[0.3, 0.7], cscore_models=8, epochs=5,
             noise=0.1, chunk=12, oof_families=["logistic"])
EXAMPLE_COLUMNS = ["index", "label", "true_label", "corrupted", "mem", "mem_lo", "mem_hi", "mem_se", "infl_max",
                   "infl_max_test", "cscore",
                   "learning_speed",
                   "density", "hidden_density", "rel_distance", "oof_confidence", "oof_confidence_network",
                   "oof_confidence_logistic", "label_issue", "cleanlab_issue", "cleanlab_score"]


@pytest.fixture(scope="module")
def small_audit(tmp_path_factory):
    """One small audit of digits with 10% flipped labels, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("audit") / "run"
    run, outcome = audit(make_config(**SMALL), out)
    return run, outcome


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(ratio=0.0), "ratio"),
        (dict(ratio=1.0), "ratio"),
        (dict(models=3), "--models: expected at least 8 models for ratio 0.7"),
        (dict(ratio=0.9, models=12), "at least 20 models for ratio 0.9"),
        (dict(cscore_models=4), "--cscore-models: expected at least 20 models for C-score ratio 0.1"),
        (dict(cscore_ratios=[0.5, 1.5]), "--cscore-ratios: expected"),
        (dict(cscore_ratios=[]), "--cscore-ratios: expected"),
        (dict(noise=1.0), "noise"),
        (dict(noise_mode="swap"), "--noise-mode: expected"),
        (dict(threads=1), "threads"),  # placement is not config: the runner takes it
        (dict(chunk=0), "chunk"),
        (dict(unknown=1), "unknown"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(values, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make_config(**values)
    assert "\n" not in str(info.value)


def test_min_models_covers_both_sides():
    assert min_models(0.7) == 8 and min_models(0.5) == 4 and min_models(0.1) == 20 and min_models(0.9) == 20


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.7, 0.9])
def test_masks_have_the_subset_size_and_cover_every_example(ratio):
    n = 103
    k = min_models(ratio)  # the fewest allowed: the repair step has the most to do
    masks = subset_masks(n, ratio, k, seed=3)
    assert masks.shape == (k, n) and masks.dtype == bool
    assert (masks.sum(axis=1) == round(ratio * n)).all()
    n_in = masks.sum(axis=0)
    assert (n_in >= 1).all() and (n_in <= k - 1).all()
    assert np.array_equal(masks, subset_masks(n, ratio, k, seed=3))
    assert not np.array_equal(masks, subset_masks(n, ratio, k, seed=4))


def test_masks_refuse_too_few_models():
    with pytest.raises(ConfigError, match="at least 8"):
        subset_masks(50, 0.7, 5, seed=0)


def test_plan_chunks_models_and_reuses_the_memorization_ratio():
    cfg = make_config(**dict(SMALL, cscore_ratios=[0.3, 0.5, 0.7], chunk=10))
    units = plan_units(cfg, 200)
    assert [u.key for u in units] == ["mem-000", "mem-001", "mem-002", "cscore-0.3-000", "cscore-0.5-000"]
    assert [len(u.seeds) for u in units] == [10, 10, 4, 8, 8]
    assert [u.features for u in units] == [True, False, False, False, False]  # hidden features: one model
    mem = np.concatenate([u.masks for u in units if u.part == "mem"])
    assert mem.shape == (24, 200) and (mem.sum(axis=1) == 140).all()
    # a unit's subsets and seeds do not depend on the chunk size
    other = plan_units(make_config(**dict(SMALL, cscore_ratios=[0.3, 0.5, 0.7], chunk=24)), 200)
    assert np.array_equal(other[0].masks, mem) and other[0].seeds == sum((u.seeds for u in units[:3]), [])
    seeds = [s for u in units for s in u.seeds]
    assert len(set(seeds)) == len(seeds)


def test_audit_writes_tables_and_report(small_audit):
    run, outcome = small_audit
    examples = pd.read_parquet(run.path / "examples.parquet")
    assert list(examples.columns) == EXAMPLE_COLUMNS
    n = len(examples)
    assert n == 1437 and np.array_equal(examples["index"], np.arange(n))
    assert examples.corrupted.sum() == round(0.1 * n)
    assert (examples.label != examples.true_label).sum() == examples.corrupted.sum()
    for column in ("mem", "mem_lo", "mem_hi", "mem_se", "cscore", "learning_speed", "density", "hidden_density",
                   "oof_confidence", "label_issue"):
        assert examples[column].notna().all(), column
    assert (examples.mem_lo <= examples.mem).all() and (examples.mem <= examples.mem_hi).all()
    assert (examples.mem_se > 0).all()  # never 0, even where every model agreed
    # memorization and C-score against their definitions, by loops over the stored models of each unit
    stored = {key: run.load_unit(key) for key in run.unit_keys()}
    by_ratio = {0.3: [stored["cscore-0.3-000"]], 0.7: [stored["mem-000"], stored["mem-001"]]}
    for i in range(0, n, 7):  # every 7th example (205 of them) keeps the loops short
        per_ratio = {}
        for r, us in by_ratio.items():
            seen = [(bool(u["masks"][k, i]), bool(u["correct"][k, i])) for u in us for k in range(len(u["masks"]))]
            held_out = [c for m, c in seen if not m]
            per_ratio[r] = sum(held_out) / len(held_out)
            if r == 0.7:
                trained = [c for m, c in seen if m]
                assert examples.mem[i] == pytest.approx(sum(trained) / len(trained) - per_ratio[r], abs=1e-12), i
        assert examples.cscore[i] == pytest.approx((per_ratio[0.3] + per_ratio[0.7]) / 2, abs=1e-12), i
    influence = pd.read_parquet(run.path / "influence.parquet")
    # per-example aggregates: every kept pair is at most its train row's and its test column's largest influence
    tests = pd.read_parquet(run.path / "test_examples.parquet")
    assert list(tests.columns) == ["index", "label", "accuracy", "infl_max", "infl_max_train"] and len(tests) == 360
    assert (influence.infl.to_numpy() <= examples.infl_max.to_numpy()[influence.train_index] + 1e-6).all()
    assert (influence.infl.to_numpy() <= tests.infl_max.to_numpy()[influence.test_index] + 1e-6).all()
    assert np.allclose(examples.infl_max.max(), tests.infl_max.max())
    assert list(influence.columns) == ["train_index", "test_index", "infl", "infl_lo", "infl_hi", "infl_se", "mem",
                                       "fdr"]
    assert (influence.infl >= 0.15).all() and (influence.mem >= 0.25).all() and (influence.fdr <= 0.1).all()
    # the FDR figures travel with the table
    meta = influence.attrs["influence"]
    assert meta["fdr_target"] == 0.1 and meta["permutations"] == 50 and meta["n_models"] == 24
    assert meta["seed"] == derive_seed(0, "influence-null") and meta["n_kept"] == len(influence)
    assert meta["n_candidates"] == outcome.summary["fixed-threshold pairs"] >= len(influence)
    assert outcome.summary["high-influence pairs"] == len(influence)
    html = (run.path / "report.html").read_text()
    # galleries (3), pairs, histograms, ROC
    assert html.count("data:image/png;base64,") >= 6
    for text in ("Most memorized", "Most atypical", "Most likely mislabeled", "High-influence pairs",
                 "Spearman", "Label-issue detection", "cleanlab", "restricted to the models whose subset",
                 "What the scores mean", "95% interval", "would pass by chance", "FDR"):
        assert text in html, text
    assert run.meta["status"] == "done" and run.meta["summary"]["models"] == 24 + 8
    assert run.seeds["noise_seed"] is not None
    assert sorted(run.unit_keys()) == ["cscore-0.3-000", "mem-000", "mem-001", "oof-sklearn"]
    for part in ("prepare", "train", "estimate", "report"):
        assert part in run.timings
    # a quality floor: even 24 tiny models for 5 epochs find most flipped labels
    assert outcome.summary["label-issue AUROC"] > 0.9
    assert set(outcome.detection.score) == {"label_issue (ours)", "out-of-fold self-confidence (family mixture)",
                                            "cleanlab label quality (network)",
                                            "cleanlab find_label_issues ranked (network)",
                                            "cleanlab label quality (logistic)",
                                            "cleanlab find_label_issues ranked (logistic)"}
    best = outcome.detection[outcome.detection.score.str.startswith("cleanlab")].auroc.max()
    assert outcome.summary["best cleanlab AUROC"] == best
    assert outcome.cleanlab["flagged"] == int(examples.cleanlab_issue.sum()) and outcome.cleanlab["k"] == 144
    assert "find_label_issues (mask)" in html


def test_same_seed_same_examples(small_audit, tmp_path):
    run, _ = small_audit
    again, _ = audit(make_config(**SMALL), tmp_path / "again")
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "examples.parquet"),
                                  pd.read_parquet(again.path / "examples.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "influence.parquet"),
                                  pd.read_parquet(again.path / "influence.parquet"))


@pytest.mark.slow
def test_resume_trains_only_missing_units(small_audit, tmp_path):
    run, _ = small_audit
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    (copy / "units" / "mem-001.npz").unlink()  # as if killed while this unit trained
    (copy / "report.html").unlink()
    resumed, outcome = audit(make_config(**SMALL), copy, resume=True)
    assert outcome.trained_units == ["mem-001"]
    assert outcome.reused_units == ["mem-000", "cscore-0.3-000", "oof-sklearn"]
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "examples.parquet"),
                                  pd.read_parquet(copy / "examples.parquet"))
    assert (copy / "report.html").exists() and resumed.meta["status"] == "done"
    resumed_note = "Resumed run: 3 finished units (model ensembles, the scikit-learn fits) were reused"
    assert resumed_note in (copy / "report.html").read_text()
    _, nothing = audit(make_config(**SMALL), copy, resume=True)
    assert nothing.trained_units == [] and len(nothing.reused_units) == 4


def test_resume_with_another_config_is_refused_and_keeps_the_run(small_audit, tmp_path):
    run, _ = small_audit
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    before = sorted(p.name for p in copy.rglob("*"))
    with pytest.raises(RunError, match="different config"):
        audit(make_config(**dict(SMALL, epochs=6)), copy, resume=True)
    assert sorted(p.name for p in copy.rglob("*")) == before


def test_bad_input_leaves_no_run_directory(tmp_path):
    for values in (dict(SMALL, data="no-such-set"), dict(SMALL, model="transformer:9")):
        with pytest.raises(FitscopeError, match="no-such-set|transformer"):
            audit(make_config(**values), tmp_path / "bad")
        assert not (tmp_path / "bad").exists()


def test_vector_data_without_noise(tmp_path):
    """Tabular data: no ground truth columns, no detection section, feature bar plots instead of images."""
    cfg = make_config(data="iris", model="mlp:16x1", models=8, ratio=0.5, cscore_ratios=[0.5], epochs=5,
                      batch_size=32)
    run, outcome = audit(cfg, tmp_path / "iris")
    examples = pd.read_parquet(run.path / "examples.parquet")
    assert "true_label" not in examples.columns and "corrupted" not in examples.columns
    assert examples.cleanlab_issue.dtype == bool and outcome.cleanlab is None
    assert outcome.detection is None and "label-issue AUROC" not in outcome.summary
    html = (run.path / "report.html").read_text()
    assert "Most memorized" in html and "injected noise" in html
    assert html.count("data:image/png;base64,") >= 4


def test_penultimate_features_are_the_last_hidden_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=0.01, schedule="constant", early_stop="none")
    result = train_ensemble("mlp:8x1", x, y, config=cfg, seeds=[3, 4], keep_model=True)
    feats = penultimate_features(result.model, x, model_index=1)
    layer = result.model.hidden[0]  # EnsembleLinear: weight (K, in, out), bias (K, out)
    expected = np.maximum(x @ layer.weight[1].detach().numpy() + layer.bias[1].detach().numpy(), 0.0)
    assert feats.shape == (40, 8) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(feats, penultimate_features(result.model, x, model_index=0))
    # a 1-D CNN: its pooled features, one per channel of the last block
    signals = rng.normal(size=(30, 1, 16)).astype(np.float32)
    cnn = train_ensemble("cnn1d:4x2", signals, y[:30], config=cfg, seeds=[0], keep_model=True)
    assert penultimate_features(cnn.model, signals).shape == (30, 4)


def test_audit_keeps_hidden_features_of_the_first_model(small_audit):
    run, outcome = small_audit
    unit = run.load_unit("mem-000")
    assert unit["hidden_features"].shape == (1437, 64) and unit["hidden_features"].dtype == np.float32
    assert "hidden_features" not in run.load_unit("mem-001")
    assert "hidden-space kernel density" in set(outcome.spearman.proxy)
    assert np.isfinite(outcome.spearman.set_index("proxy").loc["hidden-space kernel density", "spearman_rho"])
    assert outcome.label_signals["hidden_density"] is not None
    # threads resolved (FITSCOPE_NUM_THREADS, else all cores locally) and recorded per attempt and per unit, not in
    # the config (hash)
    assert "threads" not in run.config
    local_default = env_threads() or machine_cpus()  # FITSCOPE_NUM_THREADS if set, else all cores
    assert run.meta["attempts"][-1]["executor"]["threads_per_task"] == local_default
    assert {u["threads"] for u in run.meta["units"].values()} == {local_default}


def test_default_threads_all_cores_locally_one_per_ray_task(monkeypatch):
    from fitscope.experiments.study import default_threads

    monkeypatch.delenv("FITSCOPE_NUM_THREADS", raising=False)
    assert default_threads("local") == machine_cpus() and default_threads("ray") == 1
    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "2")
    assert default_threads("local") == 2 and default_threads("ray") == 2


def test_quick_setting_and_overrides():
    quick = AuditConfig.quick(noise=0.1)
    assert (quick.models, quick.cscore_ratios, quick.cscore_models, quick.epochs) == (48, [0.3, 0.5, 0.7], 16, 12)
    assert quick.noise == 0.1
    assert AuditConfig.quick(epochs=3, models=None).epochs == 3
    with pytest.raises(ConfigError, match="--models: expected at least 8"):
        AuditConfig.quick(models=4)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 16)])
def test_report_panels_keep_the_image_aspect(monkeypatch, shape):
    from types import SimpleNamespace

    import fitscope.report.audit as figures

    rng = np.random.default_rng(0)
    n = 20
    data = SimpleNamespace(kind="image", input_shape=shape, x_train=rng.random((n, *shape)),
                           x_test=rng.random((n, *shape)), y_test=np.zeros(n, np.int64), classes=list("ab"))
    examples = pd.DataFrame({"index": np.arange(n), "label": np.zeros(n, np.int64),
                             "true_label": np.ones(n, np.int64), "corrupted": np.ones(n, bool),
                             "mem": rng.random(n)})
    shown = []

    def measure(fig):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if ax.get_images():
                box = ax.get_images()[0].get_window_extent(renderer)
                shown.append(box.height / box.width)
        return "data:image/png;base64,"

    monkeypatch.setattr(figures, "figure_to_data_uri", measure)
    figures.gallery_figure(data, examples, range(4), "mem", columns=4)
    pairs = pd.DataFrame({"train_index": range(2), "test_index": range(2), "infl": np.full(2, 0.5)})
    figures.pairs_figure(data, pairs, examples["label"].to_numpy())
    assert len(shown) == 8
    np.testing.assert_allclose(shown, shape[1] / shape[2], rtol=0.03)  # height / width of the input


def test_families_mixed_into_the_label_score_equal_an_independent_recomputation(tmp_path):
    """iris, every scikit-learn family (auto): the stored columns and the score against the public functions."""
    from fitscope.data import load
    from fitscope.estimators import combine_oof_probs, cscore_holdout, label_issue_scores, learning_speed
    from fitscope.estimators import out_of_fold_probs
    from fitscope.train import sklearn_oof_probs

    cfg = make_config(data="iris", model="mlp:16x1", models=8, ratio=0.5, cscore_ratios=[0.5], epochs=3,
                      noise=0.2, chunk=8, batch_size=32)
    run, outcome = audit(cfg, tmp_path / "run")
    examples = pd.read_parquet(run.path / "examples.parquet")
    labels = examples.label.to_numpy()
    n = len(labels)
    # the families: scikit-learn's own out-of-fold probabilities, fitted here again from the data and the seed
    x = load("iris", seed=0).x_train
    reference = sklearn_oof_probs(x, labels, folds=5, n_classes=3, seed=derive_seed(0, "sklearn-oof"))
    assert run.seeds["oof_seed"] == derive_seed(0, "sklearn-oof") and reference.families == ("logistic", "boosting",
                                                                                              "mlp")
    unit = run.load_unit("mem-000")
    network = out_of_fold_probs(unit["train_logits"], unit["masks"])
    families = {"network": network, **reference.probs}
    for family, probs in families.items():
        assert np.allclose(examples[f"oof_confidence_{family}"], probs[np.arange(n), labels]), family
    mixture = combine_oof_probs(families, labels)
    assert outcome.family_weights == pytest.approx(mixture.weight_of())
    assert outcome.summary["out-of-fold families"] == "network, logistic, boosting, mlp"
    speed = learning_speed(correct_counts=unit["correct_epochs"], epochs=int(unit["records_epochs"]),
                           in_subset=unit["masks"]).scores
    cscore = cscore_holdout({0.5: (unit["correct"], unit["masks"])}).cscore
    margin = np.where(unit["masks"], unit["margin_mean"], 0).sum(0) / np.maximum(unit["masks"].sum(0), 1)
    expected = label_issue_scores(labels, families, cscore=cscore, learning_speed=speed, margin=margin).scores
    assert np.allclose(examples.label_issue, expected)
    html = (run.path / "report.html").read_text()
    assert "gradient boosting" in html and "5-fold cross-validated" in html and "(weight 4)" in html


@pytest.mark.parametrize("values, expected", [
    (dict(fast=True), dict(models=16, chunk=16, cscore_ratios=[0.7])),
    (dict(fast=True, ratio=0.5, models=24), dict(models=24, chunk=16, cscore_ratios=[0.5])),
])
def test_fast_fills_in_its_setting_unless_given(values, expected):
    cfg = make_config(**values)
    assert {k: getattr(cfg, k) for k in expected} == expected and cfg.fast


def test_fast_beats_quick_and_given_values_beat_both():
    cfg = AuditConfig.quick(fast=True)
    assert (cfg.models, cfg.chunk, cfg.cscore_ratios, cfg.epochs) == (16, 16, [0.7], 12)
    assert AuditConfig.quick(fast=True, models=32).models == 32


@pytest.mark.parametrize("values, needle", [
    (dict(fast=True, cscore_ratios=[0.3, 0.7]), "--fast: expected no C-score ratio other than --ratio 0.7"),
    (dict(oof_families=["logistic", "svm"]), "--oof-families: expected 'auto' or distinct families"),
    (dict(oof_families=["mlp", "mlp"]), "--oof-families: expected 'auto' or distinct families"),
    (dict(oof_folds=1), "--oof-folds: expected greater than or equal to 2"),
])
def test_bad_family_or_fast_settings_are_one_line(values, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make_config(**values)
    assert "\n" not in str(info.value)


def test_units_of_either_version_gather_to_the_same_learning_speed():
    """A unit written by earlier versions (every epoch's correctness, bit-packed) and one of this version (the
    counts accumulated while training) give the same gathered counts and the same learning speed, bit for bit."""
    from fitscope.data import load
    from fitscope.estimators import learning_speed
    from fitscope.experiments.audit import _gather, _train_config, train_unit_task
    from fitscope.train import unpack_correct

    cfg = make_config(data="iris", model="mlp:8x1", models=8, ratio=0.5, cscore_ratios=[0.3, 0.5], cscore_models=20,
                      epochs=4, chunk=4, batch_size=32, oof_families=[])
    data = load("iris", seed=0)
    n, labels = len(data.y_train), data.y_train.astype(np.int64)
    chunks = plan_units(cfg, n)
    new = {c.key: train_unit_task((c, cfg, data.n_classes), x_train=data.x_train, labels=labels,
                                  x_test=data.x_test, y_test=data.y_test) for c in chunks}
    old = {}
    for c in chunks:
        old[c.key] = {k: v for k, v in new[c.key].items() if k not in ("correct_epochs", "records_epochs")}
        if c.part == "mem":  # what earlier versions stored: the full records of the same training
            full = TrainConfig(**{**_train_config(cfg, True).model_dump(), "record": "full"})
            result = train_ensemble(cfg.model, data.x_train, labels, config=full, seeds=c.seeds, masks=c.masks,
                                    n_classes=data.n_classes)
            old[c.key]["records_correct"] = result.records.correct
            assert new[c.key]["correct_epochs"].dtype == np.uint8 and "records_correct" not in new[c.key]
    a, b = _gather(chunks, new, cfg, n), _gather(chunks, old, cfg, n)
    assert a.epochs == b.epochs == 4 and a.correct_epochs.shape == (8, n)
    np.testing.assert_array_equal(a.correct_epochs, b.correct_epochs)
    for name in ("masks", "correct", "test_correct", "train_logits", "margin_mean"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert sorted(a.cscore_pairs) == [0.3, 0.5] and a.cscore_pairs[0.3][0].shape == (20, n)
    # the learning speed as earlier versions computed it: from the (E, K, n) records
    records = unpack_correct(np.concatenate([old[c.key]["records_correct"] for c in chunks if c.part == "mem"],
                                            axis=1), n)
    before = learning_speed(records, in_subset=a.masks).scores
    for gathered in (a, b):
        now = learning_speed(correct_counts=gathered.correct_epochs, epochs=gathered.epochs, in_subset=gathered.masks)
        np.testing.assert_array_equal(now.scores, before)
    # units that counted over different epochs are refused
    old["mem-001"]["records_correct"] = old["mem-001"]["records_correct"][:3]
    with pytest.raises(FitscopeError, match=r"^units: expected memorization units whose correctness counts the same "
                                            r"epochs, got mem-000 over 4, mem-001 over 3$"):
        _gather(chunks, old, cfg, n)
