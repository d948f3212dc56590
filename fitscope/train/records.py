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


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' order: the first entry is the high bit


def pack_correct_tensor(correct: torch.Tensor) -> torch.Tensor:
    """:func:`pack_correct` on a bool tensor, on its device: ``(..., n) -> (..., ceil(n/8))`` uint8, the same bits."""
    n = correct.shape[-1]
    bits = torch.nn.functional.pad(correct.to(torch.uint8), (0, (-n) % 8))
    bits = bits.reshape(*correct.shape[:-1], -1, 8)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=correct.device)
    return (bits * weights).sum(dim=-1, dtype=torch.uint8)


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


class DeviceRecords:
    """:class:`PerExampleRecords` kept on the training device while the models train, copied to NumPy once.

    The epoch pass stores its ``(K, n)`` loss, correctness and margin here
    without leaving the device (float16, correctness bit-packed as in
    :func:`pack_correct`); :meth:`to_records` brings the epochs run back in
    one copy. On the CPU this holds the same bits as :meth:`PerExampleRecords.put`.

    Args:
        epochs: most epochs to record.
        n_models: K.
        n: training rows.
        device: where the records live (the models' device).
    """

    def __init__(self, epochs: int, n_models: int, n: int, device: torch.device) -> None:
        self.n = n
        self.loss = torch.zeros((epochs, n_models, n), dtype=torch.float16, device=device)
        self.correct = torch.zeros((epochs, n_models, (n + 7) // 8), dtype=torch.uint8, device=device)
        self.margin = torch.zeros((epochs, n_models, n), dtype=torch.float16, device=device)

    def put(self, epoch: int, loss: torch.Tensor, correct: torch.Tensor, margin: torch.Tensor) -> None:
        """Store epoch ``epoch`` (0-based) from ``(K, n)`` float loss, bool correct, float margin tensors."""
        self.loss[epoch] = loss
        self.correct[epoch] = pack_correct_tensor(correct)
        self.margin[epoch] = margin

    def to_records(self, epochs: int) -> PerExampleRecords:
        """The first ``epochs`` epochs as NumPy :class:`PerExampleRecords` (one copy from the device)."""
        return PerExampleRecords(self.loss[:epochs].cpu().numpy().copy(), self.correct[:epochs].cpu().numpy().copy(),
                                 self.margin[:epochs].cpu().numpy().copy(), self.n)
