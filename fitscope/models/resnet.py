"""Small residual networks for images (``resnet:16x3``), K at a time.

Stem conv3x3-BN-ReLU, then one stage per width with ``spec.blocks`` basic
blocks each (conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU); the first
block of every stage after the first has stride 2 (while the image is at
least 2x2) and a 1x1 conv-BN projection shortcut when the shape changes.
Global average pool, dropout, linear. Grouped layout ``(B, K*C, H, W)``
throughout.
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


class _BasicBlock(nn.Module):
    """Basic residual block on the grouped layout."""

    def __init__(self, k: int, c_in: int, c_out: int, stride: int, gens: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.conv1 = EnsembleConv(k, 2, c_in, c_out, 3, stride=stride, generators=gens)
        self.bn1 = nn.BatchNorm2d(k * c_out)
        self.conv2 = EnsembleConv(k, 2, c_out, c_out, 3, generators=gens)
        self.bn2 = nn.BatchNorm2d(k * c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                EnsembleConv(k, 2, c_in, c_out, 1, stride=stride, padding=0, generators=gens),
                nn.BatchNorm2d(k * c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped layout in, grouped layout out."""
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.shortcut is None else self.shortcut(x)), inplace=True)


class EnsembleResNet(EnsembleModel):
    """K small ResNets.

    Args:
        spec: a ``resnet`` spec; ``spec.widths`` are the stage widths, ``spec.blocks`` blocks per stage.
        input_shape: ``(C, H, W)``.
        n_classes: number of logits.
        seeds: one seed per model.
    """

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seeds: Sequence[int]) -> None:
        super().__init__(spec, input_shape, n_classes, seeds=seeds)
        k, gens = self.n_models, init_generators(self.seeds)
        c, h, w = self.input_shape
        width = spec.widths[0]
        self.stem = EnsembleConv(k, 2, c, width, 3, generators=gens)
        self.stem_bn = nn.BatchNorm2d(k * width)
        blocks = []
        for i, stage_width in enumerate(spec.widths):
            for j in range(spec.blocks):
                stride = 2 if i > 0 and j == 0 and min(h, w) >= 2 else 1
                if stride == 2:
                    h, w = (h + 1) // 2, (w + 1) // 2
                blocks.append(_BasicBlock(k, width, stage_width, stride, gens))
                width = stage_width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = EnsembleDropout(spec.dropout, seeds=self.seeds)
        self.out = EnsembleLinear(k, width, n_classes, generators=gens)

    def _body(self, h: torch.Tensor) -> torch.Tensor:
        h = self.blocks(F.relu(self.stem_bn(h), inplace=True))
        return self.out(self.dropout(grouped_to_features(h, self.n_models)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, B, C, H, W)`` -> ``(K, B, n_classes)``."""
        return self._body(self.stem(to_grouped(x)))

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """One batch ``(B, C, H, W)`` for all models; the stem is one dense convolution."""
        return self._body(self.stem.forward_shared(x))
