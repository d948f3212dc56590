"""Symmetric cross-entropy (SCE): ``alpha * CE + beta * RCE`` in place of cross-entropy.

Per row, with ``p = softmax(z)`` and targets ``t``: ``CE = -sum_c t_c log p_c`` and the reverse cross-entropy
``RCE = -sum_c p_c log t_c``, where ``log 0`` is replaced by ``A < 0`` (``log t_c`` taken as
``max(log t_c, A)``); for a one-hot ``t``, ``RCE = -A (1 - p_y)``. A model's loss is the mean over its rows.

Paper: Wang, Ma, Chen, Luo, Yi & Bailey 2019, "Symmetric Cross Entropy for Robust Learning with Noisy
Labels" (ICCV): defaults ``alpha = 0.1``, ``beta = 1`` (their CIFAR-10 values) and ``A = -4`` (the paper's
value). The authors' code clamps the one-hot targets to ``[1e-4, 1]`` before the natural log, which is
``A = ln(1e-4) ~ -9.21``: set ``A=-9.2103`` to match it. (That code also clamps ``p`` below at ``1e-7``;
here ``p`` is not clamped.)
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class SCE(Regularizer):
    """Loss ``mean_rows [alpha * CE(t, p) + beta * RCE(t, p)]``."""

    name = "sce"
    summary = "symmetric cross-entropy alpha * CE + beta * reverse CE (replaces cross-entropy)"
    paper = "Wang et al. 2019"
    params = {
        "alpha": Param(0.1, 0.0, 100.0, "weight of cross-entropy"),
        "beta": Param(1.0, 0.0, 100.0, "weight of the reverse cross-entropy"),
        "A": Param(-4.0, -100.0, 0.0, "the value taken for log 0 in the reverse cross-entropy", high_open=True),
    }
    replaces_loss = True

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, state: TrainState) -> torch.Tensor:
        """The ``(K,)`` per-model mean of ``alpha * CE + beta * RCE``."""
        log_p = torch.log_softmax(logits, dim=-1)
        ce = -(targets * log_p).sum(dim=-1)
        log_t = torch.log(targets.clamp(min=0)).clamp(min=self.values["A"])
        rce = -(log_p.exp() * log_t).sum(dim=-1)
        return (self.values["alpha"] * ce + self.values["beta"] * rce).mean(dim=1)


PART = SCE
