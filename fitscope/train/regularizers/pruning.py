"""Channel gates of an ensemble: the batch-norm scale factors, and pruning by them.

Notation: K models; ``N`` the number of batch-norm channels of one model (summed over its BN layers).

Network slimming (Liu et al. 2017) and the polarization regularizer (Zhuang et al. 2020) treat the scale
``gamma`` of every batch-norm channel as the gate of that channel: the channel's output is
``gamma * xhat + beta``, so setting ``gamma = beta = 0`` makes it output 0, and 0 after the ReLU that follows
(in ``cnn`` and ``cnn1d`` every BN is followed by a ReLU; in a ``resnet`` the second BN of a block is added to
the shortcut before its ReLU, so a pruned channel there passes the shortcut alone). Pruning here only zeroes
``gamma`` and ``beta`` (what Zhuang et al.'s code does before it rebuilds the smaller network); the layers keep
their shapes.

Every BN layer of an ensemble has ``K * C`` channels, model ``k`` owning ``k*C .. (k+1)*C - 1``, so
``weight.view(K, C)`` gives one row per model, and :func:`gates` concatenates the rows of every layer into
``(K, N)``.

- :func:`bn_layers`: the model's batch-norm layers (with a learnable scale), in module order.
- :func:`gates`: their scales as ``(K, N)`` (a view-concatenation: differentiable).
- :func:`prune_channels`: zero ``gamma`` and ``beta`` of the channels with the smallest ``|gamma|`` of each
  model: a given fraction of its ``N`` channels, or those with ``|gamma| <= threshold``.
- :func:`pruned_fraction`: per model, the fraction of channels with ``|gamma| <= threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.validation import message


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` that have a learnable scale (``affine=True``), in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]


def gates(model: nn.Module, k: int) -> torch.Tensor:
    """The BN scales of the ``k`` models as ``(K, N)``: each layer's ``weight.view(K, C)``, concatenated."""
    layers = bn_layers(model)
    if not layers:
        return torch.zeros(k, 0)
    return torch.cat([m.weight.view(k, -1) for m in layers], dim=1)


def _n_models(model: nn.Module, k: int | None) -> int:
    k = getattr(model, "n_models", None) if k is None else k
    if not isinstance(k, int) or k < 1:
        raise ConfigError(message("prune_channels", "an ensemble model (with n_models) or k=", repr(k)))
    return k


def pruned_fraction(model: nn.Module, threshold: float, k: int | None = None) -> np.ndarray:
    """Per model, the fraction of its BN channels with ``|gamma| <= threshold``: ``(K,)`` (NaN without BN)."""
    k = _n_models(model, k)
    with torch.no_grad():
        g = gates(model, k)
        if g.shape[1] == 0:
            return np.full(k, np.nan)
        return (g.abs() <= threshold).double().mean(dim=1).cpu().numpy()


