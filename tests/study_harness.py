"""Checks every study must pass on the one study runner: Ray gives the local tables, and kill + resume works.

Used by ``tests/test_study_runner_all.py`` (one parametrized test per check over every study) and by a
study's own tests. A study is run in a real subprocess (``python -c`` calling ``run_study``) so that it can
be SIGKILLed; the kill point is deterministic: :data:`fitscope.experiments.study.PAUSE_ENV` makes the
runner stop after its first stored unit and wait, so the test neither races nor skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fitscope.experiments import get_study
from fitscope.experiments.study import PAUSE_ENV, PAUSE_MARK, run_study

_SCRIPT = ("import json, sys\n"
           "from fitscope.experiments import get_study\n"
           "from fitscope.experiments.study import run_study\n"
           "name, values, out, resume = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4] == '1'\n"
           "run_study(get_study(name), values, out, resume=resume, threads=1)\n")


def _env(**extra: str) -> dict:
    return dict(os.environ, FITSCOPE_NUM_THREADS="1", **extra)


def study_process(name: str, values: dict, out: Path, *, resume: bool = False, pause: int | None = None
                  ) -> subprocess.Popen:
    """Start ``run_study(name, values, out)`` in a subprocess (threads 1); ``pause``: stop after that many units."""
    env = _env(**({PAUSE_ENV: str(pause)} if pause else {}))
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, name, json.dumps(values), str(out), "1" if resume else "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet table of the run in ``out``, by file name."""
    return {p.name: pd.read_parquet(p) for p in sorted(Path(out).glob("*.parquet"))}


def assert_same_tables(a: Path, b: Path) -> None:
    """The runs in ``a`` and ``b`` wrote the same tables with equal contents (at least one table)."""
    ta, tb = tables(a), tables(b)
    assert ta, f"{a} holds no tables"
    assert sorted(ta) == sorted(tb)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)


def check_kill_and_resume(name: str, values: dict, tmp_path: Path, *,
                          reference: Callable[[], Path] | None = None) -> None:
    """Kill the study after its first stored unit, resume it: only the other units train, same tables.

    ``reference``: gives the directory of a finished, uninterrupted run of the same study and values (threads 1)
    whose tables the resumed run must equal; it is called while the killed run starts in its subprocess, so it
    may make that run then, alongside. Without it a fresh run is made here in a subprocess, after the resume.
    """
    out = tmp_path / "killed"
    proc = study_process(name, values, out, pause=1)
    try:
        reference_dir = reference() if reference is not None else None
        lines = []
        deadline = time.time() + 300
        for line in proc.stderr:  # blocks until the runner pauses (or the process ends)
            lines.append(line)
            if PAUSE_MARK in line or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    paused = any(PAUSE_MARK in line for line in lines)
    assert paused, f"{name} never paused after its first unit (fewer than 2 units?):\n{''.join(lines)[-2000:]}"
    meta = json.loads((out / "run.json").read_text())
    first = sorted(meta["units"])
    assert len(first) == 1 and meta["status"] == "running", (first, meta["status"])
    assert not (out / "report.html").exists()

    resumed = study_process(name, values, out, resume=True)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    meta = json.loads((out / "run.json").read_text())
    attempt = meta["attempts"][-1]
    assert meta["status"] == "done" and len(meta["attempts"]) == 2
    assert attempt["reused_units"] == first
    assert first[0] not in attempt["trained_units"] and attempt["trained_units"]
    assert sorted(attempt["reused_units"] + attempt["trained_units"]) == sorted(meta["units"])

    if reference_dir is None:
        reference_dir = tmp_path / "fresh"
        whole = study_process(name, values, reference_dir)
        _, err = whole.communicate(timeout=600)
        assert whole.returncode == 0, err[-3000:]
    assert_same_tables(out, reference_dir)


def local_run(name: str, values: dict, out: Path):
    """The study run from scratch in this process on the local executor (threads 1): a :class:`StudyResult`."""
    return run_study(get_study(name), values, out, executor="local", threads=1)


def check_ray_matches_local(name: str, values: dict, tmp_path: Path, *, local=None) -> None:
    """The study on the Ray executor (a Ray already initialised) writes the local executor's tables.

    ``local``: the :func:`local_run` result of the same study and values, if one was already made.
    """
    study = get_study(name)
    local = local_run(name, values, tmp_path / "local") if local is None else local
    on_ray = run_study(study, values, tmp_path / "ray", executor="ray", threads=1)
    assert on_ray.run.meta["attempts"][-1]["executor"]["name"] == "ray"
    assert on_ray.run.meta["config_hash"] == local.run.meta["config_hash"]
    assert sorted(on_ray.trained) == sorted(local.trained) and local.trained
    assert_same_tables(local.run.path, on_ray.run.path)
