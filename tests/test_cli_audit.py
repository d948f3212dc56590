"""``fitscope audit`` from the command line: bad input, a small audit, resume."""

from __future__ import annotations

import pytest

from cli_helpers import run_main as _run_main

ARGS = ["audit", "--model", "mlp:32x1", "--models", "8", "--cscore-ratios", "0.5,0.7", "--cscore-models", "4",
        "--epochs", "2", "--noise", "0.1", "--chunk", "4", "--oof-families", "logistic"]




@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "nope"], "nope"),
        (["--model", "transformer:9"], "transformer"),
        (["--ratio", "1.5"], "ratio"),
        (["--ratio", "0"], "ratio"),
        (["--models", "3"], "--models: expected at least 8"),
        (["--cscore-models", "2"], "--cscore-models: expected at least 4"),
        (["--cscore-ratios", "0,0.5"], "--cscore-ratios: expected"),
        (["--cscore-ratios", "0.5,abc"], "--cscore-ratios"),
        (["--noise", "1.5"], "noise"),
        (["--noise-mode", "swap"], "--noise-mode: expected"),
        (["--executor", "dask"], "executor"),
        (["--address", "10.0.0.1:6379"], "--address: expected none with --executor local (it is only used with --executor ray)"),
        (["--threads", "0"], "threads"),
        (["--data", "iris", "--label-column", "species"], "label_column"),
        (["--quick", "--models", "4"], "--models: expected at least 8"),
        (["--quick", "--cscore-ratios", "0.1", "--cscore-models", "4"], "--cscore-models: expected at least 20"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    code, captured = _run_main(ARGS + ["--out", str(out)] + extra, capsys)
    assert code == 2
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.slow
def test_audit_then_resume_and_other_config(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = _run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and (out / "examples.parquet").exists()
    assert "label-issue AUROC" in captured.err
    code, captured = _run_main(ARGS + ["--out", str(out)], capsys)
    assert code == 2 and "--resume" in captured.err
    code, captured = _run_main(ARGS + ["--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 4 finished units, training 0" in captured.err
    units = sorted(p.name for p in (out / "units").iterdir())
    code, captured = _run_main(ARGS + ["--out", str(out), "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "--epochs 3 differs from the run's 2" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert sorted(p.name for p in (out / "units").iterdir()) == units
    # --resume alone: every flag comes from the run (which was not made with the defaults)
    code, captured = _run_main(["audit", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 4 finished units, training 0" in captured.err, captured.err
    # a flag given with --resume that agrees with the run is fine
    code, captured = _run_main(["audit", "--out", str(out), "--resume", "--models", "8"], capsys)
    assert code in (0, None), captured.err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--executor", "dask"], "--executor: expected one of local, ray, got 'dask'"),
        (["--executor", "ray", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: cannot connect"),
        (["--resume"], "is not a run directory"),
    ],
)
def test_bad_runner_input_is_one_line_and_writes_nothing(extra, needle, tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = _run_main(ARGS + ["--out", str(out)] + extra, capsys)
    assert code == 2 and needle in captured.err, captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert not out.exists()


def test_resume_on_a_directory_that_is_not_a_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, captured = _run_main(ARGS + ["--out", str(out), "--resume"], capsys)
    assert code == 2 and "is not a run directory" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_data_too_small_for_the_audit_is_refused_before_training(tmp_path, capsys):
    """A 5-row, 3-class CSV: some class has fewer than 2 training rows; one line, exit 2, no run directory."""
    csv = tmp_path / "tiny.csv"
    csv.write_text("a,b,label\n0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,2\n0.2,0.4,0\n0.8,0.3,1\n")
    out = tmp_path / "run"
    code, captured = _run_main(["audit", "--data", str(csv), "--label-column", "label", "--model", "mlp:8x1",
                                "--models", "8", "--out", str(out)], capsys)
    assert code == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "expected at least 2 training rows of every class" in lines[0], captured.err
    assert not out.exists()
