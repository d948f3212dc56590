"""The training objective of K models at once, assembled from regularizer parts; fills the gradients of one step.

Notation: K models, b rows per model in the step, C classes.

Plain cross-entropy (no part, or only parts that leave the loss alone: weight
decay, dropout, augmentation) keeps the fastest step of
:mod:`fitscope.train.steps` (the hand-written MLP step for MLPs). Any other
part goes through autograd: per step,

1. targets ``t`` ``(K, b, C)``: one-hot of the given labels, then each part's
   :meth:`~fitscope.train.regularizers.Regularizer.targets` (label smoothing,
   PS-KD); inputs through each part's ``inputs`` (augmentation), then ``mix``
   (mixup, both);
2. gradients of ``sum_k [ L_k + sum_parts extra_k + sum_parts penalty_k ]``
   where ``L_k`` is model ``k``'s mean soft cross-entropy
   ``-sum_c t log softmax(z)`` over its b rows (or the loss part's, GCE / SCE);
   each part's ``update`` then sees the detached logits once (ELR);
3. a step-wrapping part (SAM) may compute the gradients twice around a
   perturbation; the draws of step 1 are made once.

Model ``k``'s parameters get the gradient it would get alone, since every
term is a sum over models of a term of that model only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.train.regularizers import Regularizer, TrainState
from fitscope.train.steps import make_step


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-model mean of ``-sum_c t_c log softmax(z)_c`` over rows: ``(K, b, C)`` logits and targets -> ``(K,)``."""
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean(dim=1)


class Objective:
    """Fills ``p.grad`` for one step of an ensemble under the given parts.

    Args:
        parts: the regularizer parts (already attached to ``state``).
        state: the training state the parts read.
        hand_written: allow the hand-written MLP step when every part leaves
            the loss and targets alone.
    """

    def __init__(self, parts: Sequence[Regularizer], state: TrainState, *, hand_written: bool = True) -> None:
        self.parts = list(parts)
        self.state = state
        self.model = state.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.plain = all(p.hand_written_ok for p in self.parts)
        self.fast_step = make_step(self.model, hand_written=hand_written) if self.plain else None
        self.loss_part = next((p for p in self.parts if p.replaces_loss), None)
        self.step_part = next((p for p in self.parts if p.wraps_step), None)
        self._after_step = [p for p in self.parts if type(p).after_step is not Regularizer.after_step]

    @property
    def uses_autograd_objective(self) -> bool:
        """Whether steps go through the assembled objective (False: the plain cross-entropy step)."""
        return not self.plain

    def __call__(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Set ``p.grad`` for inputs ``x`` ``(K, b, *input_shape)``, labels ``y`` ``(K, b)``, row indices ``idx``."""
        state = self.state
        for part in self.parts:
            x = part.inputs(x, state)
        if self.plain:
            self.fast_step(x, y)
            return
        targets = F.one_hot(y, state.n_classes).to(x.dtype)
        for part in self.parts:
            targets = part.targets(targets, idx, state)
        for part in self.parts:
            x, targets = part.mix(x, targets, state)
        first = [True]

        def gradients() -> None:
            logits = self.model(x)
            if self.loss_part is not None:
                total = self.loss_part.loss(logits, targets, state)
            else:
                total = soft_cross_entropy(logits, targets)
            for part in self.parts:
                term = part.extra(logits, targets, idx, state)
                if term is not None:
                    total = total + term
                term = part.penalty(state)
                if term is not None:
                    total = total + term
            for p in self.params:
                p.grad = None
            total.sum().backward()
            if first[0]:
                first[0] = False
                detached = logits.detach()
                for part in self.parts:
                    part.update(detached, idx, state)

        if self.step_part is not None:
            self.step_part.step(gradients, state)
        else:
            gradients()

    def after_step(self) -> None:
        """Call the parts' :meth:`~fitscope.train.regularizers.Regularizer.after_step` (after the optimizer step)."""
        for part in self._after_step:
            part.after_step(self.state)

    def end_epoch(self, train_logits: torch.Tensor) -> None:
        """Give the parts that want them the epoch's eval-mode logits ``(K, n, C)`` on the training rows.

        They get a copy made outside inference mode, which may enter later steps' autograd graphs.
        """
        takers = [p for p in self.parts if type(p).end_epoch is not Regularizer.end_epoch]
        if takers:
            logits = train_logits.clone()
            for part in takers:
                part.end_epoch(logits, self.state)

    def measures(self) -> dict[str, np.ndarray]:
        """Every part's per-model measures, keyed ``"<part>/<measure>"``."""
        out: dict[str, np.ndarray] = {}
        for part in self.parts:
            for key, value in part.measures(self.state).items():
                out[f"{part.name}/{key}"] = np.asarray(value)
        return out


def merged_options(parts: Sequence[Regularizer], kind: str) -> dict[str, Any]:
    """The parts' model (``kind="model"``) or optimizer (``"optimizer"``) options, merged."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part.model_options() if kind == "model" else part.optimizer_options())
    return out


def check_regularizers(spec: str, input_shape: tuple[int, ...], n_classes: int, parts, *, epochs: int = 100) -> None:
    """Raise the one-line :class:`~fitscope.errors.ConfigError` a part gives when it does not apply to the model.

    Builds one model of ``spec`` for ``input_shape`` and attaches every part to it (e.g. ``polarize`` on a
    model without batch norm), so that a study can refuse before it writes anything.

    Args:
        spec: model spec; input_shape: one input's shape; n_classes: C.
        parts: recorded parts (or text in the grammar; see :mod:`fitscope.train.regularizers`).
        epochs: the run's epoch budget (a part may need several, e.g. polarize's pruning epoch).
    """
    from fitscope.models import build
    from fitscope.train.regularizers import build_parts, check_parts

    built = build_parts(check_parts(parts))
    if not built:
        return
    model = build(spec, input_shape, n_classes, seeds=[0])
    state = TrainState(model=model, seeds=[0], n=1, n_classes=n_classes, epochs=epochs, device=torch.device("cpu"),
                       input_shape=tuple(input_shape), labels=torch.zeros(1, dtype=torch.int64))
    for part in built:
        part.attach(state)
