"""``fitscope kernels uci | small-data | complexity`` from the command line: errors, runs and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fitscope.cli.kernels  # noqa: F401 - registers the `kernels` group on the app
from cli_helpers import run_main

UCI = ["kernels", "uci", "--datasets", "iris", "--depths", "1", "--C", "0.1,10", "--trees", "10", "--quick"]
SMALL = ["kernels", "small-data", "--sizes", "10", "--seeds", "0", "--kernels", "cntk", "--depth", "1",
         "--models", "cnn:8", "--steps", "20"]
COMPLEXITY = ["kernels", "complexity", "--corrupt-prob", "0,1", "--seeds", "0", "--max-examples", "60",
              "--model", "mlp:32x1", "--epochs", "20"]


def _one_line_error(code, captured, needle):
    assert code == 2, captured.err
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err


def _write_csv(path, n=40):
    rng = np.random.default_rng(1)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 2)) + 3.0 * y[:, None]
    path.write_text("\n".join(f"{a:.4f},{b:.4f},{label}" for (a, b), label in zip(x, y)) + "\n")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (UCI + ["--csv-dir", "MISSING"], "--csv-dir"),
        (UCI + ["--datasets", "nope"], "datasets"),
        (UCI + ["--C", "0,1"], "--C (svm_C): expected"),
        (UCI + ["--depths", "one"], "--depths"),
        (SMALL + ["--sizes", "0,10"], "--sizes"),
        (SMALL + ["--sizes", "-10"], "--sizes"),
        (SMALL + ["--sizes", "5"], "at least one example per class"),
        (SMALL + ["--kernels", "rbf"], "kernels"),
        (SMALL + ["--models", "transformer:3"], "transformer"),
        (SMALL + ["--data", "iris", "--models", "mlp:8"], "images"),
        (SMALL + ["--kernels", "none", "--models", "none"], "at least one kernel variant or model"),
        (COMPLEXITY + ["--corrupt-prob", "0,1.5"], "--corrupt-prob"),
        (COMPLEXITY + ["--corrupt-prob", "-0.1"], "--corrupt-prob"),
        (COMPLEXITY + ["--noise", "0,1"], "--noise: expected it left out with --corrupt-prob"),
        (COMPLEXITY + ["--classes", "0,99"], "--classes"),
    ],
)
def test_bad_flags_are_one_line_exit_2_and_leave_no_run(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    code, captured = run_main(argv + ["--out", str(out)], capsys)
    _one_line_error(code, captured, needle)
    assert not out.exists()


def test_uci_with_a_csv_dir_writes_a_report_and_resumes(tmp_path, capsys):
    folder = tmp_path / "csvs"
    folder.mkdir()
    _write_csv(folder / "blobs.csv")
    out = tmp_path / "uci"
    argv = ["kernels", "uci", "--datasets", "none", "--csv-dir", str(folder), "--depths", "1", "--C", "1",
            "--trees", "5", "--quick", "--out", str(out)]
    code, captured = run_main(argv, capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and (out / "report.html").exists()
    assert "NTK-SVM: mean accuracy" in captured.err
    code, captured = run_main(argv, capsys)
    assert code == 2 and "--resume" in captured.err
    code, captured = run_main(argv + ["--resume"], capsys)
    assert code in (0, None) and "reused 1 finished units, training 0" in captured.err
    # --resume alone takes the run's config; a flag that disagrees with it is a one-line error
    code, captured = run_main(["kernels", "uci", "--out", str(out), "--resume"], capsys)
    assert code in (0, None) and "reused 1 finished units, training 0" in captured.err, captured.err
    code, captured = run_main(["kernels", "uci", "--out", str(out), "--resume", "--trees", "6"], capsys)
    _one_line_error(code, captured, "--trees 6 differs")
    code, captured = run_main(["kernels", "uci", "--out", str(out), "--resume", "--rf-trees", "5"], capsys)
    assert code in (0, None), captured.err  # the flag the message names is a real one


@pytest.mark.slow
def test_small_data_and_complexity_run_from_the_command_line(tmp_path, capsys):
    code, captured = run_main(SMALL + ["--out", str(tmp_path / "sd")], capsys)
    assert code in (0, None), captured.err
    assert (tmp_path / "sd" / "report.html").exists() and (tmp_path / "sd" / "results.parquet").exists()
    code, captured = run_main(SMALL + ["--out", str(tmp_path / "sd"), "--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err  # the kernel, the network
    code, captured = run_main(COMPLEXITY + ["--out", str(tmp_path / "cx")], capsys)
    assert code in (0, None), captured.err
    assert (tmp_path / "cx" / "report.html").exists()
    assert "complexity measure against noise" in captured.err
    assert "training 3 units" in captured.err  # the measure and one ensemble per noise level


def test_complexity_all_classes_from_the_command_line_is_stored_and_resumes(tmp_path, capsys):
    out = tmp_path / "cx"
    argv = ["kernels", "complexity", "--classes", "all", "--corrupt-prob", "0", "--seeds", "0", "--max-examples", "40",
            "--model", "mlp:8x1", "--epochs", "1", "--out", str(out)]
    code, captured = run_main(argv, capsys)
    assert code in (0, None), captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["classes"] is None and meta["status"] == "done"
    code, captured = run_main(argv + ["--resume"], capsys)
    assert code in (0, None) and "reused 2 finished units, training 0" in captured.err, captured.err
    code, captured = run_main(["kernels", "complexity", "--classes", "0,1", "--out", str(out), "--resume"], capsys)
    _one_line_error(code, captured, "--classes")


def test_help_shows_an_example_for_every_command(capsys):
    code, captured = run_main(["kernels", "--help"], capsys)
    assert code in (0, None) and "Example: fitscope kernels" in captured.out
    for command in ("uci", "small-data", "complexity"):
        code, captured = run_main(["kernels", command, "--help"], capsys)
        assert code in (0, None)
        assert "Example: fitscope kernels" in captured.out
        for flag in ("--out", "--resume", "--executor", "--address", "--threads"):  # the runner's flags
            assert flag in captured.out, (command, flag)
