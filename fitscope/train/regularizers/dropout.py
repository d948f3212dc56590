"""Dropout: zero each hidden unit with probability p in training and scale the rest by 1 / (1 - p).

Paper: Srivastava et al. 2014. Where it acts is the model family's (after every hidden ReLU of an MLP,
before the final linear layer of a CNN, ResNet or 1-D CNN; see ``fitscope models list``); model ``k``'s
masks come from its own generator. The same as the spec option ``dropout=P``. Works with the hand-written MLP step.
"""

from __future__ import annotations

from typing import Any

from fitscope.train.regularizers.base import Param, Regularizer


class Dropout(Regularizer):
    """Dropout with probability ``p`` (overrides the spec's ``dropout=``)."""

    name = "dropout"
    summary = "drop hidden units with probability p (where the model family puts dropout)"
    paper = "Srivastava et al. 2014"
    params = {"p": Param(0.5, 0.0, 1.0, "drop probability", low_open=True, high_open=True)}
    hand_written_ok = True

    def model_options(self) -> dict[str, Any]:
        """``{"dropout": p}``."""
        return {"dropout": self.values["p"]}


PART = Dropout
