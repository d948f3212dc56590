"""Noisy labels: clean the labels or regularize? Noise-robust training and label cleaning side by side.

The study, in the order it runs:

1. **Data and noise.** Load the data (``--data``: built-in, CSV, npz, IDX or
   an image folder; ``--train-rows`` keeps a seeded sample of the training
   split). For every seed ``s`` of ``--seeds``, every noise level ``p`` of
   ``--noise`` and every mode of ``--noise-mode``, exactly ``round(p n)``
   training labels are moved to another class (:func:`fitscope.data.flip_labels`:
   ``uniform`` over the other classes, or ``pair``: class ``c`` becomes
   ``c + 1``), drawn from ``derive_seed(s, "noise", mode, p)``. Every method
   sees the same noisy labels. At ``p = 0`` the modes coincide: one setting,
   mode ``none``.
2. **Validation split.** A share ``--validation`` (10%) of the noisy training
   rows, drawn from ``derive_seed(s, "validation")``, is held out of training
   (its labels are noisy too: the test set is never used to choose anything).
   Per epoch, the validation accuracy against those given labels says when
   the model was best; where a method has a small grid of hyperparameters
   (:data:`GRIDS`, ``--tune``), the setting with the highest final validation
   accuracy (mean over seeds) is kept.
3. **Methods.** A method is plain cross-entropy (``ce``), one or more parts of
   the training objective (:mod:`fitscope.train.regularizers`, joined by
   ``+``: ``elr``, ``gce``, ``mixup+elr``), or label cleaning followed by
   either (``clean``, ``clean+elr``). Hyperparameters are the parts' defaults
   unless ``--method-params`` sets them (``elr:lambda=3,beta=0.7+gce:q=0.7``).
4. **Cleaning** (``clean``): the audit's label-issue detection on the noisy
   training rows of each seed: ``--clean-folds`` models of the same spec,
   each trained with plain cross-entropy on all folds but one, give
   out-of-fold probabilities (:func:`fitscope.estimators.out_of_fold_probs`)
   and learning speed (:func:`fitscope.estimators.learning_speed`); the audit's
   score (:func:`fitscope.estimators.label_issue_scores`) ranks the rows, the
   audit's estimate of how many labels are wrong (confident learning's
   flagged count, :func:`fitscope.estimators.cleanlab_issues`, what
   ``fitscope audit`` reports as the labels that look wrong) says how many of
   the worst-ranked rows are dropped, and the method trains on the rest.
5. **Units.** One unit per (method, noise, mode): the seeds (and the grid
   settings, one ensemble each) train as one batched ensemble of ``len(seeds)``
   models (:func:`fitscope.train.train_ensemble`, labels ``(K, n)``: each model
   its own seed's noise; ``masks``: its own training rows), stored as it finishes.
6. **Estimates.** Per (method, noise, mode, seed): test accuracy of the final
   model, and at the epoch of best validation accuracy; expected calibration
   error on the test set (15 bins, :func:`fitscope.estimators.expected_calibration_error`);
   memorized noise: the accuracy on the flipped training rows measured
   against the given, wrong label (:func:`memorized_noise`), per epoch from
   the per-example records; the share of flipped rows predicted as their true
   class; what cleaning dropped. Tables ``results``, ``curves`` (per epoch),
   ``reliability`` (per confidence bin, seeds pooled) and ``selection`` (the
   grid); wall seconds per unit in ``seconds.json`` (not in the tables, which
   are the same bits whichever executor ran them).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``); :func:`noisy_labels`
is the Python API.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, flip_labels, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.estimators import (
    cleanlab_issues,
    label_issue_scores,
    learning_speed,
    out_of_fold_probs,
    reliability_bins,
)
from fitscope.estimators.calibration import ECE_BINS
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import PLAIN, REGULARIZERS, check_parts, format_regularizers, parse_regularizers
from fitscope.validation import check_seed, message, shorten

#: The method that drops the rows the audit's label-issue score ranks worst before training.
CLEAN = "clean"
#: What joins the parts of a method (``clean+elr``), as in the regularizers' grammar.
JOIN = "+"
#: The default methods of the issue.
DEFAULT_METHODS = ("ce", "ls", "mixup", "elr", "pskd", "gce", "sce", "sam", "clean")
#: Small hyperparameter grids chosen on the validation split (``--tune``): part -> hyperparameter -> values,
#: the part's default (the paper's) first, so that a tie on the validation split keeps it. A hyperparameter
#: set in ``--method-params`` is not searched.
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "elr": {"lambda": (3.0, 1.0)},
    "gce": {"q": (0.7, 0.5)},
}
#: The mode recorded at noise 0 (no label is flipped, so uniform and pair coincide).
NO_NOISE_MODE = "none"
NOISE_MODES = ("uniform", "pair")


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A method: optionally clean the labels first, then train with these regularizer parts (none: ``ce``).

    Attributes:
        name: the canonical name (``ce``, ``elr``, ``clean``, ``clean+elr``, ``mixup+elr``).
        clean: drop the rows the label-issue score ranks worst first.
        parts: the names of the regularizer parts, in the order given.
    """

    name: str
    clean: bool
    parts: tuple[str, ...]


