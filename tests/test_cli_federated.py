"""``fitscope federated``: bad input is one line and exit 2; a tiny study runs on Flower, writes its tables and resumes;
the in-process loop that units run on Ray gives Flower's tables."""

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
    (["--local-epochs", "0"], "--local-epochs: expected"),
    (["--algorithms", "fedavg,fedprox"], "algorithms"),
    (["--partitions", "dirichlet"], "partitions"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer or inf, got '0'"),
    (["--batch-size", "ten"], "--batch-size"),
    (["--target", "1.2"], "target"),
    (["--lr", "-0.1"], "lr"),
    (["--clients", "800", "--shards-per-client", "2", "--partitions", "noniid"], "--shards-per-client: expected clients x shards at most the 1437 training examples of digits (use fewer clients or shards), got 800 x 2"),
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


def test_help_names_the_engines_and_ray(capsys):
    code, captured = run_main(["federated", "--help"], capsys)
    assert code == 0 and "in-process" in captured.out and "--executor ray" in captured.out


def test_num_cpus_is_the_threads_setting(capsys, tmp_path):
    code, captured = run_main(["federated", "--out", str(tmp_path / "f"), "--num-cpus", "2", "--threads", "3"],
                              capsys)
    assert code == 2 and "--num-cpus 2 and --threads 3" in captured.err


def test_batch_size_inf_reaches_the_config():
    from fitscope.experiments import get_study

    cfg = get_study("federated").make_config({"batch_size": "inf"})
    assert cfg.batch_size is None


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
    assert meta["status"] == "done" and "fedsgd-iid" in meta["units"]
    assert meta["attempts"][-1]["executor"]["threads_per_task"] == 2  # --num-cpus: Flower's Ray CPUs
    simulation = json.loads((out / "simulation.json").read_text())
    assert simulation["fedsgd-iid"]["engine"] == "flower" and len(simulation["fedsgd-iid"]["round seconds"]) == 2

    # resuming a finished study reuses its setting: no simulation runs, same tables
    code, captured = run_main(argv + ["--resume"], capsys)
    assert code == 0 and "reused 1 finished units, training 0" in captured.err
    pd.testing.assert_frame_equal(results, pd.read_parquet(out / "results.parquet"))
    assert "Resumed run: 1 finished settings were reused" in (out / "report.html").read_text()


@pytest.mark.slow
def test_flower_locally_and_the_in_process_loop_on_ray_write_the_same_tables(tmp_path):
    # Flower shuts down the Ray it ran on, and cannot run inside a Ray task: on --executor ray every unit runs
    # the in-process loop, which must give Flower's numbers bit for bit.
    from fitscope.experiments import get_study
    from fitscope.experiments.study import run_study
    from study_harness import assert_same_tables

    values = dict(clients=6, fraction=0.5, rounds=3, algorithms=["fedavg", "fedsgd"], partitions=["noniid"],
                  model="mlp:16x1", local_epochs=2, batch_size=5, target=0.5)
    study = get_study("federated")
    local = run_study(study, values, tmp_path / "local", executor="local", threads=2)
    on_ray = run_study(study, values, tmp_path / "ray", executor="ray", threads=2)
    engines = [json.loads((r.run.path / "simulation.json").read_text()) for r in (local, on_ray)]
    assert {s["engine"] for s in engines[0].values()} == {"flower"}
    assert {s["engine"] for s in engines[1].values()} == {"in-process"}
    assert on_ray.run.meta["config_hash"] == local.run.meta["config_hash"]
    assert_same_tables(local.run.path, on_ray.run.path)
    results = pd.read_parquet(local.run.path / "results.parquet")
    assert results.groupby("setting")["round"].max().min() >= 1 and results["train_loss"].notna().sum() >= 2
