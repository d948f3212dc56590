"""Weight compander: every weight of the linear and convolutional layers reparameterized through a bounded,
zero-repelling function.

Paper: Cakaj, Mehnert & Yang 2023, "Weight Compander: A Simple Weight Reparameterization for Regularization"
(IJCNN 2023, arXiv:2306.16993). The abstract describes a nonlinear function applied to each weight that
"restricts the magnitude of the weights while forcing them away from zero", with the option of learning its
hyperparameters. Its exact formula was not available to us (only the abstract and summaries could be read),
so **the form below is ours, built from the abstract**: an odd, smooth compressor-expander (a "compander", as
in audio coding) with exactly the two properties named there:

    w = f(v) = A * tanh(g * v / A),     A = bound * s,     s = 1 / sqrt(fan_in)

- ``v`` is the trained (raw) weight, ``w`` the weight the layer uses; ``s`` is the layer's initialisation scale
  (PyTorch's default init draws ``v ~ U(-s, s)``), so the hyperparameters are in units of it and one setting
  fits every layer;
- bounded magnitude: ``|w| < A = bound * s`` whatever ``v`` (the magnitude of every weight is restricted);
- pushed away from zero: ``f'(0) = g = gain > 1``, so a small weight is magnified (``|f(v)| > |v|`` for
  ``|v| < c * A`` where ``tanh(g c) = c``: ``c = 0.86`` at the default gain 1.5) and its raw value gets up to
  ``g`` times the gradient: near-zero ("dead") weights are moved away from zero faster than the others
  ("reactivation" in the paper's words).

Hyperparameters: ``bound`` (default 2, in ``[0.1, 100]``), ``gain`` (default 1.5, in ``[1, 10]``), ``learn``
(0 or 1, default 0). With ``learn=1`` ``bound`` and ``gain`` are learned per model and per layer (stored as
``log bound`` and ``log gain``, ``(K,)`` parameters of the layer's parametrization, trained by the optimizer
with the weights; the paper learns them "to align the weight reparameterization with the training progress").
Learned values are not constrained (on digits, 20 epochs of ``mlp:64x2``, they grew to bound ~4, gain ~4).

Which weights: the ``weight`` of every :class:`~fitscope.models.layers.EnsembleLinear` (``(K, in, out)``) and
:class:`~fitscope.models.layers.EnsembleConv` (``(K*C_out, C_in, *kernel)``), the output layer included; not
biases, not batch-norm scales. Done in :meth:`attach` with ``torch.nn.utils.parametrize`` (the eval pass and
``forward_shared`` see ``f(v)`` too). The raw weights keep their initial values (``f`` is applied on top of the
usual initialisation, which ``f`` enlarges by up to ``gain``). Per model: model ``k``'s rows of a weight use
model ``k``'s ``bound`` and ``gain`` only. Measures: ``bound`` and ``gain`` (mean over layers) per model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from fitscope.models.layers import EnsembleConv, EnsembleLinear
from fitscope.train.regularizers.base import Param, Regularizer, TrainState


def compand(v: torch.Tensor, bound: torch.Tensor | float, gain: torch.Tensor | float) -> torch.Tensor:
    """``bound * tanh(gain * v / bound)``; ``bound`` and ``gain`` broadcast against ``v`` (absolute values)."""
    return bound * torch.tanh(gain * v / bound)


class Compander(nn.Module):
    """The parametrization of one ensemble weight: ``w = A tanh(g v / A)``, ``A = bound * scale``, per model.

    Args:
        k: the number of models; the weight has the models in ``k`` blocks on its first axis.
        scale: the layer's init scale ``1 / sqrt(fan_in)``.
        bound, gain: initial values (the same for every model).
        learn: make ``log bound`` and ``log gain`` parameters (else buffers).
    """

    def __init__(self, k: int, scale: float, bound: float, gain: float, learn: bool) -> None:
        super().__init__()
        self.k, self.scale = k, float(scale)
        log_bound = torch.full((k,), math.log(bound))
        log_gain = torch.full((k,), math.log(gain))
        if learn:
            self.log_bound = nn.Parameter(log_bound)
            self.log_gain = nn.Parameter(log_gain)
        else:
            self.register_buffer("log_bound", log_bound)
            self.register_buffer("log_gain", log_gain)

    def per_row(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``(K,)`` values repeated over each model's block of the weight's first axis, broadcastable to it."""
        rows = like.shape[0] // self.k
        return values.repeat_interleave(rows).view(-1, *([1] * (like.dim() - 1)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """The weight the layer uses."""
        bound = self.per_row(self.log_bound.exp(), v) * self.scale
        gain = self.per_row(self.log_gain.exp(), v)
        return compand(v, bound, gain)


def _fan_in(layer: nn.Module) -> int:
    if isinstance(layer, EnsembleLinear):
        return layer.in_features
    return layer.in_channels * layer.kernel_size ** layer.dim


def ensemble_layers(model: nn.Module) -> list[nn.Module]:
    """Every :class:`EnsembleLinear` and :class:`EnsembleConv` of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, (EnsembleLinear, EnsembleConv))]


class WeightCompander(Regularizer):
    """Each linear / conv weight used as ``bound*s * tanh(gain * v / (bound*s))`` (see the module docstring)."""

    name = "compander"
    summary = "weights reparameterized as bound*s*tanh(gain*v/(bound*s)): bounded, pushed away from 0"
    paper = "Cakaj, Mehnert & Yang 2023 (form ours, from the abstract)"
    params = {
        "bound": Param(2.0, 0.1, 100.0, "largest |weight|, in units of the init scale 1/sqrt(fan_in)"),
        "gain": Param(1.5, 1.0, 10.0, "slope at 0 (> 1: small weights magnified, pushed away from 0)"),
        "learn": Param(0, 0, 1, "1: learn bound and gain per model and layer", integer=True),
    }

    def attach(self, state: TrainState) -> None:
        """Register the parametrization on every ensemble linear / conv weight."""
        self._comps: list[Compander] = []
        for layer in ensemble_layers(state.model):
            weight = layer.weight
            comp = Compander(state.k, 1.0 / math.sqrt(_fan_in(layer)), self.values["bound"], self.values["gain"],
                             bool(self.values["learn"])).to(device=weight.device, dtype=weight.dtype)
            parametrize.register_parametrization(layer, "weight", comp)
            self._comps.append(comp)

    def measures(self, state: TrainState) -> dict[str, np.ndarray]:
        """``bound`` and ``gain`` per model, the mean over layers (the set values unless ``learn=1``)."""
        if not self._comps:
            return {}
        with torch.no_grad():
            bound = torch.stack([m.log_bound.exp() for m in self._comps]).mean(dim=0)
            gain = torch.stack([m.log_gain.exp() for m in self._comps]).mean(dim=0)
        return {"bound": bound.double().cpu().numpy(), "gain": gain.double().cpu().numpy()}


PART = WeightCompander
