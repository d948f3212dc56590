"""On-tensor data augmentation for a batch of K models, seeded per model.

Images ``(K, B, C, H, W)``: random crop after zero padding by ``crop_padding``
pixels and a random horizontal flip, done as one ``gather``. Signals
``(K, B, C, L)``: random shift by up to ``max_shift`` positions with zero
fill. Vectors are returned unchanged. Model ``k``'s draws come from its own
generator (seeded ``derive_seed(seed, "augment")``), so they depend only on
that model's seed.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from fitscope.models import input_kind
from fitscope.seeding import derive_seed


def default_crop_padding(height: int) -> int:
    """Padding of the random crop for images of ``height`` rows: 1 for 8x8, 4 for 32x32."""
    return max(1, round(height / 8))


def default_max_shift(length: int) -> int:
    """Largest random shift for signals of ``length`` positions (4 for mnist1d's 40)."""
    return max(1, length // 10)


class Augmenter:
    """Random crop + flip (images) or random shift (signals) for ``(K, B, *input_shape)`` batches.

    Args:
        input_shape: shape of one input.
        seeds: the K model seeds.
        crop_padding: image crop padding; None for :func:`default_crop_padding`.
        flip: whether images are flipped horizontally with probability 1/2.
        max_shift: largest signal shift; None for :func:`default_max_shift`.
        device: where the batches live.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        seeds: Sequence[int],
        crop_padding: int | None = None,
        flip: bool = True,
        max_shift: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.input_shape = tuple(input_shape)
        self.kind = input_kind(self.input_shape)
        self.device = torch.device(device)
        self.flip = bool(flip) and self.kind == "image"
        if self.kind == "image":
            self.pad = default_crop_padding(self.input_shape[1]) if crop_padding is None else int(crop_padding)
        elif self.kind == "signal":
            self.pad = default_max_shift(self.input_shape[1]) if max_shift is None else int(max_shift)
        else:
            self.pad = 0
        self.generators = [
            torch.Generator(device=self.device).manual_seed(derive_seed(int(s), "augment")) for s in seeds
        ]

    @property
    def active(self) -> bool:
        """Whether calling this changes anything (False for vectors or zero padding without flips)."""
        return self.kind != "vector" and (self.pad > 0 or self.flip)

    def _draws(self, batch: int) -> torch.Tensor:
        # (K, 3, B) uniforms in [0, 1): row offset / shift, column offset, flip.
        return torch.stack(
            [torch.rand(3, batch, generator=g, device=self.device) for g in self.generators]
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment ``x`` of shape ``(K, B, *input_shape)``; returns a new tensor of the same shape."""
        if not self.active:
            return x
        k, b = x.shape[:2]
        p, span = self.pad, 2 * self.pad + 1
        r = self._draws(b).reshape(k, 3, b)
        offsets = (r[:, :2] * span).long().clamp_(max=span - 1)  # (K, 2, B) in [0, 2p]
        if self.kind == "signal":
            c, length = self.input_shape
            padded = F.pad(x.reshape(k * b, c, length), (p, p))
            idx = offsets[:, 0].reshape(k * b, 1) + torch.arange(length, device=x.device)
            out = padded.gather(2, idx.unsqueeze(1).expand(k * b, c, length))
            return out.view(k, b, c, length)
        c, h, w = self.input_shape
        padded = F.pad(x.reshape(k * b, c, h, w), (p, p, p, p))
        rows = offsets[:, 0].reshape(k * b, 1) + torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device).expand(k * b, w)
        if self.flip:
            flipped = (r[:, 2] < 0.5).reshape(k * b, 1)
            cols = torch.where(flipped, (w - 1) - cols, cols)
        cols = cols + offsets[:, 1].reshape(k * b, 1)
        idx = (rows.unsqueeze(2) * (w + 2 * p) + cols.unsqueeze(1)).reshape(k * b, 1, h * w)
        out = padded.reshape(k * b, c, -1).gather(2, idx.expand(k * b, c, h * w))
        return out.view(k, b, c, h, w)
