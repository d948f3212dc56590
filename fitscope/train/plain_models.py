"""A small loop that trains one plain ``nn.Module`` (e.g. from :func:`fitscope.models.build_plain`).

The plain models themselves (:func:`~fitscope.models.build_plain`,
:class:`~fitscope.models.PlainNet`) live in :mod:`fitscope.models` with the
ensembles, built from the same layer plan; they are re-exported here for the
callers that import them from this module.

Notation: n examples, C classes, ``input_shape`` the shape of one input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.data.validation import validate_arrays
from fitscope.errors import DataError
from fitscope.models.plain import PlainNet, build_plain, group_count
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.threads import configure_threads
from fitscope.validation import check_int, check_number, check_seed, message

__all__ = ["PlainNet", "PlainTrainResult", "build_plain", "eval_logits", "group_count", "predict_plain",
           "tensor_accuracy", "train_plain"]


def check_train_arrays(x, y, x_test, y_test, n_classes: int | None) -> tuple:
    """Validate training (and optional test) arrays; return ``(x, y, x_test, y_test, n_classes)``.

    ``x``: ``(n, *input_shape)``, ``y``: ``(n,)`` labels. Raises :class:`DataError`.
    """
    x, y = validate_arrays(x, y, where="x/y")
    if len(x) == 0:
        raise DataError(message("x", "at least one training row", "0"))
    if (x_test is None) != (y_test is None):
        missing = "x_test" if x_test is None else "y_test"
        raise DataError(message(missing, "both x_test and y_test or neither", "None"))
    if x_test is not None:
        x_test, y_test = validate_arrays(x_test, y_test, where="x_test/y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(message("x_test", f"rows of shape {x.shape[1:]} like x", str(x_test.shape[1:])))
    high = max(int(y.max()), int(y_test.max()) if y_test is not None and len(y_test) else 0)
    if n_classes is None:
        n_classes = max(high + 1, 2)
    else:
        n_classes = check_int(n_classes, "n_classes")
        if high >= n_classes:
            raise DataError(message("y", f"labels in [0, {n_classes}) for n_classes={n_classes}", f"label {high}"))
    return x, y, x_test, y_test, int(n_classes)


@torch.no_grad()
def predict_plain(model: nn.Module, x, *, batch_size: int = 1024, device: str | None = None) -> np.ndarray:
    """Eval-mode logits ``(n, C)`` float32 of ``model`` on ``x`` ``(n, *input_shape)``.

    Args:
        model: the module; left in eval mode, on ``device`` (moved there in place).
        x: ``(n, *input_shape)`` inputs, copied to the device once.
        batch_size: rows per forward pass.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.

    Raises:
        ConfigError: a device that is not found here.
    """
    dev = placement_device(device)
    model.to(dev)
    return eval_logits(model, torch.as_tensor(np.asarray(x, dtype=np.float32)).to(dev), batch_size).cpu().numpy()


def eval_logits(model: nn.Module, xt: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode float32 logits ``(n, C)`` of ``model`` on ``xt``, a tensor on the model's device; they stay there.

    The model is left in eval mode; no gradients are recorded.
    """
    model.eval()
    with torch.no_grad():
        if not len(xt):
            return torch.zeros((0, getattr(model, "n_classes", 0)), device=xt.device)
        return torch.cat([model(xt[i:i + batch_size]).float() for i in range(0, len(xt), batch_size)])


