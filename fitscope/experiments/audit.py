"""The data audit: memorization, influence, C-scores, proxies and label issues of one data set.

Reads like sections 2-4 of METHODS.md: load the data (optionally flip a known
fraction of the training labels, keeping the ground truth), train K models on
random subsets of ratio r (Feldman & Zhang), more subset models at the other
C-score ratios (Jiang et al.), then estimate per example: memorization (with
standard errors), influence on every test example, the holdout C-score, the
learning-speed, kernel-density (in input space and in the hidden space of
the first memorization model: the inputs of its last linear layer) and
relative-distance proxies, out-of-fold probabilities and a label-issue score;
write ``examples.parquet``, ``influence.parquet`` and ``report.html``. Influence
is computed in blocks of training rows and only the high-influence pairs are
kept, so no ``n_train x n_test`` matrix is ever held.

Units of work: every ratio's models are split into chunks of ``chunk`` models,
each trained as one batched ensemble and stored in the run as soon as it
finishes (``units/mem-000.npz``, ``units/cscore-0.3-000.npz``, ...), so a
killed audit resumes with ``resume=True`` and trains only the missing chunks.
A unit stores only what the estimators need: the subset masks, final
correctness on train and test examples (bool), train logits (float16), the
per-epoch correctness (bit-packed) and the mean margin over epochs, not the
models; the first memorization unit also stores the hidden features of its
first model (``(n, D)`` float32).

Executors: the missing units run as tasks of :func:`fitscope.runs.make_executor`
(``executor="local"``: in this process, one after another; ``"ray"``: Ray
tasks on a local Ray or, with ``address``, a cluster), each computed by the
pure module-level :func:`train_unit_task` with the data arrays shared and
stored as it finishes. ``threads`` (torch threads per task) is part of the
config: the same seeds and ``threads`` give the same bits with either
executor. Left unset it is resolved by :func:`resolve_threads` before the run
starts: ``FITSCOPE_NUM_THREADS`` if set, else on ``--resume`` the value the run
was made with, else every core of this machine for the ``local`` executor and
1 per task for ``ray``; the resolved value is what ``run.json`` stores.
``executor`` and ``address`` are not part of the config hash, so a run
started locally can be resumed on Ray and vice versa; ``run.json`` records
them per attempt (``attempts[-1]["executor"]``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, flip_labels, load
from fitscope.errors import ConfigError, RunError
from fitscope.experiments.config_errors import build_config
from fitscope.models import check_input_shape, parse_spec
from fitscope.runs.executors import Executor, machine_cpus, make_executor
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble, unpack_correct

# Rows per forward pass when reading hidden features (activations of a few MB).
_FEATURE_ROWS = 1024

#: Config fields that say *where* units train, not *what* they compute: left out of the config hash
#: (so ``--resume`` may switch executor) and recorded per attempt in ``run.json`` instead.
PLACEMENT_FIELDS = frozenset({"executor", "address"})
#: Mean final accuracy of the subset models on their own subsets above which they count as fitting them;
#: only then is memorization a label-issue signal (see ``fitscope/estimators/label_issues.py``).
FIT_THRESHOLD = 0.99


def min_models(ratio: float) -> int:
    """Fewest subset models at ``ratio`` for which every example is in some subset and out of another.

    ``ceil(1 / min(r, 1 - r))`` models are the least that can cover every
    example both ways; twice that leaves the random draw room to do so.
    """
    return 2 * math.ceil(1.0 / min(ratio, 1.0 - ratio) - 1e-9)


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
    seed: int = Field(0, ge=0, description="seed of the label flips, the subsets and the models")
    chunk: int = Field(50, gt=0, description="models per batched ensemble (unit of work)")
    executor: Literal["local", "ray"] = Field("local", description="where units train (not in the config hash)")
    address: str | None = Field(None, description="Ray cluster HOST:PORT (ray only; not in the config hash)")
    threads: int | None = Field(None, gt=0, description="torch threads per unit (results are bitwise identical "
                                "for the same value); None: see resolve_threads")

    @model_validator(mode="after")
    def _address_needs_ray(self) -> "AuditConfig":
        if self.address is not None and self.executor != "ray":
            raise ValueError(f"--address: only used with --executor ray; got --executor {self.executor}")
        return self

    @field_validator("cscore_ratios")
    @classmethod
    def _ratios_in_open_interval(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 < r < 1.0 for r in value):
            raise ValueError(f"expected subset ratios in (0, 1), got {value}")
        return sorted(set(float(r) for r in value))

    @model_validator(mode="after")
    def _enough_models(self) -> "AuditConfig":
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
        """The ``--quick`` setting of ``make demo``: 48 memorization models, 3 C-score ratios, 12 epochs.

        80 models, 960 model-epochs of ``mlp:512x2`` on digits: about 1-2 minutes on 2 cores,
        with label-issue AUROC near 0.999 at 10% noise. ``overrides`` (None values
        ignored) replace any field.
        """
        base = dict(models=48, chunk=24, cscore_ratios=[0.3, 0.5, 0.7], cscore_models=16, epochs=12)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return make_config(**base)


def make_config(**values) -> AuditConfig:
    """Build an :class:`AuditConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(AuditConfig, "audit", values)


def resolve_threads(cfg: AuditConfig, out: str | Path | None = None, *, resume: bool = False) -> AuditConfig:
    """``cfg`` with ``threads`` set: torch threads per unit, which the config (and its hash) records.

    Given: kept. Else ``FITSCOPE_NUM_THREADS`` if set; else, resuming a run in
    ``out``, the value that run was made with (so a plain ``--resume`` matches
    its config whichever executor or machine resumes it); else every CPU this
    process may use for the ``local`` executor, and 1 per task for ``ray``
    (one task per core is the most throughput for batched ensembles).
    """
    if cfg.threads is not None:
        return cfg
    from fitscope.runs.executors import default_threads_per_task
    from fitscope.runs.run import RUN_JSON, read_meta

    threads = None
    if os.environ.get("FITSCOPE_NUM_THREADS"):
        threads = default_threads_per_task()
    elif resume and out is not None and (Path(out) / RUN_JSON).is_file():
        stored = read_meta(out).get("config", {}).get("threads")
        if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0:
            threads = stored
    if threads is None:
        threads = machine_cpus() if cfg.executor == "local" else 1
    return cfg.model_copy(update={"threads": int(threads)})


# --------------------------------------------------------------------------- planning


def subset_masks(n: int, ratio: float, n_models: int, *, seed: int) -> np.ndarray:
    """``(n_models, n)`` bool masks, each holding ``round(ratio * n)`` examples, every example in and out.

    Each row is a uniform random subset drawn with ``numpy.random.default_rng(seed)``;
    an example that lands in every subset (or in none) is then swapped with a
    random example of a random model that can spare it, so that every example
    is in at least one subset and out of at least one.

    Raises:
        ConfigError: ``n_models`` is below :func:`min_models` or the subset size is 0 or n.
    """
    size = int(round(ratio * n))
    if not 0 < size < n:
        raise ConfigError(f"ratio: a subset of {ratio:g} of {n} examples holds {size}; expected between 1 and {n - 1}")
    if n_models < min_models(ratio):
        raise ConfigError(f"models: expected at least {min_models(ratio)} models for ratio {ratio:g}, got {n_models}")
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_models, n), bool)
    for k in range(n_models):
        masks[k, rng.choice(n, size, replace=False)] = True
    n_in = masks.sum(axis=0)
    for want_out in (True, False):  # examples never out, then examples never in
        stuck = np.flatnonzero(n_in == (n_models if want_out else 0))
        for i in stuck:
            for k in rng.permutation(n_models):
                # a partner j on the other side in model k that stays on that side in another model
                side = ~masks[k] if want_out else masks[k]
                spare = n_in < n_models - 1 if want_out else n_in > 1
                partners = np.flatnonzero(side & spare)
                if len(partners):
                    j = int(rng.choice(partners))
                    masks[k, i], masks[k, j] = not want_out, want_out
                    n_in[i] += -1 if want_out else 1
                    n_in[j] += 1 if want_out else -1
                    break
    if (n_in == 0).any() or (n_in == n_models).any():  # pragma: no cover - impossible above min_models
        raise ConfigError(f"models: {n_models} subsets of ratio {ratio:g} cannot cover every example; use more")
    return masks


@dataclass(frozen=True)
class Unit:
    """One batched ensemble: a chunk of the subset models of one ratio."""

    key: str
    part: str  # "mem" (the memorization models, ratio cfg.ratio) or "cscore"
    ratio: float
    masks: np.ndarray  # (k, n) bool
    seeds: list[int]
    features: bool = False  # also return the hidden features of the unit's first model


def plan_units(cfg: AuditConfig, n: int) -> list[Unit]:
    """Every ensemble the audit trains, in order: the memorization models, then the other C-score ratios.

    Masks derive from ``(seed, ratio)`` and model seeds from ``(seed, ratio, model index)``, so a
    unit never depends on the chunk size or on which other ratios are in the audit.
    """
    plan: list[tuple[str, float, int]] = [("mem", cfg.ratio, cfg.models)]
    plan += [("cscore", r, cfg.cscore_models) for r in cfg.cscore_ratios if r != cfg.ratio]
    units: list[Unit] = []
    for part, ratio, count in plan:
        rkey = f"{ratio:g}"
        masks = subset_masks(n, ratio, count, seed=derive_seed(cfg.seed, "masks", rkey))
        seeds = [derive_seed(cfg.seed, "model", rkey, k) for k in range(count)]
        for c, start in enumerate(range(0, count, cfg.chunk)):
            stop = min(start + cfg.chunk, count)
            key = f"mem-{c:03d}" if part == "mem" else f"cscore-{rkey}-{c:03d}"
            units.append(Unit(key, part, ratio, masks[start:stop], seeds[start:stop],
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
    # A fixed epoch budget (no early stop): every unit records the same epochs for learning speed.
    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                       schedule="constant", early_stop="none", record=record)


def train_unit(unit: Unit, cfg: AuditConfig, data: Dataset, labels: np.ndarray,
               progress: Callable[[dict], None] | None = None) -> dict[str, np.ndarray]:
    """Train one unit and return the arrays the estimators need (what ``run.save_unit`` stores)."""
    return _train_unit_arrays(unit, cfg, data.n_classes, data.x_train, labels, data.x_test, data.y_test, progress)


def train_unit_task(task: tuple[Unit, AuditConfig, int], *, x_train: np.ndarray, labels: np.ndarray,
                    x_test: np.ndarray, y_test: np.ndarray) -> dict[str, np.ndarray]:
    """The executor task of one unit: ``task = (unit, cfg, n_classes)``, the big arrays shared (read-only).

    Module-level and pure (no globals, no writes to the run): what it returns follows from its
    arguments alone, so the ``local`` and ``ray`` executors give the same bits for the same
    ``cfg.threads``. The caller stores the result with ``run.save_unit``.
    """
    unit, cfg, n_classes = task
    return _train_unit_arrays(unit, cfg, n_classes, x_train, labels, x_test, y_test, None)


def _train_unit_arrays(unit: Unit, cfg: AuditConfig, n_classes: int, x_train: np.ndarray, labels: np.ndarray,
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
        out["records_correct"] = result.records.correct  # (E, k, ceil(n/8)) bit-packed
        out["margin_mean"] = result.records.margin.astype(np.float32).mean(axis=0)  # (k, n)
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
    records_correct: np.ndarray  # (E, K, n) bool
    margin_mean: np.ndarray  # (K, n)
    subset_acc: np.ndarray  # (K,)
    test_acc: np.ndarray  # (K,)
    cscore_pairs: dict  # {ratio: (correct, masks)}
    seconds: dict = field(default_factory=dict)  # part -> training seconds (summed over units)
    hidden_features: np.ndarray | None = None  # (n, D) of the first memorization model (None: not stored)


def _gather(units: list[Unit], stored: dict[str, dict], cfg: AuditConfig, n: int) -> AuditArrays:
    mem = [stored[u.key] for u in units if u.part == "mem"]

    def cat(name, axis=0):
        return np.concatenate([s[name] for s in mem], axis=axis)

    pairs: dict[float, tuple[list, list]] = {}
    seconds: dict[str, float] = {}
    for u in units:
        s = stored[u.key]
        correct, masks = pairs.setdefault(u.ratio, ([], []))
        correct.append(s["correct"])
        masks.append(s["masks"])
        seconds[u.part] = seconds.get(u.part, 0.0) + float(s["seconds"])
    cscore_pairs = {r: (np.concatenate(c), np.concatenate(m)) for r, (c, m) in pairs.items()
                    if r in cfg.cscore_ratios}
    return AuditArrays(
        masks=cat("masks"), correct=cat("correct"), test_correct=cat("test_correct"),
        train_logits=cat("train_logits"), records_correct=unpack_correct(cat("records_correct", axis=1), n),
        margin_mean=cat("margin_mean"), subset_acc=cat("subset_acc"), test_acc=cat("test_acc"),
        cscore_pairs=cscore_pairs, seconds=seconds,
        hidden_features=next((stored[u.key]["hidden_features"] for u in units
                              if u.features and "hidden_features" in stored[u.key]), None),
    )


def _train_units(cfg: AuditConfig, run, todo: list[Unit], stored: dict[str, dict], *, data: Dataset,
                 labels: np.ndarray, on_unit_start, progress, executor: Executor | None) -> None:
    """Train ``todo`` with the executor, saving each unit (and its wall-time share) as it arrives."""
    own = executor is None
    ex = make_executor(cfg.executor, address=cfg.address, threads_per_task=cfg.threads) if own else executor
    try:
        if ex.threads_per_task != cfg.threads:
            raise ConfigError(f"--threads: the executor runs {ex.threads_per_task} threads per task but the "
                              f"config says {cfg.threads}")
        run.meta.setdefault("attempts", [{}])[-1]["executor"] = ex.info  # where units trained: not in the hash
        total = sum(len(u.seeds) for u in todo) * cfg.epochs
        if on_unit_start is not None:
            on_unit_start(f"{len(todo)} units ({ex.name})", 1, total)
        tasks = [(unit, cfg, data.n_classes) for unit in todo]
        shared = {"x_train": data.x_train, "labels": labels, "x_test": data.x_test, "y_test": data.y_test}
        done, train_acc, test_acc = 0, [], []
        last = time.perf_counter()
        for i, arrays in ex.map_unordered(train_unit_task, tasks, shared=shared):
            unit = todo[i]
            now = time.perf_counter()
            name = f"train {'memorization' if unit.part == 'mem' else 'C-score'} models"
            run.timings[name] = round(run.timings.get(name, 0.0) + now - last, 3)  # wall time, split by arrival
            last = now
            run.save_unit(unit.key, arrays, info=dict(models=len(unit.seeds), ratio=unit.ratio,
                                                      seconds=round(float(arrays["seconds"]), 3),
                                                      threads=int(arrays["threads"])))
            stored[unit.key] = arrays
            done += len(unit.seeds) * cfg.epochs
            train_acc.append(arrays["subset_acc"])
            test_acc.append(arrays["test_acc"])
            if progress is not None:
                progress({"epoch": done, "epochs": total,
                          "train_acc_mean": float(np.concatenate(train_acc).mean()),
                          "test_acc_mean": float(np.concatenate(test_acc).mean())})
    finally:
        if own:
            ex.close()


# --------------------------------------------------------------------------- estimators


@dataclass
class AuditOutcome:
    """What :func:`run_audit` computed and which units it trained or reused."""

    examples: pd.DataFrame
    influence: pd.DataFrame
    summary: dict
    detection: pd.DataFrame | None = None  # one row per score: auroc, precision/recall at k
    roc: dict = field(default_factory=dict)  # score name -> (fpr, tpr)
    spearman: pd.DataFrame | None = None
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)
    mem_in_label_score: bool = False
    cleanlab: dict | None = None  # find_label_issues's mask: precision, recall, flagged, k (ground truth known)
    # the keyword arguments the label-issue score was computed from (labels, pred_probs, signals), so that a
    # benchmark can recompute it with other weights: label_issue_scores(**label_signals, weights=...)
    label_signals: dict = field(default_factory=dict)
    label_issue_signals: tuple = ()  # the signals the score used (those given with a positive weight)


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def estimate(arrays: AuditArrays, data: Dataset, labels: np.ndarray, flipped: np.ndarray | None) -> AuditOutcome:
    """Every estimator of the audit from the stored arrays (no training)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_curve

    from fitscope.estimators import (
        cleanlab_issues,
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
    infl = high_influence_pairs_streamed(arrays.test_correct, arrays.masks, mem)  # no (n, m) matrix
    pairs = infl.pairs
    cscore = cscore_holdout(arrays.cscore_pairs)
    speed = learning_speed(arrays.records_correct, in_subset=arrays.masks)
    x = data.x_train.reshape(n, -1)
    density = kernel_density(x, labels)
    if arrays.hidden_features is not None:
        hidden_density = kernel_density(arrays.hidden_features, labels).scores
    else:  # a unit stored before hidden features were kept
        hidden_density = np.full(n, np.nan)
    rel = relative_distance(x, labels)
    oof = out_of_fold_probs(arrays.train_logits, arrays.masks)
    in_count = arrays.masks.sum(axis=0)
    margin = np.where(arrays.masks, arrays.margin_mean, 0.0).sum(axis=0) / np.maximum(in_count, 1)
    subset_fit = float(arrays.subset_acc.mean())
    use_mem = subset_fit >= FIT_THRESHOLD
    label_signals = dict(labels=labels, pred_probs=oof, mem=mem.mem if use_mem else None, cscore=cscore.cscore,
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
    examples["mem_se"] = mem.mem_se
    examples["cscore"] = cscore.cscore
    examples["learning_speed"] = speed.scores
    examples["density"] = density.scores
    examples["hidden_density"] = hidden_density
    examples["rel_distance"] = rel.scores
    examples["oof_confidence"] = issues.given_label_prob
    examples["label_issue"] = issues.scores
    clean = cleanlab_issues(labels, oof)  # the baseline on the same out-of-fold probabilities
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
        "subset train accuracy": subset_fit,
        "test accuracy": float(arrays.test_acc.mean()),
        "mean mem": _nanmean(mem.mem),
        "mean mem_se": _nanmean(mem.mem_se),
        "mean infl_se": float(infl.mean_se),
        "high-influence pairs": int(len(pairs)),
        "learning speed vs C-score rho": float(spearman.spearman_rho.iloc[0]),
    }
    outcome = AuditOutcome(examples=examples, influence=pairs, summary=summary, spearman=spearman,
                           mem_in_label_score=use_mem, label_signals=label_signals,
                           label_issue_signals=issues.signals)
    if flipped is not None and 0 < len(flipped) < n:
        corrupted = examples["corrupted"].to_numpy()
        scored = {"label_issue (ours)": issues.scores, "out-of-fold self-confidence": 1.0 - issues.given_label_prob,
                  "cleanlab label quality (1 - score)": clean.scores,
                  "cleanlab find_label_issues (ranked)": np.where(clean.mask, 1.0, 0.0) + 0.5 * clean.scores}
        det = []
        for name, s in scored.items():
            metrics = detection_metrics(s, corrupted)
            det.append({"score": name, **metrics})
            s = np.where(np.isnan(s), np.nanmin(s) - 1.0, s)
            fpr, tpr, _ = roc_curve(corrupted, s)
            outcome.roc[name] = (fpr, tpr)
        outcome.detection = pd.DataFrame(det)
        summary["label-issue AUROC"] = float(det[0]["auroc"])
        summary["label-issue precision at k"] = float(det[0]["precision_at_k"])
        summary["self-confidence AUROC"] = float(det[1]["auroc"])
        outcome.cleanlab = mask_metrics(clean.mask, corrupted)
        summary["cleanlab label-quality AUROC"] = float(det[2]["auroc"])
        summary["cleanlab find_label_issues flagged"] = outcome.cleanlab["flagged"]
        summary["cleanlab find_label_issues precision"] = outcome.cleanlab["precision"]
        summary["cleanlab find_label_issues recall"] = outcome.cleanlab["recall"]
    return outcome


# --------------------------------------------------------------------------- the job


def run_audit(
    cfg: AuditConfig,
    run,
    *,
    data: Dataset,
    labels: np.ndarray,
    flipped: np.ndarray | None,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    executor: Executor | None = None,
) -> AuditOutcome:
    """Train (or reuse) every unit into ``run``, estimate, and write the two tables.

    The units not yet stored run as tasks of ``executor`` (:func:`train_unit_task`), and each
    is saved with ``run.save_unit`` as soon as it finishes, so a killed audit loses only the
    units in flight.

    Args:
        cfg: the audit configuration.
        run: a :class:`fitscope.runs.Run`; units already stored in it are reused.
        data: the loaded dataset (true labels).
        labels: the training labels as given to the models (flipped when ``cfg.noise``).
        flipped: indices of the flipped labels, or None without injected noise.
        on_unit_start: called once before training with ``(label, 1, model-epochs to train)``.
        progress: called after each finished unit with ``{"epoch": model-epochs done, "epochs": total,
            "train_acc_mean": ..., "test_acc_mean": ...}`` (units train in parallel, so progress is per unit).
        executor: where the units train; default: one made from ``cfg`` (and closed) here.
    """
    cfg = resolve_threads(cfg)
    n = len(labels)
    units = plan_units(cfg, n)
    stored: dict[str, dict] = {}
    reused = []
    todo: list[Unit] = []
    for unit in units:
        if run.has_unit(unit.key):
            arrays = run.load_unit(unit.key)
            if arrays.get("masks") is None or not np.array_equal(arrays["masks"], unit.masks):
                raise RunError(f"--resume: unit {unit.key} of {run.path} was trained on other subsets; "
                               "use another --out")
            reused.append(unit.key)
            stored[unit.key] = arrays
        else:
            todo.append(unit)
    if todo:
        _train_units(cfg, run, todo, stored, data=data, labels=labels, on_unit_start=on_unit_start,
                     progress=progress, executor=executor)
    trained = [u.key for u in todo]
    with run.timer("estimators"):
        gathered = _gather(units, stored, cfg, n)
        del stored
        outcome = estimate(gathered, data, labels, flipped)
    outcome.summary = {"models": int(sum(len(u.seeds) for u in units)), **outcome.summary}
    outcome.trained_units, outcome.reused_units = trained, reused
    outcome.summary["training seconds (all units, summed)"] = float(sum(gathered.seconds.values()))
    run.write_table("examples", outcome.examples)
    run.write_table("influence", outcome.influence)
    return outcome


def audit(
    cfg: AuditConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
):
    """The whole audit: validate, train (or resume), estimate, write tables and ``report.html``.

    Data, model spec, label flips and subset plan are checked *before* the run
    directory is made, so bad input leaves nothing behind.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`AuditOutcome`.
    """
    from fitscope.report import write_report
    from fitscope.report import audit as figures
    from fitscope.runs import Run

    t0 = time.perf_counter()
    cfg = resolve_threads(cfg, out, resume=resume)
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    load_seconds = time.perf_counter() - t0
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    labels, flipped, noise_seed = noisy_labels(cfg, data)
    plan_units(cfg, len(labels))
    seeds = {"seed": cfg.seed, "data_seed": cfg.data_seed, "noise_seed": noise_seed}
    # executor and address say where units train, not what they compute: kept out of the config (and its
    # hash) so that a run started locally resumes on Ray and vice versa; recorded per attempt instead.
    config = cfg.model_dump(exclude=set(PLACEMENT_FIELDS))
    # made before the run directory, so a bad --address leaves nothing behind
    with make_executor(cfg.executor, address=cfg.address, threads_per_task=cfg.threads) as executor, \
            Run.create(out, kind="audit", config=config, seeds=seeds, resume=resume) as run:
        run.timings.setdefault("load data", round(load_seconds, 3))
        outcome = run_audit(cfg, run, data=data, labels=labels, flipped=flipped,
                            on_unit_start=on_unit_start, progress=progress, executor=executor)
        run.finish(summary=outcome.summary)
        with run.timer("report"):
            write_report(run, "audit.html.j2", figures.report_context(cfg, data, outcome))
    return run, outcome
