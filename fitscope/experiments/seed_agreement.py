"""Seed agreement: how much do models that differ only in their seed disagree on the test set?

The study, in the order it runs (the worked example of ``CONTRIBUTING.md``):

1. **Data and models.** Load the data; train N models of one spec on the
   whole training split with the same data, hyperparameters and epoch budget.
   They differ only in their seed: model ``k``'s initial weights and batch
   order come from ``derive_seed(seed, "model", k)``.
2. **Units.** The N models are trained in chunks of ``chunk`` models, each
   chunk one batched ensemble (:func:`fitscope.train.train_ensemble`) and one
   unit of the run (``units/models-000.npz``, ...), stored as soon as it
   finishes, so a killed run resumes with ``--resume``. A unit stores each of
   its models' test predictions (argmax of the logits) and its train and test
   accuracy.
3. **Estimates.** From the ``(N, m)`` test predictions: per test example,
   the share of models that disagree with the majority (the most frequent
   prediction; ties go to the lowest class index), the pairwise disagreement
   (the share of ordered model pairs that predict differently:
   ``1 - sum_c n_c (n_c - 1) / (N (N - 1))`` with ``n_c`` the models predicting
   class ``c``), the number of distinct predictions and the share of models
   that are right; per pair of models, the share of test examples on which
   they differ (its mean over pairs equals the mean over examples of the
   pairwise disagreement); per model, its test accuracy. This is prediction
   churn, or seed instability: models of equal test accuracy that still
   disagree on individual examples (D'Amour et al., "Underspecification
   presents challenges for credibility in modern machine learning", 2020).
4. **Output.** Tables ``examples`` (one row per test example), ``models``
   (one row per model) and ``pairs`` (one row per pair of models), and
   ``report.html``: the histogram of per-example disagreement, the accuracy
   of every model, and the most unstable test examples (drawn as images for
   image data).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``): this module
supplies the config, ``prepare``, ``plan`` (one unit per chunk, computed by the
pure module-level :func:`train_chunk`), ``estimate`` and ``report``; the runner
does the rest. :func:`seed_agreement` is the Python API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fitscope.data import Dataset, load
from fitscope.data.support import check_supports_study
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import Parts

# --------------------------------------------------------------------------- config


class SeedAgreementConfig(BaseModel):
    """Everything that determines a seed-agreement run; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = "mlp:512x2"
    models: int = Field(16, ge=2, description="models, each with its own seed (at least 2 to disagree)")
    chunk: int = Field(4, gt=0, description="models per batched ensemble (unit of work)")
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.003, gt=0)
    regularizers: Parts = Field(default_factory=list, description="parts of the training objective "
                                "(fitscope regularizers list), e.g. elr:lambda=3+mixup; empty: plain cross-entropy")
    seed: int = Field(0, ge=0, description="seed from which every model's seed derives")


#: ``--quick``: 8 models in 2 units of 4, 8 epochs (64 model-epochs of mlp:512x2 on digits: under 20 s of CPU).
QUICK = dict(models=8, chunk=4, epochs=8)


def make_config(**values) -> SeedAgreementConfig:
    """Build a :class:`SeedAgreementConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(SeedAgreementConfig, values)


def model_seeds(cfg: SeedAgreementConfig) -> list[int]:
    """Every model's seed, ``derive_seed(seed, "model", k)``: it does not depend on the chunk size."""
    return [derive_seed(cfg.seed, "model", k) for k in range(cfg.models)]


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class Chunk:
    """The task of one unit: which models to train (their index and seed) and how."""

    key: str
    first: int  # index of the chunk's first model among all N
    seeds: tuple[int, ...]
    model: str
    train: dict  # TrainConfig fields
    n_classes: int


def train_config(cfg: SeedAgreementConfig) -> TrainConfig:
    """How every model trains: a fixed epoch budget, a constant learning rate, no per-example records."""
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                       schedule="constant", early_stop="none", record=False, regularizers=cfg.regularizers)


def plan_chunks(cfg: SeedAgreementConfig, n_classes: int) -> list[Chunk]:
    """The N models in chunks of ``cfg.chunk`` (the last one may be smaller), in model order."""
    seeds = model_seeds(cfg)
    train = train_config(cfg).model_dump()
    return [Chunk(f"models-{c:03d}", start, tuple(seeds[start:start + cfg.chunk]), cfg.model, train, n_classes)
            for c, start in enumerate(range(0, cfg.models, cfg.chunk))]


