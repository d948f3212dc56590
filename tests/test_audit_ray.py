"""The audit across executors: a run started locally resumes on Ray, training only the missing unit.

(That Ray gives the local tables for every study, the audit included, is tests/test_study_runner_all.py.)
"""

from __future__ import annotations

import shutil

import pandas as pd

from fitscope.experiments.audit import audit, make_config

# digits, 16 tiny memorization models in 2 units of 8, the C-score from the same models, 2 epochs
TINY = dict(model="mlp:16x1", models=16, ratio=0.5, cscore_ratios=[0.5], epochs=2, noise=0.1, chunk=8,
            oof_families=["logistic"])


def test_local_run_resumes_on_ray_training_only_the_missing_unit(ray_session, tmp_path):
    local, outcome = audit(make_config(**TINY), tmp_path / "local", threads=1)
    assert outcome.trained_units == ["mem-000", "mem-001", "oof-sklearn"]
    copy = tmp_path / "copy"
    shutil.copytree(local.path, copy)
    (copy / "units" / "mem-001.npz").unlink()  # as if killed while this unit trained
    for name in ("examples.parquet", "report.html"):
        (copy / name).unlink()
    resumed, outcome = audit(make_config(**TINY), copy, resume=True, executor="ray", threads=1)
    assert outcome.trained_units == ["mem-001"] and outcome.reused_units == ["mem-000", "oof-sklearn"]
    pd.testing.assert_frame_equal(pd.read_parquet(local.path / "examples.parquet"),
                                  pd.read_parquet(copy / "examples.parquet"))
    attempts = resumed.meta["attempts"]
    assert [a["executor"]["name"] for a in attempts] == ["local", "ray"]
    assert resumed.meta["config_hash"] == local.meta["config_hash"]  # placement is not in the hash
