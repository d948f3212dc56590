"""Evasion attacks on any classifier and its accuracy under them: PGD in L-inf / L2, and two L0 attacks.

Notation: n rows, C classes; ``model`` is any ``torch.nn.Module`` mapping a
batch ``(b, *input_shape)`` to logits ``(b, C)``; ``x`` is ``(n, *input_shape)``,
``y`` is ``(n,)``. A *pixel* is one spatial position (all channels at it): the
last two axes of an image ``(channels, H, W)``, the last axis of a signal
``(channels, L)``, each entry of a flat vector.

- :func:`pgd_attack`: PGD of Madry et al. 2018 on the cross-entropy, through
  the training engine's primitive :func:`fitscope.train.adversarial.pgd_perturb`
  (random start, ``steps`` steps of ``step_size``, projection onto the ball,
  clip to the input range); with ``restarts`` each row keeps the restart of
  the highest margin ``max_{j != y} z_j - z_y`` (positive: misclassified), so
  a row counts as broken if any restart broke it.
- :func:`l0_pixel_attack`: PGD_0 of Croce & Hein 2019 ("Sparse and
  Imperceivable Adversarial Attacks", ICCV): ascent steps on the
  cross-entropy along the L1-normalized gradient, each followed by the exact
  projection onto ``{delta : at most k pixels changed, x + delta in [low, high]}``
  (per pixel, the clipped change and the gain of keeping it,
  ``||v||^2 - ||v - clip(v)||^2``; the k pixels of largest gain are kept, the
  rest reset). Written here: no installed library has an L0 attack with this
  pixel budget (ART's is a JSMA for a single-channel saliency map).
- :func:`patch_attack`: a square patch of ``size x size`` pixels (a segment of
  ``size`` for signals), its content free in ``[low, high]`` and optimized by
  signed-gradient ascent, tried at every position on a grid of ``stride``;
  each row keeps the position of highest margin. Budget: ``size ** 2`` pixels.
- :func:`robust_accuracy`: accuracy under one of them, as a :class:`RobustAccuracy`.

The model is run in eval mode (its training flag is restored afterwards);
every random draw comes from a generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.train.adversarial import check_norm_name, pgd_perturb
from fitscope.train.modes import eval_mode
from fitscope.validation import (
    as_array,
    check_choice,
    check_int,
    check_labels,
    check_number,
    check_seed,
    check_type,
    message,
)

#: the attacks :func:`robust_accuracy` runs, by name
ATTACKS = ("pgd", "l0", "patch")


# --------------------------------------------------------------------------- helpers


def pixel_axes(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial axes of one input (counted from 0 within the input): the last two of an image
    ``(channels, H, W)``, the last of a signal ``(channels, L)``, the only one of a vector."""
    return tuple(range(1, len(input_shape))) if len(input_shape) >= 2 else (0,)


def pixel_count(input_shape: tuple[int, ...]) -> int:
    """The number of pixels (spatial positions) of one input: ``H * W``, ``L`` or the vector's length."""
    return math.prod(input_shape[a] for a in pixel_axes(input_shape))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j - z_y`` per row: positive exactly when the row is misclassified (ties aside)."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return other - true


def _inputs(model, x, y) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    check_type(model, "model", nn.Module, "a torch.nn.Module mapping (b, *input_shape) inputs to (b, C) logits")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    x = as_array(x, "x").astype(np.float32, copy=False)
    if x.ndim < 2:
        raise ConfigError(message("x", "an array (n, *input_shape) of at least 2 dimensions", f"shape {x.shape}"))
    y = check_labels(y, "y", len(x), like="x")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64)), device


def _range(low, high, eps: float | None = None) -> tuple[float | None, float | None]:
    low = check_number(low, "low", allow_none=True)
    high = check_number(high, "high", allow_none=True)
    if low is not None and high is not None and not low < high:
        raise ConfigError(message("high", f"a number above low = {low:g}", f"{high:g}"))
    if eps is not None and low is not None and high is not None and eps > high - low:
        raise ConfigError(message("eps", f"a radius in [0, {high - low:g}] (the input range [{low:g}, {high:g}])",
                                  f"{eps:g}"))
    return low, high