def train_chunk(task: Chunk, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train the models of one chunk at once and return their test predictions and accuracies.

    Module-level and pure: the result follows from the arguments alone (the
    big arrays are shared read-only by the runner), so the ``local`` and
    ``ray`` executors give the same bits for the same threads per task.

    Args:
        task: the chunk (:class:`Chunk`).
        x_train, y_train, x_test, y_test: the data (shared).
        progress: called with the model-epochs done after every epoch.

    Returns:
        ``seeds`` ``(k,)``, ``test_pred`` ``(k, m)`` int32 predicted classes
        and ``train_acc`` ``(k,)`` float32 final training accuracy (test
        accuracy follows from ``test_pred``).
    """
    k = len(task.seeds)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    result = train_ensemble(task.model, x_train, y_train, config=TrainConfig(**task.train), seeds=task.seeds,
                            x_test=x_test, y_test=y_test, n_classes=task.n_classes, progress=tick)
    predictions = result.test_logits.argmax(-1).astype(np.int32)
    return {
        "seeds": np.asarray(task.seeds, np.int64),
        "test_pred": predictions,
        "train_acc": result.train_acc[:, -1].astype(np.float32),
    }


# --------------------------------------------------------------------------- estimates (arrays in, arrays out)


def vote_counts(predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """``(m, C)`` int64: how many of the N models predict each class for each example.

    Args:
        predictions: ``(N, m)`` predicted classes in ``[0, n_classes)``.
        n_classes: C.
    """
    predictions = np.asarray(predictions)
    n, m = predictions.shape
    counts = np.zeros((m, n_classes), np.int64)
    np.add.at(counts, (np.broadcast_to(np.arange(m), (n, m)), predictions), 1)
    return counts


def example_disagreement(predictions: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per example, how much N models disagree: with their majority, in pairs, in distinct answers.

    Args:
        predictions: ``(N, m)`` predicted classes (N >= 2).
        n_classes: C.

    Returns:
        ``majority`` ``(m,)`` the most frequent prediction (ties: the lowest
        class); ``disagreement`` the share of models whose prediction is not
        the majority's; ``pairwise_disagreement`` the share of ordered pairs of
        distinct models that predict differently; ``distinct`` how many
        different classes are predicted.
    """
    n = predictions.shape[0]
    if n < 2:
        raise ValueError(f"predictions: expected at least 2 models to compare, got {n}")
    counts = vote_counts(predictions, n_classes)
    top = counts.max(axis=1)
    return {
        "majority": counts.argmax(axis=1),
        "disagreement": 1.0 - top / n,
        "pairwise_disagreement": 1.0 - (counts * (counts - 1)).sum(axis=1) / (n * (n - 1)),
        "distinct": (counts > 0).sum(axis=1),
    }


def pairwise_disagreement(predictions: np.ndarray) -> np.ndarray:
    """``(N, N)`` the share of examples on which models ``a`` and ``b`` predict differently (0 on the diagonal)."""
    predictions = np.asarray(predictions)
    return np.stack([(row[None, :] != predictions).mean(axis=1) for row in predictions])


# --------------------------------------------------------------------------- the study


@dataclass
class SeedAgreementOutcome:
    """What :func:`seed_agreement` computed.

    Attributes:
        examples: one row per test example (``index``, ``label``, ``majority``,
            ``majority_correct``, ``disagreement``, ``pairwise_disagreement``,
            ``distinct``, ``correct_fraction``, ``votes``).
        models: one row per model (``model``, ``seed``, ``unit``, ``test_acc``, ``train_acc``).
        pairs: one row per pair of models ``a < b`` (``disagreement``, ``accuracy_gap``).
        predictions: ``(N, m)`` the test predictions of every model.
        summary: the headline numbers.
    """

    examples: pd.DataFrame
    models: pd.DataFrame
    pairs: pd.DataFrame
    predictions: np.ndarray
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def prepare(cfg: SeedAgreementConfig) -> Prepared:
    """Load the data and check that model and data fit each other; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    check_regularizers(cfg.model, data.input_shape, data.n_classes, cfg.regularizers, epochs=cfg.epochs)
    check_supports_study(data, study="seed agreement", min_per_class=1)  # every class learnable; a test split
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, "model_seeds": model_seeds(cfg)},
        shared={"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test},
        state=data,
    )


def plan(cfg: SeedAgreementConfig, prepared: Prepared) -> list[Unit]:
    """One unit per chunk of models (:func:`plan_chunks`), each run by :func:`train_chunk`."""
    data: Dataset = prepared.state
    return [Unit(c.key, train_chunk, c, work=len(c.seeds) * cfg.epochs,
                 info=dict(models=len(c.seeds), first=c.first))
            for c in plan_chunks(cfg, data.n_classes)]


def estimate(cfg: SeedAgreementConfig, prepared: Prepared, units) -> Outcome:
    """Disagreement per example, per pair of models, accuracy per model, from the stored predictions."""
    data: Dataset = prepared.state
    chunks = plan_chunks(cfg, data.n_classes)
    stored = [units[c.key] for c in chunks]
    predictions = np.concatenate([s["test_pred"] for s in stored])
    n, m = predictions.shape
    y = data.y_test

    per = example_disagreement(predictions, data.n_classes)
    counts = vote_counts(predictions, data.n_classes)
    examples = pd.DataFrame({
        "index": np.arange(m),
        "label": y.astype(np.int64),
        "majority": per["majority"].astype(np.int64),
        "majority_correct": per["majority"] == y,
        "disagreement": per["disagreement"],
        "pairwise_disagreement": per["pairwise_disagreement"],
        "distinct": per["distinct"].astype(np.int64),
        "correct_fraction": (predictions == y).mean(axis=0),
        "votes": [_votes_text(row) for row in counts],
    })
    models = pd.DataFrame({
        "model": np.arange(n),
        "seed": np.concatenate([s["seeds"] for s in stored]),
        "unit": np.concatenate([[c.key] * len(c.seeds) for c in chunks]),
        "test_acc": (predictions == y).mean(axis=1),
        "train_acc": np.concatenate([s["train_acc"] for s in stored]).astype(np.float64),
    })
    matrix = pairwise_disagreement(predictions)
    a, b = np.triu_indices(n, k=1)
    acc = models["test_acc"].to_numpy()
    pairs = pd.DataFrame({"model_a": a, "model_b": b, "disagreement": matrix[a, b],
                          "accuracy_gap": np.abs(acc[a] - acc[b])})

    summary = {
        "models": int(n),
        "test examples": int(m),
        "mean test accuracy": float(acc.mean()),
        "test accuracy std over seeds": float(acc.std(ddof=1)),
        "lowest test accuracy": float(acc.min()),
        "highest test accuracy": float(acc.max()),
        "majority-vote test accuracy": float(examples["majority_correct"].mean()),
        "mean pairwise disagreement": float(pairs["disagreement"].mean()),
        "largest pairwise disagreement": float(pairs["disagreement"].max()),
        "mean disagreement with the majority": float(examples["disagreement"].mean()),
        "examples with any disagreement": float((examples["distinct"] > 1).mean()),
    }
    detail = SeedAgreementOutcome(examples=examples, models=models, pairs=pairs, predictions=predictions,
                                  summary=summary)
    return Outcome(tables={"examples": examples, "models": models, "pairs": pairs}, summary=summary, detail=detail)


def _votes_text(counts: np.ndarray) -> str:
    """``"3:12 5:4"``: the classes predicted for one example and how many models predict each, most first."""
    order = np.argsort(-counts, kind="stable")
    return " ".join(f"{c}:{counts[c]}" for c in order if counts[c] > 0)


def report(cfg: SeedAgreementConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.seed_agreement.report_context`)."""
    from fitscope.report.seed_agreement import report_context

    return report_context(cfg, prepared.state, outcome.detail)


STUDY = Study(kind="seed-agreement", command="fitscope seed-agreement", config=SeedAgreementConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="seed_agreement.html.j2",
              quick=QUICK, work_name="model-epochs")


def seed_agreement(cfg: SeedAgreementConfig, out: str | Path, *, resume: bool = False,
                   **placement) -> tuple:
    """The whole study: validate, train (or resume), estimate, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing chunks train).
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the
        :class:`SeedAgreementOutcome` (``trained_units`` / ``reused_units`` say
        what this call trained).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: SeedAgreementOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
