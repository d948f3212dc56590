"""Network slimming: an L1 penalty on the batch-norm scales (the channel gates), the baseline of polarization.

Paper: Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming" (ICCV). Penalty
of model ``k``, over all its BN channels:

    lambda * ||gamma||_1

(its subgradient ``lambda * sign(gamma)``, what their code adds to the gradient). The gates start at
``init = 0.5`` (as in their code) and are not clamped. Network slimming then prunes a global fraction of the
smallest ``|gamma|`` (:func:`~fitscope.train.regularizers.pruning.prune_channels`) and fine-tunes; ``sparsity``
does it within the run, as for :mod:`~fitscope.train.regularizers.polarize` (each BN layer loses that fraction
of its channels at the end of epoch ``round(prune_at * epochs)``, the rest of the run trains the sub-network).

Hyperparameters: ``lambda`` (default 1e-2, range ``(0, 10]``; Liu et al. use 1e-4 for VGG and 1e-5 for
ResNet / DenseNet over 160 CIFAR epochs, with the mean cross-entropy of a batch as the loss, like ours; scaled
up for our short runs as polarize's, see there), ``threshold`` (default 0.01: a gate ``|gamma| <= threshold``
counts as pruned in the measure ``pruned``; L1 leaves gates near 0, not at 0), ``init`` (0.5), ``sparsity``
(default 0: off) and ``prune_at`` (0.75).

Needs batch norm (``cnn``, ``cnn1d``, ``resnet``): :meth:`attach` raises a one-line ConfigError for an ``mlp``.
Measure ``pruned``: per model, the fraction of gates with ``|gamma| <= threshold`` after training.
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, TrainState
from fitscope.train.regularizers.polarize import GatePart, gate_params
from fitscope.train.regularizers.pruning import gates


class L1BatchNorm(GatePart):
    """``lambda * ||gamma||_1`` on the BN scales of each model."""

    name = "l1bn"
    summary = "network slimming: lambda * ||gamma||_1 on the batch-norm scales"
    paper = "Liu et al. 2017"
    params = {"lambda": Param(1e-2, 0.0, 10.0, "weight of the L1 penalty", low_open=True), **gate_params(0.01)}

    def penalty(self, state: TrainState) -> torch.Tensor:
        """``(K,)`` L1 norms of the gates times lambda."""
        return self.values["lambda"] * gates(state.model, state.k).abs().sum(dim=1)


PART = L1BatchNorm
