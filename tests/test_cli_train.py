"""``fitscope train`` on the study runner: a report like every study, rounded figures, progress per epoch, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import fitscope.cli.train  # noqa: F401  (registers the command)
from cli_helpers import run_main
from fitscope.errors import ConfigError
from fitscope.experiments import get_study
from fitscope.experiments.private_training import make_config, train_private
from fitscope.experiments.study import Progress, run_study


class Recorder(Progress):
    """Every progress call of the runner."""

    def __init__(self) -> None:
        self.total = None
        self.done: list[int] = []

    def start(self, *, total, units, reused, where, **more):
        self.total = total

    def advance(self, done):
        self.done.append(done)


def test_help_has_an_example(capsys):
    code, captured = run_main(["train", "--help"], capsys)
    assert code == 0 and "Examples: fitscope train --label-dp 2" in captured.out


def test_a_bad_epsilon_names_its_flag():
    with pytest.raises(ConfigError, match="--label-dp: expected an epsilon > 0"):
        make_config(mechanism="label-dp", eps=0.0)
    with pytest.raises(ConfigError, match="--eps: expected an epsilon > 0"):
        make_config(mechanism="dp-sgd", eps=-1.0)


def test_writes_a_report_and_prints_rounded_figures_not_json(tmp_path, capsys):
    out = tmp_path / "plain"
    code, captured = run_main(["train", "--data", "iris", "--model", "mlp:16x1", "--epochs", "4", "--threads", "1",
                               "--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "{" not in captured.err and "}" not in captured.err
    line = next(x for x in captured.err.splitlines() if "test accuracy:" in x)
    value = line.split(":")[1].strip()
    assert len(value.replace("0.", "", 1)) <= 4, line  # at most 4 significant digits
    assert "privacy claim: none" in captured.err
    assert f"report: {out / 'report.html'}" in captured.out
    html = (out / "report.html").read_text()
    for part in ("Privacy claim", "Test accuracy", "Training curve", "data:image/png;base64,", "Config and seeds"):
        assert part in html, part
    curves = pd.read_parquet(out / "curves.parquet")
    assert list(curves.epoch) == [1, 2, 3, 4]
    from fitscope.data import load

    n_test = len(load("iris", seed=0).y_test)  # an accuracy on n_test examples is a count over n_test
    counts = curves.test_acc.to_numpy() * n_test
    assert abs(counts - counts.round()).max() < 1e-9 and (counts >= 0).all() and (counts <= n_test).all()
    models = pd.read_parquet(out / "models.parquet")
    result = json.loads((out / "result.json").read_text())
    assert result["test_acc"] == pytest.approx(models.test_acc.iloc[0]) == pytest.approx(curves.test_acc.iloc[-1])
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and meta["kind"] == "train"

    # --resume alone takes the run's config and trains nothing; a flag that differs is named
    code, captured = run_main(["train", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 1 finished units, training 0" in captured.err
    code, captured = run_main(["train", "--out", str(out), "--resume", "--epochs", "5"], capsys)
    assert code == 2 and "--epochs 5 differs from the run's 4" in captured.err


@pytest.mark.parametrize("values, epochs", [
    (dict(mechanism="none", epochs=4), 4),
    (dict(mechanism="label-dp", eps=2.0, stages=2, epochs=3), 6),  # LP-MST: epochs per stage
    (dict(mechanism="instahide", k=2, epochs=3), 3),
])
def test_progress_moves_every_epoch(values, epochs, tmp_path):
    bar = Recorder()
    run_study(get_study("train"), dict(data="iris", model="mlp:8x1", **values), tmp_path / "run", threads=1,
              progress=bar)
    assert bar.total == epochs
    assert set(range(1, epochs + 1)) <= set(bar.done), bar.done  # every epoch, not one jump at the end


@pytest.mark.slow
def test_dp_sgd_report_states_the_claim_and_the_accountant(tmp_path, capsys):
    out = tmp_path / "dp"
    code, captured = run_main(["train", "--data", "iris", "--model", "mlp:8x1", "--dp-sgd", "--eps", "1",
                               "--epochs", "2", "--canaries", "10", "--threads", "1", "--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "privacy claim: (1, 1e-05)-DP (DP-SGD)" in captured.err and "accountant: prv" in captured.err
    result = json.loads((out / "result.json").read_text())
    assert result["privacy"]["accountant"] == "prv" and 0 < result["privacy"]["epsilon"] <= 1.0 + 1e-6
    # the recorded epsilon is what Opacus' PRV accountant gives for the recorded noise, sampling rate and steps
    from opacus.accountants import PRVAccountant

    p = result["privacy"]
    accountant = PRVAccountant()
    accountant.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"])]
    assert accountant.get_epsilon(delta=p["delta"]) == pytest.approx(p["epsilon"], rel=1e-3)
    assert result["canary_audit"]["canaries"] == 10
    html = (out / "report.html").read_text()
    assert "(1, 1e-05)-DP (DP-SGD)" in html and "noise multiplier" in html and "Canary audit" in html
    # the training accuracy reads the private labels: not stored, and the report says so
    assert pd.read_parquet(out / "curves.parquet").train_acc.isna().all()
    assert result["private_stats_shown"] is False
    assert "Statistics of the private labels are not shown" in html


def test_several_models_give_a_mean_and_one_audit_each(tmp_path):
    cfg = make_config(data="iris", model="mlp:8x1", epochs=3, models=3, canaries=10)
    run, result = train_private(cfg, tmp_path / "three", threads=1)
    models = pd.read_parquet(run.path / "models.parquet")
    assert list(models.model) == [0, 1, 2] and models.seed.nunique() == 3
    assert result["test_acc"] == pytest.approx(models.test_acc.mean())
    assert len(result["canary_audit_per_model"]) == 3
    assert result["canary_audit"] == result["canary_audit_per_model"][0]  # the headline is the first model's
    assert sorted(run.meta["units"]) == ["model-000", "model-001", "model-002"]


def test_label_dp_keeps_statistics_of_the_true_labels_out_unless_asked(tmp_path, capsys):
    import numpy as np

    from fitscope.data import load
    from fitscope.experiments.private_training import model_seed
    from fitscope.privacy.label_dp import lp_mst
    from fitscope.train import TrainConfig

    common = ["train", "--data", "iris", "--model", "mlp:8x1", "--label-dp", "1", "--stages", "2", "--epochs", "2",
              "--threads", "1"]
    hidden, shown = tmp_path / "hidden", tmp_path / "shown"
    code, captured = run_main([*common, "--out", str(hidden)], capsys)
    assert code in (0, None), captured.err
    result = json.loads((hidden / "result.json").read_text())
    assert "keep_rate" not in result and result["private_stats_shown"] is False
    assert all("keep_rate" not in np.load(f) for f in (hidden / "units").glob("*.npz"))
    html = (hidden / "report.html").read_text()
    assert "Statistics of the private labels are not shown" in html and "labels kept by randomized" not in html
    assert "statistics of the private labels: not shown" in captured.err

    code, captured = run_main([*common, "--reveal-private-stats", "--out", str(shown)], capsys)
    assert code in (0, None), captured.err
    result = json.loads((shown / "result.json").read_text())
    assert result["private_stats_shown"] is True and len(result["keep_rate"]) == 2
    html = (shown / "report.html").read_text()
    assert "labels kept by randomized response" in html and "Statistics of the private labels are shown" in html
    # the stored keep rate is the first model's, recomputed here from lp_mst's noisy labels and the true labels
    cfg = make_config(data="iris", model="mlp:8x1", mechanism="label-dp", eps=1.0, stages=2, epochs=2)
    data = load("iris", seed=cfg.data_seed)
    adam = TrainConfig(epochs=2, batch_size=cfg.batch_size, optimizer="adam", lr=1e-3)
    r = lp_mst(data.x_train, data.y_train, eps=1.0, stages=2, spec="mlp:8x1", train_config=adam,
               seed=model_seed(cfg, 0), x_test=data.x_test, y_test=data.y_test, n_classes=data.n_classes)
    expected = [float((r.noisy_labels[r.stage == t] == data.y_train[r.stage == t]).mean()) for t in range(2)]
    assert result["keep_rate"] == pytest.approx(expected)
    # the flag changes only what is shown: the same test accuracy as the run without it
    assert result["test_acc"] == json.loads((hidden / "result.json").read_text())["test_acc"]
