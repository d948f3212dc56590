"""Training one model on soft (mixed) labels with fresh inputs every epoch.

:func:`fitscope.train.train_ensemble` takes integer labels and fixed inputs;
InstaHide (and mixup) train on inputs re-drawn every epoch with soft labels,
so this is a small separate loop: the caller hands a function that returns
each epoch's ``(inputs, soft labels)``; the loss is the soft cross-entropy
``-sum_c y_c log softmax(f(x))_c`` (labels need not sum to 1: InstaHide's
Cross-dataset labels sum to the private weight). Notation: n rows per epoch,
C classes, inputs of shape ``S``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.errors import DataError
from fitscope.models import build
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.threads import configure_threads
from fitscope.validation import check_int, check_number, check_seed, message


@dataclass(frozen=True)
class SoftLabelResult:
    """Per-epoch curves of one model trained on soft labels.

    Attributes:
        test_acc: ``(epochs,)`` accuracy on the test set after every epoch.
        train_loss: ``(epochs,)`` mean soft cross-entropy over each epoch's steps.
        seconds: wall time.
        spec: the model spec.
        seed: the model seed (initial weights and batch order).
        model: the trained model (eval mode) when ``keep_model``, else None.
    """

    test_acc: np.ndarray
    train_loss: np.ndarray
    seconds: float
    spec: str
    seed: int
    model: torch.nn.Module | None = None

    @property
    def final_test_acc(self) -> float:
        """Test accuracy after the last epoch."""
        return float(self.test_acc[-1])


def train_soft_labels(
    spec: str,
    epoch_data: Callable[[int], tuple[np.ndarray, np.ndarray]],
    *,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: str | None = None,
    keep_model: bool = False,
) -> SoftLabelResult:
    """Train one model (Adam) on each epoch's ``epoch_data(epoch)`` and test it after every epoch.

    Args:
        spec: model spec (see :data:`fitscope.models.SPEC_HELP`).
        epoch_data: ``epoch -> (x, y_soft)`` with ``x`` ``(n, *S)`` float and
            ``y_soft`` ``(n, C)`` non-negative soft labels.
        x_test: ``(m, *S)`` test inputs (already in the scale the model trains on).
        y_test: ``(m,)`` int test labels in ``[0, C)``.
        epochs: number of epochs (>= 1).
        seed: model seed (weights via :func:`fitscope.models.build`, batch order).
        batch_size: rows per step (>= 1).
        lr: Adam learning rate (> 0).
        weight_decay: L2 weight decay (>= 0).
        device: torch device (``"cpu"``, ``"cuda"``, ``"auto"``, ...); None: the placement's
            (``FITSCOPE_DEVICE``, else the CPU; see :mod:`fitscope.train.device`).
        keep_model: return the trained model in ``result.model``.

    Returns:
        A :class:`SoftLabelResult`.

    Raises:
        ConfigError: bad epochs, batch size, learning rate, weight decay, seed, spec or device.
        DataError: ``epoch_data`` or test arrays of the wrong shape.
    """
    t0 = time.perf_counter()
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_number(lr, "lr", low=0.0, high=math.inf, open_low=True, open_high=True)
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0, high=math.inf, open_high=True)
    seed = check_seed(seed)
    dev = placement_device(device)
    configure_threads()
    x_test = np.asarray(x_test, np.float32)
    y_test = np.asarray(y_test)
    if y_test.shape != (x_test.shape[0],) or not np.issubdtype(y_test.dtype, np.integer):
        raise DataError(message("y_test", f"({x_test.shape[0]},) integer labels to match x_test",
                                f"shape {y_test.shape} dtype {y_test.dtype}"))
    model = None
    gen = torch.Generator().manual_seed(derive_seed(seed, "soft-labels", "order"))
    xt_test = torch.from_numpy(x_test).to(dev)
    yt_test = torch.from_numpy(y_test.astype(np.int64)).to(dev)
    test_acc = np.zeros(epochs)
    train_loss = np.zeros(epochs)
    for epoch in range(epochs):
        x, y = epoch_data(epoch)
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if x.shape[1:] != x_test.shape[1:] or y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise DataError(message("epoch_data", f"x (n, {', '.join(map(str, x_test.shape[1:]))}) and y (n, C)",
                                    f"{x.shape} and {y.shape}"))
        if model is None:
            if y_test.size and y_test.max() >= y.shape[1]:
                raise DataError(message("y_test", f"labels in [0, {y.shape[1]}) (the columns of the soft labels)",
                                        str(int(y_test.max()))))
            model = build(spec, x.shape[1:], y.shape[1], seeds=[seed]).to(dev)
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        model.train()
        order = torch.randperm(x.shape[0], generator=gen).to(dev)
        total, steps = torch.zeros((), dtype=torch.float64, device=dev), 0  # summed on the device: no sync per step
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            logits = model(xt[idx].unsqueeze(0))[0]
            loss = -(yt[idx] * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach().double()
            steps += 1
        train_loss[epoch] = float(total) / steps
        model.eval()
        with torch.inference_mode():
            pred = model.forward_shared(xt_test)[0].argmax(dim=-1)
            test_acc[epoch] = float((pred == yt_test).double().mean()) if len(y_test) else float("nan")
    return SoftLabelResult(test_acc=test_acc, train_loss=train_loss, seconds=time.perf_counter() - t0,
                           spec=str(spec), seed=int(seed), model=model.eval() if keep_model else None)
