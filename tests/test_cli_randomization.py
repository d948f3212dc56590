"""``fitscope randomization`` from the command line: errors, kill and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cli_helpers import run_main as _run_main

ARGS = ["randomization", "--model", "mlp:32x1", "--seeds", "0", "--epochs", "3", "--parts", "curves",
        "--corruptions", "none,random_labels"]




@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--data", "nope"], "nope"),
        (["--noise", "0,abc"], "--noise"),
        (["--noise", "0,2"], "noise_levels"),
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


@pytest.mark.slow
def test_killed_run_resumes_from_finished_units(tmp_path):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "fitscope", "randomization", "--model", "mlp:64x1", "--seeds", "0",
            "--epochs", "40", "--parts", "curves", "--corruptions", "none,random_labels,gaussian",
            "--out", str(out)]
    env = dict(os.environ, FITSCOPE_NUM_THREADS="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if list((out / "units").glob("*.npz")) if (out / "units").exists() else []:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the study finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in (out / "units").glob("*.npz"))
    assert 1 <= len(finished) < 3
    assert not (out / "report.html").exists()

    done = subprocess.run(argv + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"reused {len(finished)} finished units" in done.stderr
    assert (out / "report.html").exists()
