"""Which torch device a unit computes on: one resolver, one placement variable.

The device is *placement*, like the threads per task: it is not part of a
study's config (a run started on CPU resumes on a GPU and the other way
round), and every attempt of a run records the device its units used.

- :func:`resolve_device`: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or
  ``"auto"`` (a GPU when one is found, else the CPU) -> the device that will
  be used, as text. A CUDA device that is not there is a one-line
  :class:`~fitscope.errors.ConfigError` naming the devices found::

      --device: expected one of the devices found (cpu), got cuda

- :func:`pinned_device`: the executors run every unit inside it, so that a
  training or kernel call of the unit that is given no ``device`` uses the
  placement's (``FITSCOPE_DEVICE``, read at each call by
  :func:`fitscope.train.device.placement_device`; CPU when it is not set).
  Results come back to the caller as NumPy arrays, once per unit.

torch is imported lazily: :mod:`fitscope.runs` does not need it otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from fitscope.errors import ConfigError
from fitscope.validation import message, shorten

#: what ``--device`` accepts (besides ``cuda:<index>``)
DEVICES = ("cpu", "cuda", "auto")
#: the placement's device, set by :func:`pinned_device` for the duration of a unit (or by the user)
DEVICE_ENV = "FITSCOPE_DEVICE"
_FORM = re.compile(r"^(cpu|auto|cuda)(?::(\d+))?$")


def cuda_count() -> int:
    """CUDA GPUs torch sees in this process (0 when ``torch.cuda.is_available()`` is False)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def devices_found(gpus: int | None = None) -> list[str]:
    """``["cpu", "cuda:0", ...]``: the devices of this process (``gpus``: a GPU count to use instead of torch's)."""
    n = cuda_count() if gpus is None else int(gpus)
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def resolve_device(device, name: str = "device", *, gpus: int | None = None, cluster: bool = False) -> str:
    """The device a computation will use, as text: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``, ``"auto"`` (``"cuda"``
            when a GPU is found, else ``"cpu"``) or a ``torch.device``.
        name: the argument's name in messages (``"--device"`` on the CLI).
        gpus: the number of GPUs to check against; None: those torch sees here.
        cluster: the GPUs are a Ray cluster's (``gpus`` of them in all): Ray
            hands each unit its own GPU, so an index is refused.

    Raises:
        ConfigError: not a device name, or a CUDA device that is not found
            (the message names the devices found).
    """
    import torch

    text = str(device) if isinstance(device, torch.device) else device
    match = _FORM.match(text) if isinstance(text, str) else None
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise ConfigError(message(name, "cpu, cuda, cuda:<index> or auto", shorten(device)))
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return "cpu"
    n = cuda_count() if gpus is None else int(gpus)
    if kind == "auto":
        return "cuda" if n > 0 else "cpu"
    where = " in the Ray cluster" if cluster else ""
    found = ", ".join(["cpu", f"cuda ({n} GPUs)"] if cluster and n else devices_found(n))
    if n == 0 or (index is not None and int(index) >= n):
        raise ConfigError(message(name, f"one of the devices found{where} ({found})", text))
    if index is not None and cluster:
        raise ConfigError(message(name, "cpu, cuda or auto with --executor ray (Ray gives every unit its own GPU)",
                                  text))
    return text


def env_device() -> str | None:
    """``FITSCOPE_DEVICE`` read now (None when it is not set or empty); resolved where it is used."""
    return os.environ.get(DEVICE_ENV) or None


def default_device() -> str:
    """The device of a computation given none: ``FITSCOPE_DEVICE`` resolved now, else ``"cpu"``.

    Raises:
        ConfigError: ``FITSCOPE_DEVICE`` names no device found here.
    """
    env = env_device()
    return "cpu" if env is None else resolve_device(env, DEVICE_ENV)


@contextlib.contextmanager
def pinned_device(device: str) -> Iterator[str]:
    """Set ``FITSCOPE_DEVICE`` to ``device`` inside the block (a unit's placement) and restore it afterwards."""
    before = os.environ.get(DEVICE_ENV)
    os.environ[DEVICE_ENV] = str(device)
    try:
        yield str(device)
    finally:
        if before is None:
            os.environ.pop(DEVICE_ENV, None)
        else:
            os.environ[DEVICE_ENV] = before
