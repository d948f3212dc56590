"""``fitscope privacy-study`` and ``fitscope train``: bad input is one line and exit 2, and nothing is written."""

from __future__ import annotations

import json

import pytest

import fitscope.cli.privacy  # noqa: F401  (registers the commands)
import fitscope.cli.train  # noqa: F401
from cli_helpers import run_main


@pytest.mark.parametrize("argv, needle", [
    (["privacy-study", "--defenses", "none,dp-sgd:0"], "eps > 0"),
    (["privacy-study", "--defenses", "none,bogus:1"], "unknown kind"),
    (["privacy-study", "--shadow-models", "4"], "LiRA needs"),
    (["privacy-study", "--delta", "1.5"], "delta"),
    (["privacy-study", "--data", "iris", "--model", "cnn:8-8"], "cnn"),
    (["train", "--dp-sgd"], "--eps"),
    (["train", "--dp-sgd", "--eps", "-1"], "eps"),
    (["train", "--dp-sgd", "--eps", "1", "--delta", "0"], "delta"),
    (["train", "--dp-sgd", "--eps", "1", "--max-grad-norm", "0"], "max_grad_norm"),
    (["train", "--label-dp", "0"], "eps"),
    (["train", "--label-dp", "1", "--dp-sgd", "--eps", "1"], "choose one mechanism"),
    (["train", "--eps", "1"], "needs --dp-sgd"),
    (["train", "--instahide", "5000"], "k must be at most"),
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
    assert f"run: {out}" in captured.out
