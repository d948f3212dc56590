"""A real crash: ``fitscope audit`` SIGKILLed in a subprocess after its first unit, then ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# digits, 8 memorization models in 4 units of 2 (the C-score from the same models); long enough per unit
# (60 epochs) that the job can be killed between units
ARGS = ["audit", "--model", "mlp:32x1", "--models", "8", "--ratio", "0.7", "--cscore-ratios", "0.7",
        "--epochs", "60", "--noise", "0.1", "--chunk", "2", "--seed", "3"]
UNITS = ["mem-000", "mem-001", "mem-002", "mem-003"]


def _command(out) -> list[str]:
    return [sys.executable, "-m", "fitscope", *ARGS, "--out", str(out)]


@pytest.mark.slow
def test_killed_audit_resumes_training_only_missing_units(tmp_path):
    env = dict(os.environ, FITSCOPE_NUM_THREADS="1")  # the same threads in every process: the same bits
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    units = out / "units"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if units.is_dir() and list(units.glob("*.npz")):
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the audit finished (or failed) before it could be killed: "
                    + proc.stderr.read().decode(errors="replace")[-300:])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    finished = sorted(p.stem for p in units.glob("*.npz"))
    assert 1 <= len(finished) < len(UNITS), finished
    assert not (out / "examples.parquet").exists() and not (out / "report.html").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed: nobody marked it
    stamps = {key: (units / f"{key}.npz").stat().st_mtime_ns for key in finished}

    resumed = subprocess.run(_command(out) + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len(finished)} finished units, trained {len(UNITS) - len(finished)}" in resumed.stderr
    assert sorted(p.stem for p in units.glob("*.npz")) == UNITS
    assert {key: (units / f"{key}.npz").stat().st_mtime_ns for key in finished} == stamps  # not retrained
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done" and len(meta["attempts"]) == 2 and meta["config"]["threads"] == 1

    fresh = tmp_path / "fresh"
    whole = subprocess.run(_command(fresh), capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    for table in ("examples", "influence"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{table}.parquet"),
                                      pd.read_parquet(fresh / f"{table}.parquet"))
