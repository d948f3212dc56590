"""Fixtures shared by several test files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (cli_helpers, study_harness)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray of 2 CPUs for the module; executors use it and leave it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
