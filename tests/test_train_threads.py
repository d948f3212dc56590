"""The thread rule of training calls (fitscope.train.threads) and the one CPU counter.

Rule: ``configure_threads(n)`` sets n; else ``FITSCOPE_NUM_THREADS`` read at each
call; else the caller's ``torch.set_num_threads`` is left alone. Nothing is
remembered between calls. The sequences that matter happen at the start of a
process (the old code set every CPU on the first call it saw), so they run in a
fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fitscope.train
import fitscope.train.threads as threads_module
from fitscope.errors import ConfigError
from fitscope.runs.executors import env_threads, machine_cpus, pinned_threads
from fitscope.train import configure_threads

# A script run in a fresh interpreter: train_ensemble three times and record the
# threads it trained with (seen from inside, in its per-epoch callback) and after.
_SCRIPT = r"""
import json, os, sys
import numpy as np, torch
from fitscope.train import TrainConfig, train_ensemble

rng = np.random.default_rng(0)
x = rng.normal(size=(24, 4)).astype(np.float32)
y = rng.integers(0, 2, size=24)
steps = json.loads(sys.argv[1])
seen = []
for env, user in steps:
    if env is None:
        os.environ.pop("FITSCOPE_NUM_THREADS", None)
    else:
        os.environ["FITSCOPE_NUM_THREADS"] = str(env)
    if user is not None:
        torch.set_num_threads(user)
    inside = []
    train_ensemble("mlp:4x1", x, y, config=TrainConfig(epochs=1, batch_size=8, record=False), seeds=[0],
                   progress=lambda info: inside.append(torch.get_num_threads()))
    seen.append([inside[0], torch.get_num_threads()])
print(json.dumps(seen))
"""


def _fresh_process(steps: list[tuple[int | None, int | None]]) -> list[list[int]]:
    """Run the steps ``(FITSCOPE_NUM_THREADS or None, torch.set_num_threads by the user or None)`` in a new process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FITSCOPE_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(steps)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _not_all_cpus(avoid: int) -> int:
    """A thread count other than ``avoid`` (the old code forced every CPU on a process's first call)."""
    return 2 if avoid == 1 else 1


def test_the_callers_torch_setting_is_kept_when_nothing_asks_otherwise():
    k = _not_all_cpus(machine_cpus())
    # the very first training call of the process, after the user chose k threads
    assert _fresh_process([(None, k)]) == [[k, k]]


def test_no_state_is_kept_between_calls():
    k = _not_all_cpus(machine_cpus())
    j = 3 if k != 3 else 4
    # env 2, then env 3: each call takes its own env value; then env unset and the user's j is kept
    # (the old code, having never "configured" on an env call, forced every CPU on that third call)
    assert _fresh_process([(2, None), (3, None), (None, j)]) == [[2, 2], [3, 3], [j, j]]


def test_configure_threads_rule_in_process(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("FITSCOPE_NUM_THREADS", raising=False)
        torch.set_num_threads(1)
        assert configure_threads() == 1 and torch.get_num_threads() == 1  # caller's choice kept
        torch.set_num_threads(2)
        assert configure_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("FITSCOPE_NUM_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1  # env read at this call
        assert configure_threads(2) == 2 and torch.get_num_threads() == 2  # explicit beats env
        with pytest.raises(ConfigError, match=r"^threads: expected an integer >= 1, got 0$"):
            configure_threads(0)
        monkeypatch.setenv("FITSCOPE_NUM_THREADS", "0")
        with pytest.raises(ConfigError, match=r"^FITSCOPE_NUM_THREADS: expected an integer >= 1, got '0'$"):
            configure_threads()
        monkeypatch.setenv("FITSCOPE_NUM_THREADS", "lots")
        with pytest.raises(ConfigError, match=r"^FITSCOPE_NUM_THREADS: expected an integer >= 1, got 'lots'$"):
            env_threads()
    finally:
        torch.set_num_threads(before)


def test_pinned_threads_sets_and_restores_torch_and_the_environment(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("FITSCOPE_NUM_THREADS", "3")
    with pinned_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["FITSCOPE_NUM_THREADS"] == "1"
        assert configure_threads() == 1  # a training call inside a task keeps the task's count
    assert torch.get_num_threads() == before and os.environ["FITSCOPE_NUM_THREADS"] == "3"
    monkeypatch.delenv("FITSCOPE_NUM_THREADS")
    with pinned_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before and "FITSCOPE_NUM_THREADS" not in os.environ


def test_one_cpu_counter():
    assert machine_cpus() == len(os.sched_getaffinity(0))
    assert not hasattr(fitscope.train, "available_cpus") and not hasattr(threads_module, "available_cpus")
    assert not any(isinstance(v, bool) for k, v in vars(threads_module).items() if k.startswith("_") and
                   not k.startswith("__"))  # no "configured once" flag
