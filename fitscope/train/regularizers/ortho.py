"""Soft orthogonality: a penalty on how far each layer's weight matrix is from having orthonormal rows or columns.

Penalty of model ``k`` (added to its mean cross-entropy):

    lambda * sum over layers l of || G_l - I ||_F^2

with ``G_l`` the Gram matrix of the smaller side of the layer's weight matrix ``M`` (``r x c``): ``M M^T``
(``r x r``, rows orthonormal) when ``r <= c``, else ``M^T M`` (``c x c``, columns orthonormal); the smaller
side is the one that can be orthonormal, so the penalty can reach 0.

- linear layers: ``M = W``, the ``(in, out)`` matrix of ``x @ W``: ``W^T W`` (soft orthogonality "SO" of
  Bansal, Chen & Wang 2018, "Can we gain more from orthogonality regularizations in training deep CNNs?") when
  ``out <= in``, else ``W W^T``;
- convolutions: the kernel orthogonality of Wang et al. 2020 ("Orthogonal Convolutional Neural Networks",
  CVPR; the "kernel orthogonality" they compare with): the kernel ``(C_out, C_in, kh, kw)`` reshaped to
  ``M = (C_out, C_in*kh*kw)``, the same Gram rule (filters orthonormal when ``C_out <= C_in*kh*kw``).

The output (classifier) layer is left out: its columns set the scale of the logits, and orthonormal columns
would fix the softmax temperature (and, with few classes, constrain little else); Bansal et al. and Wang et al.
regularize the feature layers. Biases and batch-norm parameters are not touched.

The gradient of ``||W^T W - I||_F^2`` with respect to ``W`` is ``4 W (W^T W - I)`` (and ``4 (W W^T - I) W``
for the row Gram).

Default ``lambda = 1e-2`` (range ``(0, 10]``): Bansal et al. (as we read their schedule) start SO at 0.1 and
decay it to 1e-3 and below during training, with the mean cross-entropy of a batch as the loss, like ours; 1e-2
sits between. On digits (``bench/regularizers_structure.py``, 30 epochs) it lowered the error of ``cnn:32-64``
about 60-fold and of ``mlp:64x2`` about 10-fold; the benchmark chooses lambda on a validation split.

Measure ``error`` per model (after training): the orthogonality error

    mean over layers l of || G_l - I ||_F / || I ||_F  =  || G_l - I ||_F / sqrt(m_l)

(``m_l`` the Gram's size): the root-mean-square entry of ``G - I``, 0 for orthonormal rows/columns, about 0.75
at PyTorch's default initialisation of a square linear layer (``sqrt(5/9)``: column norms ``1/sqrt(3)``).
:func:`orthogonality_error` computes it for any ensemble module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.models.layers import EnsembleConv, EnsembleLinear
from fitscope.train.regularizers.base import Param, Regularizer, TrainState
from fitscope.validation import message


def ortho_layers(model: nn.Module, include_output: bool = False) -> list[nn.Module]:
    """The ensemble linear / conv layers that count: all but ``model.out`` (unless ``include_output``)."""
    out = None if include_output else getattr(model, "out", None)
    return [m for m in model.modules() if isinstance(m, (EnsembleLinear, EnsembleConv)) and m is not out]


def weight_matrices(layer: nn.Module) -> torch.Tensor:
    """The layer's per-model weight matrices ``(K, r, c)``: linear ``(K, in, out)``, conv ``(K, C_out, C_in*kh*kw)``."""
    w = layer.weight
    if isinstance(layer, EnsembleLinear):
        return w
    return w.reshape(layer.n_models, layer.out_channels, -1)


def gram_minus_identity(m: torch.Tensor) -> torch.Tensor:
    """``G - I`` for ``(K, r, c)`` matrices: ``G = M M^T`` when ``r <= c``, else ``M^T M``."""
    g = m @ m.transpose(1, 2) if m.shape[1] <= m.shape[2] else m.transpose(1, 2) @ m
    return g - torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)


def orthogonality_penalty(model: nn.Module, include_output: bool = False) -> torch.Tensor:
    """``sum over layers ||G - I||_F^2`` per model, ``(K,)`` (differentiable)."""
    total = None
    for layer in ortho_layers(model, include_output):
        term = gram_minus_identity(weight_matrices(layer)).pow(2).sum(dim=(1, 2))
        total = term if total is None else total + term
    return total


def orthogonality_error(model: nn.Module, include_output: bool = False) -> np.ndarray:
    """Per model, the mean over layers of ``||G - I||_F / sqrt(m)`` (see the module docstring): ``(K,)``.

    Works on any ensemble module (an :class:`~fitscope.models.EnsembleModel` or a single ensemble layer);
    the output layer ``model.out`` is left out unless ``include_output``. NaN when there is no such layer.
    """
    layers = ortho_layers(model, include_output)
    if not layers:
        k = getattr(model, "n_models", 1)
        return np.full(k, np.nan)
    with torch.no_grad():
        errors = []
        for layer in layers:
            d = gram_minus_identity(weight_matrices(layer).double())
            errors.append(d.pow(2).sum(dim=(1, 2)).sqrt() / math.sqrt(d.shape[-1]))
        return torch.stack(errors).mean(dim=0).cpu().numpy()


class SoftOrthogonality(Regularizer):
    """``lambda * sum_l ||G_l - I||_F^2`` per model over the feature layers (see the module docstring)."""

    name = "ortho"
    summary = "soft orthogonality lambda * sum ||W^T W - I||_F^2 (conv: kernel orthogonality), output layer left out"
    paper = "Bansal et al. 2018; Wang et al. 2020 (conv)"
    params = {"lambda": Param(1e-2, 0.0, 10.0, "weight of the penalty", low_open=True)}

    def attach(self, state: TrainState) -> None:
        """Check that the model has a layer to regularize."""
        if not ortho_layers(state.model):
            raise ConfigError(message(self.name, "a model with a hidden linear or conv layer",
                                      str(getattr(state.model, "spec", type(state.model).__name__))))

    def penalty(self, state: TrainState) -> torch.Tensor:
        """``(K,)`` penalties."""
        return self.values["lambda"] * orthogonality_penalty(state.model)

    def measures(self, state: TrainState) -> dict[str, np.ndarray]:
        """``error``: :func:`orthogonality_error` of the trained models."""
        return {"error": orthogonality_error(state.model)}


PART = SoftOrthogonality
