"""Saliency maps of a classifier on any ``torch.nn.Module``: Captum's gradient methods and competitive gradient x input.

Notation: n inputs, each of shape ``input_shape`` (e.g. ``(1, 8, 8)`` for an
image, ``(1, 40)`` for a signal); the model maps a batch ``(n, *input_shape)``
to logits ``(n, C)`` for C classes. A saliency map has the shape of its input:
one score per input feature (pixel) for one target class. The score is taken
on the logit of the target class, not on a probability.

Methods (:data:`METHODS`):

- ``gradient``: the gradient of the target logit with respect to the input
  (Simonyan et al. 2014), signed (Captum's ``Saliency(abs=False)``).
- ``gradient_x_input``: the gradient times the input, element-wise
  (Captum's ``InputXGradient``).
- ``integrated_gradients``: the path integral of the gradient from a baseline
  (zeros by default) to the input, times ``input - baseline`` (Sundararajan et
  al. 2017; Captum's ``IntegratedGradients``, ``steps`` Gauss-Legendre points).
- ``smoothgrad``: the gradient averaged over ``samples`` noisy copies of the
  input, Gaussian noise of standard deviation ``sigma`` (Smilkov et al. 2017;
  Captum's ``NoiseTunnel`` over ``Saliency(abs=False)``); the noise is drawn from
  torch's generator seeded with ``seed`` inside a forked RNG, so the global
  RNG is left untouched and the same seed gives the same map.
- ``cgi``: competitive gradient x input (Gupta & Arora 2019, "A simple
  saliency method that passes the sanity checks", seeds 000/001), written here
  by hand since no library has it. It computes gradient x input for every
  class, ``S_c = x * d logit_c / d x``, and lets the classes compete for each
  pixel: the target class ``y`` keeps a positive score ``S_y[i] > 0`` only where
  it is the largest of all classes' scores at that pixel (``S_y[i] = max_c
  S_c[i]``), and a negative score ``S_y[i] < 0`` only where it is the smallest
  (``S_y[i] = min_c S_c[i]``); every other score of the map is set to 0. This is
  the paper's Algorithm 1 (the positive and the negative part each compete);
  the paper's figures show the positive part.

CGI needs a classifier with at least two outputs: on a model with a single
(regression) output there is nothing to compete with, and it is refused.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.validation import check_choice, check_int, check_number, check_seed, message

#: the saliency methods of :func:`saliency_maps`
METHODS: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "cgi")
#: the methods computed through Captum (the others are written here)
CAPTUM_METHODS: tuple[str, ...] = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad")


def _as_tensor(x, model: nn.Module) -> torch.Tensor:
    """``x`` as a float32 tensor on the model's device (a copy: the caller's array is not touched)."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float32).clone()
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device).clone()


def output_classes(model: nn.Module, x: torch.Tensor) -> int:
    """The number of outputs C of ``model`` on the inputs ``x`` (one forward pass of the first row).

    Raises:
        ConfigError: the model does not return a ``(n, C)`` batch of logits.
    """
    with torch.no_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(message("model", "a module mapping a batch (n, *input_shape) to logits (n, C)",
                                  f"output {got} for one row"))
    return int(out.shape[1])


def check_targets(target, n: int, classes: int) -> torch.Tensor:
    """``target``: one class per row (an int for all rows, or ``(n,)`` ints in ``[0, C)``); as a long tensor.

    Raises:
        ConfigError: a class out of range or a length that is not ``n`` (names ``target``).
    """
    values = np.atleast_1d(np.asarray(target))
    if values.ndim != 1 or len(values) not in (1, n) or not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(message("target", f"an integer class or {n} integer classes (one per row)",
                                  f"array of shape {values.shape} and dtype {values.dtype}"))
    for value in values:
        check_int(int(value), "target", low=0, high=classes - 1)
    return torch.as_tensor(np.broadcast_to(values, (n,)).astype(np.int64))


def _captum(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, baseline, steps: int,
            samples: int, sigma: float, seed: int) -> torch.Tensor:
    """One of :data:`CAPTUM_METHODS` through Captum."""
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    if method == "gradient":
        return Saliency(model).attribute(x, target=target, abs=False)
    if method == "gradient_x_input":
        return InputXGradient(model).attribute(x, target=target)
    if method == "integrated_gradients":
        base = torch.zeros_like(x) if baseline is None else _as_tensor(baseline, model).expand_as(x)
        return IntegratedGradients(model).attribute(x, baselines=base, target=target, n_steps=steps)
    # smoothgrad: Captum draws the noise from torch's global generator; seed it inside a fork
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma,
                                                      target=target, abs=False)


