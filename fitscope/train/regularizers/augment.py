"""Data augmentation as a part: random crop and flip for images, random shift for 1-D signals.

The transform itself is :class:`~fitscope.train.regularizers.augment_images.Augmenter` (model ``k``'s draws
from its own generator). Vectors have nothing to augment: the part then changes nothing. The same as
``TrainConfig(augment=True)``. Works with the hand-written MLP step.
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.augment_images import Augmenter
from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class Augment(Regularizer):
    """Random crop (zero padding ``padding``) + horizontal flip for images, random shift for signals."""

    name = "augment"
    summary = "random crop and flip (images) or random shift (signals); nothing for vectors"
    paper = "standard (e.g. He et al. 2016 for the crop + flip of CIFAR)"
    params = {
        "padding": Param(None, 0, 64, "crop padding of images; default max(1, round(H / 8))", integer=True),
        "flip": Param(1, 0, 1, "1: flip images horizontally with probability 1/2; 0: never", integer=True),
        "shift": Param(None, 0, 1000, "largest shift of a signal; default max(1, L // 10)", integer=True),
    }
    hand_written_ok = True

    def attach(self, state: TrainState) -> None:
        """Make the per-model augmenter on the state's device."""
        self.augmenter = Augmenter(state.input_shape, seeds=state.seeds, crop_padding=self.values["padding"],
                                   flip=bool(self.values["flip"]), max_shift=self.values["shift"],
                                   device=state.device)

    def inputs(self, x: torch.Tensor, state: TrainState) -> torch.Tensor:
        """The augmented batch."""
        return self.augmenter(x)


PART = Augment
