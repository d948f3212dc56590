"""The data audit: memorization, influence, C-scores, proxies and label issues of one data set.

Reads like sections 2-4 of METHODS.md: load the data (optionally flip a known
fraction of the training labels, keeping the ground truth), train K models on
random subsets of ratio r (Feldman & Zhang), more subset models at the other
C-score ratios (Jiang et al.), then estimate per example: memorization (with
standard errors), influence on every test example, the holdout C-score, the
learning-speed, kernel-density (in input space and in the hidden space of
the first memorization model: the inputs of its last linear layer) and
relative-distance proxies, out-of-fold probabilities and a label-issue score;
write ``examples.parquet`` (per training example, including its largest influence on any test
example), ``test_examples.parquet`` (per test example: the models' accuracy and the largest influence
any training example has on it), ``influence.parquet`` and ``report.html``. Influence
is computed in blocks of training rows and only the high-influence pairs are
kept, so no ``n_train x n_test`` matrix is ever held. Memorization and
influence come with 95% intervals (Wilson per rate, Newcombe for the
difference); the pairs passing Feldman & Zhang's fixed thresholds are tested
against a permutation null and only those under a 10% false-discovery rate
are kept (:data:`INFLUENCE_FDR`, :data:`INFLUENCE_PERMUTATIONS`); the FDR
figures, the threshold, the permutations and their seed are stored with
``influence.parquet`` (``pandas.read_parquet(...).attrs["influence"]``).

Units of work: every ratio's models are split into chunks of ``chunk`` models,
each trained as one batched ensemble and stored in the run as soon as it
finishes (``units/mem-000.npz``, ``units/cscore-0.3-000.npz``, ...), so a
killed audit resumes with ``resume=True`` and trains only the missing chunks.
A unit stores only what the estimators need: the subset masks, final
correctness on train and test examples (bool), train logits (float16), per
(model, example) the epochs it was correct (learning speed) and the mean
margin over epochs, not the models; the first memorization unit also stores
the hidden features of its first model (``(n, D)`` float32). Training keeps
only those per-example sums (``TrainConfig(record="summary")``), so its memory
does not grow with the epochs; units stored by earlier versions (every
epoch's correctness, bit-packed, ``records_correct``) are still read.

Memory is estimated before anything is written
(:func:`fitscope.experiments.audit_memory.estimate_audit_memory`): an audit
that would not fit in the memory available fails in ``prepare`` with one line
naming its largest parts and the ``--chunk`` or ``--models`` that would fit.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``): the runner owns
the run directory, ``--resume``, the executor (``local`` or ``ray``), progress
and the report; this module supplies ``prepare`` (load, flip, check), ``plan``
(one unit per chunk, computed by the pure module-level :func:`train_unit_task`
with the data arrays shared), ``estimate`` and the report context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, flip_labels, load
from fitscope.data.support import check_supports_study
from fitscope.errors import DataError
from fitscope.estimators.subsets import min_models, subset_masks
from fitscope.experiments.audit_memory import check_audit_memory
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train import (
    OOF_FAMILIES,
    TrainConfig,
    auto_families,
    sklearn_oof_probs,
    train_ensemble,
    unpack_correct,
)
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import Parts
from fitscope.validation import message

# Rows per forward pass when reading hidden features (activations of a few MB).
_FEATURE_ROWS = 1024

#: Mean final accuracy of the subset models on their own subsets above which they count as fitting them;
#: only then is memorization a label-issue signal (see ``fitscope/estimators/label_issues.py``).
FIT_THRESHOLD = 0.99
#: Target false-discovery rate of the kept high-influence pairs, and the permutations of its null.
INFLUENCE_FDR = 0.10
INFLUENCE_PERMUTATIONS = 50


class AuditConfig(BaseModel):
    """Everything that determines an audit; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = "mlp:512x2"
    noise: float = Field(0.0, ge=0, lt=1, description="fraction of training labels flipped (ground truth kept)")
    noise_mode: Literal["uniform", "pair"] = "uniform"
    ratio: float = Field(0.7, gt=0, lt=1, description="subset ratio of the memorization models")
    models: int = Field(200, gt=0, description="memorization subset models")
    cscore_ratios: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    cscore_models: int = Field(50, gt=0, description="models per C-score ratio other than --ratio")
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.003, gt=0)
    regularizers: Parts = Field(default_factory=list, description="parts of the training objective "
                                "(fitscope regularizers list), e.g. elr:lambda=3+mixup; empty: plain cross-entropy")
    seed: int = Field(0, ge=0, description="seed of the label flips, the subsets and the models")
    chunk: int = Field(50, gt=0, description="models per batched ensemble (unit of work)")
    oof_families: Literal["auto"] | list[Literal["logistic", "boosting", "mlp"]] = Field(
        "auto", description="scikit-learn families whose out-of-fold probabilities join the networks' "
                            "(auto: fitscope.train.auto_families; [] for the networks alone)")
    oof_folds: int = Field(5, ge=2, description="cross-validation folds of the scikit-learn families")
    fast: bool = Field(False, description="the fast audit (FAST): 16 memorization models, no C-score models")

    @model_validator(mode="before")
    @classmethod
    def _fast_setting(cls, values):
        # --fast fills in the settings it implies unless they are given
        if isinstance(values, dict) and values.get("fast") is True:
            values = {**fast_values(values.get("ratio")), **values}
        return values

    @field_validator("oof_families", mode="before")
    @classmethod
    def _known_distinct_families(cls, value):
        if value == "auto":
            return value
        if (not isinstance(value, (list, tuple)) or any(f not in OOF_FAMILIES for f in value)
                or len(set(value)) != len(value)):
            raise ValueError(f"expected 'auto' or distinct families among {', '.join(OOF_FAMILIES)}, got {value!r}")
        return list(value)

    @field_validator("cscore_ratios")
    @classmethod
    def _ratios_in_open_interval(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < r < 1.0 for r in value):
            raise ValueError(f"expected subset ratios in (0, 1), got {value}")
        return sorted(set(float(r) for r in value))

    @model_validator(mode="after")
    def _enough_models(self) -> "AuditConfig":
        if self.fast and self.cscore_ratios != [self.ratio]:
            raise ValueError(f"--fast: expected no C-score ratio other than --ratio {self.ratio:g} (the fast "
                             f"audit trains no C-score models), got --cscore-ratios "
                             f"{','.join(f'{r:g}' for r in self.cscore_ratios)}")
        need = min_models(self.ratio)
        if self.models < need:
            raise ValueError(f"--models: expected at least {need} models for ratio {self.ratio:g} "
                             f"(every example must be in some subset and out of another); got {self.models}")
        for r in self.cscore_ratios:
            if r == self.ratio:
                continue
            need = min_models(r)
            if self.cscore_models < need:
                raise ValueError(f"--cscore-models: expected at least {need} models for C-score ratio {r:g} "
                                 f"(every example must be in some subset and out of another); "
                                 f"got {self.cscore_models}")
        return self

    @classmethod
    def quick(cls, **overrides) -> "AuditConfig":
        """The ``--quick`` setting (:data:`QUICK`) with ``overrides`` (None values ignored) on top.

        With ``fast=True`` the fast setting (:func:`fast_values`) overrides the quick one's models.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        fast = fast_values(given.get("ratio")) if given.get("fast") else {}
        return make_config(**{**QUICK, **fast, **given})


#: ``--quick``, the setting of ``make demo``: 48 memorization models, 3 C-score ratios, 12 epochs
#: (80 models, 960 model-epochs of ``mlp:512x2`` on digits: about 20 s on 2 idle cores, with
#: label-issue AUROC near 0.999 at 10% noise).
QUICK = dict(models=48, chunk=24, cscore_ratios=[0.3, 0.5, 0.7], cscore_models=16, epochs=12)

#: ``--fast``: 16 memorization models in one ensemble and no C-score models (the C-score is the held-out
#: accuracy at ``--ratio`` alone and stays out of the label-issue score). What ``bench/label_issues.py``
#: measures as ``ours --fast``: at least as high as the best cleanlab variant on 7 of 8 cases at about
#: half the cost of the full score (``bench/results/label_issues.json``).
FAST = dict(models=16, chunk=16)


def fast_values(ratio: float | None = None) -> dict:
    """The settings ``--fast`` implies for a memorization ratio ``ratio`` (None: the default ``--ratio``):
    :data:`FAST` and C-score ratios ``[ratio]``."""
    return {**FAST, "cscore_ratios": [AuditConfig.model_fields["ratio"].default if ratio is None else ratio]}


def make_config(**values) -> AuditConfig:
    """Build an :class:`AuditConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(AuditConfig, values)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Chunk:
    """One batched ensemble: a chunk of the subset models of one ratio (the task of one unit)."""

    key: str
    part: str  # "mem" (the memorization models, ratio cfg.ratio) or "cscore"
    ratio: float
    masks: np.ndarray  # (k, n) bool
    seeds: list[int]
    features: bool = False  # also return the hidden features of the unit's first model


def plan_units(cfg: AuditConfig, n: int) -> list[Chunk]:
    """Every ensemble the audit trains, in order: the memorization models, then the other C-score ratios.

    Masks derive from ``(seed, ratio)`` and model seeds from ``(seed, ratio, model index)``, so a
    unit never depends on the chunk size or on which other ratios are in the audit.
    """
    plan: list[tuple[str, float, int]] = [("mem", cfg.ratio, cfg.models)]
    plan += [("cscore", r, cfg.cscore_models) for r in cfg.cscore_ratios if r != cfg.ratio]
    units: list[Chunk] = []
    for part, ratio, count in plan:
        rkey = f"{ratio:g}"
        masks = subset_masks(n, ratio, count, seed=derive_seed(cfg.seed, "masks", rkey))
        seeds = [derive_seed(cfg.seed, "model", rkey, k) for k in range(count)]
        for c, start in enumerate(range(0, count, cfg.chunk)):
            stop = min(start + cfg.chunk, count)
            key = f"mem-{c:03d}" if part == "mem" else f"cscore-{rkey}-{c:03d}"
            units.append(Chunk(key, part, ratio, masks[start:stop], seeds[start:stop],
                              features=part == "mem" and c == 0))
    return units


def noisy_labels(cfg: AuditConfig, data: Dataset) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """``(labels as given to training, flipped indices or None, noise seed or None)``."""
    if cfg.noise <= 0:
        return data.y_train.astype(np.int64), None, None
    seed = derive_seed(cfg.seed, "noise")
    y, flipped = flip_labels(data.y_train, cfg.noise, data.n_classes, mode=cfg.noise_mode, seed=seed)
    return y, flipped, seed


# --------------------------------------------------------------------------- training


def _train_config(cfg: AuditConfig, record: bool) -> TrainConfig:
    # A fixed epoch budget (no early stop): every unit records the same epochs for learning speed. The records
    # are the summary accumulated as the epochs run (epochs correct, margin sum), never every epoch.
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                       schedule="constant", early_stop="none", record="summary" if record else "none",
                       regularizers=cfg.regularizers)


def train_unit(unit: Chunk, cfg: AuditConfig, data: Dataset, labels: np.ndarray,
               progress: Callable[[dict], None] | None = None) -> dict[str, np.ndarray]:
    """Train one unit and return the arrays the estimators need (what ``run.save_unit`` stores)."""
    return _train_unit_arrays(unit, cfg, data.n_classes, data.x_train, labels, data.x_test, data.y_test, progress)


def train_unit_task(task: tuple[Chunk, AuditConfig, int], *, x_train: np.ndarray, labels: np.ndarray,
                    x_test: np.ndarray, y_test: np.ndarray,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: ``task = (chunk, cfg, n_classes)``, the big arrays shared (read-only).

    Module-level and pure (no globals, no writes to the run): what it returns follows from its
    arguments alone, so the ``local`` and ``ray`` executors give the same bits for the same
    threads per task. ``progress(model-epochs done)`` is called after every epoch.
    """
    unit, cfg, n_classes = task
    k = len(unit.seeds)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    return _train_unit_arrays(unit, cfg, n_classes, x_train, labels, x_test, y_test, tick)


def _train_unit_arrays(unit: Chunk, cfg: AuditConfig, n_classes: int, x_train: np.ndarray, labels: np.ndarray,
                       x_test: np.ndarray, y_test: np.ndarray,
                       progress: Callable[[dict], None] | None) -> dict[str, np.ndarray]:
    record = unit.part == "mem"
    t0 = time.perf_counter()
    result = train_ensemble(cfg.model, x_train, labels, config=_train_config(cfg, record), seeds=unit.seeds,
                            masks=unit.masks, x_test=x_test, y_test=y_test, progress=progress,
                            n_classes=n_classes, keep_model=unit.features)
    out = {
        "masks": unit.masks,
        "seeds": np.asarray(unit.seeds, np.int64),
        "correct": result.train_logits.argmax(-1) == labels,
        "subset_acc": result.train_acc[:, -1].astype(np.float32),
        "test_acc": result.test_acc[:, -1].astype(np.float32),
        "seconds": np.asarray(time.perf_counter() - t0),
        "threads": np.asarray(torch.get_num_threads()),  # what the task actually ran with
    }
    if unit.features:
        out["hidden_features"] = penultimate_features(result.model, x_train, model_index=0)
    if record:
        out["test_correct"] = result.test_logits.argmax(-1) == y_test
        out["train_logits"] = result.train_logits.astype(np.float16)
        summary = result.summary  # accumulated as the epochs ran: (k, n) sums, whatever the epochs
        out["correct_epochs"] = summary.correct_epochs.astype(np.min_scalar_type(summary.epochs))  # (k, n) of E
        out["records_epochs"] = np.asarray(summary.epochs, np.int64)  # E
        out["margin_mean"] = summary.margin_mean()  # (k, n) float32
    return out


#: The key of the unit that fits the scikit-learn families.
SKLEARN_UNIT = "oof-sklearn"


@dataclass(frozen=True)
class SklearnTask:
    """The task of the scikit-learn unit: which families, how many folds, the seed, C."""

    families: tuple[str, ...]
    folds: int
    seed: int
    n_classes: int


def sklearn_unit_task(task: SklearnTask, *, x_train: np.ndarray, labels: np.ndarray,
                      progress: Callable[[int], None] | None = None, **_) -> dict[str, np.ndarray]:
    """The scikit-learn unit: each family's out-of-fold probabilities (:func:`fitscope.train.sklearn_oof_probs`).

    Pure like :func:`train_unit_task`. Runs with the unit's thread count: the runner pins torch's
    threads, and ``threadpoolctl`` holds OpenMP and BLAS (gradient boosting, the linear algebra) to
    the same number. ``progress(fits done)`` after each of the families x folds fits. Returns
    ``probs_<family>`` ``(n, C)``, ``seconds_<family>``, ``fold`` ``(n,)`` and ``threads``.
    """
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    with threadpool_limits(limits=threads):
        oof = sklearn_oof_probs(x_train, labels, families=task.families, folds=task.folds,
                                n_classes=task.n_classes, seed=task.seed, progress=progress)
    out: dict[str, np.ndarray] = {"fold": oof.fold, "threads": np.asarray(threads)}
    for family in oof.families:
        out[f"probs_{family}"] = oof.probs[family]
        out[f"seconds_{family}"] = np.asarray(oof.seconds[family])
    return out


def penultimate_features(model, x: np.ndarray, *, model_index: int = 0) -> np.ndarray:
    """The hidden representation of ``x`` in one model of a trained ensemble: the input of its last layer.

    Every ensemble family of :mod:`fitscope.models` ends in ``model.out``, a linear layer on
    ``(K, B, D)`` features (the last hidden layer of an MLP, the pooled features of a CNN);
    a forward pre-hook on it reads them during an eval-mode pass, so no model code changes.

    Args:
        model: a trained :class:`fitscope.models.EnsembleModel` (``train_ensemble(keep_model=True)``).
        x: ``(n, *input_shape)`` inputs.
        model_index: which of the K models.

    Returns:
        ``(n, D)`` float32 features.
    """
    rows: list[np.ndarray] = []

    def grab(module, inputs):
        rows.append(inputs[0][model_index].float().cpu().numpy().copy())

    handle = model.out.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            for start in range(0, len(xt), _FEATURE_ROWS):
                model.forward_shared(xt[start:start + _FEATURE_ROWS])
    finally:
        handle.remove()
        model.train(was_training)
    return np.concatenate(rows).reshape(len(x), -1)


@dataclass
class AuditArrays:
    """The units of one audit put together (K memorization models, the C-score models per ratio)."""

    masks: np.ndarray  # (K, n) memorization models
    correct: np.ndarray  # (K, n)
    test_correct: np.ndarray  # (K, m)
    train_logits: np.ndarray  # (K, n, C) float16
    correct_epochs: np.ndarray  # (K, n) int32: epochs (of `epochs`) model k was correct on example i
    epochs: int  # E, the epochs correct_epochs counts over
    margin_mean: np.ndarray  # (K, n)
    subset_acc: np.ndarray  # (K,)
    test_acc: np.ndarray  # (K,)
    cscore_pairs: dict  # {ratio: (correct, masks)}
    seconds: dict = field(default_factory=dict)  # part -> training seconds (summed over units)
    hidden_features: np.ndarray | None = None  # (n, D) of the first memorization model (None: not stored)
    sklearn_probs: dict = field(default_factory=dict)  # scikit-learn family -> (n, C) out-of-fold probabilities


#: The memorization units' arrays stacked along the models, in plan order.
_STACKED = ("masks", "correct", "test_correct", "train_logits", "correct_epochs", "margin_mean", "subset_acc",
            "test_acc")


def unit_correct_epochs(stored: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, int]:
    """``(correct_epochs (k, n) int32, E)`` of one stored memorization unit, whichever version wrote it.

    This version stores the counts (``correct_epochs``, ``records_epochs``); earlier ones stored
    every epoch's correctness bit-packed (``records_correct``, ``(E, k, ceil(n/8))`` uint8), counted
    here one epoch at a time (the same integers: learning speed is unchanged).
    """
    if "correct_epochs" in stored:
        return np.asarray(stored["correct_epochs"]).astype(np.int32), int(stored["records_epochs"])
    packed = np.asarray(stored["records_correct"])
    counts = np.zeros((packed.shape[1], n), np.int32)
    for epoch in packed:  # one (k, n) epoch unpacked at a time
        counts += unpack_correct(epoch, n)
    return counts, int(packed.shape[0])


def _gather(units: list[Chunk], stored: Mapping[str, Mapping[str, np.ndarray]], cfg: AuditConfig,
            n: int) -> AuditArrays:
    """The units put together in plan order, reading one unit at a time (``stored`` may read from disk).

    The memorization units' arrays are copied into arrays of all K models as each is read, so
    only the gathered arrays and one unit are held at once.

    Raises:
        DataError: the memorization units counted correctness over different numbers of epochs.
    """
    total = sum(len(u.seeds) for u in units if u.part == "mem")
    stacked: dict[str, np.ndarray] = {}
    pairs: dict[float, tuple[list, list]] = {}
    seconds: dict[str, float] = {}
    epochs: dict[int, str] = {}
    hidden = None
    start = 0
    for u in units:
        s = stored[u.key]
        seconds[u.part] = seconds.get(u.part, 0.0) + float(s["seconds"])
        if u.features and "hidden_features" in s:
            hidden = s["hidden_features"]
        if u.part != "mem":
            correct, masks = pairs.setdefault(u.ratio, ([], []))
            correct.append(s["correct"])
            masks.append(s["masks"])
            continue
        k = len(s["masks"])
        counts, e = unit_correct_epochs(s, n)
        epochs.setdefault(e, u.key)
        values = {name: counts if name == "correct_epochs" else np.asarray(s[name]) for name in _STACKED}
        for name, value in values.items():
            if name not in stacked:
                stacked[name] = np.empty((total, *value.shape[1:]), value.dtype)
            stacked[name][start:start + k] = value
        start += k
        del s, values, counts
    if len(epochs) > 1:
        raise DataError(message("units", "memorization units whose correctness counts the same epochs",
                                ", ".join(f"{key} over {e}" for e, key in epochs.items())))
    cscore_pairs = {r: (np.concatenate(c), np.concatenate(m)) for r, (c, m) in pairs.items()
                    if r in cfg.cscore_ratios}
    if cfg.ratio in cfg.cscore_ratios:
        cscore_pairs[cfg.ratio] = (stacked["correct"], stacked["masks"])
    return AuditArrays(**stacked, epochs=next(iter(epochs)), cscore_pairs=cscore_pairs, seconds=seconds,
                       hidden_features=hidden)


# --------------------------------------------------------------------------- estimators


@dataclass
class AuditOutcome:
    """What :func:`run_audit` computed and which units it trained or reused."""

    examples: pd.DataFrame
    influence: pd.DataFrame
    summary: dict
    # per test example: label, the models' accuracy on it, its largest influence from one training example and which
    test_examples: pd.DataFrame | None = None
    detection: pd.DataFrame | None = None  # one row per score: auroc, precision/recall at k
    roc: dict = field(default_factory=dict)  # score name -> (fpr, tpr)
    spearman: pd.DataFrame | None = None
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)
    mem_in_label_score: bool = False
    # the FDR figures of the influence pairs (InfluencePairs.metadata() and the permutations' seed)
    influence_fdr: dict = field(default_factory=dict)
    cleanlab: dict | None = None  # find_label_issues's mask: precision, recall, flagged, k (ground truth known)
    # the keyword arguments the label-issue score was computed from (labels, pred_probs, signals), so that a
    # benchmark can recompute it with other weights: label_issue_scores(**label_signals, weights=...)
    label_signals: dict = field(default_factory=dict)
    label_issue_signals: tuple = ()  # the signals the score used (those given with a positive weight)
    label_issue_weights: dict = field(default_factory=dict)  # signal -> its weight in the score
    family_weights: dict = field(default_factory=dict)  # out-of-fold family -> mixture weight ({}: networks alone)


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def estimate(arrays: AuditArrays, data: Dataset, labels: np.ndarray, flipped: np.ndarray | None, *,
             seed: int = 0, use_cscore: bool = True) -> AuditOutcome:
    """Every estimator of the audit from the stored arrays (no training).

    ``seed``: the influence null's. ``use_cscore=False`` (the fast audit: no C-score models) keeps the
    C-score out of the label-issue score. The networks' out-of-fold probabilities are mixed with
    ``arrays.sklearn_probs`` (:func:`fitscope.estimators.combine_oof_probs`) when there are any.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_curve

    from fitscope.estimators import (
        cleanlab_issues,
        combine_oof_probs,
        cscore_holdout,
        detection_metrics,
        high_influence_pairs_streamed,
        kernel_density,
        label_issue_scores,
        learning_speed,
        mask_metrics,
        memorization_scores,
        out_of_fold_probs,
        relative_distance,
    )

    n = len(labels)
    mem = memorization_scores(arrays.correct, arrays.masks)
    # no (n, m) matrix; the pairs kept under the target FDR of a permutation null
    infl = high_influence_pairs_streamed(arrays.test_correct, arrays.masks, mem, fdr=INFLUENCE_FDR,
                                         permutations=INFLUENCE_PERMUTATIONS, seed=seed)
    pairs = infl.pairs.copy()
    influence_fdr = infl.metadata()
    pairs.attrs["influence"] = influence_fdr  # written into influence.parquet's metadata
    cscore = cscore_holdout(arrays.cscore_pairs)
    speed = learning_speed(correct_counts=arrays.correct_epochs, epochs=arrays.epochs, in_subset=arrays.masks)
    x = data.x_train.reshape(n, -1)
    density = kernel_density(x, labels)
    if arrays.hidden_features is not None:
        hidden_density = kernel_density(arrays.hidden_features, labels).scores
    else:  # a unit stored before hidden features were kept
        hidden_density = np.full(n, np.nan)
    rel = relative_distance(x, labels)
    oof = out_of_fold_probs(arrays.train_logits, arrays.masks)
    families = {"network": oof, **arrays.sklearn_probs}
    mixture = combine_oof_probs(families, labels) if len(families) > 1 else None
    in_count = arrays.masks.sum(axis=0)
    margin = np.where(arrays.masks, arrays.margin_mean, 0.0).sum(axis=0) / np.maximum(in_count, 1)
    subset_fit = float(arrays.subset_acc.mean())
    use_mem = subset_fit >= FIT_THRESHOLD
    label_signals = dict(labels=labels, pred_probs=oof if mixture is None else mixture.probs,
                         mem=mem.mem if use_mem else None, cscore=cscore.cscore if use_cscore else None,
                         learning_speed=speed.scores, margin=margin,
                         hidden_density=hidden_density if np.isfinite(hidden_density).any() else None)
    issues = label_issue_scores(**label_signals)

    examples = pd.DataFrame({"index": np.arange(n, dtype=np.int64), "label": labels.astype(np.int64)})
    if flipped is not None:
        corrupted = np.zeros(n, bool)
        corrupted[flipped] = True
        examples["true_label"] = data.y_train.astype(np.int64)
        examples["corrupted"] = corrupted
    examples["mem"] = mem.mem
    examples["mem_lo"] = mem.mem_lo
    examples["mem_hi"] = mem.mem_hi
    examples["mem_se"] = mem.mem_se
    examples["infl_max"] = infl.train_max  # the example's largest influence on any test example
    examples["infl_max_test"] = infl.train_argmax  # ... and which one (-1: undefined)
    examples["cscore"] = cscore.cscore
    examples["learning_speed"] = speed.scores
    examples["density"] = density.scores
    examples["hidden_density"] = hidden_density
    examples["rel_distance"] = rel.scores
    examples["oof_confidence"] = issues.given_label_prob
    if mixture is not None:
        for family, probs in families.items():
            examples[f"oof_confidence_{family}"] = probs[np.arange(n), labels]
    examples["label_issue"] = issues.scores
    cleanlab = {family: cleanlab_issues(labels, probs) for family, probs in families.items()}
    clean = cleanlab["network"]  # the baseline on the networks' out-of-fold probabilities
    examples["cleanlab_issue"] = clean.mask
    examples["cleanlab_score"] = clean.scores

    rows = []
    for name, values in (("learning speed", speed.scores), ("input-space kernel density", density.scores),
                         ("hidden-space kernel density", hidden_density),
                         ("relative distance", rel.scores), ("out-of-fold confidence", issues.given_label_prob),
                         ("memorization (negated)", -mem.mem)):
        ok = np.isfinite(values) & np.isfinite(cscore.cscore)
        rho = float(spearmanr(values[ok], cscore.cscore[ok]).statistic) if ok.sum() > 2 else float("nan")
        rows.append({"proxy": name, "spearman_rho": rho, "examples": int(ok.sum())})
    spearman = pd.DataFrame(rows)

    summary = {
        "memorization models": int(arrays.masks.shape[0]),
        "out-of-fold families": ", ".join(families),
        "subset train accuracy": subset_fit,
        "test accuracy": float(arrays.test_acc.mean()),
        "mean mem": _nanmean(mem.mem),
        "mean mem_se": _nanmean(mem.mem_se),
        "mean infl_se": float(infl.mean_se),
        "high-influence pairs": int(len(pairs)),
        "high-influence pairs FDR": float(infl.fdr),
        "fixed-threshold pairs": int(infl.n_candidates),
        "fixed-threshold pairs FDR": float(infl.candidates_fdr),
        f"models for {INFLUENCE_FDR:.0%} FDR (projected)": infl.models_for_target,
        "learning speed vs C-score rho": float(spearman.spearman_rho.iloc[0]),
    }
    if mixture is not None:
        summary["out-of-fold family weights"] = ", ".join(f"{f} {w:.2f}" for f, w in mixture.weight_of().items())
    test_examples = pd.DataFrame({
        "index": np.arange(len(data.y_test), dtype=np.int64), "label": data.y_test.astype(np.int64),
        "accuracy": arrays.test_correct.mean(axis=0), "infl_max": infl.test_max,
        "infl_max_train": infl.test_argmax})
    outcome = AuditOutcome(examples=examples, influence=pairs, summary=summary, spearman=spearman,
                           test_examples=test_examples,
                           mem_in_label_score="mem" in issues.signals, influence_fdr=influence_fdr, label_signals=label_signals,
                           label_issue_signals=issues.signals,
                           label_issue_weights=dict(zip(issues.signals, map(float, issues.weights))),
                           family_weights=mixture.weight_of() if mixture is not None else {})
    if flipped is not None and 0 < len(flipped) < n:
        corrupted = examples["corrupted"].to_numpy()
        self_name = "out-of-fold self-confidence" + (" (family mixture)" if mixture is not None else "")
        scored = {"label_issue (ours)": issues.scores, self_name: 1.0 - issues.given_label_prob}
        for family, result in cleanlab.items():
            scored[f"cleanlab label quality ({family})"] = result.scores
            scored[f"cleanlab find_label_issues ranked ({family})"] = result.ranking
        det = [{"score": name, **detection_metrics(s, corrupted)} for name, s in scored.items()]
        outcome.detection = pd.DataFrame(det)
        baselines = outcome.detection[outcome.detection.score.str.startswith("cleanlab")]
        best = baselines.loc[baselines.auroc.idxmax()]
        for name in (det[0]["score"], det[1]["score"], best.score):  # the ROC figure: ours, ours' input, best baseline
            s = scored[name]
            s = np.where(np.isnan(s), np.nanmin(s) - 1.0, s)
            fpr, tpr, _ = roc_curve(corrupted, s, drop_intermediate=False)  # the full curve: no point dropped
            outcome.roc[name] = (fpr, tpr)
        summary["label-issue AUROC"] = float(det[0]["auroc"])
        summary["label-issue precision at k"] = float(det[0]["precision_at_k"])
        summary["self-confidence AUROC"] = float(det[1]["auroc"])
        outcome.cleanlab = mask_metrics(clean.mask, corrupted)
        summary["cleanlab label-quality AUROC"] = float(det[2]["auroc"])
        summary["best cleanlab AUROC"] = float(best.auroc)
        summary["best cleanlab variant"] = str(best.score)
        summary["cleanlab find_label_issues flagged"] = outcome.cleanlab["flagged"]
        summary["cleanlab find_label_issues precision"] = outcome.cleanlab["precision"]
        summary["cleanlab find_label_issues recall"] = outcome.cleanlab["recall"]
    return outcome


# --------------------------------------------------------------------------- the study


@dataclass
class AuditState:
    """What ``prepare`` found: the data, the labels as given to training, the flipped rows, the families."""

    data: Dataset
    labels: np.ndarray
    flipped: np.ndarray | None
    sklearn: SklearnTask | None = None  # the scikit-learn unit's task (None: the networks alone)


def sklearn_task(cfg: AuditConfig, data: Dataset) -> SklearnTask | None:
    """The scikit-learn families this audit fits (``"auto"`` resolved for the data's size), or None."""
    n = len(data.y_train)
    features = int(np.prod(data.input_shape))
    families = auto_families(n, features) if cfg.oof_families == "auto" else tuple(cfg.oof_families)
    if not families:
        return None
    return SklearnTask(families=tuple(families), folds=min(cfg.oof_folds, n), seed=oof_seed(cfg),
                       n_classes=data.n_classes)


def oof_seed(cfg: AuditConfig) -> int:
    """The seed of the scikit-learn families' folds and randomness, derived from the config's seed."""
    return derive_seed(cfg.seed, "sklearn-oof")


def prepare(cfg: AuditConfig) -> Prepared:
    """Load the data, flip labels, check model, data and memory; nothing is written yet.

    The memory check (:func:`fitscope.experiments.audit_memory.check_audit_memory`) refuses an
    audit whose estimated peak exceeds the memory available with one line naming the flags that lower it.
    """
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    check_regularizers(cfg.model, data.input_shape, data.n_classes, cfg.regularizers, epochs=cfg.epochs)
    # each example must be in some subset and out of another, and out-of-fold probabilities need 2 per class
    check_supports_study(data, study="the audit", min_per_class=2)
    labels, flipped, noise_seed = noisy_labels(cfg, data)
    plan_units(cfg, len(labels))  # a plan that cannot cover every example fails here
    sk = sklearn_task(cfg, data)
    # an audit that would not fit in memory fails here, naming the --chunk or --models that would
    check_audit_memory(cfg, len(labels), len(data.y_test), data.input_shape, data.n_classes,
                       largest_class=int(np.bincount(labels).max()),
                       loaded=sum(a.nbytes for a in (data.x_train, data.x_test, data.y_train, data.y_test, labels)))
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, "noise_seed": noise_seed,
               "oof_seed": None if sk is None else sk.seed},
        shared={"x_train": data.x_train, "labels": labels, "x_test": data.x_test, "y_test": data.y_test},
        state=AuditState(data, labels, flipped, sk),
    )


def plan(cfg: AuditConfig, prepared: Prepared) -> list[Unit]:
    """One unit per chunk of subset models (:func:`plan_units`), each run by :func:`train_unit_task`,
    then the scikit-learn families' unit (:func:`sklearn_unit_task`; its work counts fits, one per
    family and fold, on the progress bar of model-epochs)."""
    state: AuditState = prepared.state
    units = [Unit(c.key, train_unit_task, (c, cfg, state.data.n_classes), work=len(c.seeds) * cfg.epochs,
                  info=dict(models=len(c.seeds), ratio=c.ratio, part=c.part))
             for c in plan_units(cfg, len(state.labels))]
    sk = state.sklearn
    if sk is not None:
        units.append(Unit(SKLEARN_UNIT, sklearn_unit_task, sk, work=len(sk.families) * sk.folds,
                          label="scikit-learn out-of-fold",
                          info=dict(families=list(sk.families), folds=sk.folds, part="sklearn")))
    return units


def influence_seed(cfg: AuditConfig) -> int:
    """The seed of the influence null's permutations, derived from the config's seed (stored with the table)."""
    return derive_seed(cfg.seed, "influence-null")


def estimate_study(cfg: AuditConfig, prepared: Prepared, units) -> Outcome:
    """Every estimator from the stored units; the examples and influence tables."""
    state: AuditState = prepared.state
    chunks = plan_units(cfg, len(state.labels))
    gathered = _gather(chunks, units, cfg, len(state.labels))  # one unit read at a time
    if state.sklearn is not None:
        stored = units[SKLEARN_UNIT]
        gathered.sklearn_probs = {f: np.asarray(stored[f"probs_{f}"]) for f in state.sklearn.families}
        gathered.seconds["sklearn"] = float(sum(float(stored[f"seconds_{f}"]) for f in state.sklearn.families))
    outcome = estimate(gathered, state.data, state.labels, state.flipped, seed=influence_seed(cfg),
                       use_cscore=not cfg.fast)
    outcome.summary = {"models": int(sum(len(c.seeds) for c in chunks)), **outcome.summary,
                       "training seconds (all units, summed)": float(sum(gathered.seconds.values()))}
    return Outcome(tables={"examples": outcome.examples, "influence": outcome.influence,
                           "test_examples": outcome.test_examples},
                   summary=outcome.summary, detail=outcome)


def report(cfg: AuditConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.audit.report_context`)."""
    from fitscope.report import audit as figures

    outcome.detail.trained_units, outcome.detail.reused_units = outcome.trained, outcome.reused
    return figures.report_context(cfg, prepared.state.data, outcome.detail)


STUDY = Study(kind="audit", command="fitscope audit", config=AuditConfig, prepare=prepare, plan=plan,
              estimate=estimate_study, report=report, template="audit.html.j2", quick=QUICK,
              work_name="model-epochs")


def audit(cfg: AuditConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole audit: validate, train (or resume), estimate, write tables and ``report.html``.

    Data, model spec, label flips and subset plan are checked *before* the run
    directory is made, so bad input leaves nothing behind.

    Args:
        cfg: the audit configuration.
        out: the run directory.
        resume: continue the run in ``out`` (only missing units train).
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`AuditOutcome`
        (``outcome.trained_units`` / ``reused_units`` say what this call trained).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    return result.run, result.outcome.detail
