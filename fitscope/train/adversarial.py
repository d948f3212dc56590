"""Projected gradient descent (PGD) on the inputs: the worst-case perturbation in an L-inf or L2 ball.

Notation: ``x`` holds rows (one input each) on its first ``batch_dims`` axes
(``(n, *input_shape)`` for one model, ``(K, b, *input_shape)`` for K models
trained at once); ``eps`` is the radius of the ball around each row.

PGD of Madry, Makelov, Schmidt, Tsipras & Vladu 2018 ("Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR), on a loss closure:

1. start at ``x + delta_0``: ``delta_0`` uniform in the L-inf ball (their
   random start), or, for L2, uniform in the L2 ball (a Gaussian direction
   scaled by ``eps * u ** (1/d)``, as Foolbox and ART draw it);
2. ``steps`` times: ``g = grad_x sum(loss(x_adv))``; for L-inf
   ``x_adv <- x_adv + step_size * sign(g)``, for L2
   ``x_adv <- x_adv + step_size * g / ||g||_2`` (per row); then project the
   perturbation back onto the ball (L-inf: clamp each coordinate to
   ``[-eps, eps]``; L2: scale by ``min(1, eps / ||delta||_2)``) and clip
   ``x_adv`` to the input range ``[low, high]`` (clipping toward ``x`` only
   shrinks the perturbation, so the result stays in the ball);
3. with ``restarts > 1``, the whole run is repeated from fresh random starts
   and each row keeps the perturbation with the highest ``score`` (by
   default the loss; an evaluation passes the margin, so a row counts as
   broken if any restart broke it).

The loss closure returns one value per row (shape ``x.shape[:batch_dims]``);
PGD ascends the sum, so each row's step follows the gradient of its own loss.
In an ensemble every row's loss depends on one model only, so model ``k``'s
adversarial rows are its own. This module has no model: the training part
(:mod:`fitscope.train.regularizers.pgd`) and the evaluation attacks
(:mod:`fitscope.robustness.attacks`) both call :func:`pgd_perturb`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from fitscope.errors import ConfigError
from fitscope.validation import check_int, check_number, message

#: the norms PGD supports, by name: ``"inf"`` (L-inf) and ``"2"`` (L2)
NORMS = ("inf", "2")
#: added to per-row gradient and perturbation norms before dividing (rows with a zero gradient stay put)
TINY = 1e-12


def check_norm_name(norm, name: str = "norm") -> str:
    """``norm`` as ``"inf"`` or ``"2"`` (accepts ``inf``, ``2``, ``"Linf"``, ``"l2"``); else a one-line ConfigError."""
    text = str(norm).strip().lower().removeprefix("l")
    if text in ("inf", "infinity"):
        return "inf"
    if text in ("2", "2.0"):
        return "2"
    raise ConfigError(message(name, "inf or 2 (the L-inf or L2 ball)", repr(norm)))


def default_step_size(eps: float, steps: int) -> float:
    """``2.5 eps / steps``: the step size of Madry et al.'s robustness library (enough to cross the ball)."""
    return 2.5 * eps / steps