def parse_method(text: str) -> Method:
    """Parse a method name: ``ce``, regularizer parts joined by ``+``, optionally after ``clean+``.

    Raises:
        ConfigError: an unknown name (the message lists the known ones), ``clean`` not first,
            a part twice or two parts that each replace the loss or wrap the step.
    """
    known = f"{PLAIN}, {CLEAN} or regularizer parts ({', '.join(REGULARIZERS)}) joined by '+', e.g. {CLEAN}+elr"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(message("methods", known, shorten(text)))
    names = [n.strip() for n in text.strip().split(JOIN)]
    clean = names[0] == CLEAN
    rest = names[1:] if clean else names
    if rest == [PLAIN]:
        rest = []
    for name in rest:
        if name == CLEAN:
            raise ConfigError(message("methods", f"{CLEAN} first in a method ({CLEAN}+elr)", repr(text)))
        if name not in REGULARIZERS:
            raise ConfigError(message("methods", known, f"unknown {name!r}" + (f" in {text!r}" if len(names) > 1
                                                                             else "")))
    try:  # each part once; at most one loss and one step wrapper
        check_parts([{"name": n} for n in rest])
    except ConfigError as err:
        raise ConfigError(str(err).replace("regularizers: ", "methods: ", 1) + f" in {text!r}") from None
    name = JOIN.join(([CLEAN] if clean else []) + rest) or PLAIN
    return Method(name=name, clean=clean, parts=tuple(rest))


def parse_method_params(text: str) -> dict[str, dict[str, float]]:
    """``"elr:lambda=3,beta=0.7+gce:q=0.7"`` -> ``{"elr": {"lambda": 3.0, "beta": 0.7}, "gce": {"q": 0.7}}``.

    Only the hyperparameters given are returned (the others keep the part's
    default, or are searched by :data:`GRIDS`); each is checked against its range.

    Raises:
        ConfigError: bad grammar, an unknown part or hyperparameter (named with its range), a part twice.
    """
    out: dict[str, dict[str, float]] = {}
    for chunk in (c.strip() for c in (text or "").split(JOIN)):
        if not chunk:
            continue
        try:
            parsed = parse_regularizers(chunk)
        except ConfigError as err:
            raise ConfigError(str(err).replace("regularizers: ", "method_params: ", 1)) from None
        if len(parsed) != 1:
            raise ConfigError(message("method_params", "PART:NAME=VALUE,... joined by '+' "
                                      "(e.g. elr:lambda=3,beta=0.7+gce:q=0.7)", repr(chunk)))
        name = parsed[0]["name"]
        if name in out:
            raise ConfigError(message("method_params", "each part once", f"{name} twice"))
        given = [i.partition("=")[0].strip() for i in chunk.partition(":")[2].split(",") if i.strip()]
        out[name] = {k: parsed[0][k] for k in given}
    return out


# --------------------------------------------------------------------------- config


