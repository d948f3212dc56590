"""``fitscope privacy-study`` and ``fitscope train``: bad input is one line and exit 2 (nothing written); tiny runs."""

from __future__ import annotations

import json

import pytest

import fitscope.cli.privacy  # noqa: F401  (registers the commands)
import fitscope.cli.train  # noqa: F401
from cli_helpers import run_main


@pytest.mark.parametrize("argv, needle", [
    (["privacy-study", "--defenses", "none,dp-sgd:0"], "eps > 0"),
    (["privacy-study", "--defenses", "none,bogus:1"], "unknown kind"),
    (["privacy-study", "--models", "4"], "--models: LiRA needs"),
    (["privacy-study", "--shadow-models", "8", "--models", "8"], "--shadow-models: expected it left out with --models"),
    (["privacy-study", "--delta", "1.5"], "delta"),
    (["privacy-study", "--data", "iris", "--model", "cnn:8-8"], "cnn"),
    (["train", "--dp-sgd"], "--eps"),
    (["train", "--dp-sgd", "--eps", "-1"], "eps"),
    (["train", "--dp-sgd", "--eps", "1", "--delta", "0"], "delta"),
    (["train", "--dp-sgd", "--eps", "1", "--max-grad-norm", "0"], "--max-grad-norm: expected"),
    (["train", "--label-dp", "0"], "--label-dp: expected an epsilon > 0"),
    (["train", "--label-dp", "-1"], "--label-dp"),
    (["privacy-study", "--attacks", "magic"], "attacks"),
    (["privacy-study", "--canaries", "5", "--data", "breast_cancer"], "at least 3 classes"),
    (["train", "--label-dp", "1", "--dp-sgd", "--eps", "1"], "--label-dp/--dp-sgd/--instahide: expected one mechanism, got --label-dp and --dp-sgd"),
    (["train", "--eps", "1"], "--eps: expected it with --dp-sgd"),
    (["train", "--instahide", "5000"], "--instahide: expected k at most the 1437 training rows, got 5000"),
    (["train", "--canaries", "5", "--data", "breast_cancer"], "at least 3 classes"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = run_main([*argv, "--out", str(out)], capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_train_with_label_dp_and_canaries_writes_the_audit(tmp_path, capsys):
    out = tmp_path / "lp"
    code, captured = run_main(["train", "--data", "iris", "--model", "mlp:32x1", "--label-dp", "2", "--stages", "2",
                               "--epochs", "20", "--canaries", "20", "--out", str(out)], capsys)
    assert code in (0, None), captured.err
    result = json.loads((out / "result.json").read_text())
    assert result["mechanism"] == "label-dp" and result["claimed_eps"] == 2
    assert len(result["stage_test_acc"]) == 2
    audit = result["canary_audit"]
    assert audit["canaries"] == 20 and audit["eps_lower_bound"] <= 2
    assert f"report: {out / 'report.html'}" in captured.out
    # rounded figures, not raw JSON
    assert "test accuracy: " in captured.err and "canary epsilon lower bound (95%): " in captured.err
    assert "{" not in captured.err and "0.6666666" not in captured.err


def test_privacy_study_help_has_an_example_and_names_the_quick_setting(capsys):
    code, captured = run_main(["privacy-study", "--help"], capsys)
    assert code == 0 and "Example: fitscope privacy-study" in captured.out
    assert "8 shadow models" in captured.out and "30 epochs" in captured.out


@pytest.mark.slow
def test_privacy_study_cli_prints_rounded_figures_and_resumes_from_the_run(tmp_path, capsys):
    out = tmp_path / "ps"
    argv = ["privacy-study", "--data", "iris", "--model", "mlp:8x1", "--defenses", "none,label-dp:1",
            "--models", "5", "--epochs", "2", "--canaries", "10", "--attacks", "", "--threads", "1",
            "--out", str(out)]
    code, captured = run_main(argv, capsys)
    assert code in (0, None), captured.err
    assert "label-dp:1 test_acc: " in captured.err and "none lira_tpr@1%: " in captured.err
    assert f"report: {out / 'report.html'}" in captured.out
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and sorted(meta["units"]) == [
        "canary-label-dp-1", "canary-none", "defense-label-dp-1", "defense-none"]
    # --resume alone takes the run's config; a flag that differs is named
    code, captured = run_main(["privacy-study", "--out", str(out), "--resume"], capsys)
    assert code in (0, None), captured.err
    assert "reused 4 finished units, training 0" in captured.err
    code, captured = run_main(["privacy-study", "--out", str(out), "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "--epochs 3 differs from the run's 2" in captured.err