def gradient_x_input_all_classes(model: nn.Module, x) -> np.ndarray:
    """Gradient x input of every class: ``(C, n, *input_shape)``, ``[c, j] = x_j * d logit_c(x_j) / d x_j``.

    All C gradients come from one batched backward pass (``is_grads_batched``,
    vmap over the C output directions); where an operation of the model does
    not support vmap, one backward pass per class. Rows are treated as
    independent (the model in eval mode: no batch statistics).
    """
    model.eval()
    xt = _as_tensor(x, model).requires_grad_(True)
    logits = model(xt)
    classes = logits.shape[1]
    eye = torch.eye(classes, device=logits.device, dtype=logits.dtype)
    directions = eye[:, None, :].expand(classes, *logits.shape)  # (C, n, C): class c's logit of every row
    try:
        (grads,) = torch.autograd.grad(logits, xt, grad_outputs=directions, is_grads_batched=True)
    except RuntimeError:  # an operation without a batching rule: one backward pass per class
        grads = torch.stack([torch.autograd.grad(logits[:, c].sum(), xt, retain_graph=c < classes - 1)[0]
                             for c in range(classes)])
    return (grads * xt.detach()[None]).detach().cpu().numpy()


def competition(scores: np.ndarray, target) -> np.ndarray:
    """CGI's competition among classes for each pixel (see the module docstring): the target class's map.

    Args:
        scores: ``(C, n, *input_shape)`` a score of every class at every pixel
            (e.g. :func:`gradient_x_input_all_classes`).
        target: ``(n,)`` the class of each row whose map is kept.

    Returns:
        ``(n, *input_shape)``: ``scores[target]`` where a positive score is the
        largest of all classes' at that pixel or a negative score the smallest,
        0 elsewhere.
    """
    scores = np.asarray(scores)
    target = np.asarray(target, dtype=np.int64)
    own = np.take_along_axis(scores, target.reshape((1, -1) + (1,) * (scores.ndim - 2)), axis=0)[0]
    wins_positive = (own > 0) & (own >= scores.max(axis=0))
    wins_negative = (own < 0) & (own <= scores.min(axis=0))
    return np.where(wins_positive | wins_negative, own, 0.0).astype(scores.dtype)


def competitive_gradient_x_input(model: nn.Module, x, target) -> np.ndarray:
    """CGI maps ``(n, *input_shape)`` of ``model`` for the classes ``target`` (Gupta & Arora 2019).

    Args:
        model: a classifier ``(n, *input_shape) -> (n, C)`` logits with C >= 2.
        x: ``(n, *input_shape)`` inputs.
        target: the class of every row (an int) or ``(n,)`` classes in ``[0, C)``.

    Raises:
        ConfigError: a model with a single output (regression: no classes to
            compete), or a target class out of range.
    """
    model.eval()
    xt = _as_tensor(x, model)
    classes = output_classes(model, xt)
    if classes < 2:
        raise ConfigError(message("model", "a classifier with at least 2 outputs for cgi (classes compete for "
                                  "each pixel)", f"{classes} output (a regression model)"))
    target = check_targets(target, len(xt), classes)
    return competition(gradient_x_input_all_classes(model, xt), target.numpy())


def saliency_maps(model: nn.Module, x, target, *, method: str, baseline=None, steps: int = 32,
                  samples: int = 16, sigma: float = 0.15, seed: int = 0) -> np.ndarray:
    """Saliency maps ``(n, *input_shape)`` float32 of ``model`` on ``x`` for the classes ``target``.

    Args:
        model: any ``nn.Module`` mapping ``(n, *input_shape)`` to logits
            ``(n, C)``; put in eval mode (batch norm and dropout frozen).
        x: ``(n, *input_shape)`` inputs (NumPy or torch).
        target: the class whose logit is explained: one int for every row or
            ``(n,)`` ints in ``[0, C)``.
        method: one of :data:`METHODS` (see the module docstring).
        baseline: integrated gradients' baseline, broadcast to ``x``; None: zeros.
        steps: integrated gradients' integration points.
        samples: SmoothGrad's noisy copies per input.
        sigma: SmoothGrad's noise standard deviation, in the input's units.
        seed: SmoothGrad's noise.

    Raises:
        ConfigError: an unknown method, a target class out of range, a bad
            option, or cgi on a model with a single output.
    """
    method = check_choice(method, "method", METHODS)
    steps = check_int(steps, "steps")
    samples = check_int(samples, "samples")
    sigma = check_number(sigma, "sigma", low=0.0)
    seed = check_seed(seed)
    model.eval()
    xt = _as_tensor(x, model)
    if method == "cgi":
        return competitive_gradient_x_input(model, xt, target).astype(np.float32)
    classes = output_classes(model, xt)
    tt = check_targets(target, len(xt), classes).to(xt.device)
    xt.requires_grad_(True)
    maps = _captum(method, model, xt, tt, baseline=baseline, steps=steps, samples=samples, sigma=sigma, seed=seed)
    return maps.detach().cpu().numpy().astype(np.float32)


def all_saliency_maps(model: nn.Module, x, target, *, methods: Sequence[str] = METHODS, **options) -> dict:
    """``{method: saliency_maps(model, x, target, method=method, **options)}`` for each of ``methods``."""
    return {m: saliency_maps(model, x, target, method=m, **options) for m in methods}
