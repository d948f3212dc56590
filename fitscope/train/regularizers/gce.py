"""Generalized cross-entropy (GCE, the ``L_q`` loss): ``(1 - p_y^q) / q`` in place of cross-entropy.

Per row, with ``p = softmax(z)``: ``L_q = (1 - p_y^q) / q``; ``q -> 0`` gives cross-entropy, ``q = 1`` the
mean absolute error ``1 - p_y`` (robust to label noise, slow to fit). With soft targets ``t`` (label smoothing,
mixup, PS-KD) the target-weighted form ``sum_c t_c (1 - p_c^q) / q`` is used, which equals ``L_q`` for a
one-hot ``t``. A model's loss is the mean over its rows. ``p^q`` is computed as ``exp(q log_softmax(z))``.

Paper: Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy
Labels" (NeurIPS); the plain ``L_q`` (not its truncated variant). Default ``q = 0.7`` (the paper's value).
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class GCE(Regularizer):
    """Loss ``mean_rows sum_c t_c (1 - p_c^q) / q``."""

    name = "gce"
    summary = "generalized cross-entropy loss (1 - p_y^q) / q (replaces cross-entropy)"
    paper = "Zhang & Sabuncu 2018"
    params = {"q": Param(0.7, 0.0, 1.0, "exponent: 0 is cross-entropy, 1 is mean absolute error", low_open=True)}
    replaces_loss = True

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, state: TrainState) -> torch.Tensor:
        """The ``(K,)`` per-model mean of ``sum_c t_c (1 - p_c^q) / q``."""
        q = self.values["q"]
        pq = torch.exp(q * torch.log_softmax(logits, dim=-1))
        return (targets * (1 - pq)).sum(dim=-1).mean(dim=1) / q


PART = GCE
