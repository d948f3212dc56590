"""One check that a function follows the device placement rule of :mod:`fitscope.train.device`.

The test files of the functions that compute on tensors call
:func:`assert_follows_placement` with a ``run(**device)`` closure of a tiny
problem. No GPU is needed: CUDA is reported absent, so ``device="cuda"`` is
the one-line error naming the devices found (tests/test_devices.py checks the
resolver itself).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.runs.devices import DEVICE_ENV

#: the error of ``device="cuda"`` on a machine without a GPU
NOT_FOUND = r"^device: expected one of the devices found \(cpu\), got cuda$"


def assert_same(a: Any, b: Any, where: str = "result") -> None:
    """``a`` and ``b`` are equal bit for bit: arrays, tensors, numbers (NaN equal to NaN), nested dicts/lists."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        u = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        v = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=u.dtype.kind in "fc"), where


def spy_placement(monkeypatch, module) -> list:
    """With ``FITSCOPE_DEVICE=cpu``, record the ``device`` of every ``placement_device`` call through ``module``."""
    real, calls = module.placement_device, []

    def spy(device=None, name="device"):
        calls.append(device)
        return real(device, name)

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    monkeypatch.setattr(module, "placement_device", spy)
    return calls


def assert_follows_placement(monkeypatch, module, run: Callable[..., Any]) -> None:
    """``run(**device)`` (which calls a function of ``module``) follows the placement rule.

    1. ``device="cpu"`` gives the numbers of no device (no placement set);
    2. with ``FITSCOPE_DEVICE=cpu`` and no device, the call resolves its device
       through ``module.placement_device`` (first call: no device), with the same numbers;
    3. ``device="cuda"`` without a GPU is the one-line :class:`ConfigError` naming the devices found.
    """
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    default = run()
    assert_same(run(device="cpu"), default)
    calls = spy_placement(monkeypatch, module)
    assert_same(run(), default)
    assert calls and calls[0] is None, calls
    with pytest.raises(ConfigError, match=NOT_FOUND):
        run(device="cuda")