def _row_norms(v: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """The L2 norm of each row, shaped to broadcast against ``v``."""
    flat = v.reshape(*v.shape[:batch_dims], -1)
    return flat.norm(dim=-1).reshape(*v.shape[:batch_dims], *([1] * (v.dim() - batch_dims)))


def project(delta: torch.Tensor, *, eps: float, norm: str, batch_dims: int = 1) -> torch.Tensor:
    """Project each row of ``delta`` onto the ball of radius ``eps`` (L-inf: clamp; L2: rescale if outside)."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    scale = (eps / (_row_norms(delta, batch_dims) + TINY)).clamp(max=1.0)
    return delta * scale


def _uniform_ball(shape: tuple[int, ...], *, eps: float, norm: str, batch_dims: int, generator: torch.Generator,
                  dtype: torch.dtype) -> torch.Tensor:
    """Perturbations uniform in the ball of radius ``eps``, drawn on the CPU from ``generator``."""
    if norm == "inf":
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * eps
    d = math.prod(shape[batch_dims:])
    direction = torch.randn(shape, generator=generator, dtype=dtype)
    direction = direction / (_row_norms(direction, batch_dims) + TINY)
    radius = torch.rand((*shape[:batch_dims], *([1] * (len(shape) - batch_dims))), generator=generator, dtype=dtype)
    return direction * eps * radius ** (1.0 / d)


def random_start(x: torch.Tensor, *, eps: float, norm: str, batch_dims: int = 1,
                 generators: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
    """A uniform draw from each row's ball.

    ``generators``: one generator for all of ``x``, or one per slice ``x[i]`` of
    the first axis (per model in an ensemble, so model ``i``'s draws depend on
    its generator alone).
    """
    if isinstance(generators, torch.Generator):
        noise = _uniform_ball(tuple(x.shape), eps=eps, norm=norm, batch_dims=batch_dims, generator=generators,
                              dtype=x.dtype)
    else:
        if len(generators) != x.shape[0]:
            raise ValueError(f"generators: expected one per slice of the first axis ({x.shape[0]}), "
                             f"got {len(generators)}")
        noise = torch.stack([_uniform_ball(tuple(x.shape[1:]), eps=eps, norm=norm, batch_dims=batch_dims - 1,
                                           generator=g, dtype=x.dtype) for g in generators])
    return noise.to(x.device)


def _clip(x_adv: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    if low is None and high is None:
        return x_adv
    return x_adv.clamp(low, high)


def pgd_perturb(
    loss: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "inf",
    steps: int = 10,
    step_size: float | None = None,
    low: float | None = None,
    high: float | None = None,
    start: bool = True,
    restarts: int = 1,
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
    batch_dims: int = 1,
) -> torch.Tensor:
    """The PGD adversarial inputs for ``loss`` around ``x`` (see the module docstring for the algorithm).

    Args:
        loss: ``x_adv -> (rows,)`` per-row losses to maximize (shape ``x.shape[:batch_dims]``);
            differentiable in ``x_adv``.
        x: the clean inputs, rows on the first ``batch_dims`` axes.
        eps: radius of the ball (>= 0; 0 returns ``x``).
        norm: ``"inf"`` or ``"2"``.
        steps: gradient steps (>= 1).
        step_size: the step length; None: :func:`default_step_size`.
        low, high: the input range to clip to (None: no bound).
        start: start from a uniform draw in the ball (Madry et al.), else from ``x``.
        restarts: independent runs; each row keeps its highest-``score`` result.
        score: ``x_adv -> (rows,)`` values ranking the restarts (default: ``loss``).
        generators: the random starts' generator(s) (see :func:`random_start`); required when ``start``.
        batch_dims: leading axes that index rows (2 for ``(K, b, ...)`` ensembles).

    Returns:
        ``x_adv``, detached, the shape of ``x``, each row within ``eps`` of its clean row and in ``[low, high]``.
    """
    norm = check_norm_name(norm)
    eps = check_number(eps, "eps", low=0.0, open_high=True)
    steps = check_int(steps, "steps")
    restarts = check_int(restarts, "restarts")
    x = x.detach()
    if eps == 0:
        return x.clone()
    if start and generators is None:
        raise ValueError("generators: required for the random start (start=True)")
    step = default_step_size(eps, steps) if step_size is None else float(step_size)
    rank = score or loss
    best, best_score = None, None
    for _ in range(restarts):
        delta = random_start(x, eps=eps, norm=norm, batch_dims=batch_dims, generators=generators) if start else (
            torch.zeros_like(x))
        x_adv = _clip(x + delta, low, high)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                grad, = torch.autograd.grad(loss(x_adv).sum(), x_adv)
            with torch.no_grad():
                if norm == "inf":
                    moved = x_adv + step * grad.sign()
                else:
                    moved = x_adv + step * grad / (_row_norms(grad, batch_dims) + TINY)
                x_adv = _clip(x + project(moved - x, eps=eps, norm=norm, batch_dims=batch_dims), low, high)
        x_adv = x_adv.detach()
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            values = rank(x_adv).detach()
        if best is None:
            best, best_score = x_adv, values
        else:
            better = values > best_score
            mask = better.reshape(*better.shape, *([1] * (x.dim() - batch_dims)))
            best = torch.where(mask, x_adv, best)
            best_score = torch.where(better, values, best_score)
    return best
