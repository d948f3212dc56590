"""Faults the study runner survives: a Ray node dies mid-run, a report that cannot be written, disk full.

The node tests start a Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head node with no
CPUs (the driver and the progress board live there) and one worker node with one CPU, so every unit runs
on that worker, one after another. As soon as the first unit reports progress, the worker node is removed
while it is training (it is the only node that can run a unit, and units are queued back to back) and a
fresh one-CPU node joins. The loss is thus certain, not a race between two nodes' schedules.
"""

from __future__ import annotations

import errno
import functools
import json

import pandas as pd
import pytest

from fitscope.errors import RunError
from fitscope.experiments import get_study
from fitscope.experiments.study import Progress, run_study
from fitscope.runs import executors

# 4 units of 2 tiny models (120 model-epochs each, about a second): the first tick comes well before the last unit ends
VALUES = dict(model="mlp:16x1", models=8, ratio=0.5, cscore_ratios=[0.5], epochs=60, noise=0.1, chunk=2,
              oof_families=[])


class ReplaceNodeOnFirstTick(Progress):
    """Removes the only CPU node at the first progress tick (a unit is training on it), then adds a fresh one."""

    def __init__(self, cluster, node) -> None:
        self.cluster, self.node, self.killed = cluster, node, False

    def advance(self, done: int) -> None:
        if not self.killed and done > 0:
            self.killed = True
            self.cluster.remove_node(self.node, allow_graceful=False)
            self.cluster.add_node(num_cpus=1)
            self.cluster.wait_for_nodes()


@pytest.fixture
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_units_lost_with_a_node_are_retried_on_another_node(two_nodes, tmp_path):
    cluster, worker = two_nodes
    progress = ReplaceNodeOnFirstTick(cluster, worker)
    result = run_study(get_study("audit"), VALUES, tmp_path / "ray", executor="ray", threads=1, progress=progress)
    assert progress.killed and result.run.status == "done"
    assert sorted(result.trained) == ["mem-000", "mem-001", "mem-002", "mem-003"]
    local = run_study(get_study("audit"), VALUES, tmp_path / "local", threads=1)
    for table in ("examples", "influence"):
        pd.testing.assert_frame_equal(pd.read_parquet(local.run.path / f"{table}.parquet"),
                                      pd.read_parquet(result.run.path / f"{table}.parquet"))


@pytest.mark.slow
def test_retries_spent_is_one_line_then_resume_finishes(two_nodes, tmp_path, monkeypatch):
    cluster, worker = two_nodes
    import fitscope.experiments.study as study_module

    monkeypatch.setattr(study_module, "make_executor", functools.partial(executors.make_executor, max_retries=0))
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_study(get_study("audit"), VALUES, out, executor="ray", threads=1,
                  progress=ReplaceNodeOnFirstTick(cluster, worker))
    text = str(info.value)
    assert "was lost" in text and f"fitscope audit --out {out} --resume" in text and "\n" not in text
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    resumed = run_study(get_study("audit"), {}, out, resume=True, executor="ray", threads=1)
    assert resumed.run.status == "done" and resumed.trained
    assert sorted(resumed.trained + resumed.reused) == ["mem-000", "mem-001", "mem-002", "mem-003"]


def test_a_report_that_cannot_be_written_leaves_the_run_not_done(tmp_path, monkeypatch):
    """Disk full while writing the report: one line, the run is failed (not done); --resume writes it."""
    import os

    small = dict(VALUES, epochs=2)
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith("report.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run_study(get_study("audit"), small, out, threads=1)
    assert "disk full while writing" in str(info.value) and "--resume" in str(info.value)
    assert "\n" not in str(info.value)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and not (out / "report.html").exists()
    monkeypatch.undo()
    resumed = run_study(get_study("audit"), {}, out, resume=True, threads=1)
    assert resumed.trained == [] and resumed.run.status == "done" and (out / "report.html").is_file()
