"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (cli_helpers, study_harness)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (``make test`` runs two workers on two cores) each worker trains on one torch thread
    # unless the developer chose otherwise: two workers of two threads each on two cores thrash (a small op then
    # costs 3-36x its one-thread time, measured in bench/dynamics.py's thread rule). Tests of the default thread
    # rule unset the variable themselves.
    os.environ.setdefault("FITSCOPE_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["FITSCOPE_NUM_THREADS"]))


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray of 2 CPUs for the module; executors use it and leave it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


#: Test files that start a Ray cluster (a local Ray, ``ray start`` nodes, Flower's simulation engine). Under
#: pytest-xdist they share one group, so they run one after another in one worker: two Ray clusters on one machine
#: meet on Ray's fixed default ports (the dashboard agent's 52365, the workers' from 10002), and a two-node test
#: then waited in vain for its second node (seen once in CI with files spread over two workers).
RAY_FILES = {
    "test_audit_ray.py", "test_cli_federated.py", "test_data_memmap.py", "test_devices_ray.py", "test_executors.py",
    "test_privacy_federated.py", "test_ray_two_nodes.py", "test_study_faults.py", "test_study_runner_all.py",
}


def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (``make test``): each file is one group (its fixtures are made once), except that
    the files of :data:`RAY_FILES` form a single group."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in RAY_FILES else name))

