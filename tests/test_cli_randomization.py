"""``fitscope randomization`` from the command line: errors, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cli_helpers import run_main as _run_main
from fitscope.experiments.study import PAUSE_ENV, PAUSE_MARK

ARGS = ["randomization", "--model", "mlp:32x1", "--seeds", "0", "--epochs", "3", "--parts", "curves",
        "--corruptions", "none,random_labels"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "nope"], "nope"),
        (["--corrupt-prob", "0,abc"], "--corrupt-prob"),
        (["--corrupt-prob", "0,2"], "noise_levels"),
        (["--noise", "0,abc"], "--noise"),
        (["--noise", "0,1", "--corrupt-prob", "0,1"], "--noise: expected it left out with --corrupt-prob"),
        (["--corruptions", "blur"], "corruptions"),
        (["--model", "transformer:9"], "transformer"),
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


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    code, captured = _run_main(ARGS + ["--out", str(out)], capsys)
    assert code in (0, None)
    assert "report:" in captured.out
    code, captured = _run_main(ARGS + ["--out", str(out)], capsys)
    assert code == 2 and "--resume" in captured.err


def _flat(text: str) -> str:
    """Help text with rich's box borders and line wrapping taken out."""
    return " ".join(text.replace("\u2502", " ").split())


def test_quick_help_names_the_epochs_it_uses(capsys):
    from fitscope.experiments.randomization import QUICK

    code, captured = _run_main(["randomization", "--help"], capsys)
    assert code in (0, None)
    assert f"budget of {QUICK['epochs']} epochs per ensemble" in _flat(captured.out)
    assert "Example: fitscope randomization" in _flat(captured.out)


def test_quick_run_resumes_with_its_config_from_run_json(tmp_path, capsys):
    from fitscope.experiments.randomization import QUICK

    out = tmp_path / "rand"
    small = ["--model", "mlp:16x1", "--epochs", "2", "--parts", "curves,noise", "--corruptions",
             "none,random_labels", "--corrupt-prob", "0,1"]
    code, captured = _run_main(["randomization", "--quick", *small, "--out", str(out)], capsys)
    assert code in (0, None), captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["seeds"] == QUICK["seeds"] and meta["config"]["regularizers"] == QUICK["regularizers"]
    assert meta["config"]["epochs"] == 2 and meta["config"]["model"] == "mlp:16x1"
    (out / "units" / "noise.npz").unlink()  # a unit lost: the resume trains it again

    code, captured = _run_main(["randomization", "--out", str(out), "--resume"], capsys)
    assert code in (0, None), captured.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and len(meta["attempts"]) == 2
    assert meta["attempts"][-1]["trained_units"] == ["noise"]
    assert sorted(meta["attempts"][-1]["reused_units"]) == ["curves-none", "curves-random_labels"]
    assert meta["config"]["seeds"] == QUICK["seeds"] and meta["config"]["epochs"] == 2
    assert "report:" in captured.out

    # a flag that differs from the run's is named in one line
    code, captured = _run_main(["randomization", "--out", str(out), "--resume", "--epochs", "5"], capsys)
    assert code == 2 and "--epochs 5 differs from the run's 2" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_resume_names_the_corrupt_prob_flag():
    from fitscope.experiments import get_study

    assert get_study("randomization").flag("noise_levels") == "--corrupt-prob"


def test_help_of_randomization_and_audit_each_state_what_their_number_means(capsys):
    code, captured = _run_main(["randomization", "--help"], capsys)
    assert code in (0, None)
    text = _flat(captured.out)
    assert "--corrupt-prob" in text and "redrawn uniformly over all C classes with probability p" in text
    assert "p(1-1/C) of the labels end up wrong" in text
    assert "--noise TEXT" not in text  # the deprecated alias is hidden
    code, captured = _run_main(["audit", "--help"], capsys)
    assert code in (0, None)
    text = _flat(captured.out)
    assert "Exact fraction of training labels flipped to another class" in text
    assert "round(noise x n) labels change" in text


@pytest.mark.slow
def test_killed_run_resumes_from_finished_units(tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "fitscope", "randomization", "--model", "mlp:64x1", "--seeds", "0",
            "--epochs", "5", "--parts", "curves", "--corruptions", "none,random_labels,gaussian",
            "--out", str(out)]
    env = dict(os.environ, FITSCOPE_NUM_THREADS="1")
    # the runner stops after its first stored unit and waits to be killed: no race with the training
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**env, PAUSE_ENV: "1"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if PAUSE_MARK in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert any(PAUSE_MARK in line for line in lines), "".join(lines)[-2000:]
    finished = sorted(p.stem for p in (out / "units").glob("*.npz"))
    assert len(finished) == 1
    assert not (out / "report.html").exists()

    done = subprocess.run([*argv[:4], "--out", str(out), "--resume"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "reused 1 finished units, training 2" in done.stderr
    assert (out / "report.html").exists()
    meta = json.loads((out / "run.json").read_text())
    assert meta["attempts"][-1]["reused_units"] == finished and meta["status"] == "done"
