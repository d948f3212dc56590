"""One model per spec as a plain ``nn.Module``, and a small loop that trains it.

The models of :mod:`fitscope.models` are K-model ensembles built from custom
batched layers; Opacus cannot compute per-sample gradients for those, and the
privacy defenses (pruning, noise on activations, MID) act on one model's named
layer. :func:`build_plain` builds the same architectures from the same spec
grammar (``mlp:512x2``, ``cnn:32-64``, ``cnn1d:32x3``) out of stock torch
layers, with GroupNorm where the ensembles use BatchNorm: BatchNorm mixes the
examples of a batch, which per-example clipping (DP-SGD) forbids, so Opacus
rejects it.

Notation: n examples, C classes, ``input_shape`` the shape of one input.

>>> model = build_plain("mlp:64x2", (1, 8, 8), 10, seed=0)
>>> model.hidden_layer, model(torch.zeros(5, 1, 8, 8)).shape
('fc2', torch.Size([5, 10]))
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.data.validation import check_seed, validate_arrays
from fitscope.errors import ConfigError, DataError
from fitscope.models.spec import ModelSpec, check_input_shape, input_kind, parse_spec
from fitscope.train.threads import configure_threads

__all__ = ["PlainNet", "PlainTrainResult", "build_plain", "group_count", "predict_plain", "train_plain"]

PLAIN_FAMILIES = ("mlp", "cnn", "cnn1d")


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is <= 8."""
    return max(g for g in range(1, 9) if channels % g == 0)


class PlainNet(nn.Sequential):
    """One network of a spec as an ``nn.Sequential`` with named layers.

    Layer names: ``mlp``: ``flatten, fc1, relu1, [drop1,] fc2, relu2, ...,
    out``; ``cnn`` / ``cnn1d``: ``conv1, norm1, relu1, [pool1,] conv2, ...,
    gap, flatten, [drop,] out``. ``model.get_submodule(name)`` returns a layer.

    Attributes:
        spec: the parsed :class:`~fitscope.models.ModelSpec`.
        input_shape: shape of one input.
        n_classes: number of logits.
        hidden_layer: name of the last hidden weight layer (``fc<depth>`` or
            ``conv<depth>``): where pruning and activation noise act by default.
        feature_layer: name of the layer whose output feeds ``out``
            (the penultimate representation, ``feature_dim`` values per example).
        feature_dim: width of the penultimate representation.
        seed: the initialisation seed.
    """

    def __init__(self, layers: OrderedDict, *, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int,
                 hidden_layer: str, feature_layer: str, feature_dim: int, seed: int) -> None:
        super().__init__(layers)
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.n_classes = int(n_classes)
        self.hidden_layer = hidden_layer
        self.feature_layer = feature_layer
        self.feature_dim = int(feature_dim)
        self.seed = int(seed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation ``(B, feature_dim)`` of ``x`` ``(B, *input_shape)``."""
        for name, layer in self.named_children():
            if name == "out":
                break
            x = layer(x)
        return x

    def extra_repr(self) -> str:
        """The spec and shapes, for ``print(model)``."""
        return f"spec={str(self.spec)!r}, input_shape={self.input_shape}, n_classes={self.n_classes}"


def _mlp_layers(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> tuple[OrderedDict, str, str, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = math.prod(input_shape)
    last = "flatten"
    for i, w in enumerate(spec.widths, 1):
        layers[f"fc{i}"] = nn.Linear(width, w)
        layers[f"relu{i}"] = nn.ReLU()
        last = f"relu{i}"
        if spec.dropout:
            layers[f"drop{i}"] = nn.Dropout(spec.dropout)
            last = f"drop{i}"
        width = w
    layers["out"] = nn.Linear(width, n_classes)
    return layers, f"fc{len(spec.widths)}", last, width


def _conv_layers(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> tuple[OrderedDict, str, str, int]:
    dim = len(input_shape) - 1
    conv, pool, gap = (nn.Conv1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d) if dim == 1 else \
        (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
    kernel = spec.kernel if spec.family == "cnn1d" else 3
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, spatial = input_shape[0], list(input_shape[1:])
    for i, w in enumerate(spec.widths, 1):
        layers[f"conv{i}"] = conv(channels, w, kernel, padding=kernel // 2)
        layers[f"norm{i}"] = nn.GroupNorm(group_count(w), w)
        layers[f"relu{i}"] = nn.ReLU()
        if all(s >= 2 for s in spatial):  # same pooling rule as the ensemble models
            layers[f"pool{i}"] = pool(2)
            spatial = [s // 2 for s in spatial]
        channels = w
    layers["gap"] = gap(1)
    layers["flatten"] = nn.Flatten()
    last = "flatten"
    if spec.dropout:
        layers["drop"] = nn.Dropout(spec.dropout)
        last = "drop"
    layers["out"] = nn.Linear(channels, n_classes)
    return layers, f"conv{len(spec.widths)}", last, channels


def build_plain(spec: str | ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seed: int) -> PlainNet:
    """Build one model of ``spec`` from stock torch layers (Opacus-compatible).

    Args:
        spec: ``mlp:WxD`` / ``mlp:W1-W2``, ``cnn:W1-W2`` (images) or
            ``cnn1d:W1-W2`` (signals), with ``dropout=P`` allowed
            (grammar in :data:`fitscope.models.SPEC_HELP`). ``resnet`` is not
            available as a plain model.
        input_shape: shape of one input: ``(D,)``, ``(C, L)`` or ``(C, H, W)``.
        n_classes: number of logits.
        seed: the initial weights depend on this seed only (torch's default
            initialisation drawn under a forked, seeded RNG; the global RNG is
            left untouched).

    Returns:
        A :class:`PlainNet`: ``(B, *input_shape) -> (B, n_classes)``.

    Raises:
        ConfigError: bad spec, ``resnet``, a family that does not fit the input shape.
    """
    parsed = parse_spec(spec)
    seed = check_seed(seed)
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape: expected a tuple of ints, got {input_shape!r}") from None
    input_kind(shape)
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ConfigError(f"n_classes: expected an integer >= 1, got {n_classes!r}")
    if parsed.family not in PLAIN_FAMILIES:
        raise ConfigError(f"model spec {str(parsed)!r}: plain (single, Opacus-compatible) models exist for "
                          f"{', '.join(PLAIN_FAMILIES)}; got family {parsed.family!r}")
    check_input_shape(parsed, shape)
    make = _mlp_layers if parsed.family == "mlp" else _conv_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers, hidden, feature, dim = make(parsed, shape, int(n_classes))
    return PlainNet(layers, spec=parsed, input_shape=shape, n_classes=int(n_classes), hidden_layer=hidden,
                    feature_layer=feature, feature_dim=dim, seed=seed)


def check_train_arrays(x, y, x_test, y_test, n_classes: int | None) -> tuple:
    """Validate training (and optional test) arrays; return ``(x, y, x_test, y_test, n_classes)``.

    ``x``: ``(n, *input_shape)``, ``y``: ``(n,)`` labels. Raises :class:`DataError`.
    """
    x, y = validate_arrays(x, y, where="x/y")
    if len(x) == 0:
        raise DataError("x: expected at least one training row, got 0")
    if (x_test is None) != (y_test is None):
        raise DataError("x_test/y_test: give both or neither")
    if x_test is not None:
        x_test, y_test = validate_arrays(x_test, y_test, where="x_test/y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"x_test: expected rows of shape {x.shape[1:]} like x, got {x_test.shape[1:]}")
    high = max(int(y.max()), int(y_test.max()) if y_test is not None and len(y_test) else 0)
    if n_classes is None:
        n_classes = max(high + 1, 2)
    elif high >= n_classes:
        raise DataError(f"y: expected labels in [0, {n_classes}) for n_classes={n_classes}, got label {high}")
    return x, y, x_test, y_test, int(n_classes)


def check_positive(name: str, value, *, integer: bool = False) -> float | int:
    """``value`` as a positive float (or int); one-line :class:`ConfigError` otherwise."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds) or not value > 0 \
            or (not integer and not math.isfinite(float(value))):
        what = "an integer >= 1" if integer else "a finite number > 0"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value) if integer else float(value)


