"""The audit on the Ray executor: the same bits as the local executor, and resume across executors."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from fitscope.errors import RunError
from fitscope.experiments.audit import audit, make_config

ray = pytest.importorskip("ray")

# digits, 16 tiny memorization models in 2 units of 8, the C-score from the same models, 2 epochs
TINY = dict(model="mlp:16x1", models=16, ratio=0.5, cscore_ratios=[0.5], epochs=2, noise=0.1, chunk=8, threads=1)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray of 2 CPUs for the module (the executor uses it and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    run, outcome = audit(make_config(**TINY), tmp_path_factory.mktemp("local") / "run")
    assert outcome.trained_units == ["mem-000", "mem-001"]
    return run


def _examples(run_path):
    return pd.read_parquet(run_path / "examples.parquet")


def test_ray_gives_the_same_examples_as_local(ray_cluster, local_run, tmp_path):
    run, outcome = audit(make_config(**TINY, executor="ray"), tmp_path / "ray")
    assert sorted(outcome.trained_units) == ["mem-000", "mem-001"] and outcome.reused_units == []
    pd.testing.assert_frame_equal(_examples(local_run.path), _examples(run.path))
    pd.testing.assert_frame_equal(pd.read_parquet(local_run.path / "influence.parquet"),
                                  pd.read_parquet(run.path / "influence.parquet"))
    # same config hash whichever executor; the executor is recorded per attempt
    assert run.meta["config_hash"] == local_run.meta["config_hash"]
    assert "executor" not in run.config and run.config["threads"] == 1
    assert run.meta["attempts"][-1]["executor"]["name"] == "ray"
    assert local_run.meta["attempts"][-1]["executor"]["name"] == "local"


def test_local_run_resumes_on_ray_training_only_the_missing_unit(ray_cluster, local_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(local_run.path, copy)
    (copy / "units" / "mem-001.npz").unlink()  # as if killed while this unit trained
    for name in ("examples.parquet", "report.html"):
        (copy / name).unlink()
    resumed, outcome = audit(make_config(**TINY, executor="ray"), copy, resume=True)
    assert outcome.trained_units == ["mem-001"] and outcome.reused_units == ["mem-000"]
    pd.testing.assert_frame_equal(_examples(local_run.path), _examples(copy))
    attempts = json.loads((copy / "run.json").read_text())["attempts"]
    assert [a["executor"]["name"] for a in attempts] == ["local", "ray"]
    # a different computation (threads) is still refused on resume
    with pytest.raises(RunError, match="different config"):
        audit(make_config(**dict(TINY, threads=2)), copy, resume=True)
