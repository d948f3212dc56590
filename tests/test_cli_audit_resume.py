"""Real crashes of ``fitscope audit`` in a subprocess: SIGKILL then ``--resume`` alone, and Ctrl-C.

The kill point is deterministic: FITSCOPE_TEST_PAUSE_AFTER_UNITS makes the runner stop after its first
stored unit and wait, so the test neither races the job nor skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from fitscope.experiments.study import PAUSE_ENV, PAUSE_MARK

# digits, 8 memorization models in 4 units of 2 (the C-score from the same models); not the defaults, so
# that a plain --resume must take the config from run.json
ARGS = ["audit", "--model", "mlp:32x1", "--models", "8", "--ratio", "0.7", "--cscore-ratios", "0.7",
        "--epochs", "3", "--noise", "0.1", "--chunk", "2", "--seed", "3", "--oof-families", "none"]
UNITS = ["mem-000", "mem-001", "mem-002", "mem-003"]


def _start(out, *, log=None, **env) -> subprocess.Popen:
    """The audit of ARGS into ``out``; its output piped, or written to the open file ``log``."""
    return subprocess.Popen([sys.executable, "-m", "fitscope", *ARGS, "--out", str(out)],
                            stdout=log or subprocess.PIPE, stderr=log or subprocess.PIPE, text=True,
                            env=dict(os.environ, FITSCOPE_NUM_THREADS="1", **env))


def _wait_for_pause(proc) -> str:
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if PAUSE_MARK in line:
            return "".join(seen)
    raise AssertionError("the audit ended without pausing: " + "".join(seen)[-2000:])


@pytest.mark.slow
def test_killed_audit_resumes_with_resume_alone(tmp_path):
    out = tmp_path / "killed"
    # the uninterrupted run the resumed one must equal, alongside the killed run and its resume (one thread each)
    with open(tmp_path / "fresh.log", "w") as log:
        fresh = _start(tmp_path / "fresh", log=log)
    try:
        _killed_then_resumed(out)
        fresh.wait(timeout=300)
    finally:
        if fresh.poll() is None:
            fresh.kill()
            fresh.wait()
    assert fresh.returncode == 0, (tmp_path / "fresh.log").read_text()[-3000:]
    for table in ("examples", "influence"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "fresh" / f"{table}.parquet"))


def _killed_then_resumed(out) -> None:
    proc = _start(out, **{PAUSE_ENV: "1"})
    _wait_for_pause(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in (out / "units").glob("*.npz"))
    assert finished == ["mem-000"]
    assert not (out / "examples.parquet").exists() and not (out / "report.html").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed: nobody marked it
    stamp = (out / "units" / "mem-000.npz").stat().st_mtime_ns

    resumed = subprocess.run([sys.executable, "-m", "fitscope", "audit", "--out", str(out), "--resume"],
                             capture_output=True, text=True, env=dict(os.environ, FITSCOPE_NUM_THREADS="1"),
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused 1 finished units, training 3" in resumed.stderr
    assert sorted(p.stem for p in (out / "units").glob("*.npz")) == UNITS
    assert (out / "units" / "mem-000.npz").stat().st_mtime_ns == stamp  # not retrained
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and len(meta["attempts"]) == 2
    assert meta["attempts"][-1]["trained_units"] == UNITS[1:]


@pytest.mark.slow
def test_ctrl_c_says_what_is_saved_and_how_to_resume(tmp_path):
    out = tmp_path / "interrupted"
    proc = _start(out, **{PAUSE_ENV: "1"})
    _wait_for_pause(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted: 1 of 4 units are saved in {out}; resume with: fitscope audit --out {out} --resume" in err
    assert "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "interrupted"