def tensor_accuracy(logits: torch.Tensor, yt: torch.Tensor) -> float:
    """:func:`accuracy` of tensors ``(n, C)`` and ``(n,)`` on a device: only the number comes back (NaN for no rows)."""
    return int((logits.argmax(1) == yt).sum()) / len(yt) if len(yt) else math.nan


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose arg-max logit is the label (NaN for no rows)."""
    return float((logits.argmax(1) == y).mean()) if len(y) else math.nan


@dataclass
class PlainTrainResult:
    """The outcome of :func:`train_plain`.

    Attributes:
        model: the trained module (eval mode).
        train_acc: ``(E,)`` training accuracy after each epoch (eval mode).
        test_acc: ``(E,)`` test accuracy after each epoch (NaN without a test set).
        train_logits: ``(n, C)`` float32 final logits on the training rows.
        test_logits: ``(n_test, C)`` float32 final test logits (``n_test = 0`` without a test set).
        seed: the seed that fixed initialisation and batch order.
        seconds: wall time.
    """

    model: nn.Module
    train_acc: np.ndarray
    test_acc: np.ndarray
    train_logits: np.ndarray
    test_logits: np.ndarray
    seed: int
    seconds: float


def _epochs(model, opt, xt, yt, xt_test, yt_test, *, gen, epochs, batch_size, extra_loss, progress,
            train_acc, test_acc):
    """The epochs of :func:`train_plain` (fills ``train_acc`` / ``test_acc``); the final eval-mode outputs."""
    dev = xt.device
    train_out = test_out = None
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen).to(dev)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_out = eval_logits(model, xt)
        train_acc[epoch] = tensor_accuracy(train_out, yt)
        if xt_test is not None:
            test_out = eval_logits(model, xt_test)
            test_acc[epoch] = tensor_accuracy(test_out, yt_test)
        if progress is not None:
            progress(dict(epoch=epoch + 1, epochs=epochs, train_acc=train_acc[epoch], test_acc=test_acc[epoch]))
    return train_out, test_out


def train_plain(
    model: nn.Module,
    x,
    y,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int,
    x_test=None,
    y_test=None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    progress: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> PlainTrainResult:
    """Train one plain module with mini-batch SGD (cross-entropy), no privacy.

    Args:
        model: any module mapping ``(B, *input_shape)`` to logits ``(B, C)``
            (e.g. from :func:`build_plain`); trained in place.
        x: ``(n, *input_shape)`` training inputs.
        y: ``(n,)`` integer labels.
        epochs: passes over the data.
        batch_size: rows per step; each epoch is a seeded permutation.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        seed: fixes the batch order (initialisation is the model's own seed).
        x_test: optional ``(n_test, *input_shape)`` test inputs.
        y_test: ``(n_test,)`` test labels (with ``x_test``).
        extra_loss: optional ``f(model) -> scalar`` added to the loss after each
            forward pass (e.g. MID's ``beta * KL`` the model stored in that pass).
        progress: called after every epoch with ``dict(epoch, epochs, train_acc, test_acc)``.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The model is moved there (in place) and the arrays copied there once; the
            batch order is drawn on the CPU, so the batches are the same on every device.

    Returns:
        A :class:`PlainTrainResult` (the model stays on the device; the logits are NumPy).

    Raises:
        DataError: bad arrays. ConfigError: bad epochs, batch size, lr, seed or device.
    """
    t0 = time.perf_counter()
    x, y, x_test, y_test, _ = check_train_arrays(x, y, x_test, y_test, None)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_number(lr, "lr", low=0.0, high=math.inf, open_low=True, open_high=True)
    seed = check_seed(seed)
    dev = placement_device(device)
    configure_threads()
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    if x_test is not None:
        xt_test, yt_test = torch.from_numpy(x_test).to(dev), torch.from_numpy(y_test).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    train_acc, test_acc = np.full(epochs, np.nan), np.full(epochs, np.nan)
    # Dropout (nn.Dropout) draws from torch's global generator: seed it from ``seed`` for this call only,
    # so the same call trains the same model, and the caller's global random state is left as it was.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        train_out, test_out = _epochs(
            model, opt, xt, yt, xt_test if x_test is not None else None, yt_test if x_test is not None else None,
            gen=gen, epochs=epochs, batch_size=batch_size, extra_loss=extra_loss, progress=progress,
            train_acc=train_acc, test_acc=test_acc)
    # the last epoch's evaluation pass is the final model's: its logits come back once
    train_logits = train_out.cpu().numpy()
    c = train_logits.shape[1]
    test_logits = test_out.cpu().numpy() if x_test is not None else np.zeros((0, c), np.float32)
    return PlainTrainResult(model, train_acc, test_acc, train_logits, test_logits, seed, time.perf_counter() - t0)
