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
