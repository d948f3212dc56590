"""``fitscope federated``: bad input is one line and exit 2; a tiny study runs on Flower, writes its tables and resumes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import fitscope.cli.federated  # noqa: F401 - registers the command (until fitscope.cli._register imports it)
from cli_helpers import run_main


@pytest.mark.parametrize("flags,message", [
    (["--fraction", "0"], "fraction"),
    (["--fraction", "1.5"], "fraction"),
    (["--clients", "5000"], "--clients: expected at most the 1437 training examples of digits (every client needs one), got 5000"),
    (["--clients", "0"], "clients"),
    (["--local-epochs", "0"], "local_epochs"),
    (["--algorithms", "fedavg,fedprox"], "algorithms"),
    (["--partitions", "dirichlet"], "partitions"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer or inf, got '0'"),
    (["--batch-size", "ten"], "--batch-size"),
    (["--target", "1.2"], "target"),
    (["--lr", "-0.1"], "lr"),
    (["--clients", "800", "--shards-per-client", "2", "--partitions", "noniid"], "--shards-per-client: 800 clients x 2 shards"),
    (["--model", "cnn:8x2", "--data", "iris"], "cnn"),
])
def test_bad_input_is_one_line_and_exit_2_with_no_run_dir(flags, message, capsys, tmp_path):
    out = tmp_path / "fed"
    code, captured = run_main(["federated", "--out", str(out), *flags], capsys)
    assert code == 2
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_help_has_an_example(capsys):
    code, captured = run_main(["federated", "--help"], capsys)
    assert code == 0 and "Example: fitscope federated" in captured.out


@pytest.mark.slow
def test_tiny_study_runs_on_flower_and_resumes_without_rerunning(capsys, tmp_path):
    out = tmp_path / "fed"
    argv = ["federated", "--data", "digits", "--algorithms", "fedsgd", "--partitions", "iid", "--clients", "4",
            "--fraction", "0.5", "--rounds", "2", "--target", "0.99", "--fedsgd-lr", "0.5", "--model", "mlp:32x1",
            "--num-cpus", "2", "--out", str(out)]
    code, captured = run_main(argv, capsys)
    assert code == 0, captured.err
    assert "report:" in captured.out and "fedsgd-iid" in captured.err
    results = pd.read_parquet(out / "results.parquet")
    assert list(results["round"]) == [0, 1, 2] and set(results["setting"]) == {"fedsgd-iid"}
    assert results["accuracy"].iloc[-1] > results["accuracy"].iloc[0]  # two full-batch steps already help
    settings = pd.read_parquet(out / "settings.parquet")
    assert settings["E"].tolist() == [1] and settings["B"].tolist() == ["inf"]
    assert pd.isna(settings["rounds_to_target"].iloc[0])  # 0.99 is out of reach in 2 rounds
    html = (out / "report.html").read_text()
    assert "Rounds to reach the target" in html and "data:image/png;base64," in html
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and meta["units"]["fedsgd-iid"]["engine"] == "flower"

    # resuming a finished study reuses its setting: no simulation runs, same tables
    code, captured = run_main(argv + ["--resume"], capsys)
    assert code == 0 and "reused 1 finished settings, ran 0" in captured.err
    pd.testing.assert_frame_equal(results, pd.read_parquet(out / "results.parquet"))
