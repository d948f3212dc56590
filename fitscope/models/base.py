"""The common interface of every ensemble model (see :func:`fitscope.models.build`)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fitscope.models.spec import ModelSpec


class EnsembleModel(nn.Module):
    """K independent models evaluated as one module.

    ``forward`` takes ``x`` of shape ``(K, B, *input_shape)`` (model ``k``
    sees ``x[k]``) and returns logits ``(K, B, n_classes)``.
    ``forward_shared`` takes one batch ``(B, *input_shape)`` seen by every
    model (evaluation) and returns the same logits, often faster.

    Attributes:
        spec: the parsed :class:`ModelSpec`.
        input_shape: shape of one input.
        n_classes: number of output logits.
        seeds: the K model seeds, in order.
        n_models: K.
    """

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seeds: Sequence[int]) -> None:
        super().__init__()
        self.spec = spec
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes = int(n_classes)
        self.seeds = [int(s) for s in seeds]
        self.n_models = len(self.seeds)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, B, n_classes)`` of every model on the same batch ``x`` ``(B, *input_shape)``."""
        return self(x.unsqueeze(0).expand(self.n_models, *x.shape))

    def extra_repr(self) -> str:
        """The spec, K and the input shape, for ``print(model)``."""
        return f"spec={str(self.spec)!r}, K={self.n_models}, input_shape={self.input_shape}, n_classes={self.n_classes}"
