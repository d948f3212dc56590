"""What :func:`fitscope.train.train_ensemble` returns, and how it is stored as arrays.

Notation: K models, E epochs run, n training rows, n_test test rows, C classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from fitscope.errors import DataError
from fitscope.train.records import PerExampleRecords, RecordSummary
from fitscope.validation import message


@dataclass
class EnsembleResult:
    """The outcome of training K models at once.

    Attributes:
        seeds: ``(K,)`` int64 model seeds.
        train_acc: ``(K, E)`` accuracy on each model's own training rows
            (``masks[k]``, or all rows) after every epoch, eval mode.
        train_loss: ``(K, E)`` mean cross-entropy on the same rows.
        test_acc: ``(K, E)`` test accuracy (NaN without a test set).
        test_loss: ``(K, E)`` mean test cross-entropy (NaN without a test set).
        epochs_to_fit: ``(K,)`` int64: first epoch (1-based) at which model
            ``k`` is 100% accurate on its own training rows; -1 if never.
        records: per-example records of every epoch on all n training rows
            (``config.record == "full"``), else None.
        train_logits: ``(K, n, C)`` float32 final logits on every training row.
        test_logits: ``(K, n_test, C)`` float32 final test logits (``n_test = 0`` without a test set).
        epochs_run: E.
        seconds: wall time of the whole call.
        examples_seen: model-examples processed by training steps (sum over steps of K x batch).
        flops: estimated training FLOPs: ``3 * flops_per_example * examples_seen``
            (forward + backward of linear and conv layers; the evaluation passes are not counted).
        train_seconds: time spent in training steps.
        eval_seconds: time spent in the per-epoch evaluation passes (and records).
        masks: ``(K, n)`` bool training-row masks, or None when every model used every row.
        spec: the model spec trained.
        config: the resolved :class:`~fitscope.train.TrainConfig` as a dict.
        summary: the records accumulated over the epochs on all n training rows
            (epochs correct, margin sum, snapshots at ``config.record_epochs``;
            :class:`~fitscope.train.records.RecordSummary`), or None when
            ``config.record == "none"``.
        model: the trained ensemble module when ``train_ensemble(keep_model=True)``;
            never stored by :meth:`to_arrays`.
        measures: the regularizer parts' per-model numbers after training,
            ``"<part>/<measure>"`` -> ``(K,)`` (e.g. ``"ortho/error"``).
    """

    seeds: np.ndarray
    train_acc: np.ndarray
    train_loss: np.ndarray
    test_acc: np.ndarray
    test_loss: np.ndarray
    epochs_to_fit: np.ndarray
    records: PerExampleRecords | None
    train_logits: np.ndarray
    test_logits: np.ndarray
    epochs_run: int
    seconds: float
    examples_seen: int
    flops: float
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    masks: np.ndarray | None = None
    spec: str = ""
    config: dict = field(default_factory=dict)
    summary: RecordSummary | None = None
    model: Any = field(default=None, repr=False, compare=False)
    measures: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        """K."""
        return int(len(self.seeds))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a NumPy array (for ``np.savez``); read back with :meth:`from_arrays`.

        Loadable with ``allow_pickle=False``: the spec and config are stored as
        0-d unicode arrays (the config as JSON).
        """
        out: dict[str, np.ndarray] = {
            "seeds": np.asarray(self.seeds, np.int64),
            "train_acc": np.asarray(self.train_acc),
            "train_loss": np.asarray(self.train_loss),
            "test_acc": np.asarray(self.test_acc),
            "test_loss": np.asarray(self.test_loss),
            "epochs_to_fit": np.asarray(self.epochs_to_fit, np.int64),
            "train_logits": np.asarray(self.train_logits, np.float32),
            "test_logits": np.asarray(self.test_logits, np.float32),
            "epochs_run": np.asarray(self.epochs_run, np.int64),
            "seconds": np.asarray(self.seconds, np.float64),
            "examples_seen": np.asarray(self.examples_seen, np.int64),
            "flops": np.asarray(self.flops, np.float64),
            "train_seconds": np.asarray(self.train_seconds, np.float64),
            "eval_seconds": np.asarray(self.eval_seconds, np.float64),
            "spec": np.asarray(self.spec),
            "config": np.asarray(json.dumps(self.config, sort_keys=True)),
        }
        for key, value in self.measures.items():
            out[f"measure:{key}"] = np.asarray(value)
        if self.masks is not None:
            out["masks"] = np.asarray(self.masks, bool)
        if self.records is not None:
            out["records_loss"] = self.records.loss
            out["records_correct"] = self.records.correct
            out["records_margin"] = self.records.margin
            out["records_n"] = np.asarray(self.records.n, np.int64)
        if self.summary is not None:
            out["summary_correct_epochs"] = self.summary.correct_epochs
            out["summary_margin_sum"] = self.summary.margin_sum
            out["summary_epochs"] = np.asarray(self.summary.epochs, np.int64)
            out["summary_at_epochs"] = self.summary.at_epochs
            out["summary_at_loss"] = self.summary.at.loss
            out["summary_at_correct"] = self.summary.at.correct
            out["summary_at_margin"] = self.summary.at.margin
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "EnsembleResult":
        """Rebuild a result from :meth:`to_arrays` output (a dict or an open ``.npz``).

        Raises:
            DataError: a required array is missing.
        """
        required = ("seeds", "train_acc", "train_loss", "test_acc", "test_loss", "epochs_to_fit",
                    "train_logits", "test_logits", "epochs_run")
        missing = [key for key in required if key not in arrays]
        if missing:
            raise DataError(message("arrays", "the output of EnsembleResult.to_arrays()",
                                    f"arrays without {', '.join(missing)}"))

        def scalar(key: str, kind: type, default):
            return kind(np.asarray(arrays[key]).item()) if key in arrays else default

        records = None
        if "records_loss" in arrays:
            records = PerExampleRecords(
                loss=np.asarray(arrays["records_loss"]),
                correct=np.asarray(arrays["records_correct"]),
                margin=np.asarray(arrays["records_margin"]),
                n=scalar("records_n", int, 0),
            )
        summary = None
        if "summary_correct_epochs" in arrays:
            counts = np.asarray(arrays["summary_correct_epochs"])
            summary = RecordSummary(
                correct_epochs=counts, margin_sum=np.asarray(arrays["summary_margin_sum"]),
                epochs=scalar("summary_epochs", int, 0), at_epochs=np.asarray(arrays["summary_at_epochs"], np.int64),
                at=PerExampleRecords(loss=np.asarray(arrays["summary_at_loss"]),
                                     correct=np.asarray(arrays["summary_at_correct"]),
                                     margin=np.asarray(arrays["summary_at_margin"]), n=int(counts.shape[-1])))
        return cls(
            seeds=np.asarray(arrays["seeds"], np.int64),
            train_acc=np.asarray(arrays["train_acc"]),
            train_loss=np.asarray(arrays["train_loss"]),
            test_acc=np.asarray(arrays["test_acc"]),
            test_loss=np.asarray(arrays["test_loss"]),
            epochs_to_fit=np.asarray(arrays["epochs_to_fit"], np.int64),
            records=records,
            train_logits=np.asarray(arrays["train_logits"]),
            test_logits=np.asarray(arrays["test_logits"]),
            epochs_run=scalar("epochs_run", int, 0),
            seconds=scalar("seconds", float, 0.0),
            examples_seen=scalar("examples_seen", int, 0),
            flops=scalar("flops", float, 0.0),
            train_seconds=scalar("train_seconds", float, 0.0),
            eval_seconds=scalar("eval_seconds", float, 0.0),
            masks=np.asarray(arrays["masks"], bool) if "masks" in arrays else None,
            spec=scalar("spec", str, ""),
            config=json.loads(scalar("config", str, "{}")),
            summary=summary,
            measures={key.removeprefix("measure:"): np.asarray(arrays[key]) for key in arrays
                      if key.startswith("measure:")},
        )