@torch.no_grad()
def predict_plain(model: nn.Module, x, *, batch_size: int = 1024) -> np.ndarray:
    """Eval-mode logits ``(n, C)`` float32 of ``model`` on ``x`` ``(n, *input_shape)``.

    The model is left in eval mode.
    """
    model.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    device = next(model.parameters()).device
    out = [model(xt[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(xt), batch_size)]
    if not out:
        return np.zeros((0, getattr(model, "n_classes", 0)), np.float32)
    return torch.cat(out).numpy()


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

    Returns:
        A :class:`PlainTrainResult`.

    Raises:
        DataError: bad arrays. ConfigError: bad epochs, batch size, lr or seed.
    """
    t0 = time.perf_counter()
    x, y, x_test, y_test, _ = check_train_arrays(x, y, x_test, y_test, None)
    epochs = check_positive("epochs", epochs, integer=True)
    batch_size = check_positive("batch_size", batch_size, integer=True)
    lr = check_positive("lr", lr)
    seed = check_seed(seed)
    configure_threads()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    train_acc, test_acc = np.full(epochs, np.nan), np.full(epochs, np.nan)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            logits = model(xt[idx].to(device))
            loss = F.cross_entropy(logits, yt[idx].to(device))
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_acc[epoch] = accuracy(predict_plain(model, x), y)
        if x_test is not None:
            test_acc[epoch] = accuracy(predict_plain(model, x_test), y_test)
        if progress is not None:
            progress(dict(epoch=epoch + 1, epochs=epochs, train_acc=train_acc[epoch], test_acc=test_acc[epoch]))
    train_logits = predict_plain(model, x)
    c = train_logits.shape[1]
    test_logits = predict_plain(model, x_test) if x_test is not None else np.zeros((0, c), np.float32)
    return PlainTrainResult(model, train_acc, test_acc, train_logits, test_logits, seed, time.perf_counter() - t0)
