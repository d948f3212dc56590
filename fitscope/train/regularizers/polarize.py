"""Polarization of the channel gates: batch-norm scales driven to 0 or to a common "on" level, then pruned.

Paper: Zhuang et al. 2020, "Neuron-level Structured Pruning using Polarization Regularizer" (NeurIPS 2020);
seed 004 (Learning a Consensus Sub-Network with Polarization Regularization and One Pass Training, 2023) prunes
with gates and a polarization loss while training, to a user-set sparsity. The gates are the BN scales ``gamma``
(see :mod:`fitscope.train.regularizers.pruning`). Penalty of model ``k``:

    lambda * sum over its BN layers l of ( t * ||g_l||_1 - ||g_l - mean(g_l)||_1 )

``g_l`` the ``C`` gates of layer ``l`` (``weight.view(K, C)[k]``). The first term pushes every gate to 0, the
second pushes the gates apart from their mean; on ``[0, 1]^C`` the sum is concave, so its minimum is at gates of
exactly 0 or 1, a fraction ``(2 + t) / 4`` of them at 0 (for ``t < 2``; the cross-entropy keeps the useful ones
up). Gradient, away from the kinks: ``lambda * (t * sign(g_i) - sign(g_i - mean) + mean_j sign(g_j - mean))``.

The mean: Zhuang et al. (and their code) take one mean over all the gates of the network (``layer=0`` here).
We take it per layer by default (``layer=1``): the scale of the gates of a BN layer followed by a convolution
and another BN is arbitrary (that BN divides it out), so under one global mean a whole such layer can sink below
it and be driven to ~0 at no cost to the loss; on ``cnn:32-64`` this is what happened (every gate of the first
layer ended near 0.02, and pruning by a global rank then removed the whole layer).

As in the authors' code, the gates start at ``init = 0.5`` (set in :meth:`attach`; network slimming's code
does the same) and are clamped to ``[0, 1]`` after every optimizer step (:meth:`after_step`). With ``off=1``
(default) a gate clamped to 0 also sets its channel's ``beta`` to 0 after the step: the channel then outputs 0,
as seed 004's binary gate at 0 does (with ``gamma = 0`` alone it would still output the constant ``relu(beta)``,
which the next layer uses as a bias, and pruning it afterwards would change the network); so the channels the
training switched off (gate exactly 0) can be removed without any change (``prune_channels(threshold=0)``).

Hyperparameters:

- ``lambda`` (default 1e-2, range ``(0, 10]``): the authors' code defaults to 1e-4 with, like ours, the mean
  cross-entropy of a batch plus the penalty, for 160 CIFAR epochs (~125,000 steps). The polarizer moves a gate by
  about ``lr * lambda`` a step, so what it can do grows with lambda times the steps; our runs are short (30
  epochs of digits at batch 64: ~540 steps, ~200 times fewer), and 1e-4 left every gate on there. 1e-2 polarizes
  such a run; ``bench/regularizers_structure.py`` chooses lambda on a validation split;
- ``t`` (default 1, the authors' default), in ``(0, 2)``;
- ``layer`` (default 1): the mean per BN layer (1) or over all the model's gates (0, the authors' form);
- ``off`` (default 1): see above; 0: the authors' clamp of ``gamma`` alone;
- ``threshold`` (default 0): a gate ``|gamma| <= threshold`` counts as pruned in the measure ``pruned``;
- ``init`` (default 0.5): the gates' initial value;
- ``sparsity`` (default 0: off), the user-set sparsity, in ``[0, 1)``: at the end of epoch
  ``round(prune_at * epochs)`` (at least 1, at most ``epochs - 1`` unless there is one epoch) every BN layer
  of every model loses its ``round(sparsity * C)`` gates of smallest ``|gamma|``
  (``prune_channels(fraction=sparsity, per_layer=True)``: ``gamma`` and ``beta`` set to 0; per layer, since
  gates of different layers are not comparable, see above), kept at 0 after every later step; the remaining
  epochs train the sub-network, so the result's last-epoch accuracies are the pruned network's (one training
  pass, no separate fine-tuning);
- ``prune_at`` (default 0.75), in ``(0, 1)``: when, as a fraction of the epoch budget (a run that early
  stopping ends before then is not pruned).

Needs batch norm (``cnn``, ``cnn1d``, ``resnet``): :meth:`attach` raises a one-line ConfigError for an ``mlp``.
Measure ``pruned``: per model, the fraction of gates with ``|gamma| <= threshold`` after training.
"""

from __future__ import annotations

import numpy as np
import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState
from fitscope.train.regularizers.pruning import (
    apply_masks,
    bn_layers,
    channel_masks,
    gates,
    pruned_fraction,
    require_batch_norm,
)


