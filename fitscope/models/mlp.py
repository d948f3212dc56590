"""Fully connected ReLU ensembles (``mlp:512x2``, ``mlp:256-128``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.models.base import EnsembleModel
from fitscope.models.layers import EnsembleDropout, EnsembleLinear, init_generators
from fitscope.models.plan import layer_plan
from fitscope.models.spec import ModelSpec


class EnsembleMLP(EnsembleModel):
    """K multilayer perceptrons: flatten, ``[linear, ReLU, dropout] * depth``, linear.

    Args:
        spec: an ``mlp`` spec; ``spec.widths`` are the hidden widths.
        input_shape: shape of one input (flattened).
        n_classes: number of logits.
        seeds: one seed per model.
    """

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seeds: Sequence[int]) -> None:
        super().__init__(spec, input_shape, n_classes, seeds=seeds)
        k, gens = self.n_models, init_generators(self.seeds)
        plan = layer_plan(spec, self.input_shape, n_classes)  # the architecture, shared with build_plain
        self.hidden = nn.ModuleList(
            EnsembleLinear(k, block.in_size, block.out_size, generators=gens) for block in plan.blocks
        )
        self.out = EnsembleLinear(k, plan.head_in, n_classes, generators=gens)
        self.dropout = EnsembleDropout(spec.dropout, seeds=self.seeds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, *input_shape)`` -> ``(K, B, n_classes)``."""
        h = x.reshape(x.shape[0], x.shape[1], -1)
        for layer in self.hidden:
            h = self.dropout(F.relu(layer(h), inplace=True))
        return self.out(h)
