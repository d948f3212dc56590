"""The leakage study end to end on small settings, from its own models and from an audit's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitscope.errors import ConfigError, DataError, RunError
from fitscope.experiments import audit as audit_study
from fitscope.experiments.leak import (
    ATTACKS,
    STUDY,
    LeakArrays,
    attack_scores,
    estimate,
    leak,
    make_config,
    read_audit,
)
from fitscope.experiments.study import run_study
from fitscope.runs import Run
from reference_metrics import brute_force_auc

SMALL = dict(model="mlp:32x1", models=8, epochs=3, chunk=4)


@pytest.fixture(scope="module")
def small_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    cfg = audit_study.make_config(model="mlp:32x1", models=8, ratio=0.7, cscore_ratios=[0.7], epochs=2, chunk=8,
                                  noise=0.1, oof_families=[])
    run, outcome = audit_study.audit(cfg, out)
    return run, outcome


@pytest.mark.parametrize("values, needle", [
    (dict(models=4), "--models: LiRA needs at least 8 models at ratio 0.5"),
    (dict(ratio=0.9, models=12), "at least 20 models at ratio 0.9"),
    (dict(ratio=1.0), "ratio"),
    (dict(from_audit="runs/a", models=16), "--models: not used with --from-audit"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(unknown=1), "unknown"),
])
def test_bad_config_is_one_line(values, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        make_config(**values)
    assert "\n" not in str(info.value)


def test_estimate_on_synthetic_logits_finds_the_planted_leakers():
    rng = np.random.default_rng(0)
    k, n, c = 16, 200, 3
    masks = rng.random((k, n)) < 0.5
    labels = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (k, n, c))
    leakers = np.arange(10)
    # the first 10 examples: confidently right when trained on, not otherwise
    logits[:, leakers, :] = 0.0
    rows = np.nonzero(masks[:, leakers])
    logits[rows[0], leakers[rows[1]], labels[leakers[rows[1]]]] = 8.0
    arrays = LeakArrays(masks=masks, train_logits=logits, labels=labels, subset_acc=np.ones(k),
                        test_acc=np.ones(k))
    out = estimate(arrays)
    assert list(out.metrics["attack"]) == list(ATTACKS)
    top = out.examples.sort_values("leak_rate", ascending=False)["index"].to_numpy()[:10]
    assert set(top) == set(leakers)
    assert (out.examples.loc[leakers, "leak_rate"] > 0.9).all()


@pytest.mark.slow
def test_leak_trains_resumes_and_writes_the_report(tmp_path):
    out = tmp_path / "leak"
    run, outcome = leak(make_config(**SMALL), out)
    table = pd.read_parquet(out / "leak.parquet")
    assert len(table) == 1437 and {"index", "label", "leak_rate", "lira_score_in_mean", "mem"} <= set(table.columns)
    assert (table["n_in"] + table["n_out"] == 8).all()
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics["attack"]) == list(ATTACKS)
    # every AUC against its definition, on the scores of the stored models (units hold masks and logits)
    units = [run.load_unit(key) for key in sorted(run.unit_keys())]
    masks = np.concatenate([u["masks"] for u in units]).astype(bool)
    logits = np.concatenate([u["train_logits"] for u in units]).astype(np.float64)
    labels = table["label"].to_numpy()
    scores = attack_scores(masks, logits, labels)
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    scores["loss threshold"] = log_p[:, np.arange(len(labels)), labels]  # minus the cross-entropy, by hand
    auc = dict(zip(metrics["attack"], metrics["auc"]))
    for name in ATTACKS:
        assert auc[name] == pytest.approx(brute_force_auc(scores[name], masks), abs=1e-9), name
    html = (out / "report.html").read_text()
    assert "log-log" in html and "Examples that leak most" in html and "data:image/png" in html
    assert sorted(p.name for p in (out / "units").iterdir()) == ["leak-000.npz", "leak-001.npz"]
    (out / "units" / "leak-001.npz").unlink()
    run2, outcome2 = leak(make_config(**SMALL), out, resume=True)
    assert outcome2.reused_units == ["leak-000"] and outcome2.trained_units == ["leak-001"]
    assert "Resumed run" in (out / "report.html").read_text() and "Resumed run" not in html
    # same seeds: the retrained unit gives the same attack numbers
    pd.testing.assert_frame_equal(outcome.metrics, outcome2.metrics)


@pytest.mark.slow
def test_from_audit_reuses_the_audit_models(small_audit, tmp_path):
    audit_run, audit_outcome = small_audit
    arrays, meta = read_audit(audit_run.path)
    assert arrays.masks.shape == (8, 1437) and arrays.train_logits.shape == (8, 1437, 10)
    run, outcome = leak(make_config(from_audit=str(audit_run.path)), tmp_path / "leak")
    assert not (tmp_path / "leak" / "units").exists() or not list((tmp_path / "leak" / "units").iterdir())
    table = pd.read_parquet(tmp_path / "leak" / "leak.parquet")
    np.testing.assert_array_equal(table["mem"].to_numpy(), audit_outcome.examples["mem"].to_numpy())
    np.testing.assert_array_equal(table["label"].to_numpy(), audit_outcome.examples["label"].to_numpy())
    assert "corrupted" in table.columns
    assert run.seeds["audit_id"] == audit_run.id and run.config["from_audit"] == str(audit_run.path)
    assert run.meta["summary"]["source"] == f"audit {audit_run.id}"
    assert outcome.trained_units == [] and outcome.reused_units == [] and run.meta["status"] == "done"
    assert "Leakage and memorization" in (tmp_path / "leak" / "report.html").read_text()
    # resumed with its config from run.json (where the training fields sit at their defaults): the same tables
    again = run_study(STUDY, {}, tmp_path / "leak", resume=True)
    assert again.config.from_audit == str(audit_run.path) and again.trained == []
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "leak" / "leak.parquet"), table)


def test_from_audit_without_the_arrays_is_one_line(tmp_path):
    with pytest.raises(RunError, match="--from-audit: run directory .* does not exist"):
        read_audit(tmp_path / "nope")
    other = Run.create(tmp_path / "rand", kind="randomization", config={}, seeds={})
    other.finish()
    with pytest.raises(DataError, match="is a 'randomization' run, expected an audit"):
        read_audit(other.path)
    fake = Run.create(tmp_path / "audit", kind="audit", config={}, seeds={})
    with pytest.raises(DataError, match="no stored memorization models"):
        read_audit(fake.path)
    fake.save_unit("mem-000", {"masks": np.ones((8, 5), bool)})
    with pytest.raises(DataError, match="unit mem-000 .* lacks train_logits") as info:
        read_audit(fake.path)
    assert "\n" not in str(info.value)
    out = tmp_path / "leak"
    with pytest.raises(DataError, match="unit mem-000 .* lacks train_logits"):
        leak(make_config(from_audit=str(fake.path)), out)
    assert not out.exists()
