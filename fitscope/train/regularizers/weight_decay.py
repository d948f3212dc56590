"""Weight decay: the optimizer's L2 decay of every parameter (``w <- w - lr * wd * w`` added to each step).

Paper: Krogh & Hertz 1992, "A simple weight decay can improve generalization". Torch's fused SGD and Adam
apply it (Adam's is L2 added to the gradient, not AdamW's decoupled decay). Works with the hand-written MLP step.
"""

from __future__ import annotations

from typing import Any

from fitscope.train.regularizers.base import Param, Regularizer


class WeightDecay(Regularizer):
    """L2 weight decay through the optimizer (``TrainConfig(weight_decay=...)`` is the same part)."""

    name = "wd"
    summary = "L2 weight decay of every parameter, applied by the optimizer"
    paper = "Krogh & Hertz 1992"
    params = {"decay": Param(5e-4, 0.0, 1.0, "decay coefficient", low_open=True)}
    hand_written_ok = True

    def optimizer_options(self) -> dict[str, Any]:
        """``{"weight_decay": decay}``."""
        return {"weight_decay": self.values["decay"]}


PART = WeightDecay
