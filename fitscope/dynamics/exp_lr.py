"""The exponential learning-rate schedule equivalent to weight decay on a scale-invariant network (Li & Arora 2019).

Notation: ``theta`` are the trainable parameters of a network whose loss is
*scale-invariant*, ``L(c theta) = L(theta)`` for every ``c > 0`` (batch norm
after every trained layer, no trained parameter after the last one), so that
``grad L(c theta) = grad L(theta) / c``. Training runs for ``T`` steps ``t = 0 ..
T-1`` with the learning rate ``eta_t`` (any schedule: step, cosine, ...),
weight decay ``lambda`` and heavy-ball momentum ``gamma`` in PyTorch's form
(``torch.optim.SGD``; no dampening, no Nesterov)::

    v_{t+1} = gamma v_t + grad L(theta_t) + lambda theta_t,   v_0 = 0
    theta_{t+1} = theta_t - eta_t v_{t+1}

**Claim.** The same network trained from the same ``theta_0`` with the same
minibatches, the same momentum ``gamma``, *no* weight decay and the learning
rates ``eta~_t = eta_t c_t c_{t+1}`` has weights ``theta~_t = c_t theta_t`` at
every step, so it computes exactly the same function. The scales are
``c_0 = 1``, ``c_{t+1} = r_t c_t`` with

    1 / r_0 = 1 - eta_0 lambda
    1 / r_t = 1 - eta_t lambda + gamma (eta_t / eta_{t-1}) (1 - r_{t-1}),   t >= 1.

**Derivation.** Eliminating ``v`` (``v_t = (theta_{t-1} - theta_t) / eta_{t-1}``)
gives the second-order form, with ``beta_t = gamma eta_t / eta_{t-1}``::

    theta_{t+1} = (1 - eta_t lambda + beta_t) theta_t - beta_t theta_{t-1} - eta_t grad L(theta_t)     (WD)
    theta~_{t+1} = (1 + beta~_t) theta~_t - beta~_t theta~_{t-1} - eta~_t grad L(theta~_t)            (no WD)

Put ``theta~_s = c_s theta_s`` into (no WD); scale invariance turns the
gradient into ``grad L(theta_t) / c_t``; divide by ``c_{t+1}``::

    theta_{t+1} = (1 + beta~_t) (c_t / c_{t+1}) theta_t - beta~_t (c_{t-1} / c_{t+1}) theta_{t-1}
                  - eta~_t / (c_t c_{t+1}) grad L(theta_t).

This is (WD) for every ``theta`` exactly when the three coefficients agree:
``eta~_t = eta_t c_t c_{t+1}``, ``beta~_t = beta_t c_{t+1} / c_{t-1}`` and
``(1 + beta~_t) c_t / c_{t+1} = 1 - eta_t lambda + beta_t``; the last two give
the recursion for ``r_t`` above. The momentum of the no-WD run is then
``gamma~_t = beta~_t eta~_{t-1} / eta~_t = beta_t eta_{t-1} / eta_t = gamma``:
unchanged. The first step has no momentum (``v_0 = 0``, ``beta_0 = 0``), so
``r_0 = 1 / (1 - eta_0 lambda)``. Without momentum (``gamma = 0``) and at a
constant ``eta`` this is ``eta~_t = eta (1 - eta lambda)^(-2t-1)``, the
warm-up case of the paper. With momentum at a constant ``eta`` the recursion
converges to the fixed point ``r* = 1 / x`` where ``x`` is the larger root of
``x^2 - (1 + gamma - eta lambda) x + gamma = 0``: the paper's Theorem (its
``eta~_t = eta beta^(-2t-1)`` starts at that fixed point by choosing the initial
momentum buffer; ours starts from PyTorch's zero buffer, so the first steps
differ from the closed form and the recursion is the exact statement). At a
step of the schedule ``eta_t / eta_{t-1}`` jumps, and ``eta~`` drops by about
that factor and then grows at the new phase's rate: the paper's TEXP.

The equivalence needs ``1 / r_t > 0`` at every step (``eta_t lambda < 1``
without momentum); :func:`equivalent_exp_schedule` refuses a schedule for
which it fails. It also needs the loss to be scale-invariant in *all* the
trained parameters: :func:`is_scale_invariant` checks that numerically on a
batch; batch norm's ``eps`` breaks it slightly (``var + eps`` does not scale),
so the networks of the study use a negligible one.

Predictions of a batch-norm network depend on the statistics it normalizes
with: the batch statistics (training mode) are scale-invariant, but running
averages are not (they mix batches computed at different weight scales), so
:func:`predict_with_fresh_statistics` recomputes the statistics on a given set
of rows (e.g. all the training rows) at the current weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.train.modes import eval_mode
from fitscope.validation import message

__all__ = ["SCHEDULES", "ExpSchedule", "ScaleInvariance", "check_scale_invariant", "equivalent_exp_schedule",
           "is_scale_invariant", "lr_schedule", "predict_with_fresh_statistics"]

#: the names :func:`lr_schedule` knows
SCHEDULES = ("step", "constant", "cosine")


def lr_schedule(name: str, lr: float, steps: int, *, milestones: tuple[float, ...] = (0.5, 0.75),
                decay: float = 0.1) -> np.ndarray:
    """Per-step learning rates ``eta_0 .. eta_{steps-1}`` of a named schedule.

    Args:
        name: ``"step"`` (``lr`` times ``decay`` at each milestone), ``"constant"`` or
            ``"cosine"`` (from ``lr`` down to 0, without reaching it: ``lr (1 + cos(pi t / steps)) / 2``).
        lr: the initial learning rate, finite and > 0.
        steps: number of steps, >= 1.
        milestones: for ``"step"``: the fractions of ``steps`` at which the rate is multiplied by ``decay``
            (each in (0, 1), increasing).
        decay: the factor of a step, in (0, 1].

    Returns:
        ``(steps,)`` float64 array.
    """
    if name not in SCHEDULES:
        raise ConfigError(message("--schedule", f"one of {', '.join(SCHEDULES)}", repr(name)))
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(message("--lr", "a finite learning rate > 0", repr(lr)))
    if int(steps) < 1:
        raise ConfigError(message("--steps", "at least 1 step", repr(steps)))
    t = np.arange(int(steps))
    if name == "constant":
        return np.full(len(t), float(lr))
    if name == "cosine":
        return lr * (1 + np.cos(np.pi * t / len(t))) / 2
    if not (0 < decay <= 1):
        raise ConfigError(message("--decay", "a factor in (0, 1]", repr(decay)))
    if any(not (0 < m < 1) for m in milestones) or list(milestones) != sorted(set(milestones)):
        raise ConfigError(message("--milestones", "increasing fractions of the steps in (0, 1)", repr(list(milestones))))
    at = [int(round(m * len(t))) for m in milestones]
    return lr * decay ** np.searchsorted(np.asarray(at), t, side="right")


@dataclass(frozen=True)
class ExpSchedule:
    """The no-weight-decay schedule equivalent to ``(lr_schedule, weight_decay, momentum)``.

    Attributes:
        lrs: ``(T,)`` the learning rates ``eta~_t = eta_t c_t c_{t+1}`` of the run without weight decay.
        scale: ``(T+1,)`` the factors ``c_t``: its weights are ``c_t`` times those of the weight-decay run.
        momentum: the momentum of both runs (unchanged).
        growth: ``(T,)`` the per-step growth ``r_t = c_{t+1} / c_t``.
    """

    lrs: np.ndarray
    scale: np.ndarray
    momentum: float
    growth: np.ndarray = field(repr=False)


def equivalent_exp_schedule(lr_schedule, weight_decay: float, momentum: float = 0.0) -> ExpSchedule:
    """The exponentially growing learning rates that, without weight decay, reproduce a weight-decay run.

    For a scale-invariant loss, SGD (``torch.optim.SGD`` with ``momentum`` and
    ``weight_decay``) at the per-step rates ``lr_schedule`` and SGD with the same
    momentum, no weight decay and the returned ``lrs`` compute the same function
    at every step (derivation in the module docstring).

    Args:
        lr_schedule: ``(T,)`` learning rates, finite and > 0.
        weight_decay: ``lambda`` >= 0.
        momentum: ``gamma`` in [0, 1).

    Returns:
        An :class:`ExpSchedule`.

    Raises:
        ConfigError: a rate or the weight decay out of range, or a step at which ``1 / r_t <= 0`` (the weight
            decay shrinks by a non-positive factor: ``lr * weight_decay >= 1`` without momentum).
    """
    lrs = np.asarray(lr_schedule, dtype=np.float64).reshape(-1)
    if not len(lrs) or not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
        bad = lrs[~(np.isfinite(lrs) & (lrs > 0))]
        raise ConfigError(message("lr_schedule", "at least one finite learning rate > 0",
                                  repr(float(bad[0])) if len(bad) else "none"))
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(message("--weight-decay", "a finite weight decay >= 0", repr(weight_decay)))
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ConfigError(message("--momentum", "a momentum in [0, 1)", repr(momentum)))
    n = len(lrs)
    growth = np.empty(n)
    for t in range(n):
        inverse = 1.0 - lrs[t] * weight_decay
        if t > 0:
            inverse += momentum * lrs[t] / lrs[t - 1] * (1.0 - growth[t - 1])
        if not inverse > 0:
            raise ConfigError(message(
                "--lr/--weight-decay", "a learning rate and weight decay whose per-step shrink factor stays > 0 "
                "(lr x weight_decay < 1 without momentum; with momentum, at a constant rate, "
                "(1 + momentum - lr x weight_decay)^2 >= 4 momentum)",
                f"a factor {inverse:.4g} at step {t} (lr {lrs[t]:g} x weight_decay {weight_decay:g} = "
                f"{lrs[t] * weight_decay:.4g}, momentum {momentum:g})"))
        growth[t] = 1.0 / inverse
    scale = np.concatenate([[1.0], np.cumprod(growth)])
    return ExpSchedule(lrs=lrs * scale[:-1] * scale[1:], scale=scale, momentum=float(momentum), growth=growth)


# --------------------------------------------------------------------------- scale invariance of a network


@dataclass(frozen=True)
class ScaleInvariance:
    """The result of :func:`is_scale_invariant`.

    Attributes:
        invariant: the outputs stayed the same (within ``tol``) when all trained parameters were scaled.
        max_difference: the largest ``|f(c theta) - f(theta)|`` over the factors, relative to ``max |f(theta)|``.
        offenders: names of the modules whose own parameters, scaled alone, change the outputs
            (empty when invariant).
    """

    invariant: bool
    max_difference: float
    offenders: tuple[str, ...] = ()


def _outputs(model: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.func.functional_call(model, params, (x,))


def is_scale_invariant(model: nn.Module, x: torch.Tensor, *, factors=(0.5, 4.0), tol: float = 1e-8) -> ScaleInvariance:
    """Whether ``model``'s outputs on the batch ``x`` are unchanged when all its trained parameters are scaled.

    The check runs on a float64 copy in training mode (batch statistics; the
    model itself and its running statistics are untouched), for each factor in
    ``factors``. Where it fails, each module's own trained parameters are then
    scaled alone to name the ones that break it (a linear layer not followed
    by a normalization, a trained output layer, a normalization's affine
    parameters that feed an unnormalized layer).

    Args:
        model: any ``nn.Module``.
        x: a batch of at least 2 inputs.
        factors: the scale factors tried (each > 0, != 1).
        tol: the largest relative change of the outputs allowed.

    Returns:
        A :class:`ScaleInvariance`.
    """
    probe = copy.deepcopy(model).double().train()
    xd = x.detach().to(torch.float64)
    trained = {name: p.detach() for name, p in probe.named_parameters() if p.requires_grad}
    if not trained:
        raise ConfigError(message("model", "a model with trained parameters", "none"))
    frozen = {**{n: p.detach() for n, p in probe.named_parameters() if not p.requires_grad},
              **dict(probe.named_buffers())}
    with torch.no_grad():
        base = _outputs(probe, {**frozen, **trained}, xd)
        scale = float(base.abs().max()) or 1.0

        def change(names) -> float:
            worst = 0.0
            for c in factors:
                params = {**frozen, **{n: (p * c if n in names else p) for n, p in trained.items()}}
                worst = max(worst, float((_outputs(probe, params, xd) - base).abs().max()) / scale)
            return worst

        worst = change(set(trained))
        if worst <= tol:
            return ScaleInvariance(True, worst)
        modules: dict[str, set] = {}
        for name in trained:
            modules.setdefault(name.rpartition(".")[0] or name, set()).add(name)
        offenders = tuple(module for module, names in modules.items() if change(names) > tol)
    return ScaleInvariance(False, worst, offenders)


def check_scale_invariant(model: nn.Module, x: torch.Tensor, *, name: str = "model", tol: float = 1e-8) -> float:
    """Raise a one-line ConfigError naming the offending layers unless ``model`` is scale-invariant on ``x``.

    Returns:
        The largest relative change of the outputs under scaling (at most ``tol``).
    """
    result = is_scale_invariant(model, x, tol=tol)
    if not result.invariant:
        which = ", ".join(repr(m) for m in result.offenders) or "the trained parameters taken together"
        raise ConfigError(message(
            name, "a scale-invariant network (batch norm after every trained layer, no trained parameter after the "
                  "last normalization)", f"outputs that change by {result.max_difference:.3g} (relative) when the "
                                         f"weights are scaled; not invariant: {which}"))
    return result.max_difference


# --------------------------------------------------------------------------- predictions


_NORMS = (nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def predict_with_fresh_statistics(model: nn.Module, x_stats: torch.Tensor, x: torch.Tensor | list) -> list:
    """Outputs on ``x`` (one tensor or a list) with every batch norm using the statistics of ``x_stats``.

    The statistics are recomputed at the current weights (one forward pass of
    ``x_stats`` in training mode with a cumulative average), then the
    model predicts in evaluation mode; the model's running statistics, momenta
    and mode are restored afterwards. Unlike running averages, these
    statistics scale with the weights, so the predictions of a scale-invariant
    network do not depend on its weights' scale.

    Returns:
        The list of output tensors, one per input tensor.
    """
    xs = [x] if isinstance(x, torch.Tensor) else list(x)
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    try:
        with eval_mode(model):
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            model(x_stats)
            model.eval()
            return [model(xi) for xi in xs]
    finally:
        for m, (momentum, mean, var, count) in zip(norms, saved):
            m.momentum = momentum
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
