"""Mode connectivity: loss and error along paths between two trained networks, and dropout stability.

Notation: two networks ``A`` and ``B`` of one architecture (the same
parameter names and shapes), their parameters ``wA`` and ``wB``; a path
``phi: [0, 1] -> parameters`` with ``phi(0) = wA`` and ``phi(1) = wB``;
``L(t)`` the mean cross-entropy of the network with parameters ``phi(t)`` on
some rows, ``err(t)`` its error (1 - accuracy).

- :func:`interpolate`: the straight line ``(1 - t) wA + t wB``.
- :func:`bezier_point`, :func:`train_bezier`: the quadratic Bezier curve
  ``phi(t) = (1-t)^2 wA + 2t(1-t) theta + t^2 wB`` of Garipov et al. 2018
  ("Loss surfaces, mode connectivity, and fast ensembling of DNNs"), its bend
  ``theta`` initialised at the midpoint ``(wA + wB) / 2`` and trained by SGD on
  the expected loss over ``t ~ U[0, 1]``, one ``t`` drawn per batch.
- :func:`dropout_path`: the piecewise-linear path of Kuditipudi et al. 2019
  ("Explaining landscape connectivity of low-cost solutions for multilayer
  nets") through the dropped-out versions of ``A`` and ``B``.
- :func:`path_losses`: ``L(t)`` and ``err(t)`` at given points of any path.
- :func:`barrier`: the height of a path's loss above its ends.
- :func:`dropout_stability`, :func:`dropout_masks`, :func:`dropout_forward`:
  loss and error after dropping a random half of a layer's units and scaling
  the rest by 2.

**The barrier** (one definition throughout fitscope): for losses ``L(t_k)``
at points ``0 = t_0 < ... < t_m = 1`` of a path,
``barrier = max_k [ L(t_k) - ((1 - t_k) L(0) + t_k L(1)) ]``, the most the
loss along the path rises above the straight interpolation of its two end
losses (Entezari et al. 2022's definition; Frankle et al. 2020 subtract the
mean of the ends instead). It is 0 for a path whose loss never rises above
that chord, and is measured at the evaluated points only.

Batch norm: :func:`path_losses` recomputes the running statistics of every
batch-norm layer at each evaluated point from ``bn_x`` (a pass in training
mode with a cumulative average) before it evaluates; a network without batch
norm needs nothing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.errors import ConfigError, DataError
from fitscope.seeding import derive_seed
from fitscope.train.modes import eval_mode
from fitscope.validation import check_fraction, check_int, check_number, check_seed, message

__all__ = ["BezierCurve", "DropoutPath", "barrier", "bezier_point", "check_same_architecture", "dropout_forward",
           "dropout_masks", "dropout_path", "dropout_stability", "interpolate", "loss_and_error", "mlp_layers",
           "parameters_of", "path_losses", "train_bezier"]

Params = dict[str, torch.Tensor]

#: elementwise activations a dropout path may pass through (a unit's activation depends on that unit alone)
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus)
#: layers of a chain network that hold no parameters and leave the units where they are
PASS_THROUGH = (nn.Flatten, nn.Identity, nn.Dropout)


# --------------------------------------------------------------------------- parameters


def parameters_of(model: nn.Module) -> Params:
    """The model's parameters by name, detached (views; clone before changing them)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def check_same_architecture(model_a: nn.Module, model_b: nn.Module, *, names: tuple[str, str] = ("model_a", "model_b")
                            ) -> None:
    """Raise a one-line :class:`ConfigError` naming ``names[1]`` unless both models have the same parameter names
    and shapes (in the same order)."""
    pa, pb = parameters_of(model_a), parameters_of(model_b)
    if list(pa) != list(pb):
        extra = [n for n in pb if n not in pa] or [n for n in pa if n not in pb] or list(pb)
        raise ConfigError(message(names[1], f"the architecture of {names[0]} (parameters {_names(pa)})",
                                  f"parameters {_names(pb)} (first difference {extra[0]!r})"))
    for name in pa:
        if pa[name].shape != pb[name].shape:
            raise ConfigError(message(names[1], f"the architecture of {names[0]} ({name!r} of shape "
                                      f"{tuple(pa[name].shape)})", f"{name!r} of shape {tuple(pb[name].shape)}"))


