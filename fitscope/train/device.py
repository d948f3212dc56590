"""Which torch device a training or kernel call computes on: one rule, decided afresh at every call.

The rule (applied by :func:`placement_device`, which :func:`fitscope.train.train_ensemble`,
the kernels and the other functions that compute on tensors call on entry):

1. an explicit ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``
   or a ``torch.device``) is resolved and used;
2. else ``FITSCOPE_DEVICE``, if set, is read *at this call*: the executors of
   :mod:`fitscope.runs` set it to the run's ``--device`` for the duration of
   every unit (:func:`fitscope.runs.devices.pinned_device`), so a study's
   units use the placement's device without passing it around;
3. else the CPU.

``"auto"`` is a GPU when torch finds one, else the CPU. A CUDA device that is
not there raises a one-line :class:`~fitscope.errors.ConfigError` naming the
devices found (``device: expected one of the devices found (cpu), got cuda``).
Arrays come in as NumPy and go out as NumPy: a call copies its inputs to the
device once and its results back once.
"""

from __future__ import annotations

import torch

from fitscope.runs.devices import default_device, resolve_device


def placement_device(device: str | torch.device | None = None, name: str = "device") -> torch.device:
    """The torch device of one call under the rule of this module.

    Args:
        device: the device asked for; None for the placement's
            (``FITSCOPE_DEVICE``, else the CPU).
        name: the argument's name in messages.

    Returns:
        The resolved ``torch.device``.

    Raises:
        ConfigError: not a device name, or a CUDA device not found here.
    """
    return torch.device(default_device() if device is None else resolve_device(device, name))
