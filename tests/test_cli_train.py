"""``fitscope train`` on the study runner: a report like every study, rounded figures, progress per epoch, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import fitscope.cli.train  # noqa: F401  (registers the command)
from cli_helpers import run_main
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
    with pytest.raises(Exception, match="--label-dp: expected an epsilon > 0"):
        make_config(mechanism="label-dp", eps=0.0)
    with pytest.raises(Exception, match="--eps: expected an epsilon > 0"):
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
    assert list(curves.epoch) == [1, 2, 3, 4] and curves.test_acc.between(0, 1).all()
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
    assert result["canary_audit"]["canaries"] == 10
    html = (out / "report.html").read_text()
    assert "(1, 1e-05)-DP (DP-SGD)" in html and "noise multiplier" in html and "Canary audit" in html


def test_several_models_give_a_mean_and_one_audit_each(tmp_path):
    cfg = make_config(data="iris", model="mlp:8x1", epochs=3, models=3, canaries=10)
    run, result = train_private(cfg, tmp_path / "three", threads=1)
    models = pd.read_parquet(run.path / "models.parquet")
    assert list(models.model) == [0, 1, 2] and models.seed.nunique() == 3
    assert result["test_acc"] == pytest.approx(models.test_acc.mean())
    assert len(result["canary_audit_per_model"]) == 3
    assert result["canary_audit"] == result["canary_audit_per_model"][0]  # the headline is the first model's
    assert sorted(run.meta["units"]) == ["model-000", "model-001", "model-002"]
