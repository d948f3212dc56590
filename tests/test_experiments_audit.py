"""The data audit end to end, on small settings of built-in data sets."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from fitscope.errors import ConfigError, RunError
from fitscope.experiments.audit import audit, make_config, min_models, plan_units, subset_masks

SMALL = dict(model="mlp:64x1", models=24, ratio=0.7, cscore_ratios=[0.3, 0.7], cscore_models=8, epochs=5,
             noise=0.1, chunk=12)
EXAMPLE_COLUMNS = ["index", "label", "true_label", "corrupted", "mem", "mem_se", "cscore", "learning_speed",
                   "density", "rel_distance", "oof_confidence", "label_issue", "cleanlab_issue", "cleanlab_score"]


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
        (dict(cscore_ratios=[0.5, 1.5]), "cscore_ratios"),
        (dict(cscore_ratios=[]), "cscore_ratios"),
        (dict(noise=1.0), "noise"),
        (dict(noise_mode="swap"), "noise_mode"),
        (dict(address="10.0.0.1:6379"), "--address: only used with --executor ray"),
        (dict(threads=0), "threads"),
        (dict(executor="dask"), "executor"),
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
    for column in ("mem", "mem_se", "cscore", "learning_speed", "density", "oof_confidence", "label_issue"):
        assert examples[column].notna().all(), column
    assert examples.mem.between(-1, 1).all() and examples.cscore.between(0, 1).all()
    influence = pd.read_parquet(run.path / "influence.parquet")
    assert list(influence.columns) == ["train_index", "test_index", "infl", "infl_se", "mem"]
    assert (influence.infl >= 0.15).all() and (influence.mem >= 0.25).all()
    html = (run.path / "report.html").read_text()
    # galleries (3), pairs, histograms, ROC
    assert html.count("data:image/png;base64,") >= 6
    for text in ("Most memorized", "Most atypical", "Most likely mislabeled", "High-influence pairs",
                 "Spearman", "Label-issue detection", "cleanlab", "restricted to the models whose subset"):
        assert text in html, text
    assert run.meta["status"] == "done" and run.meta["summary"]["models"] == 24 + 8
    assert run.seeds["noise_seed"] is not None
    assert sorted(run.unit_keys()) == ["cscore-0.3-000", "mem-000", "mem-001"]
    for part in ("train memorization models", "train C-score models", "estimators", "report"):
        assert part in run.timings
    # a quality floor: even 24 tiny models for 5 epochs find most flipped labels
    assert outcome.summary["label-issue AUROC"] > 0.9
    assert set(outcome.detection.score) == {"label_issue (ours)", "out-of-fold self-confidence",
                                            "cleanlab label quality (1 - score)",
                                            "cleanlab find_label_issues (ranked)"}
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
    assert outcome.reused_units == ["mem-000", "cscore-0.3-000"]
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "examples.parquet"),
                                  pd.read_parquet(copy / "examples.parquet"))
    assert (copy / "report.html").exists() and resumed.meta["status"] == "done"
    _, nothing = audit(make_config(**SMALL), copy, resume=True)
    assert nothing.trained_units == [] and len(nothing.reused_units) == 3


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
        with pytest.raises(Exception, match="no-such-set|transformer"):
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
