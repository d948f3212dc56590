"""Progressive self-knowledge distillation (PS-KD): mix the targets with the model's previous-epoch predictions.

Targets of row ``i`` in epoch ``e`` (0-based, of ``E``): ``(1 - alpha_e) t_i + alpha_e p_i``, with
``alpha_e = alpha_T * e / E``, ``t_i`` the targets so far (one-hot of the given label unless another part
changed them) and ``p_i = softmax(z_i)`` from the eval-mode logits of the same model on row ``i`` at the end
of the previous epoch. At epoch 0 the targets are left as they are.

Paper: Kim, Ji, Yoo & Kwak 2021, "Self-Knowledge Distillation with Progressive Refinement of Targets" (ICCV),
``alpha_t = alpha_T * t / T``; default ``alpha_T = 0.8`` (their CIFAR-100 value). Two differences from the
authors' code: it stores the train-mode predictions of each step and uses ``alpha_T * (e + 1) / E``; here the
predictions are the epoch's evaluation pass over every training row, and ``alpha_e = alpha_T * e / E``.

State: the ``(K, n, C)`` previous-epoch probabilities on the device.
"""

from __future__ import annotations

import torch

from fitscope.train.regularizers.base import Param, Regularizer, TrainState


class PSKD(Regularizer):
    """Targets ``(1 - alpha_e) t + alpha_e softmax(previous-epoch logits)``, ``alpha_e = alpha_T * e / E``."""

    name = "pskd"
    summary = "progressive self-distillation: targets mixed with the previous epoch's predictions"
    paper = "Kim et al. 2021"
    params = {"alpha_T": Param(0.8, 0.0, 1.0, "weight of the own predictions at the last epoch", low_open=True)}

    def attach(self, state: TrainState) -> None:
        """No previous predictions yet."""
        self.previous: torch.Tensor | None = None

    def alpha(self, state: TrainState) -> float:
        """``alpha_T * epoch / epochs`` for the current (0-based) epoch."""
        return self.values["alpha_T"] * state.epoch / state.epochs

    def targets(self, targets: torch.Tensor, idx: torch.Tensor, state: TrainState) -> torch.Tensor:
        """Targets mixed with the rows' previous-epoch probabilities."""
        a = self.alpha(state)
        if a == 0:
            return targets
        if self.previous is None:
            raise RuntimeError(f"pskd: epoch {state.epoch} without the previous epoch's predictions")
        p = self.previous.gather(1, idx[..., None].expand(-1, -1, self.previous.shape[-1]))
        return (1 - a) * targets + a * p.to(targets.dtype)

    def end_epoch(self, train_logits: torch.Tensor, state: TrainState) -> None:
        """Keep the softmax of the epoch's eval-mode logits ``(K, n, C)``."""
        self.previous = torch.softmax(train_logits.detach().float(), dim=-1)


PART = PSKD