def _names(params: Params) -> str:
    keys = list(params)
    return ", ".join(keys) if len(keys) <= 4 else ", ".join(keys[:3]) + f", ... ({len(keys)} in all)"


def interpolate(model_a: nn.Module | Params, model_b: nn.Module | Params, t: float) -> Params:
    """The point ``(1 - t) wA + t wB`` of the straight line between two networks' parameters.

    ``t = 0`` gives ``wA`` and ``t = 1`` gives ``wB`` exactly (``0 * w`` is 0 and
    ``1 * w`` is ``w`` in floating point). Models (or parameter dicts) of different
    architectures raise :class:`ConfigError` naming ``model_b``.
    """
    pa, pb = _params(model_a, model_b)
    t = float(t)
    return {name: (1.0 - t) * pa[name] + t * pb[name] for name in pa}


def _params(model_a, model_b) -> tuple[Params, Params]:
    pa = model_a if isinstance(model_a, dict) else parameters_of(model_a)
    pb = model_b if isinstance(model_b, dict) else parameters_of(model_b)
    if list(pa) != list(pb) or any(pa[n].shape != pb[n].shape for n in pa):
        bad = next((n for n in pb if n not in pa or pa[n].shape != pb[n].shape), next(iter(pa), "?"))
        raise ConfigError(message("model_b", "the parameter names and shapes of model_a",
                                  f"a difference at {bad!r}"))
    return pa, pb


def bezier_point(w_a: Params, theta: Params, w_b: Params, t: float) -> Params:
    """The quadratic Bezier point ``(1-t)^2 wA + 2t(1-t) theta + t^2 wB`` (parameter dicts of one architecture)."""
    t = float(t)
    a, m, b = (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    return {name: a * w_a[name] + m * theta[name] + b * w_b[name] for name in w_a}


# --------------------------------------------------------------------------- evaluating a path


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def _recompute_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Reset every batch-norm layer's running statistics and re-estimate them from ``x`` (cumulative average)."""
    norms = _batch_norms(model)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches of the pass
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])
    model.eval()