def channel_masks(model: nn.Module, *, fraction: float | None = None, threshold: float | None = None,
                  per_layer: bool = False, k: int | None = None) -> torch.Tensor:
    """``(K, N)`` bool: True for the channels :func:`prune_channels` would zero (see there)."""
    k = _n_models(model, k)
    if (fraction is None) == (threshold is None):
        raise ConfigError(message("prune_channels", "exactly one of fraction= or threshold=",
                                  f"fraction={fraction}, threshold={threshold}"))
    with torch.no_grad():
        g = gates(model, k).abs()
        n = g.shape[1]
        if n == 0:
            raise ConfigError(message("prune_channels", "a model with batch norm (cnn, cnn1d, resnet)",
                                      f"{getattr(model, 'spec', type(model).__name__)} without any"))
        if threshold is not None:
            threshold = float(threshold)
            if not np.isfinite(threshold) or threshold < 0:
                raise ConfigError(message("prune_channels:threshold", "a number >= 0", repr(threshold)))
            return g <= threshold
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(message("prune_channels:fraction", "a fraction in [0, 1]", repr(fraction)))
        blocks = [g] if not per_layer else list(torch.split(g, [m.weight.numel() // k for m in bn_layers(model)], 1))
        masks = []
        for block in blocks:
            count = int(round(fraction * block.shape[1]))
            # the ``count`` smallest |gamma| of each model; ties broken by channel order (a stable sort)
            order = torch.sort(block, dim=1, stable=True).indices[:, :count]
            mask = torch.zeros_like(block, dtype=torch.bool)
            masks.append(mask.scatter_(1, order, True))
        return torch.cat(masks, dim=1)


def apply_masks(model: nn.Module, masks: torch.Tensor, k: int | None = None) -> None:
    """Zero ``gamma`` and ``beta`` of the channels where the ``(K, N)`` ``masks`` are True (in place)."""
    k = _n_models(model, k)
    start = 0
    with torch.no_grad():
        for layer in bn_layers(model):
            c = layer.weight.numel() // k
            keep = ~masks[:, start : start + c].to(layer.weight.device)
            layer.weight.view(k, c).mul_(keep)
            if layer.bias is not None:
                layer.bias.view(k, c).mul_(keep)
            start += c


def prune_channels(model: nn.Module, fraction: float | None = None, threshold: float | None = None, *,
                   per_layer: bool = False, k: int | None = None) -> dict[str, Any]:
    """Zero ``gamma`` and ``beta`` of the BN channels with the smallest ``|gamma|`` of each model (in place).

    Give exactly one of:

    - ``fraction``: each model loses ``round(fraction * N)`` of its ``N`` BN channels (all layers together,
      Liu et al.'s global ranking), those of smallest ``|gamma|`` (ties: the earlier channel first); with
      ``per_layer``, each BN layer of ``C`` channels loses ``round(fraction * C)`` of its own (the scale of the
      gates of a BN layer followed by a convolution and another BN is arbitrary: that BN undoes it, so gates
      of different layers need not be comparable);
    - ``threshold``: each model loses the channels with ``|gamma| <= threshold``.

    A pruned channel outputs 0 (and 0 after the ReLU that follows it). Layers keep their shapes; a layer may
    lose all its channels (the model then no longer depends on its input through that layer).

    Args:
        model: an ensemble module with batch norm (``cnn``, ``cnn1d``, ``resnet``).
        fraction, threshold: what to prune (see above).
        per_layer: apply ``fraction`` within each BN layer (see above).
        k: the number of models (default ``model.n_models``).

    Returns:
        ``dict(fraction=(K,) pruned fraction per model, pruned=(K,) channel counts, channels=N,
        masks=(K, N) bool, per_layer=[(K,) pruned fraction of each BN layer, ...])``.

    Raises:
        ConfigError: no BN layer, both or neither of ``fraction``/``threshold``, or a value out of range.
    """
    k = _n_models(model, k)
    masks = channel_masks(model, fraction=fraction, threshold=threshold, per_layer=per_layer, k=k)
    apply_masks(model, masks, k)
    per_layer, start = [], 0
    for layer in bn_layers(model):
        c = layer.weight.numel() // k
        per_layer.append(masks[:, start : start + c].double().mean(dim=1).cpu().numpy())
        start += c
    m = masks.cpu().numpy()
    return dict(fraction=m.mean(axis=1), pruned=m.sum(axis=1), channels=int(m.shape[1]), masks=m,
                per_layer=per_layer)


def require_batch_norm(name: str, model: nn.Module) -> None:
    """A one-line :class:`ConfigError` when ``model`` has no batch norm: ``"<name>: expected a model with ..."``."""
    if not bn_layers(model):
        spec = getattr(model, "spec", None)
        raise ConfigError(message(name, "a model with batch norm (cnn, cnn1d, resnet)",
                                  str(spec) if spec is not None else type(model).__name__))


__all__ = ["apply_masks", "bn_layers", "channel_masks", "gates", "prune_channels", "pruned_fraction",
           "require_batch_norm"]