def gate_params(threshold: float) -> dict[str, Param]:
    """The hyperparameters every gate part has (``threshold``'s default given)."""
    return {
        "threshold": Param(threshold, 0.0, 1.0, "a gate |gamma| <= threshold counts as pruned (measure 'pruned')"),
        "init": Param(0.5, 0.0, 1.0, "initial value of every BN scale (0.5: network slimming's code)",
                      low_open=True),
        "sparsity": Param(0.0, 0.0, 1.0, "fraction of each BN layer's gates pruned during training (0: none)",
                          high_open=True),
        "prune_at": Param(0.75, 0.0, 1.0, "when sparsity > 0 prunes, as a fraction of the epochs", low_open=True,
                          high_open=True),
    }


class GatePart(Regularizer):
    """A part on the BN scales as channel gates (polarize, l1bn).

    It needs batch norm, sets the gates' initial value, prunes to ``sparsity`` at the end of epoch
    ``prune_epoch`` and keeps the pruned channels at 0 after every later step, and measures ``pruned``.
    """

    def attach(self, state: TrainState) -> None:
        """One-line ConfigError without batch norm; every gate set to ``init``."""
        require_batch_norm(self.name, state.model)
        with torch.no_grad():
            for layer in bn_layers(state.model):
                layer.weight.fill_(self.values["init"])
        self.masks: torch.Tensor | None = None
        self.prune_epoch: int | None = None
        if self.values["sparsity"] > 0:
            # (with a single epoch the pruning comes after it: the run's accuracies are those before)
            self.prune_epoch = min(max(1, round(self.values["prune_at"] * state.epochs)), max(1, state.epochs - 1))

    def after_step(self, state: TrainState) -> None:
        """Keep the pruned channels (``sparsity``) at 0."""
        if self.masks is not None:
            apply_masks(state.model, self.masks, state.k)

    def end_epoch(self, train_logits: torch.Tensor, state: TrainState) -> None:
        """With ``sparsity``: prune at the end of epoch ``prune_epoch`` (1-based)."""
        if self.prune_epoch is not None and self.masks is None and state.epoch + 1 == self.prune_epoch:
            self.masks = channel_masks(state.model, fraction=self.values["sparsity"], per_layer=True, k=state.k)
            apply_masks(state.model, self.masks, state.k)

    def measures(self, state: TrainState) -> dict[str, np.ndarray]:
        """``pruned``: per model, the fraction of gates with ``|gamma| <= threshold``."""
        return {"pruned": pruned_fraction(state.model, self.values["threshold"], state.k)}


class Polarize(GatePart):
    """``lambda * (t ||g||_1 - ||g - mean(g)||_1)`` on the BN gates of each model, gates clamped to [0, 1]."""

    name = "polarize"
    summary = "polarization of the BN gates: lambda * (t*||g||_1 - ||g - mean g||_1), g in [0, 1]; sparsity= prunes"
    paper = "Zhuang et al. 2020"
    params = {
        "lambda": Param(1e-2, 0.0, 10.0, "weight of the polarizer", low_open=True),
        "t": Param(1.0, 0.0, 2.0, "weight of the L1 term (the regularizer alone zeroes (2 + t)/4 of the gates)",
                   low_open=True, high_open=True),
        "layer": Param(1, 0, 1, "1: mean(g) per BN layer; 0: over all the model's gates (the authors' code)",
                       integer=True),
        "off": Param(1, 0, 1, "1: a gate clamped to 0 also zeroes its channel's beta (the channel is off)",
                     integer=True),
        **gate_params(0.0),
    }

    def penalty(self, state: TrainState) -> torch.Tensor:
        """``(K,)`` polarizer values times lambda (the mean per layer, or over the model's gates with ``layer=0``)."""
        t = self.values["t"]
        if not self.values["layer"]:
            g = gates(state.model, state.k)
            return self.values["lambda"] * (t * g.abs().sum(dim=1) - (g - g.mean(dim=1, keepdim=True)).abs().sum(dim=1))
        total = 0.0
        for layer in bn_layers(state.model):
            g = layer.weight.view(state.k, -1)
            total = total + t * g.abs().sum(dim=1) - (g - g.mean(dim=1, keepdim=True)).abs().sum(dim=1)
        return self.values["lambda"] * total

    def after_step(self, state: TrainState) -> None:
        """Clamp the gates to [0, 1] (with ``off``: beta to 0 where the gate is 0); keep pruned channels at 0."""
        with torch.no_grad():
            for layer in bn_layers(state.model):
                layer.weight.clamp_(0.0, 1.0)
                if self.values["off"] and layer.bias is not None:
                    layer.bias.masked_fill_(layer.weight == 0, 0.0)
        super().after_step(state)


PART = Polarize
