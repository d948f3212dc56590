"""Sharpness-aware minimization (SAM): the gradient at the worst nearby point of a ball of radius ``rho``.

Per step and model ``k``: the gradient ``g_k`` of its loss at its weights ``w_k``; the ascent step
``e_k = rho g_k / (||g_k|| + 1e-12)`` (``||.||``: the 2-norm over all of model ``k``'s parameters, its own,
never the ensemble's); the gradient at ``w_k + e_k``; then ``w_k`` restored. The optimizer steps with that
perturbed-point gradient: the first-order solution of ``min_w max_{||e|| <= rho} L(w + e)``.

Paper: Foret, Kleinbaum, Mobahi & Neyshabur 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization" (ICLR); default ``rho = 0.05`` (their usual value). As in the widely used implementation
(github.com/davda54/sam): the ``1e-12`` in the scale, the weights restored from a copy (exactly, not by
subtracting), and BatchNorm running statistics left as the first forward pass made them (the second pass
does not update them). Weight decay stays in the optimizer, outside the norm.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from fitscope.train.regularizers.base import Param, Regularizer, TrainState, per_model

#: added to each model's gradient norm (the reference implementation's)
EPS = 1e-12


class SAM(Regularizer):
    """Two gradient computations per step: at ``w`` and at ``w + rho g / ||g||`` (per model)."""

    name = "sam"
    summary = "sharpness-aware minimization: the gradient at w + rho g / ||g|| (per model)"
    paper = "Foret et al. 2021"
    params = {"rho": Param(0.05, 0.0, float("inf"), "radius of the ascent step", low_open=True)}
    wraps_step = True

    def step(self, gradients: Callable[[], None], state: TrainState) -> None:
        """Gradient at ``w``, ascent step per model, gradient at the perturbed point, weights restored."""
        k = state.k
        gradients()
        params = [p for p in state.model.parameters() if p.requires_grad and p.grad is not None]
        with torch.no_grad():
            sq = sum(per_model(p.grad, k).double().pow(2).sum(dim=1) for p in params)
            scale = (self.values["rho"] / (torch.sqrt(sq) + EPS)).to(params[0].dtype)
            saved = [p.detach().clone() for p in params]
            for p in params:
                p.add_((per_model(p.grad, k) * scale.to(p.dtype)[:, None]).reshape(p.shape))
        norms = [m for m in state.model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        stats = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                 for m in norms]
        try:
            gradients()
        finally:
            with torch.no_grad():
                for p, old in zip(params, saved):
                    p.copy_(old)
                for m, old in zip(norms, stats):
                    now = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                    for b, o in zip(now, old):
                        b.copy_(o)


PART = SAM