class NoisyLabelsConfig(BaseModel):
    """Everything that determines a noisy-labels run; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "mnist1d"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and of --train-rows")
    train_rows: int | None = Field(None, ge=10, description="a seeded sample of this many training rows "
                                                             "(None: all)")
    model: str = Field("auto", description="model spec; auto: cnn1d:32x3 for signals, cnn:32-64 for images, "
                                           "mlp:256x2 for vectors")
    noise: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8],
                               description="fractions of training labels flipped to another class, each in [0, 1)")
    noise_mode: list[Literal["uniform", "pair"]] = Field(default_factory=lambda: list(NOISE_MODES))
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS))
    method_params: str = Field("", description="hyperparameters of the methods' parts, e.g. elr:lambda=3,beta=0.7")
    tune: bool = Field(True, description="choose the hyperparameters of GRIDS on the validation split")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    validation: float = Field(0.1, gt=0, le=0.5, description="share of the noisy training rows held out")
    clean_folds: int = Field(3, ge=2, le=10, description="models (folds) of the label-issue detection")
    epochs: int = Field(40, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.003, gt=0)

    @field_validator("noise")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("expected at least one noise level in [0, 1); got none")
        bad = [v for v in value if not 0.0 <= v < 1.0]
        if bad:
            raise ValueError(f"expected noise levels in [0, 1) (the fraction of labels flipped); got {bad[0]:g}")
        return sorted(set(value))

    @field_validator("noise_mode")
    @classmethod
    def _modes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"expected at least one of {', '.join(NOISE_MODES)}; got none")
        return [m for m in NOISE_MODES if m in value]

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one method; got none")
        names = [parse_method(v).name for v in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"expected each method once; got {twice[0]} twice")
        return names

    @field_validator("method_params")
    @classmethod
    def _params(cls, value: str) -> str:
        parse_method_params(value)
        return value.strip()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected distinct seeds; got {value}")
        for s in value:
            check_seed(s, "seeds")
        return value

    @model_validator(mode="after")
    def _params_of_the_methods(self) -> "NoisyLabelsConfig":
        used = {p for m in self.methods for p in parse_method(m).parts}
        unused = [p for p in parse_method_params(self.method_params) if p not in used]
        if unused:
            raise ConfigError(message("--method-params", "hyperparameters of the parts of --methods "
                                      f"({', '.join(sorted(used)) or 'none'})", repr(unused[0])))
        return self


#: ``--quick``: uniform noise 0 and 40%, ce, ls, elr, gce and clean, 2 seeds, 1000 training rows, 12 epochs,
#: no grid (about 20 s on 2 cores with mnist1d and cnn1d:32x3).
QUICK = dict(noise=[0.0, 0.4], noise_mode=["uniform"], methods=["ce", "ls", "elr", "gce", "clean"], seeds=[0, 1],
             train_rows=1000, epochs=12, tune=False)


def make_config(**values) -> NoisyLabelsConfig:
    """Build a :class:`NoisyLabelsConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(NoisyLabelsConfig, values)


def default_model(input_shape: tuple[int, ...]) -> str:
    """The model of ``--model auto`` for an input shape: mlp for vectors, cnn1d for signals, cnn for images."""
    return {1: "mlp:256x2", 2: "cnn1d:32x3"}.get(len(input_shape), "cnn:32-64")


def model_seeds(*, seeds) -> list[int]:
    """Each study seed's model seed, ``derive_seed(seed, "model")`` (the same for every method and setting)."""
    return [derive_seed(int(s), "model") for s in seeds]


def candidates(cfg: NoisyLabelsConfig, method: Method) -> list[list[dict]]:
    """The hyperparameter settings of a method tried on the validation split: recorded parts per setting.

    One setting (the defaults and ``--method-params``) unless ``--tune`` and a part has a grid in
    :data:`GRIDS` for a hyperparameter ``--method-params`` leaves open; then every combination.
    """
    given = parse_method_params(cfg.method_params)
    base = [{"name": p, **given.get(p, {})} for p in method.parts]
    axes = []
    if cfg.tune:
        for i, part in enumerate(method.parts):
            params = REGULARIZERS[part].params
            for name, values in GRIDS.get(part, {}).items():
                if name in params and name not in given.get(part, {}):
                    axes.append([(i, name, v) for v in values])
    out = []
    for combo in itertools.product(*axes):
        parts = [dict(p) for p in base]
        for i, name, value in combo:
            parts[i][name] = value
        out.append(check_parts(parts))
    return out


def setting_text(parts: list[dict]) -> str:
    """A setting as the regularizers' grammar reads it (``ce`` for none)."""
    return format_regularizers(parts)


# --------------------------------------------------------------------------- arrays in, arrays out


def noisy_labels_for(y: np.ndarray, noise: float, mode: str, n_classes: int, *, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, flipped)`` of one seed: ``round(noise n)`` labels flipped (:func:`fitscope.data.flip_labels`).

    The draw comes from ``derive_seed(seed, "noise", mode, f"{noise:g}")``; ``flipped`` is ``(n,)`` bool.
    """
    y = np.asarray(y, np.int64)
    flipped = np.zeros(len(y), bool)
    if noise <= 0:
        return y.copy(), flipped
    labels, rows = flip_labels(y, noise, n_classes, mode=mode, seed=derive_seed(seed, "noise", mode, f"{noise:g}"))
    flipped[rows] = True
    return labels, flipped


def validation_rows(n: int, share: float, *, seed: int) -> np.ndarray:
    """``(n,)`` bool: the ``max(1, round(share n))`` rows held out for validation.

    Drawn from ``derive_seed(seed, "validation")``: the same rows for every method and noise setting of a seed.
    """
    rng = np.random.default_rng(derive_seed(seed, "validation"))
    held = np.zeros(n, bool)
    held[rng.permutation(n)[:max(1, int(round(share * n)))]] = True
    return held


def memorized_noise(correct: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Accuracy on the flipped rows against their given (wrong) label: how much of the noise a model memorized.

    Args:
        correct: ``(..., K, n)`` bool: the prediction equals the *given* label (e.g. the per-epoch
            records ``(E, K, n)``, or the final ``(K, n)``).
        flipped: ``(K, n)`` bool: the rows of each model whose label was flipped (and that count).

    Returns:
        ``(..., K)`` the share of each model's flipped rows predicted as their given label (NaN
        for a model without flipped rows).
    """
    correct = np.asarray(correct, bool)
    flipped = np.asarray(flipped, bool)
    count = flipped.sum(axis=-1)
    hits = (correct & flipped).sum(axis=-1)
    out = np.full(hits.shape, np.nan)
    np.divide(hits, np.broadcast_to(count, hits.shape), out=out, where=np.broadcast_to(count, hits.shape) > 0)
    return out


def fold_of_rows(n: int, folds: int, *, seed: int) -> np.ndarray:
    """``(n,)`` int64: each row's fold in ``[0, folds)``, balanced, drawn from ``derive_seed(seed, "folds")``."""
    rng = np.random.default_rng(derive_seed(seed, "folds"))
    fold = np.empty(n, np.int64)
    fold[rng.permutation(n)] = np.arange(n) % folds
    return fold


def detection_plan(train_rows: np.ndarray, folds: int, *, seeds) -> tuple[np.ndarray, list[int]]:
    """The detection ensemble of :func:`detect_label_issues`: ``(S F, n)`` masks and the models' seeds.

    Model ``s F + f`` trains on seed ``s``'s training rows outside fold ``f``
    (:func:`fold_of_rows` with that seed), from ``derive_seed(s, "detect", f)``.
    """
    masks, det_seeds = [], []
    for s, rows in zip(seeds, train_rows):
        fold = fold_of_rows(len(rows), folds, seed=int(s))
        for f in range(folds):
            masks.append(rows & (fold != f))
            det_seeds.append(derive_seed(int(s), "detect", f))
    return np.stack(masks), det_seeds


def rank_label_issues(labels: np.ndarray, oof: np.ndarray, speed: np.ndarray) -> tuple[np.ndarray, int]:
    """The audit's label-issue score of some rows and its estimate of how many labels are wrong.

    Args:
        labels: ``(r,)`` given labels; ``oof``: ``(r, C)`` out-of-fold probabilities;
            ``speed``: ``(r,)`` learning speed in the detection models' own subsets.

    Returns:
        ``(scores (r,), estimated count)``: :func:`fitscope.estimators.label_issue_scores` (higher =
        more likely wrong) and the number of rows confident learning flags
        (:func:`fitscope.estimators.cleanlab_issues`, the audit's "labels that look wrong").
    """
    scores = label_issue_scores(labels, oof, learning_speed=speed).scores
    return scores, cleanlab_issues(labels, oof).n_flagged


def worst_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest scores (ties: the lower position first; NaN last)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.sort(np.argsort(-s, kind="stable")[:count])


def detect_label_issues(model: str, x: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, *, seeds,
                        folds: int, train: dict, n_classes: int,
                        progress: Callable[[dict], None] | None = None) -> dict[str, np.ndarray]:
    """The audit's label-issue detection on each seed's noisy training rows, and the rows it drops.

    Args:
        model: the model spec of the detection models.
        x: ``(n, *input_shape)`` inputs; ``labels``: ``(S, n)`` each seed's given labels.
        train_rows: ``(S, n)`` bool: each seed's training rows (validation rows left out).
        seeds: the S study seeds; ``folds``: F; ``train``: TrainConfig fields (plain cross-entropy).

    Returns:
        ``score`` ``(S, n)`` float64 the label-issue score (NaN outside the training rows),
        ``dropped`` ``(S, n)`` bool the ``estimated`` worst-scored training rows, ``estimated``
        ``(S,)`` int64, and ``seconds``.
    """
    t0 = time.perf_counter()
    s_count, n = labels.shape
    masks, det_seeds = detection_plan(train_rows, folds, seeds=seeds)
    config = TrainConfig(**{**train, "regularizers": [], "record": "summary"})
    result = train_ensemble(model, x, np.repeat(labels, folds, axis=0), config=config, seeds=det_seeds, masks=masks,
                            n_classes=n_classes, progress=progress)
    score = np.full((s_count, n), np.nan)
    dropped = np.zeros((s_count, n), bool)
    estimated = np.zeros(s_count, np.int64)
    for i in range(s_count):
        block = slice(i * folds, (i + 1) * folds)
        oof = out_of_fold_probs(result.train_logits[block], masks[block])
        speed = learning_speed(correct_counts=result.summary.correct_epochs[block], epochs=result.summary.epochs,
                               in_subset=masks[block]).scores
        rows = np.flatnonzero(train_rows[i])
        scores, count = rank_label_issues(labels[i, rows], oof[rows], speed[rows])
        score[i, rows] = scores
        dropped[i, rows[worst_rows(scores, count)]] = True
        estimated[i] = count
    return {"score": score, "dropped": dropped, "estimated": estimated,
            "seconds": np.asarray(time.perf_counter() - t0)}


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class MethodTask:
    """The task of one unit: one method at one noise level and mode, every seed at once."""

    key: str
    method: str
    clean: bool
    settings: tuple  # recorded parts of every hyperparameter setting tried (tuple of lists of dicts)
    noise: float
    mode: str  # "uniform", "pair" or "none" (noise 0)
    seeds: tuple[int, ...]
    model: str
    train: dict  # TrainConfig fields (no regularizers, no record)
    validation: float
    folds: int
    n_classes: int


def train_config(cfg: NoisyLabelsConfig) -> dict:
    """How every model trains (TrainConfig fields): a fixed epoch budget, constant learning rate."""
    return dict(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                schedule="constant", early_stop="none")


def unit_key(method: str, noise: float, mode: str) -> str:
    """``"clean_elr-uniform-40"``: file-name safe."""
    return f"{method.replace(JOIN, '_')}-{mode}-{f'{100 * noise:g}'.replace('.', 'p')}"


def settings_grid(cfg: NoisyLabelsConfig) -> list[tuple[float, str]]:
    """The (noise, mode) settings: noise 0 once (mode ``none``), every other level in every mode."""
    return [(p, m) for p in cfg.noise for m in ([NO_NOISE_MODE] if p == 0 else cfg.noise_mode)]


def plan_tasks(cfg: NoisyLabelsConfig, model: str, n_classes: int) -> list[MethodTask]:
    """Every unit's task, method by method, then noise level, then mode."""
    train = train_config(cfg)
    tasks = []
    for name in cfg.methods:
        method = parse_method(name)
        settings = tuple(candidates(cfg, method))
        for noise, mode in settings_grid(cfg):
            tasks.append(MethodTask(unit_key(method.name, noise, mode), method.name, method.clean, settings, noise,
                                    mode, tuple(cfg.seeds), model, train, cfg.validation, cfg.clean_folds,
                                    n_classes))
    return tasks


def task_work(task: MethodTask) -> int:
    """Model-epochs a unit trains: every setting's S models, and S F detection models for ``clean``."""
    per = task.train["epochs"] * len(task.seeds)
    return per * (len(task.settings) + (task.folds if task.clean else 0))


def train_method(task: MethodTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one method at one noise setting for every seed; return what the estimates need.

    Module-level and pure: the result follows from the arguments alone.

    Returns (S seeds, E epochs, G settings, m test rows): ``seeds`` ``(S,)``;
    ``flipped`` ``(S, n)`` bool and ``validation`` ``(S, n)`` bool; ``setting``
    (the index of the chosen setting) and ``setting_val_acc`` ``(G, S)`` final
    validation accuracy of every setting; of the chosen setting: ``val_acc``,
    ``test_acc``, ``memorized`` ``(S, E)``, ``test_pred`` ``(S, m)`` int16,
    ``test_conf`` ``(S, m)`` float32 (largest softmax probability),
    ``flipped_true_acc`` ``(S,)`` (flipped training rows predicted as their
    true class), ``trained_rows`` ``(S,)``; for ``clean``: ``clean_score``
    ``(S, n)``, ``clean_dropped`` ``(S, n)``, ``clean_estimated`` ``(S,)``;
    ``model_epochs`` and ``seconds``.
    """
    t0 = time.perf_counter()
    seeds = [int(s) for s in task.seeds]
    n = len(y_train)
    noisy = [noisy_labels_for(y_train, task.noise, task.mode, task.n_classes, seed=s) for s in seeds]
    labels = np.stack([lab for lab, _ in noisy])
    flipped = np.stack([f for _, f in noisy])
    held = np.stack([validation_rows(n, task.validation, seed=s) for s in seeds])
    train_rows = ~held
    done = [0]

    def tick(k: int) -> Callable[[dict], None] | None:
        if progress is None:
            return None
        start = done[0]
        return lambda info: progress(start + k * int(info["epoch"]))

    out: dict[str, np.ndarray] = {}
    fit_rows = train_rows
    if task.clean:
        found = detect_label_issues(task.model, x_train, labels, train_rows, seeds=seeds, folds=task.folds,
                                    train=task.train, n_classes=task.n_classes, progress=tick(len(seeds) * task.folds))
        done[0] += len(seeds) * task.folds * task.train["epochs"]
        fit_rows = train_rows & ~found["dropped"]
        out.update(clean_score=found["score"].astype(np.float32), clean_dropped=found["dropped"],
                   clean_estimated=found["estimated"])
    best, best_val, best_result, best_val_curve = -1, -np.inf, None, None
    setting_val = []
    for g, parts in enumerate(task.settings):
        config = TrainConfig(**task.train, regularizers=list(parts), record="full")
        result = train_ensemble(task.model, x_train, labels, config=config, seeds=model_seeds(seeds=seeds),
                                masks=fit_rows, x_test=x_test, y_test=y_test, n_classes=task.n_classes,
                                progress=tick(len(seeds)))
        done[0] += len(seeds) * task.train["epochs"]
        correct = result.records.correct_array()  # (E, S, n): prediction == given label
        val_curve = ((correct & held).sum(axis=-1) / held.sum(axis=-1)).T  # (S, E)
        setting_val.append(val_curve[:, -1])
        if val_curve[:, -1].mean() > best_val:  # the first setting wins ties
            best, best_val, best_result, best_val_curve = g, val_curve[:, -1].mean(), result, val_curve
            best_memorized = memorized_noise(correct, flipped & train_rows).T  # (S, E)
        del correct
    result = best_result
    z = result.test_logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    final_pred = result.train_logits.argmax(-1)
    true_hits = ((final_pred == y_train[None, :]) & flipped & train_rows).sum(axis=1)
    flipped_count = (flipped & train_rows).sum(axis=1)
    out.update(
        seeds=np.asarray(seeds, np.int64),
        flipped=flipped,
        validation=held,
        setting=np.asarray(best, np.int64),
        setting_val_acc=np.stack(setting_val),
        val_acc=best_val_curve,
        test_acc=result.test_acc,
        memorized=best_memorized,
        test_pred=probs.argmax(-1).astype(np.int16),
        test_conf=probs.max(-1).astype(np.float32),
        flipped_true_acc=np.where(flipped_count > 0, true_hits / np.maximum(flipped_count, 1), np.nan),
        trained_rows=fit_rows.sum(axis=1).astype(np.int64),
        model_epochs=np.asarray(task_work(task), np.int64),
        seconds=np.asarray(time.perf_counter() - t0),
    )
    return out


# --------------------------------------------------------------------------- the study


@dataclass
class NoisyLabelsState:
    """What ``prepare`` found: the data (after ``--train-rows``) and the model spec used."""

    data: Dataset
    model: str


@dataclass
class NoisyLabelsOutcome:
    """What :func:`noisy_labels` computed.

    Attributes:
        results: one row per (method, noise, mode, seed).
        curves: one row per (method, noise, mode, seed, epoch): validation and test accuracy, memorized noise.
        reliability: one row per (method, noise, mode, confidence bin), the seeds pooled.
        selection: one row per (method, noise, mode, hyperparameter setting): its validation accuracy.
        seconds: unit key -> wall seconds of its training (not in the tables).
        summary: the headline numbers.
    """

    results: pd.DataFrame
    curves: pd.DataFrame
    reliability: pd.DataFrame
    selection: pd.DataFrame
    seconds: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def load_data(cfg: NoisyLabelsConfig) -> Dataset:
    """The data of the study: loaded, and with ``--train-rows`` a sample of the training split."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    if cfg.train_rows is not None and cfg.train_rows < len(data.y_train):
        rng = np.random.default_rng(derive_seed(cfg.data_seed, "train_rows"))
        rows = np.sort(rng.choice(len(data.y_train), cfg.train_rows, replace=False))
        data = data.replace(x_train=np.ascontiguousarray(data.x_train[rows]), y_train=data.y_train[rows],
                            meta=dict(data.meta, train_rows=int(cfg.train_rows)))
    return data


def check_methods(cfg: NoisyLabelsConfig, model: str, data: Dataset) -> None:
    """Attach every method's parts to the model with the run's epoch budget (:func:`check_regularizers`): a part
    that does not apply (e.g. polarization without batch norm) fails here, before anything is written.

    Raises:
        ConfigError: ``--methods: expected methods whose parts apply to the model ..., got <method> (<why>)``.
    """
    tried = set()
    for name in cfg.methods:
        for parts in candidates(cfg, parse_method(name)):
            text = setting_text(parts)
            if text in tried:
                continue
            tried.add(text)
            try:
                check_regularizers(model, data.input_shape, data.n_classes, parts, epochs=cfg.epochs)
            except ConfigError as err:
                raise ConfigError(message("--methods", f"methods whose parts apply to the model {model}",
                                          f"{name} ({err})")) from None


def prepare(cfg: NoisyLabelsConfig) -> Prepared:
    """Load the data, resolve the model, check that every method applies to it; nothing is written yet."""
    data = load_data(cfg)
    model = default_model(data.input_shape) if cfg.model == "auto" else cfg.model
    check_input_shape(parse_spec(model), data.input_shape)
    check_supports_study(data, study="noisy labels", min_per_class=2)
    check_methods(cfg, model, data)
    return Prepared(
        seeds={"seeds": list(cfg.seeds), "data_seed": cfg.data_seed, "model_seeds": model_seeds(seeds=cfg.seeds)},
        shared={"x_train": data.x_train, "y_train": np.asarray(data.y_train, np.int64), "x_test": data.x_test,
                "y_test": np.asarray(data.y_test, np.int64)},
        state=NoisyLabelsState(data=data, model=model),
    )


def plan(cfg: NoisyLabelsConfig, prepared: Prepared) -> list[Unit]:
    """One unit per (method, noise, mode) (:func:`plan_tasks`), each run by :func:`train_method`."""
    state: NoisyLabelsState = prepared.state
    return [Unit(t.key, train_method, t, work=task_work(t), label=f"{t.method} {t.mode} {t.noise:g}",
                 info=dict(method=t.method, noise=t.noise, mode=t.mode, settings=len(t.settings), model=t.model))
            for t in plan_tasks(cfg, state.model, state.data.n_classes)]


def estimate(cfg: NoisyLabelsConfig, prepared: Prepared, units) -> Outcome:
    """The tables from the stored units: per seed, per epoch, per confidence bin, per setting tried."""
    state: NoisyLabelsState = prepared.state
    y_test = np.asarray(state.data.y_test, np.int64)
    results, curves, reliability, selection = [], [], [], []
    seconds: dict[str, float] = {}
    for task in plan_tasks(cfg, state.model, state.data.n_classes):
        s = units[task.key]
        seconds[task.key] = float(s["seconds"])
        where = dict(method=task.method, noise=float(task.noise), noise_mode=task.mode)
        chosen = int(s["setting"])
        setting = setting_text(list(task.settings[chosen]))
        for g, parts in enumerate(task.settings):
            selection.append({**where, "setting": setting_text(list(parts)),
                              "val_acc": float(s["setting_val_acc"][g].mean()), "chosen": g == chosen})
        correct = s["test_pred"].astype(np.int64) == y_test[None, :]
        conf = s["test_conf"].astype(np.float64)
        for i, seed in enumerate(task.seeds):
            val, test, mem = s["val_acc"][i], s["test_acc"][i], s["memorized"][i]
            best = int(np.argmax(val))  # the first epoch of the best validation accuracy
            flipped = s["flipped"][i] & ~s["validation"][i]
            row = {**where, "seed": int(seed), "setting": setting,
                   "test_acc": float(correct[i].mean()),
                   "test_acc_at_best_val": float(test[best]),
                   "ece": reliability_bins(conf[i], correct[i], bins=ECE_BINS).ece,
                   "memorized": float(mem[-1]),
                   "flipped_true_acc": float(s["flipped_true_acc"][i]),
                   "best_val_epoch": best + 1,
                   "best_val_acc": float(val[best]),
                   "final_val_acc": float(val[-1]),
                   "flipped_rows": int(flipped.sum()),
                   "trained_rows": int(s["trained_rows"][i]),
                   "dropped": float("nan"), "estimated_noise": float("nan"), "dropped_precision": float("nan"),
                   "model_epochs": int(s["model_epochs"]) // len(task.seeds)}
            if task.clean:
                dropped = s["clean_dropped"][i]
                train_count = int((~s["validation"][i]).sum())
                row["dropped"] = float(dropped.sum())
                row["estimated_noise"] = float(s["clean_estimated"][i]) / train_count
                row["dropped_precision"] = float((dropped & flipped).sum() / dropped.sum()) if dropped.any() \
                    else float("nan")
            results.append(row)
            for e in range(len(val)):
                curves.append({**where, "seed": int(seed), "epoch": e + 1, "val_acc": float(val[e]),
                               "test_acc": float(test[e]), "memorized": float(mem[e])})
        bins = reliability_bins(conf.ravel(), correct.ravel(), bins=ECE_BINS)
        for b in range(ECE_BINS):
            reliability.append({**where, "bin": b, "low": float(bins.edges[b]), "high": float(bins.edges[b + 1]),
                                "count": int(bins.count[b]), "confidence": float(bins.confidence[b]),
                                "accuracy": float(bins.accuracy[b])})
    tables = {"results": pd.DataFrame(results), "curves": pd.DataFrame(curves),
              "reliability": pd.DataFrame(reliability), "selection": pd.DataFrame(selection)}
    summary = summarize(tables["results"])
    detail = NoisyLabelsOutcome(**tables, seconds=seconds, summary=summary)
    return Outcome(tables=tables, summary=summary, files={"seconds.json": seconds}, detail=detail)


def summarize(results: pd.DataFrame) -> dict:
    """Headline numbers: per mode, the best method at the highest noise level against ``ce``; calibration at 0."""
    summary: dict = {"runs (method x noise x mode x seed)": int(len(results))}
    means = results.groupby(["noise_mode", "noise", "method"])[["test_acc", "ece"]].mean().sort_index()
    for mode in [m for m in NOISE_MODES if m in set(results["noise_mode"])]:
        top = float(results.loc[results.noise_mode == mode, "noise"].max())
        acc = means.loc[(mode, top), "test_acc"]
        best = str(acc.idxmax())
        text = f"{best} {100 * acc[best]:.1f}%"
        if PLAIN in acc.index and best != PLAIN:
            text += f" (ce {100 * acc[PLAIN]:.1f}%)"
        summary[f"best test accuracy at {100 * top:g}% {mode} noise"] = text
    if (results.noise == 0).any():
        ece = means.loc[(NO_NOISE_MODE, 0.0), "ece"]
        best = str(ece.idxmin())
        text = f"{best} {100 * ece[best]:.2f}%"
        if PLAIN in ece.index and best != PLAIN:
            text += f" (ce {100 * ece[PLAIN]:.2f}%)"
        summary["lowest ECE at 0% noise"] = text
    return summary


def report(cfg: NoisyLabelsConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.noisy_labels.report_context`)."""
    from fitscope.report.noisy_labels import report_context

    state: NoisyLabelsState = prepared.state
    return report_context(cfg, state.data, state.model, outcome.detail)


STUDY = Study(kind="noisy-labels", command="fitscope noisy-labels", config=NoisyLabelsConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="noisy_labels.html.j2",
              quick=QUICK, work_name="model-epochs")


def noisy_labels(cfg: NoisyLabelsConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), estimate, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`NoisyLabelsOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: NoisyLabelsOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
