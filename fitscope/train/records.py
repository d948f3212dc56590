"""Per-example training records: what every model does on every training row, epoch by epoch.

Notation: E epochs run, K models, n training rows, S snapshot epochs. The
margin of a row is the logit of its given label minus the largest other logit
(> 0 exactly when the row is classified correctly, ties aside).

Two forms (``TrainConfig.record``):

- ``"summary"`` (the default), :class:`RecordSummary`: accumulated as the
  epochs are produced, ``O(K n)`` memory whatever E: per (model, row) the
  epochs correct (learning speed), the margin summed over epochs (mean
  margin), and loss, correctness and margin at chosen epochs (the last by default).
- ``"full"``, :class:`PerExampleRecords`: loss, correctness and margin of
  every epoch, ``(E, K, n)`` (about 4.1 bytes per entry), for analyses that
  look at arbitrary epochs (e.g. :func:`fitscope.estimators.late_examples`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fitscope.errors import DataError
from fitscope.validation import message


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


@dataclass
class RecordSummary:
    """What the estimators need from the per-epoch records, accumulated while the epochs run.

    Memory is ``O(K n)`` whatever the number of epochs E: two ``(K, n)``
    accumulators and S snapshots, against ``O(E K n)`` for :class:`PerExampleRecords`.

    Attributes:
        correct_epochs: ``(K, n)`` int32: after how many of the E epochs model k
            classified row i correctly. Learning speed is ``correct_epochs / E``
            (the mean per-epoch correctness, :func:`fitscope.estimators.learning_speed`
            with ``correct_counts``).
        margin_sum: ``(K, n)`` float64: the sum over the E epochs of the margin
            (given-label logit minus the largest other logit, in logits);
            :meth:`margin_mean` is it over E.
        epochs: E, the epochs accumulated.
        at_epochs: ``(S,)`` int64: the 1-based epochs of the snapshots, ascending
            (``TrainConfig.record_epochs``; -1 there is the last epoch run).
        at: the loss, correctness and margin at those epochs, as
            :class:`PerExampleRecords` of S "epochs" (float16, bit-packed correctness).
    """

    correct_epochs: np.ndarray
    margin_sum: np.ndarray
    epochs: int
    at_epochs: np.ndarray
    at: PerExampleRecords

    def margin_mean(self) -> np.ndarray:
        """``(K, n)`` float32: the mean margin over the E epochs, ``margin_sum / E``."""
        return (self.margin_sum / self.epochs).astype(np.float32)

    def snapshot(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(loss, correct, margin)``, each ``(K, n)`` (float16, bool, float16), at the 1-based ``epoch``.

        Raises:
            DataError: no snapshot was taken at ``epoch`` (the message lists those taken).
        """
        where = np.flatnonzero(self.at_epochs == epoch)
        if not len(where):
            taken = ", ".join(str(int(e)) for e in self.at_epochs) or "none"
            raise DataError(message("epoch", f"one of the recorded epochs ({taken})", repr(epoch)))
        s = int(where[0])
        return self.at.loss[s], unpack_correct(self.at.correct[s], self.at.n), self.at.margin[s]


class DeviceSummary:
    """:class:`RecordSummary` accumulated on the training device, one epoch at a time, copied to NumPy once.

    Each :meth:`add` adds the epoch's ``(K, n)`` correctness to an int32 count
    and its margin to a float64 sum, stores a float16 snapshot when the epoch
    is one of ``at`` and keeps a reference to the epoch's own tensors (the
    last epoch's snapshot, taken in :meth:`to_summary`). Nothing grows with the epochs.

    Args:
        n_models: K.
        n: training rows.
        device: the models' device.
        at: 1-based epochs to snapshot (others than the last).
        last: also snapshot the last epoch run.
    """

    def __init__(self, n_models: int, n: int, device: torch.device, *, at: tuple[int, ...] = (),
                 last: bool = True) -> None:
        self.n = n
        self.epochs = 0
        self.last = last
        self.correct_epochs = torch.zeros((n_models, n), dtype=torch.int32, device=device)
        self.margin_sum = torch.zeros((n_models, n), dtype=torch.float64, device=device)
        self.at = tuple(sorted(set(at)))
        self._slot = {epoch: s for s, epoch in enumerate(self.at)}
        self._taken: list[int] = []
        self._snapshots = DeviceRecords(len(self.at), n_models, n, device) if self.at else None
        self._latest: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(self, epoch: int, loss: torch.Tensor, correct: torch.Tensor, margin: torch.Tensor) -> None:
        """Accumulate epoch ``epoch`` (0-based, in order) from ``(K, n)`` float loss, bool correct, float margin."""
        self.correct_epochs += correct
        self.margin_sum += margin
        self.epochs = epoch + 1
        slot = self._slot.get(epoch + 1)
        if slot is not None:
            self._snapshots.put(slot, loss, correct, margin)
            self._taken.append(epoch + 1)
        self._latest = (loss, correct, margin)

    def to_summary(self) -> RecordSummary:
        """The NumPy :class:`RecordSummary` (one copy from the device)."""
        n_models = self.correct_epochs.shape[0]
        parts = PerExampleRecords.empty(0, n_models, self.n)
        epochs = list(self._taken)
        if self._snapshots is not None and epochs:
            parts = self._snapshots.to_records(len(epochs))
        if self.last and self._latest is not None and self.epochs not in epochs:
            last = DeviceRecords(1, n_models, self.n, self.correct_epochs.device)
            last.put(0, *self._latest)
            last = last.to_records(1)
            parts = PerExampleRecords(np.concatenate([parts.loss, last.loss]),
                                      np.concatenate([parts.correct, last.correct]),
                                      np.concatenate([parts.margin, last.margin]), self.n)
            epochs.append(self.epochs)
        return RecordSummary(correct_epochs=self.correct_epochs.cpu().numpy().copy(),
                             margin_sum=self.margin_sum.cpu().numpy().copy(), epochs=self.epochs,
                             at_epochs=np.asarray(epochs, np.int64), at=parts)
