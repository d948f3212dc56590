"""``fitscope leak`` from the command line: bad input is one line, a small run writes its report."""

from __future__ import annotations

import numpy as np
import pytest

import fitscope.cli.leak  # noqa: F401 - registers the command on the app
from cli_helpers import run_main
from fitscope.runs import Run

ARGS = ["leak", "--model", "mlp:32x1", "--models", "8", "--epochs", "2", "--chunk", "8"]


@pytest.mark.parametrize("extra, needle", [
    (["--models", "4"], "--models: LiRA needs at least 8 models"),
    (["--data", "nope"], "nope"),
    (["--model", "transformer:9"], "transformer"),
    (["--ratio", "1.5"], "ratio"),
    (["--optimizer", "lbfgs"], "optimizer"),
    (["--from-audit", "no/such/run"], "--from-audit"),
])
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    args = ARGS + extra if extra[0] != "--from-audit" else ["leak"] + extra
    code, captured = run_main(args + ["--out", str(out)], capsys)
    assert code == 2
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_from_audit_without_train_logits_is_one_line(tmp_path, capsys):
    fake = Run.create(tmp_path / "audit", kind="audit", config={}, seeds={})
    fake.save_unit("mem-000", {"masks": np.ones((8, 5), bool)})
    fake.finish()
    code, captured = run_main(["leak", "--from-audit", str(fake.path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(captured.err.strip().splitlines()) == 1
    assert "lacks train_logits" in captured.err
    code, captured = run_main(["leak", "--from-audit", str(fake.path), "--models", "16",
                               "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--models: not used with --from-audit" in captured.err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_leak_run_prints_the_report_path(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None), captured.err
    assert "report:" in captured.out and (out / "leak.parquet").exists() and (out / "report.html").exists()
    assert "LiRA TPR at 1% FPR" in captured.err
    code, captured = run_main(ARGS + ["--out", str(out)], capsys)
    assert code == 2 and "--resume" in captured.err
