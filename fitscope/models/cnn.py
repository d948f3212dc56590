"""Convolutional ensembles for images (``cnn:32-64``) and signals (``cnn1d:32x3``).

Both run on the grouped layout ``(B, K*C, *spatial)``: every convolution is
one grouped convolution with ``groups=K`` and every BatchNorm has ``K*C``
channels, so statistics are per model (with ``norm="group"``, a GroupNorm of
``K*g`` groups over ``K*C`` channels, whose groups never span two models).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.models.base import EnsembleModel
from fitscope.models.layers import (
    EnsembleConv,
    EnsembleDropout,
    EnsembleLinear,
    grouped_to_features,
    init_generators,
    to_grouped,
)
from fitscope.models.plan import layer_plan
from fitscope.models.spec import ModelSpec


class _ConvStack(EnsembleModel):
    """Conv-norm-ReLU(-maxpool) blocks, global average pool, dropout, linear (shared by cnn and cnn1d).

    ``norm``: ``"batch"`` (default) or ``"group"`` (see :mod:`fitscope.models.plan`).
    """

    dim = 2

    def __init__(
        self,
        spec: ModelSpec,
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        seeds: Sequence[int],
        norm: str = "batch",
    ) -> None:
        super().__init__(spec, input_shape, n_classes, seeds=seeds)
        k, gens = self.n_models, init_generators(self.seeds)
        # The architecture comes from the layer plan shared with build_plain (fitscope.models.plan).
        plan = layer_plan(spec, self.input_shape, n_classes, norm=norm)
        self.norm = plan.norm
        batch_norm = nn.BatchNorm1d if self.dim == 1 else nn.BatchNorm2d
        self.convs, self.norms, self.pools = nn.ModuleList(), nn.ModuleList(), []
        for block in plan.blocks:
            self.convs.append(EnsembleConv(k, self.dim, block.in_size, block.out_size, block.kernel,
                                           generators=gens, bias=plan.conv_bias))
            # Grouped layout: model k owns channels k*C .. (k+1)*C - 1, so K*g groups never mix models.
            self.norms.append(nn.GroupNorm(k * plan.norm_groups(block.out_size), k * block.out_size)
                              if plan.norm == "group" else batch_norm(k * block.out_size))
            self.pools.append(block.pool)
        self.dropout = EnsembleDropout(spec.dropout, seeds=self.seeds)
        self.out = EnsembleLinear(k, plan.head_in, n_classes, generators=gens)
        self._pool = F.max_pool1d if self.dim == 1 else F.max_pool2d

    def _body(self, h: torch.Tensor) -> torch.Tensor:
        # ``h`` is the output of the first convolution (grouped layout).
        for i, (norm, pool) in enumerate(zip(self.norms, self.pools)):
            h = F.relu(norm(h if i == 0 else self.convs[i](h)), inplace=True)
            if pool:
                h = self._pool(h, 2)
        return self.out(self.dropout(grouped_to_features(h, self.n_models)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, *input_shape)`` -> ``(K, B, n_classes)``."""
        return self._body(self.convs[0](to_grouped(x)))

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """One batch ``(B, *input_shape)`` for all models; the first convolution is one dense convolution."""
        return self._body(self.convs[0].forward_shared(x))


class EnsembleCNN(_ConvStack):
    """K small image CNNs: conv3x3-BN-ReLU blocks with 2x2 max-pool while the image is >= 2x2.

    Args:
        spec: a ``cnn`` spec; ``spec.widths`` are the block widths.
        input_shape: ``(C, H, W)``.
        n_classes: number of logits.
        seeds: one seed per model.
    """

    dim = 2

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seeds: Sequence[int],
                 norm: str = "batch") -> None:
        super().__init__(spec, input_shape, n_classes, seeds=seeds, norm=norm)


class EnsembleCNN1d(_ConvStack):
    """K 1-D CNNs for signals ``(C, L)``: conv-BN-ReLU blocks with max-pool 2 while ``L >= 2``.

    Args:
        spec: a ``cnn1d`` spec; ``spec.widths`` are the block widths, ``spec.kernel`` the kernel size.
        input_shape: ``(C, L)``.
        n_classes: number of logits.
        seeds: one seed per model.
    """

    dim = 1

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seeds: Sequence[int],
                 norm: str = "batch") -> None:
        super().__init__(spec, input_shape, n_classes, seeds=seeds, norm=norm)
