"""Early-learning regularization (ELR): keep the model near the running average of its own early predictions.

Per model, a target ``t_i`` (``C`` values) for every training row ``i``, zero at first. In a step on rows
``idx`` with logits ``z``:

- ``p = clamp(softmax(z), 1e-4, 1 - 1e-4)``; the rows' targets are first moved towards the detached,
  renormalized prediction: ``t_i <- beta t_i + (1 - beta) p_i / sum_c p_ic``;
- the term added to the model's loss is ``lambda * mean_{i in batch} log(1 - <p_i, t_i>)`` (``p`` not
  detached, ``t`` a constant), with the updated ``t``.

Its gradient in ``z_j`` is ``-lambda / b * p_j (t_j - <p, t>) / (1 - <p, t>)`` (where the clamp is inactive):
it pulls ``p`` towards ``t``, against memorizing a wrong label once the early predictions disagree with it.

Paper: Liu, Niles-Weed, Razavian & Fernandez-Granda 2020, "Early-Learning Regularization Prevents
Memorization of Noisy Labels" (NeurIPS). As in the authors' code (github.com/shengliu66/ELR,
``ELR/model/loss.py``, ``elr_loss.forward``): the clamp, the renormalization, and the target updated *before*
the term uses it (so a row seen for the first time already has ``t = (1 - beta) p``). Defaults ``lambda = 3``,
``beta = 0.7`` (their CIFAR-10 configuration).

Per step, the updated targets are computed once, from the step's first forward pass (a SAM step reuses
them at the perturbed point), and written back in the ``update`` hook. State: ``(K, n, C)`` on the device.
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState

#: the clamp of the predicted probabilities (the authors' code)
CLAMP = 1e-4


def clamped_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``clamp(softmax(z), 1e-4, 1 - 1e-4)`` over the last axis."""
    return torch.softmax(logits, dim=-1).clamp(CLAMP, 1.0 - CLAMP)


class ELR(Regularizer):
    """``lambda * mean log(1 - <p, t>)``, ``t`` an exponential moving average of each row's predictions."""

    name = "elr"
    summary = "early-learning regularization: + lambda * mean log(1 - <p, t>), t an EMA of the predictions"
    paper = "Liu et al. 2020"
    params = {
        "lambda": Param(3.0, 0.0, 100.0, "weight of the regularization term", low_open=True),
        "beta": Param(0.7, 0.0, 1.0, "momentum of the per-row target average", high_open=True),
    }

    def attach(self, state: TrainState) -> None:
        """Zero targets ``(K, n, C)`` on the device."""
        self.ema = torch.zeros(state.k, state.n, state.n_classes, device=state.device)
        self._step_targets: torch.Tensor | None = None

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        return self.ema.gather(1, idx[..., None].expand(-1, -1, self.ema.shape[-1]))

    def targets(self, targets: torch.Tensor, idx: torch.Tensor, state: TrainState) -> torch.Tensor:
        """A new step begins: forget the previous step's updated targets (the targets pass unchanged)."""
        self._step_targets = None
        return targets

    def extra(self, logits: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor,
              state: TrainState) -> torch.Tensor:
        """``lambda * mean_b log(1 - <p, t>)`` per model, ``(K,)``."""
        p = clamped_softmax(logits)
        if self._step_targets is None:
            q = p.detach()
            q = q / q.sum(dim=-1, keepdim=True)
            beta = self.values["beta"]
            self._step_targets = (beta * self._gather(idx) + (1 - beta) * q).to(self.ema.dtype)
        t = self._step_targets.to(p.dtype)
        return self.values["lambda"] * torch.log(1 - (p * t).sum(dim=-1)).mean(dim=1)

    def update(self, logits: torch.Tensor, idx: torch.Tensor, state: TrainState) -> None:
        """Write the step's updated targets of the rows ``idx``."""
        if self._step_targets is not None:
            self.ema.scatter_(1, idx[..., None].expand(-1, -1, self.ema.shape[-1]), self._step_targets)


PART = ELR