def _chunks(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def _ce(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda z: nn.functional.cross_entropy(model(z), y, reduction="none")


# --------------------------------------------------------------------------- PGD (L-inf, L2)


def pgd_attack(model: nn.Module, x, y, *, eps: float, norm: str = "inf", steps: int = 20,
               step_size: float | None = None, restarts: int = 1, low: float | None = None,
               high: float | None = None, seed: int, batch_size: int = 512) -> np.ndarray:
    """PGD adversarial inputs ``(n, *input_shape)`` for ``model`` around ``x`` with labels ``y``.

    Args:
        model: any classifier module (batch in, logits out).
        x, y: ``(n, *input_shape)`` inputs and ``(n,)`` labels (NumPy or torch).
        eps: radius of the ball, in ``[0, high - low]`` when the range is given.
        norm: ``"inf"`` or ``"2"``.
        steps, step_size: PGD steps and their length (default ``2.5 eps / steps``).
        restarts: random restarts; each row keeps the one of highest margin.
        low, high: the input range (None: unbounded).
        seed: seed of the random starts.
        batch_size: rows per chunk.
    """
    norm = check_norm_name(norm)
    eps = check_number(eps, "eps", low=0.0, open_high=True)
    low, high = _range(low, high, eps)
    steps, restarts = check_int(steps, "steps"), check_int(restarts, "restarts")
    step_size = check_number(step_size, "step_size", low=0.0, open_low=True, open_high=True, allow_none=True)
    xt, yt, device = _inputs(model, x, y)
    gen = torch.Generator().manual_seed(check_seed(seed))
    out = []
    with eval_mode(model):
        for part in _chunks(len(xt), check_int(batch_size, "batch_size")):
            xb, yb = xt[part].to(device), yt[part].to(device)
            adv = pgd_perturb(_ce(model, yb), xb, eps=eps, norm=norm, steps=steps, step_size=step_size, low=low,
                              high=high, restarts=restarts, score=lambda z, yb=yb: margin(model(z), yb),
                              generators=gen)
            out.append(adv.cpu())
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- L0: a few pixels (PGD_0)


def _pixel_sum(v: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Sum of ``v`` ``(b, *input_shape)`` over the non-spatial (channel) axes: ``(b, *pixels)``."""
    if len(input_shape) >= 2:
        return v.sum(dim=1)
    return v


def l0_projection(delta: torch.Tensor, x: torch.Tensor, *, pixels: int, low: float | None,
                  high: float | None) -> torch.Tensor:
    """Project ``delta`` ``(b, *input_shape)`` onto {at most ``pixels`` pixels changed, ``x + delta`` in range}.

    Exact (Croce & Hein 2019, Lemma 3): each pixel's best kept value is ``delta`` clipped so ``x + delta``
    stays in range; keeping it lowers the squared distance by ``||v||^2 - ||v - clip(v)||^2`` (summed over
    channels); the ``pixels`` pixels of largest gain keep their clipped change, the others none.
    """
    shape = tuple(delta.shape[1:])
    clipped = delta if low is None and high is None else (x + delta).clamp(low, high) - x
    gain = _pixel_sum(delta ** 2 - (delta - clipped) ** 2, shape).reshape(len(delta), -1)
    top = gain.topk(pixels, dim=1).indices
    keep = torch.zeros_like(gain, dtype=torch.bool).scatter_(1, top, True)
    keep = keep.reshape(len(delta), *[shape[a] for a in pixel_axes(shape)])
    if len(shape) >= 2:
        keep = keep.unsqueeze(1)
    return clipped * keep


def _check_pixels(pixels, input_shape: tuple[int, ...], name: str = "pixels") -> int:
    total = pixel_count(input_shape)
    return check_int(pixels, name, low=1, high=total)


def l0_pixel_attack(model: nn.Module, x, y, *, pixels: int, steps: int = 20, step_size: float | None = None,
                    restarts: int = 1, low: float | None = None, high: float | None = None, seed: int,
                    batch_size: int = 512) -> np.ndarray:
    """Adversarial inputs that differ from ``x`` in at most ``pixels`` pixels (PGD_0, see the module docstring).

    Args:
        pixels: the budget, in ``[1, pixels per input]``.
        steps: ascent steps per restart.
        step_size: length of each step along ``g / ||g||_1 * d`` (``d`` values per input; Croce & Hein's
            scaling); default ``(high - low)`` when the range is given, else 1.
        restarts: random starts (uniform noise on ``pixels`` random pixels, then projected); each row keeps
            the restart of highest margin.
        low, high: the input range; seed: seed of the random starts; batch_size: rows per chunk.
    """
    low, high = _range(low, high)
    xt, yt, device = _inputs(model, x, y)
    shape = tuple(xt.shape[1:])
    pixels = _check_pixels(pixels, shape)
    steps, restarts = check_int(steps, "steps"), check_int(restarts, "restarts")
    span = (high - low) if low is not None and high is not None else 1.0
    step = check_number(step_size, "step_size", low=0.0, open_low=True, open_high=True, allow_none=True) or span
    d = math.prod(shape)
    gen = torch.Generator().manual_seed(check_seed(seed))
    out = []
    with eval_mode(model):
        for part in _chunks(len(xt), check_int(batch_size, "batch_size")):
            xb, yb = xt[part].to(device), yt[part].to(device)
            loss = _ce(model, yb)
            best, best_m = xb.clone(), torch.full((len(xb),), -math.inf, device=device)
            for _ in range(restarts):
                noise = ((torch.rand(xb.shape, generator=gen) * 2 - 1) * span).to(device)
                delta = l0_projection(noise, xb, pixels=pixels, low=low, high=high)
                for _ in range(steps):
                    z = (xb + delta).requires_grad_(True)
                    grad, = torch.autograd.grad(loss(z).sum(), z)
                    with torch.no_grad():
                        g1 = grad.abs().reshape(len(xb), -1).sum(1).clamp_min(1e-12)
                        moved = delta + step * d * grad / g1.reshape(-1, *([1] * len(shape)))
                        delta = l0_projection(moved, xb, pixels=pixels, low=low, high=high)
                with torch.no_grad():
                    m = margin(model(xb + delta), yb)
                    better = m > best_m
                    best = torch.where(better.reshape(-1, *([1] * len(shape))), xb + delta, best)
                    best_m = torch.where(better, m, best_m)
            out.append(best.cpu())
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- L0: a square patch


def patch_positions(input_shape: tuple[int, ...], size: int, stride: int) -> list[tuple[int, ...]]:
    """Top-left corners of the patches of side ``size`` on a grid of ``stride`` (the last corner always included)."""
    sides = [input_shape[a] for a in pixel_axes(input_shape)]
    per_axis = []
    for side in sides:
        starts = list(range(0, side - size + 1, stride))
        if starts[-1] != side - size:
            starts.append(side - size)
        per_axis.append(starts)
    grid = [()]
    for starts in per_axis:
        grid = [g + (s,) for g in grid for s in starts]
    return grid


def _patch_mask(input_shape: tuple[int, ...], corner: tuple[int, ...], size: int) -> torch.Tensor:
    mask = torch.zeros(input_shape, dtype=torch.bool)
    index = [slice(None)] * len(input_shape)
    for axis, start in zip(pixel_axes(input_shape), corner):
        index[axis] = slice(start, start + size)
    mask[tuple(index)] = True
    return mask


def patch_attack(model: nn.Module, x, y, *, size: int, steps: int = 20, stride: int = 1,
                 low: float | None = None, high: float | None = None, seed: int,
                 batch_size: int = 512) -> np.ndarray:
    """Adversarial inputs with one square patch (a segment for signals) of side ``size`` replaced.

    The patch's values are free in ``[low, high]``: a uniform random start, then ``steps`` signed-gradient
    ascent steps of ``(high - low) / 4`` on the cross-entropy, clipped to the range; every position of the
    ``stride`` grid is tried and each row keeps the one of highest margin.
    """
    low, high = _range(low, high)
    xt, yt, device = _inputs(model, x, y)
    shape = tuple(xt.shape[1:])
    size = check_int(size, "size", low=1, high=min(shape[a] for a in pixel_axes(shape)))
    steps, stride = check_int(steps, "steps"), check_int(stride, "stride")
    lo = 0.0 if low is None else low
    span = (high - low) if low is not None and high is not None else 1.0
    gen = torch.Generator().manual_seed(check_seed(seed))
    corners = patch_positions(shape, size, stride)
    out = []
    with eval_mode(model):
        for part in _chunks(len(xt), check_int(batch_size, "batch_size")):
            xb, yb = xt[part].to(device), yt[part].to(device)
            loss = _ce(model, yb)
            best, best_m = xb.clone(), torch.full((len(xb),), -math.inf, device=device)
            for corner in corners:
                mask = _patch_mask(shape, corner, size).to(device)
                z = torch.where(mask, (lo + torch.rand(xb.shape, generator=gen) * span).to(device), xb)
                for _ in range(steps):
                    z.requires_grad_(True)
                    grad, = torch.autograd.grad(loss(z).sum(), z)
                    with torch.no_grad():
                        z = torch.where(mask, z + span / 4 * grad.sign(), xb)
                        if low is not None or high is not None:
                            z = z.clamp(low, high)
                with torch.no_grad():
                    m = margin(model(z), yb)
                    better = m > best_m
                    best = torch.where(better.reshape(-1, *([1] * len(shape))), z, best)
                    best_m = torch.where(better, m, best_m)
            out.append(best.cpu())
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- accuracy under attack


@dataclass
class RobustAccuracy:
    """Accuracy of a classifier on clean rows and under one attack.

    Attributes:
        accuracy: robust accuracy, the share of rows classified right after the attack.
        clean_accuracy: the share classified right as given.
        correct: ``(n,)`` bool, right after the attack; ``clean_correct``: right as given.
        attack: the attack's name and settings (``{"attack": "pgd", "eps": 0.1, ...}``).
        x_adv: the ``(n, *input_shape)`` adversarial inputs.
    """

    accuracy: float
    clean_accuracy: float
    correct: np.ndarray
    clean_correct: np.ndarray
    attack: dict = field(default_factory=dict)
    x_adv: np.ndarray | None = field(default=None, repr=False)


def predict_labels(model: nn.Module, x, *, batch_size: int = 1024) -> np.ndarray:
    """``(n,)`` predicted classes of ``model`` (eval mode) on ``x``."""
    xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32)))
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    with eval_mode(model), torch.no_grad():
        for part in _chunks(len(xt), batch_size):
            out.append(model(xt[part].to(device)).argmax(-1).cpu())
    return torch.cat(out).numpy()


def accuracy(model: nn.Module, x, y) -> float:
    """Share of rows of ``x`` whose predicted class (:func:`predict_labels`) is ``y``; NaN for no rows."""
    y = np.asarray(y, np.int64)
    return float((predict_labels(model, x) == y).mean()) if len(y) else float("nan")


def adversarial_examples(model: nn.Module, x, y, *, attack: str = "pgd", seed: int, **settings) -> np.ndarray:
    """The adversarial inputs of the attack named ``attack`` (``pgd``, ``l0`` or ``patch``) with its ``settings``.

    ``pgd``: :func:`pgd_attack` (``eps``, ``norm``, ...); ``l0``: :func:`l0_pixel_attack` (``pixels``, ...);
    ``patch``: :func:`patch_attack` (``size``, ...). An unknown name is a one-line ConfigError.
    """
    attack = check_choice(attack, "attack", ATTACKS)
    fn = {"pgd": pgd_attack, "l0": l0_pixel_attack, "patch": patch_attack}[attack]
    return fn(model, x, y, seed=seed, **settings)


def robust_accuracy(model: nn.Module, x, y, *, attack: str = "pgd", seed: int, keep_inputs: bool = False,
                    **settings) -> RobustAccuracy:
    """Accuracy of ``model`` on ``x`` and under ``attack`` (see :func:`adversarial_examples`).

    Example::

        res = robust_accuracy(net, x_test, y_test, attack="pgd", eps=0.1, norm="inf", steps=20, restarts=2,
                              low=0, high=1, seed=0)
        res.clean_accuracy, res.accuracy
    """
    adv = adversarial_examples(model, x, y, attack=attack, seed=seed, **settings)
    y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y, np.int64)
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    clean = predict_labels(model, x) == y
    robust = predict_labels(model, adv) == y
    return RobustAccuracy(accuracy=float(robust.mean()), clean_accuracy=float(clean.mean()), correct=robust,
                          clean_correct=clean, attack={"attack": attack, **settings},
                          x_adv=adv if keep_inputs else None)
