"""Mixup: train on convex combinations of pairs of rows and of their targets.

Per model ``k`` and step: ``lam ~ Beta(alpha, alpha)`` and a permutation ``perm`` of the ``b`` rows of the
batch; then ``x <- lam x + (1 - lam) x[perm]`` and ``t <- lam t + (1 - lam) t[perm]`` (``t``: the soft targets
so far, one-hot of the given labels unless another part changed them). With the soft cross-entropy this is
the paper's ``lam CE(z, y) + (1 - lam) CE(z, y[perm])``.

Paper: Zhang, Cisse, Dauphin & Lopez-Paz 2018, "mixup: Beyond Empirical Risk Minimization" (ICLR); the
reference code (facebookresearch/mixup-cifar10) draws one ``lam`` per batch with ``np.random.beta`` and a
``torch.randperm`` of the batch, as here. Default ``alpha = 0.2`` (the paper's ImageNet value).

Model ``k``'s draws (``lam`` then the permutation, each step) come from its own NumPy generator
``np.random.default_rng(derive_seed(seed_k, "mixup"))`` (torch has no seedable Beta sampler), so they depend
only on that model's seed.
"""

from __future__ import annotations

import numpy as np
import torch

from fitscope.seeding import derive_seed
from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class Mixup(Regularizer):
    """Mix each model's batch with a permutation of itself, weight ``lam ~ Beta(alpha, alpha)`` per model."""

    name = "mixup"
    summary = "mixup: x, t <- lam (x, t) + (1 - lam) (x, t)[perm], lam ~ Beta(alpha, alpha) per model and step"
    paper = "Zhang et al. 2018"
    params = {"alpha": Param(0.2, 0.0, float("inf"), "Beta(alpha, alpha) concentration of the mixing weight",
                             low_open=True)}

    def attach(self, state: TrainState) -> None:
        """One NumPy generator per model."""
        self.rngs = [np.random.default_rng(derive_seed(int(s), self.name)) for s in state.seeds]

    def draw(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The step's ``(K,)`` mixing weights and ``(K, b)`` permutations (model ``k``: ``lam`` then ``perm``)."""
        alpha = self.values["alpha"]
        lam, perm = [], []
        for rng in self.rngs:
            lam.append(rng.beta(alpha, alpha))
            perm.append(rng.permutation(b))
        return np.asarray(lam), np.stack(perm)

    def mix(self, x: torch.Tensor, targets: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed inputs ``(K, b, ...)`` and targets ``(K, b, C)``."""
        k, b = x.shape[:2]
        lam_np, perm_np = self.draw(b)
        perm = torch.from_numpy(perm_np).to(x.device)
        lam = torch.from_numpy(lam_np).to(device=x.device, dtype=x.dtype)
        x_perm = x.gather(1, perm.reshape(k, b, *([1] * (x.dim() - 2))).expand_as(x))
        t_perm = targets.gather(1, perm[..., None].expand_as(targets))
        lx = lam.reshape(k, *([1] * (x.dim() - 1)))
        lt = lam.to(targets.dtype).reshape(k, 1, 1)
        return lx * x + (1 - lx) * x_perm, lt * targets + (1 - lt) * t_perm


PART = Mixup
