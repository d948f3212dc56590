"""PGD adversarial training: train on the worst-case inputs of a small ball around each row.

Per step and model ``k``: the batch's rows are replaced by the PGD adversarial
inputs of model ``k`` at its current weights (:func:`fitscope.train.adversarial.pgd_perturb`:
a random start in the ball, ``steps`` signed-gradient (L-inf) or normalized-gradient (L2)
ascent steps of size ``step`` on the row's cross-entropy against its targets,
each followed by the projection onto the ball of radius ``eps`` and the clip to
``[low, high]``), and the step minimizes the loss on them: Madry et al.'s
saddle-point objective ``min_w E max_{||delta|| <= eps} L(w, x + delta, y)``.

Paper: Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning
Models Resistant to Adversarial Attacks" (ICLR). They train on adversarial
examples only (no clean term), with a random start, as here; MNIST used
``eps = 0.3``, 40 steps of 0.01. Defaults here: ``eps = 0.1``, 7 steps, step
``2.5 eps / steps`` (the rule of their ``robustness`` library), no clipping
unless ``low`` / ``high`` are given (pass the input range, e.g. ``low=0,high=1``).

K models at once: the ascent follows the gradient of the sum over models of
each model's per-row losses, so model ``k``'s adversarial rows depend on model
``k`` alone; its random starts come from its own generator
(``derive_seed(seed_k, "pgd")``). The attack runs the model as the training
step does (training mode, as in Madry et al.'s code); batch-norm running
statistics are restored after it, so only the training forward pass moves them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from fitscope.errors import ConfigError
from fitscope.train.adversarial import check_norm_name, pgd_perturb
from fitscope.train.regularizers.base import Param, Regularizer, TrainState
from fitscope.validation import message


def _buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


class PGD(Regularizer):
    """Replace each model's batch by its own PGD adversarial rows (L-inf or L2 ball of radius ``eps``)."""

    name = "pgd"
    summary = "PGD adversarial training: x <- argmax_{||x' - x|| <= eps} CE(x') by PGD, per model (norm=inf or 2)"
    paper = "Madry et al. 2018"
    params = {
        "eps": Param(0.1, 0.0, float("inf"), "radius of the ball (in input units)", low_open=True),
        "steps": Param(7, 1, 1000, "PGD steps", integer=True),
        "step": Param(None, 0.0, float("inf"), "step size (default 2.5 eps / steps)", low_open=True),
        "low": Param(None, help="lower end of the input range the adversarial rows are clipped to (default none)"),
        "high": Param(None, help="upper end of the input range (default none)"),
    }

    def __init__(self, **values: Any) -> None:
        norm = values.pop("norm", "inf")
        super().__init__(**values)
        self.values["norm"] = check_norm_name(norm, "pgd:norm")
        low, high = self.values["low"], self.values["high"]
        if low is not None and high is not None and not low < high:
            raise ConfigError(message("pgd:high", f"a value above pgd:low = {low:g}", f"{high:g}"))

    def attach(self, state: TrainState) -> None:
        """Per-model generators of the random starts."""
        self.generators = state.generators(self.name)

    def mix(self, x: torch.Tensor, targets: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(K, b, ...)`` adversarial inputs for the ``(K, b, C)`` targets; targets unchanged."""
        model = state.model
        saved = [b.clone() for b in _buffers(model)]

        def loss(x_adv: torch.Tensor) -> torch.Tensor:
            return -(targets * torch.log_softmax(model(x_adv), dim=-1)).sum(dim=-1)

        v = self.values
        try:
            x_adv = pgd_perturb(loss, x, eps=v["eps"], norm=v["norm"], steps=v["steps"], step_size=v["step"],
                                low=v["low"], high=v["high"], generators=self.generators, batch_dims=2)
        finally:
            with torch.no_grad():
                for b, old in zip(_buffers(model), saved):
                    b.copy_(old)
        return x_adv, targets


PART = PGD