@torch.no_grad()
def loss_and_error(model: nn.Module, params: Params | None, x: torch.Tensor, y: torch.Tensor, *,
                   batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and error of ``model`` with ``params`` (None: its own) on ``(x, y)``, in eval mode.

    The model's training/eval mode is restored afterwards.
    """
    total, wrong = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = model(xb) if params is None else torch.func.functional_call(model, params, (xb,))
            total += float(F.cross_entropy(out, yb, reduction="sum"))
            wrong += int((out.argmax(1) != yb).sum())
    return total / len(x), wrong / len(x)


def _tensors(x, y, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    yt = torch.as_tensor(np.ascontiguousarray(y) if isinstance(y, np.ndarray) else y).long()
    if xt.ndim < 2 or yt.ndim != 1 or len(xt) != len(yt) or len(xt) == 0:
        raise DataError(message(where, "x of shape (n, ...) and y of shape (n,), n >= 1",
                                f"x {tuple(xt.shape)}, y {tuple(yt.shape)}"))
    return xt.float(), yt


def path_losses(model: nn.Module, point: Callable[[float], Params], ts: Sequence[float], x, y, *,
                batch_size: int = 2048, bn_x=None) -> pd.DataFrame:
    """Loss and error of the network at each point ``point(t)`` of a path, for ``t`` in ``ts``.

    Args:
        model: a module of the path's architecture (its own parameters are not used; it is not changed).
        point: ``t -> parameter dict`` (e.g. ``lambda t: interpolate(a, b, t)``, :meth:`BezierCurve.point`,
            :meth:`DropoutPath.point`).
        ts: the points, each in [0, 1].
        x: ``(n, *input_shape)`` inputs; y: ``(n,)`` integer labels.
        batch_size: rows per forward pass.
        bn_x: inputs from which batch-norm statistics are recomputed at each point (required when ``model``
            has batch norm; the training rows, usually).

    Returns:
        One row per point: ``t``, ``loss`` (mean cross-entropy), ``error`` (1 - accuracy).
    """
    xt, yt = _tensors(x, y, "x/y")
    ts = [check_number(t, "ts", low=0.0, high=1.0) for t in ts]
    norms = bool(_batch_norms(model))
    if norms and bn_x is None:
        raise ConfigError(message("bn_x", "inputs to recompute the batch-norm statistics of the model at each point",
                                  "None"))
    rows = []
    for t in ts:
        params = point(t)
        if norms:
            net = copy.deepcopy(model)
            with torch.no_grad():
                for name, p in net.named_parameters():
                    p.copy_(params[name])
            _recompute_batch_norm(net, torch.as_tensor(bn_x).float(), batch_size)
            loss, error = loss_and_error(net, None, xt, yt, batch_size=batch_size)
        else:
            loss, error = loss_and_error(model, params, xt, yt, batch_size=batch_size)
        rows.append({"t": float(t), "loss": loss, "error": error})
    return pd.DataFrame(rows)


def barrier(losses: Sequence[float], ts: Sequence[float] | None = None) -> float:
    """The loss barrier of a path: ``max_k [L(t_k) - ((1 - t_k) L(0) + t_k L(1))]`` (see the module docstring).

    Args:
        losses: ``L(t_k)`` at the evaluated points, the first at ``t = 0`` and the last at ``t = 1``.
        ts: the points (increasing, from 0 to 1); default evenly spaced.

    Returns:
        The barrier, >= 0 (the chord meets the loss at both ends).
    """
    values = np.asarray(losses, float)
    if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all():
        raise DataError(message("losses", "at least 2 finite losses along a path", f"{values.shape} values"
                                if values.ndim != 1 or len(values) < 2 else "a non-finite loss"))
    t = np.linspace(0.0, 1.0, len(values)) if ts is None else np.asarray(ts, float)
    if t.shape != values.shape or t[0] != 0.0 or t[-1] != 1.0 or np.any(np.diff(t) <= 0):
        raise DataError(message("ts", f"{len(values)} increasing points from 0 to 1 (one per loss)",
                                f"{t.shape[0] if t.ndim == 1 else t.shape} points from "
                                f"{t.flat[0] if t.size else '-'} to {t.flat[-1] if t.size else '-'}"))
    chord = (1.0 - t) * values[0] + t * values[-1]
    return float(max(0.0, np.max(values - chord)))


# --------------------------------------------------------------------------- the Bezier curve


@dataclass
class BezierCurve:
    """A trained quadratic Bezier curve between two networks (Garipov et al. 2018).

    Attributes:
        w_a, w_b: the end points' parameters (fixed).
        theta: the trained bend.
        losses: the training loss of each epoch (mean over its batches, each at its own ``t``).
        seed: the seed of the batch order and the ``t`` draws.
    """

    w_a: Params
    theta: Params
    w_b: Params
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seed: int = 0

    def point(self, t: float) -> Params:
        """The curve's parameters at ``t`` in [0, 1]."""
        return bezier_point(self.w_a, self.theta, self.w_b, t)


def train_bezier(model: nn.Module, model_b: nn.Module, x, y, *, epochs: int, seed: int, batch_size: int = 64,
                 lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0,
                 progress: Callable[[int], None] | None = None) -> BezierCurve:
    """Train the bend ``theta`` of the quadratic Bezier curve from ``model`` (``A``) to ``model_b`` (``B``).

    ``theta`` starts at the midpoint ``(wA + wB) / 2`` and minimises the expected
    loss over the curve, ``E_{t ~ U[0,1]} L(phi_theta(t))``, by minibatch SGD
    (cross-entropy): each batch draws its own ``t`` and takes one step on
    ``L(phi_theta(t))``, as Garipov et al. 2018 do. The batch order and the ``t``
    draws come from ``seed``. Batch norm is not trained through (its statistics
    are recomputed per point by :func:`path_losses`); the model is used in
    training mode only if it has none.

    Args:
        model, model_b: the two trained end points (of the same architecture).
        x, y: training rows ``(n, *input_shape)`` and labels ``(n,)``.
        epochs: passes over the rows.
        seed: seed of the batch order and the ``t`` draws.
        batch_size, lr, momentum, weight_decay: SGD on ``theta``.
        progress: called with the epochs done after each epoch.

    Returns:
        A :class:`BezierCurve`.
    """
    check_same_architecture(model, model_b, names=("model", "model_b"))
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_number(lr, "lr", low=0.0, open_low=True)
    seed = check_seed(seed)
    xt, yt = _tensors(x, y, "x/y")
    w_a = {k: v.clone() for k, v in parameters_of(model).items()}
    w_b = {k: v.clone() for k, v in parameters_of(model_b).items()}
    theta = {k: ((w_a[k] + w_b[k]) / 2).requires_grad_(True) for k in w_a}
    opt = torch.optim.SGD(list(theta.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    t_gen = torch.Generator().manual_seed(derive_seed(seed, "t"))
    net = copy.deepcopy(model)
    net.eval()  # no dropout noise on the curve; batch-norm statistics are recomputed when evaluating
    n = len(xt)
    losses = np.zeros(epochs)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total, steps = 0.0, 0
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            t = float(torch.rand((), generator=t_gen))
            out = torch.func.functional_call(net, bezier_point(w_a, theta, w_b, t), (xt[rows],))
            loss = F.cross_entropy(out, yt[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses[epoch] = total / steps
        if progress is not None:
            progress(epoch + 1)
    return BezierCurve(w_a=w_a, theta={k: v.detach() for k, v in theta.items()}, w_b=w_b, losses=losses, seed=seed)


# --------------------------------------------------------------------------- dropout stability


def _default_layers(model: nn.Module) -> list[str]:
    """The hidden layers of a model: its elementwise activation modules, in order."""
    return [name for name, m in model.named_modules() if isinstance(m, ELEMENTWISE)]


def _units(model: nn.Module, layers: Sequence[str], x: torch.Tensor) -> dict[str, int]:
    """Units (features or channels: dimension 1 of the output) of each named layer, from one forward pass."""
    widths: dict[str, int] = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: widths.__setitem__(name, int(o.shape[1]))) for name in layers]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return widths


def dropout_masks(widths: dict[str, int], *, fraction: float = 0.5, seed: int) -> dict[str, torch.Tensor]:
    """For each layer, a 0/1 mask that keeps ``width - round(fraction * width)`` units drawn at random.

    Layer ``name``'s draw comes from ``derive_seed(seed, name)`` alone, so it
    does not depend on the other layers.
    """
    fraction = check_fraction(fraction, "fraction", open_high=True)
    seed = check_seed(seed)
    masks = {}
    for name, width in widths.items():
        drop = int(round(fraction * width))
        gen = torch.Generator().manual_seed(derive_seed(seed, name))
        mask = torch.ones(width)
        mask[torch.randperm(width, generator=gen)[:drop]] = 0.0
        masks[name] = mask
    return masks


@torch.no_grad()
def dropout_forward(model: nn.Module, x: torch.Tensor, masks: dict[str, torch.Tensor], *, scale: float = 2.0,
                    params: Params | None = None) -> torch.Tensor:
    """The model's output when each named layer's output is multiplied by ``scale * masks[name]`` along dim 1.

    A unit with mask 0 is dropped (its output is 0); the kept units are scaled
    by ``scale`` (2 for half of them dropped, so the next layer's input keeps
    its mean). ``params``: parameters to use instead of the model's own.
    """
    def hook(mask):
        def scale_output(module, inputs, output):
            shape = [1, len(mask)] + [1] * (output.ndim - 2)
            return output * (scale * mask).view(shape).to(output.dtype)
        return scale_output

    hooks = [model.get_submodule(name).register_forward_hook(hook(mask)) for name, mask in masks.items()]
    try:
        with eval_mode(model):
            return model(x) if params is None else torch.func.functional_call(model, params, (x,))
    finally:
        for h in hooks:
            h.remove()


def dropout_stability(model: nn.Module, x, y, *, seed: int, layers: Sequence[str] | None = None, draws: int = 5,
                      fraction: float = 0.5, batch_size: int = 2048) -> pd.DataFrame:
    """Loss and error after dropping a random ``fraction`` of one layer's units and scaling the rest.

    For each layer alone (and ``"all"``: every listed layer at once), ``draws``
    seeded draws; the kept units are scaled by ``1 / (1 - fraction)`` (2 for
    half). A dropout-stable network (Kuditipudi et al. 2019) keeps its loss.

    Args:
        model: a trained module.
        x, y: rows ``(n, *input_shape)`` and labels ``(n,)``.
        seed: draw ``d`` uses :func:`dropout_masks` with ``derive_seed(seed, "draw", d)``.
        layers: names of the modules whose outputs are the hidden units (default: every elementwise
            activation module, e.g. ``relu1, relu2`` of an MLP).
        draws: seeded draws per layer.
        fraction: share of the units dropped, in [0, 1).
        batch_size: rows per forward pass.

    Returns:
        One row per (layer, draw): ``layer``, ``draw``, ``units``, ``kept``, ``loss``, ``error``; first a row
        ``layer="none"`` (``draw=-1``) with the undropped network.
    """
    xt, yt = _tensors(x, y, "x/y")
    seed = check_seed(seed)
    draws = check_int(draws, "draws")
    fraction = check_fraction(fraction, "fraction", open_high=True)
    names = list(layers) if layers is not None else _default_layers(model)
    known = dict(model.named_modules())
    for name in names:
        if name not in known or name == "":
            raise ConfigError(message("layers", f"names of modules of the model ({', '.join(_default_layers(model))}"
                                      " are its activations)", repr(name)))
    if not names:
        raise ConfigError(message("model", "a model with hidden layers (elementwise activation modules)",
                                  type(model).__name__))
    widths = _units(model, names, xt)
    loss, error = loss_and_error(model, None, xt, yt, batch_size=batch_size)
    rows = [{"layer": "none", "draw": -1, "units": 0, "kept": 0, "loss": loss, "error": error}]
    groups = [[n] for n in names] + ([names] if len(names) > 1 else [])
    for group in groups:
        for d in range(draws):
            masks = dropout_masks({n: widths[n] for n in group}, fraction=fraction, seed=derive_seed(seed, "draw", d))
            total, wrong = 0.0, 0
            for start in range(0, len(xt), batch_size):
                out = dropout_forward(model, xt[start:start + batch_size], masks, scale=1.0 / (1.0 - fraction))
                yb = yt[start:start + batch_size]
                total += float(F.cross_entropy(out, yb, reduction="sum"))
                wrong += int((out.argmax(1) != yb).sum())
            rows.append({"layer": group[0] if len(group) == 1 else "all", "draw": d,
                         "units": sum(widths[n] for n in group), "kept": int(sum(float(masks[n].sum()) for n in group)),
                         "loss": total / len(xt), "error": wrong / len(xt)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the dropout path (Kuditipudi et al.)


def mlp_layers(model: nn.Module, *, name: str = "model") -> list[str]:
    """The names of the ``nn.Linear`` layers of an MLP, in order (the last is the output layer).

    The model must be a chain of ``nn.Linear`` layers with biases and elementwise activations (``Flatten``,
    ``Dropout`` and ``Identity`` allowed) with hidden layers of even width, as :func:`dropout_path` needs;
    otherwise a one-line :class:`ConfigError` naming ``name``.
    """
    linears: list[str] = []
    for mod_name, m in model.named_modules():
        if m is model or len(list(m.children())):
            continue
        if isinstance(m, nn.Linear):
            if linears:
                prev = model.get_submodule(linears[-1])
                if prev.out_features != m.in_features:
                    raise ConfigError(message(name, "a chain of nn.Linear layers (each reading the previous one)",
                                              f"{mod_name!r} reading {m.in_features} features after "
                                              f"{prev.out_features}"))
            if m.bias is None:
                raise ConfigError(message(name, "nn.Linear layers with biases", f"{mod_name!r} without one"))
            linears.append(mod_name)
        elif not isinstance(m, ELEMENTWISE + PASS_THROUGH):
            raise ConfigError(message(name, "an MLP of nn.Linear layers and elementwise activations (the dropout path "
                                      "is built for MLPs)", f"a {type(m).__name__} at {mod_name!r}"))
    if len(linears) < 2:
        raise ConfigError(message(name, "an MLP with at least one hidden layer", f"{len(linears)} nn.Linear layer(s)"))
    odd = [(n, model.get_submodule(n).out_features) for n in linears[:-1]
           if model.get_submodule(n).out_features % 2]
    if odd:
        raise ConfigError(message(name, "hidden layers of even width (half the units host the other network)",
                                  f"{odd[0][0]!r} of width {odd[0][1]}"))
    return linears


@dataclass
class DropoutPath:
    """A piecewise-linear path through parameter space, its corners and what each segment does.

    Attributes:
        waypoints: the corners' parameter dicts, ``waypoints[0] = wA``, ``waypoints[-1] = wB``.
        kinds: per segment, ``"switch"`` (only the output layer moves: the output is linear in t along it,
            so a convex loss stays below the larger end) or ``"free"`` (only units whose outgoing weights are
            zero move: the output is the same all along).
        labels: per corner, which network it computes (``"A"``, ``"A drop 2..2"``, ``"A drop 1..2"``, ...).
        keep_a, keep_b: per hidden layer (its ``nn.Linear`` name), the units of A and of B kept in their dropped
            versions (B keeps the complement of A's).
    """

    waypoints: list[Params]
    kinds: list[str]
    labels: list[str]
    keep_a: dict[str, torch.Tensor]
    keep_b: dict[str, torch.Tensor]

    @property
    def segments(self) -> int:
        """The number of line segments."""
        return len(self.waypoints) - 1

    def corners(self) -> np.ndarray:
        """The path parameter ``t`` of each corner: segment ``k`` spans ``[k / segments, (k + 1) / segments]``."""
        return np.linspace(0.0, 1.0, len(self.waypoints))

    def point(self, t: float) -> Params:
        """The path's parameters at ``t`` in [0, 1] (each segment takes an equal share of ``t``)."""
        t = min(max(float(t), 0.0), 1.0)
        k = min(int(math.floor(t * self.segments)), self.segments - 1)
        local = t * self.segments - k
        if local == 0.0:
            return self.waypoints[k]
        if local == 1.0:
            return self.waypoints[k + 1]
        return interpolate(self.waypoints[k], self.waypoints[k + 1], local)


def _write_dropped(current: Params, linears: list[str], source: Params, keep: list[torch.Tensor],
                   slots: list[torch.Tensor], first: int) -> None:
    """Write the dropped-out ``source`` (hidden layers ``first..d-1`` dropped, keeping ``keep[j]``) into the rows of
    the units ``slots[j]`` of hidden layers ``first..d-1`` of ``current`` (the output layer is left alone).

    Hidden layer ``j`` (0-based: the output of ``linears[j]``) then holds the source's kept unit ``keep[j][k]`` at
    ``slots[j][k]``. Layer ``first`` reads the whole layer below it (or the input) with the source's weights; a
    layer above reads only the kept units of the layer below, at their slots, with their weights doubled (the
    rescaling of the dropped-out network), and nothing else.
    """
    for j in range(first, len(linears) - 1):
        w, b = current[f"{linears[j]}.weight"], current[f"{linears[j]}.bias"]
        w_src, b_src = source[f"{linears[j]}.weight"], source[f"{linears[j]}.bias"]
        b[slots[j]] = b_src[keep[j]]
        if j == first:
            w[slots[j]] = w_src[keep[j]]
        else:
            w[slots[j]] = 0.0
            w[slots[j][:, None], slots[j - 1][None, :]] = 2.0 * w_src[keep[j]][:, keep[j - 1]]


def _read_top(current: Params, linears: list[str], source: Params, keep: list[torch.Tensor],
              slots: list[torch.Tensor]) -> None:
    """Make the output layer of ``current`` read the dropped-out ``source``'s last hidden layer at ``slots``."""
    top = linears[-1]
    w = current[f"{top}.weight"]
    w.zero_()
    w[:, slots[-1]] = 2.0 * source[f"{top}.weight"][:, keep[-1]]
    current[f"{top}.bias"].copy_(source[f"{top}.bias"])


def _drop_chain(source: Params, linears: list[str], keep: list[torch.Tensor], other: list[torch.Tensor], name: str
                ) -> tuple[list[Params], list[str], list[str], list[torch.Tensor]]:
    """The corners from ``source`` to its network with every hidden layer dropped, one layer at a time from the top.

    Stage ``first`` (``d-1`` down to ``0``) goes from the network with hidden layers ``first+1..d-1`` dropped to
    the one with ``first..d-1`` dropped: a free segment writes the new network into the free half of layers
    ``first+1..d-1`` (units nothing reads), then a switch segment moves the output layer from the old half to the
    new one (only the output layer changes, so the output is linear in t along it). A dropped layer's kept units
    alternate between the positions ``keep[j]`` and ``other[j]`` from stage to stage.

    Returns:
        ``(corners, kinds, labels, slots)``: the corners after ``source`` (which is not included), each segment's
        kind, each corner's label, and where the kept units sit at the end.
    """
    d = len(linears) - 1
    current = {k: v.clone() for k, v in source.items()}
    slots = [keep[j] for j in range(d)]
    corners, kinds, labels = [], [], []
    for first in range(d - 1, -1, -1):
        new = list(slots)
        for j in range(first + 1, d):
            new[j] = other[j] if torch.equal(slots[j], keep[j]) else keep[j]
        if first < d - 1:
            _write_dropped(current, linears, source, keep, new, first)
            corners.append({k: v.clone() for k, v in current.items()})
            kinds.append("free")
            labels.append(f"{name}, layers {first + 2}-{d} dropped, copy of layers {first + 1}-{d} dropped beside it")
        _read_top(current, linears, source, keep, new)
        corners.append({k: v.clone() for k, v in current.items()})
        kinds.append("switch")
        labels.append(f"{name}, hidden layers {first + 1}-{d} dropped" if first < d - 1 else
                      f"{name}, hidden layer {d} dropped")
        slots = new
    return corners, kinds, labels, slots


def dropout_path(model: nn.Module, model_b: nn.Module, *, seed: int) -> DropoutPath:
    """The piecewise-linear path of Kuditipudi et al. 2019 from ``model`` (``A``) to ``model_b`` (``B``).

    Both must be MLPs: ``nn.Linear`` layers with biases, elementwise activations
    between them (``Flatten``/``Dropout``/``Identity`` allowed), hidden layers of
    even width. Each hidden layer ``j`` is split at random (from ``seed``) into
    halves: ``A`` keeps ``K_j``, ``B`` keeps the other half. "Dropping" a layer
    keeps those units and doubles their outgoing weights (the others' outgoing
    weights become 0): the dropout-stable versions of the paper, with ``r = 2``.

    The path, in the order of the paper's proof of its Theorem 1:

    1. ``A`` to ``A`` with every hidden layer dropped, from the top layer down
       (:func:`_drop_chain`): per layer a *free* segment (only units whose
       outgoing weights are 0 move, so the output is constant) and a *switch*
       segment (only the output layer moves, so the output is the linear
       interpolation of the two ends' outputs and a convex loss stays below the
       larger of the two ends).
    2. A free segment writing ``B``'s dropped-out network into the half of
       every hidden layer that ``A``'s dropped network leaves unused; a switch
       segment moving the output layer from ``A``'s half to ``B``'s; a free
       segment that rewrites the now unused half as ``B``'s own chain left it.
    3. ``B``'s chain of step 1, backwards, to ``B``.

    So the loss along the path is at most the largest loss of its corners:
    ``A``, ``B`` and their dropped-out versions (layers ``i..d`` dropped for
    every ``i``); a dropout-stable pair is connected at low loss.

    Where this simplifies the paper: the units kept are a uniformly random
    half (the paper's dropout stability asks that *some* half keeps the loss);
    the rescaling factor is fixed at 2; only MLPs (the paper also covers
    convolutional layers, by channels, and gives a second construction from
    noise stability, not implemented here). The paper's path has ``O(d)``
    segments (here ``4d + 1`` for ``d`` hidden layers); its "as few as two
    segments" refers to the paths found by training (Garipov et al.), not
    to this construction.

    Args:
        model, model_b: the two networks (same architecture; ConfigError naming ``model_b`` otherwise).
        seed: seed of the halves (``derive_seed(seed, "half", layer name)``).

    Returns:
        A :class:`DropoutPath`.
    """
    check_same_architecture(model, model_b, names=("model", "model_b"))
    linears = mlp_layers(model, name="model")
    seed = check_seed(seed)
    d = len(linears) - 1
    pa = {k: v.clone() for k, v in parameters_of(model).items()}
    pb = {k: v.clone() for k, v in parameters_of(model_b).items()}
    keep_a, keep_b = [], []
    for j in range(d):
        width = model.get_submodule(linears[j]).out_features
        gen = torch.Generator().manual_seed(derive_seed(seed, "half", linears[j]))
        order = torch.randperm(width, generator=gen)
        keep_a.append(torch.sort(order[: width // 2]).values)
        keep_b.append(torch.sort(order[width // 2:]).values)
    corners_a, kinds_a, labels_a, slots_a = _drop_chain(pa, linears, keep_a, keep_b, "A")
    corners_b, kinds_b, labels_b, slots_b = _drop_chain(pb, linears, keep_b, keep_a, "B")
    if any(set(sa.tolist()) & set(sb.tolist()) for sa, sb in zip(slots_a, slots_b)):  # the parity argument
        raise AssertionError("dropout_path: the dropped networks of A and B overlap")  # a bug, not bad input
    current = {k: v.clone() for k, v in corners_a[-1].items()}
    _write_dropped(current, linears, pb, keep_b, slots_b, 0)
    junction = [{k: v.clone() for k, v in current.items()}]
    _read_top(current, linears, pb, keep_b, slots_b)
    junction.append({k: v.clone() for k, v in current.items()})
    junction.append(corners_b[-1])
    waypoints = [pa] + corners_a + junction + corners_b[-2::-1] + [pb]
    kinds = kinds_a + ["free", "switch", "free"] + kinds_b[::-1]
    labels = (["A"] + labels_a + ["A dropped, B dropped copied beside it", "B dropped, A dropped beside it"]
              + labels_b[::-1] + ["B"])
    names = linears[:-1]
    return DropoutPath(waypoints=waypoints, kinds=kinds, labels=labels, keep_a=dict(zip(names, keep_a)),
                       keep_b=dict(zip(names, keep_b)))
