"""Convolutional ensembles for images (``cnn:32-64``) and signals (``cnn1d:32x3``).

Both run on the grouped layout ``(B, K*C, *spatial)``: every convolution is
one grouped convolution with ``groups=K`` and every BatchNorm has ``K*C``
channels, so statistics are per model.
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
from fitscope.models.spec import ModelSpec


class _ConvStack(EnsembleModel):
    """Conv-BN-ReLU(-maxpool) blocks, global average pool, dropout, linear (shared by cnn and cnn1d)."""

    dim = 2

    def __init__(
        self,
        spec: ModelSpec,
        input_shape: tuple[int, ...],
        n_classes: int,
        seeds: Sequence[int],
        kernel: int,
    ) -> None:
        super().__init__(spec, input_shape, n_classes, seeds)
        k, gens = self.n_models, init_generators(self.seeds)
        bn = nn.BatchNorm1d if self.dim == 1 else nn.BatchNorm2d
        channels, spatial = self.input_shape[0], list(self.input_shape[1:])
        self.convs, self.norms, self.pools = nn.ModuleList(), nn.ModuleList(), []
        for width in spec.widths:
            self.convs.append(EnsembleConv(k, self.dim, channels, width, kernel, generators=gens))
            self.norms.append(bn(k * width))
            pool = all(s >= 2 for s in spatial)
            self.pools.append(pool)
            if pool:
                spatial = [s // 2 for s in spatial]
            channels = width
        self.dropout = EnsembleDropout(spec.dropout, self.seeds)
        self.out = EnsembleLinear(k, channels, n_classes, generators=gens)
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

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, seeds: Sequence[int]) -> None:
        super().__init__(spec, input_shape, n_classes, seeds, kernel=3)


class EnsembleCNN1d(_ConvStack):
    """K 1-D CNNs for signals ``(C, L)``: conv-BN-ReLU blocks with max-pool 2 while ``L >= 2``.

    Args:
        spec: a ``cnn1d`` spec; ``spec.widths`` are the block widths, ``spec.kernel`` the kernel size.
        input_shape: ``(C, L)``.
        n_classes: number of logits.
        seeds: one seed per model.
    """

    dim = 1

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, seeds: Sequence[int]) -> None:
        super().__init__(spec, input_shape, n_classes, seeds, kernel=spec.kernel)
