"""Per-example training records: loss, correctness and margin of every model at every epoch.

Notation: E epochs run, K models, n training rows. The margin of a row is the
logit of its given label minus the largest other logit (> 0 exactly when the
row is classified correctly, ties aside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def pack_correct(correct: np.ndarray) -> np.ndarray:
    """Bit-pack a boolean array along its last axis (``np.packbits``): ``(..., n) -> (..., ceil(n/8))`` uint8."""
    return np.packbits(np.asarray(correct, dtype=bool), axis=-1)


def unpack_correct(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack_correct`: ``(..., ceil(n/8))`` uint8 -> ``(..., n)`` bool."""
    return np.unpackbits(packed, axis=-1, count=n).astype(bool)


def per_example_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy loss, correctness and margin of every (model, row).

    Args:
        logits: ``(K, n, C)``.
        labels: ``(K, n)`` or ``(n,)`` int64.

    Returns:
        ``(loss, correct, margin)``, each ``(K, n)``: float32, bool, float32.
    """
    k, n, c = logits.shape
    labels = labels.expand(k, n) if labels.dim() == 1 else labels
    logits = logits.float()
    lab = labels.unsqueeze(-1)
    given = logits.gather(-1, lab).squeeze(-1)
    loss = torch.logsumexp(logits, dim=-1) - given
    if c > 1:
        others = logits.scatter(-1, lab, float("-inf")).amax(dim=-1)
    else:
        others = torch.full_like(given, float("-inf"))
    margin = given - others
    # Correct = the given label is the argmax (first index wins ties, like argmax).
    correct = logits.argmax(dim=-1) == labels
    return loss, correct, margin


@dataclass
class PerExampleRecords:
    """Per-example records of one ensemble run on its training rows.

    Attributes:
        loss: ``(E, K, n)`` float16 cross-entropy loss.
        correct: ``(E, K, ceil(n / 8))`` uint8, ``np.packbits`` of the
            correctness over the row axis; see :meth:`correct_array`.
        margin: ``(E, K, n)`` float16 margin (given-label logit minus the
            largest other logit).
        n: number of rows (needed to unpack ``correct``).
    """

    loss: np.ndarray
    correct: np.ndarray
    margin: np.ndarray
    n: int

    def correct_array(self) -> np.ndarray:
        """Correctness as bool ``(E, K, n)``."""
        return unpack_correct(self.correct, self.n)

    @property
    def epochs(self) -> int:
        """E, the number of recorded epochs."""
        return int(self.loss.shape[0])

    @classmethod
    def empty(cls, epochs: int, n_models: int, n: int) -> "PerExampleRecords":
        """Preallocated records for up to ``epochs`` epochs (see :meth:`trimmed`)."""
        return cls(
            loss=np.zeros((epochs, n_models, n), np.float16),
            correct=np.zeros((epochs, n_models, (n + 7) // 8), np.uint8),
            margin=np.zeros((epochs, n_models, n), np.float16),
            n=n,
        )

    def put(self, epoch: int, loss: np.ndarray, correct: np.ndarray, margin: np.ndarray) -> None:
        """Store epoch ``epoch`` (0-based) from ``(K, n)`` float loss, bool correct, float margin."""
        self.loss[epoch] = loss
        self.correct[epoch] = pack_correct(correct)
        self.margin[epoch] = margin

    def trimmed(self, epochs: int) -> "PerExampleRecords":
        """The first ``epochs`` epochs only."""
        return PerExampleRecords(self.loss[:epochs], self.correct[:epochs], self.margin[:epochs], self.n)
