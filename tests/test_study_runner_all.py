"""Every study on the one study runner: Ray gives the local tables; a killed run resumes training only the rest.

Each case is a tiny setting of the study with at least two units, fast enough for CI.
"""

from __future__ import annotations

import pytest

from fitscope.experiments import STUDIES
from study_harness import check_kill_and_resume, check_ray_matches_local

# study name -> config values of a tiny run with >= 2 units (each porter owns its own entry)
CASES: dict[str, dict] = {
    "audit": dict(model="mlp:16x1", models=8, ratio=0.5, cscore_ratios=[0.5], epochs=2, noise=0.1, chunk=4),
}


def test_every_study_has_a_case():
    assert sorted(CASES) == sorted(STUDIES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_ray_matches_local(name, ray_session, tmp_path):
    check_ray_matches_local(name, CASES[name], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_kill_and_resume(name, tmp_path):
    check_kill_and_resume(name, CASES[name], tmp_path)
