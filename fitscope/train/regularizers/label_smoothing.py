"""Label smoothing: train on ``(1 - eps) * onehot(y) + eps / C`` instead of the one-hot label.

Paper: Szegedy et al. 2016, "Rethinking the Inception architecture" (section 7); its effect on calibration:
Mueller, Kornblith & Hinton 2019. Default ``eps = 0.1``.
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class LabelSmoothing(Regularizer):
    """Soft targets ``(1 - eps) t + eps / C`` (``t``: the targets so far, one-hot of the given label)."""

    name = "ls"
    summary = "label smoothing: targets (1 - eps) * onehot + eps / C"
    paper = "Szegedy et al. 2016"
    params = {"eps": Param(0.1, 0.0, 1.0, "smoothing mass spread over the classes", low_open=True, high_open=True)}

    def targets(self, targets: torch.Tensor, idx: torch.Tensor, state: TrainState) -> torch.Tensor:
        """Smoothed targets."""
        eps = self.values["eps"]
        return targets * (1.0 - eps) + eps / targets.shape[-1]


PART = LabelSmoothing
