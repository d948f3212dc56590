"""``fitscope train``: one model trained with or without a privacy mechanism, audited with canaries.

Mechanisms (METHODS section 6): none; label DP by LP-MST (randomized
response with prior, T stages: :func:`fitscope.privacy.label_dp.lp_mst`);
DP-SGD through Opacus (:func:`fitscope.train.dp_sgd.train_dp_sgd`); InstaHide
encodings drawn afresh every epoch (:func:`fitscope.privacy.instahide.train_instahide`).

With ``canaries > 0`` the training labels of that many random rows are
replaced by random other labels before training, and the trained model's
guesses of them give an empirical lower bound on epsilon
(:func:`fitscope.privacy.canary.canary_bound`) next to the claimed one.

``models`` (default 1) trains that many models, each with its own seed
(``derive_seed(seed, "model", i)``): the test accuracy is their mean, and each
model's canary audit is its own (a 95% bound holds for each model alone; the
headline is the first model's, never the largest of several).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``): one unit per
model (``model-000``, ...), computed by the pure module-level
:func:`train_model_task` with progress per epoch. The run stores
``models.parquet`` (one row per model: test accuracy, privacy spent, canary
audit), ``curves.parquet`` (train and test accuracy after every epoch),
``result.json`` (the same numbers as one record) and ``report.html`` (the
model, the privacy claim, the test accuracy and the training curve).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fitscope.data import Dataset, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import Parts

MECHANISMS = ("none", "label-dp", "dp-sgd", "instahide")


class PrivateTrainingConfig(BaseModel):
    """Everything that determines one ``fitscope train`` run; stored in run.json."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = 0
    model: str = "mlp:512x2"
    mechanism: Literal["none", "label-dp", "dp-sgd", "instahide"] = "none"
    eps: float | None = Field(None, description="label DP (--label-dp EPS) or DP-SGD (--eps) epsilon, > 0")
    stages: int = Field(1, ge=1, description="LP-MST stages T")
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    k: int = Field(2, ge=1, description="InstaHide: images mixed per encoding")
    sign_mask: bool = True
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float | None = Field(None, gt=0, description="default: Adam 1e-3; DP-SGD (SGD) 0.5")
    regularizers: Parts = Field(default_factory=list, description="parts of the training objective "
                                "(fitscope regularizers list), e.g. elr:lambda=3+mixup; empty: plain cross-entropy")
    canaries: int = Field(0, ge=0)
    models: int = Field(1, ge=1, description="models trained, each with its own seed")
    seed: int = 0
    reveal_private_stats: bool = Field(
        False, description="also store statistics of the private training labels (label DP: the share of labels "
                           "randomized response kept; DP-SGD: training accuracy); they are outside the DP claim")

    @model_validator(mode="after")
    def _eps_given(self) -> "PrivateTrainingConfig":
        flag = "--label-dp" if self.mechanism == "label-dp" else "--eps"
        if self.mechanism in ("label-dp", "dp-sgd"):
            if self.eps is None:
                raise ValueError(f"--eps: {self.mechanism} needs an epsilon > 0, e.g. "
                                 f"{'--label-dp 1' if self.mechanism == 'label-dp' else '--eps 1'}")
            if not (self.eps > 0 and math.isfinite(self.eps)):
                raise ValueError(f"{flag}: expected an epsilon > 0; got {self.eps:g}")
        elif self.eps is not None:
            raise ValueError("--eps: only label DP (--label-dp) and DP-SGD (--dp-sgd) take an epsilon")
        if self.regularizers and self.mechanism in ("dp-sgd", "instahide"):
            raise ValueError(f"--regularizers: expected none with {self.mechanism} (its own training loop; "
                             "regularizers apply to plain and label-DP training); got "
                             f"{', '.join(p['name'] for p in self.regularizers)}")
        return self

    @property
    def claimed_eps(self) -> float:
        """The epsilon the mechanism guarantees (inf without one: InstaHide gives no DP guarantee)."""
        return float(self.eps) if self.eps is not None else math.inf


#: Config fields whose CLI flag is not ``--`` + the field with dashes (named in errors and on --resume).
FLAGS = {"mechanism": "--label-dp/--dp-sgd/--instahide", "k": "--instahide", "sign_mask": "--no-sign-mask"}


def make_config(**values) -> PrivateTrainingConfig:
    """Build a :class:`PrivateTrainingConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(PrivateTrainingConfig, values, FLAGS)


def model_seed(cfg: PrivateTrainingConfig, index: int) -> int:
    """The seed of model ``index`` (its weights, batches and the mechanism's noise)."""
    return derive_seed(cfg.seed, "model", index)


def epochs_of(cfg: PrivateTrainingConfig) -> int:
    """Epochs one model trains in all (LP-MST trains ``epochs`` per stage)."""
    return cfg.epochs * (cfg.stages if cfg.mechanism == "label-dp" else 1)


# --------------------------------------------------------------------------- training


def _train(cfg: PrivateTrainingConfig, seed: int, x, y, x_test, y_test, n_classes: int,
           progress: Callable[[dict], None] | None) -> dict:
    """Train one model under ``cfg.mechanism``; returns test accuracy, train-row outputs, privacy and curves."""
    from fitscope.train import TrainConfig, train_ensemble

    adam = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr or 1e-3,
                       regularizers=cfg.regularizers)
    if cfg.mechanism == "none":
        r = train_ensemble(cfg.model, x, y, config=adam, seeds=[seed], x_test=x_test, y_test=y_test,
                           n_classes=n_classes, progress=progress)
        return dict(test_acc=float(r.test_acc[0, -1]), train_outputs=r.train_logits[0], spent_eps=math.inf,
                    curve_train_acc=r.train_acc[0], curve_test_acc=r.test_acc[0])
    if cfg.mechanism == "label-dp":
        from fitscope.privacy.label_dp import lp_mst

        seen: list[dict] = []  # LP-MST reports every stage's epochs: the curve of the stages one after another

        def record(info: dict) -> None:
            seen.append(info)
            if progress is not None:
                progress({**info, "epoch": (int(info["stage"]) - 1) * cfg.epochs + int(info["epoch"])})

        r = lp_mst(x, y, eps=cfg.eps, stages=cfg.stages, spec=cfg.model, train_config=adam, seed=seed,
                   x_test=x_test, y_test=y_test, n_classes=n_classes, progress=record,
                   reveal_private_stats=cfg.reveal_private_stats)
        # the training accuracy here is on the noisy labels the model trained on (the DP output), not the true ones
        out = dict(test_acc=float(r.test_acc), train_outputs=r.train_probs, spent_eps=r.eps,
                   stage_test_acc=np.asarray(r.stage_test_acc, np.float64),
                   curve_train_acc=np.asarray([i["train_acc_mean"] for i in seen], np.float64),
                   curve_test_acc=np.asarray([i["test_acc_mean"] for i in seen], np.float64))
        if r.keep_rate is not None:  # only with reveal_private_stats: it reads the true labels
            out["keep_rate"] = np.asarray(r.keep_rate, np.float64)
        return out
    if cfg.mechanism == "dp-sgd":
        from fitscope.train.dp_sgd import train_dp_sgd

        r = train_dp_sgd(cfg.model, x, y, eps=cfg.eps, delta=cfg.delta, max_grad_norm=cfg.max_grad_norm,
                         epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr or 0.5, seed=seed,
                         x_test=x_test, y_test=y_test, n_classes=n_classes, progress=progress,
                         reveal_private_stats=cfg.reveal_private_stats)
        test_acc = np.asarray(r.test_acc, np.float64)
        # training accuracy is measured on the private labels: outside the DP claim, kept only when asked
        train_acc = r.train_acc if cfg.reveal_private_stats else None
        return dict(test_acc=float(test_acc[-1]), train_outputs=r.train_logits, spent_eps=r.eps,
                    privacy=r.privacy(), curve_test_acc=test_acc,
                    curve_train_acc=(np.full(len(test_acc), np.nan) if train_acc is None
                                     else np.asarray(train_acc, np.float64)))
    from fitscope.privacy.instahide import predict_instahide, train_instahide

    lo, hi = float(min(x.min(), x_test.min())), float(max(x.max(), x_test.max()))
    span = (lo, hi if hi > lo else lo + 1.0)  # InstaHide maps this range to [-1, 1]
    on_epoch = None if progress is None else (lambda epoch, _encoding: progress({"epoch": int(epoch)}))
    r = train_instahide(cfg.model, x, y, k=cfg.k, seed=seed, x_test=x_test, y_test=y_test, epochs=cfg.epochs,
                        sign_mask=cfg.sign_mask, batch_size=cfg.batch_size, lr=cfg.lr or 1e-3,
                        n_classes=n_classes, input_range=span, keep_model=True, on_epoch=on_epoch)
    # InstaHide trains on mixed encodings: there is no clean training accuracy per epoch
    return dict(test_acc=r.final_test_acc, train_outputs=predict_instahide(r.model, x, input_range=span),
                spent_eps=math.inf, curve_train_acc=np.full(len(r.test_acc), np.nan),
                curve_test_acc=np.asarray(r.test_acc, np.float64))


def train_model_task(task: tuple[PrivateTrainingConfig, int, int], *, x_train: np.ndarray, y_train: np.ndarray,
                     x_test: np.ndarray, y_test: np.ndarray, canary_index: np.ndarray,
                     canary_original: np.ndarray, canary_labels: np.ndarray,
                     progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: train model ``index`` of the run; ``task = (cfg, index, n_classes)``.

    ``y_train`` holds the training labels with the canaries already planted;
    ``canary_*`` say which rows they are (empty without canaries). Module-level
    and pure: what it returns follows from its arguments alone, so the ``local``
    and ``ray`` executors give the same bits for the same threads per task.
    ``progress(epochs done)`` is called after every epoch.

    Returns:
        ``test_acc``, ``spent_eps``, ``seed``, ``curve_train_acc`` / ``curve_test_acc`` (one value per
        epoch), ``canary_correct`` (-1 without canaries), ``seconds``; DP-SGD adds ``noise_multiplier``,
        ``sample_rate``, ``steps``, ``accountant``; label DP adds ``stage_test_acc``, and ``keep_rate`` only with
        ``cfg.reveal_private_stats`` (DP-SGD's ``curve_train_acc`` is NaN without it): statistics of the
        private training labels stay out of the unit unless the config asks for them.
    """
    from fitscope.privacy.canary import Canaries, guess_canaries

    cfg, index, n_classes = task
    seed = model_seed(cfg, index)
    tick = None if progress is None else (lambda info: progress(int(info["epoch"])))
    t0 = time.perf_counter()
    trained = _train(cfg, seed, x_train, y_train, x_test, y_test, n_classes, tick)
    out = {
        "test_acc": np.asarray(trained["test_acc"], np.float64),
        "spent_eps": np.asarray(trained["spent_eps"], np.float64),
        "seed": np.asarray(seed, np.int64),
        "curve_train_acc": trained["curve_train_acc"],
        "curve_test_acc": trained["curve_test_acc"],
        "canary_correct": np.asarray(-1, np.int64),
    }
    if len(canary_index):
        canaries = Canaries(indices=canary_index, labels=canary_labels, original=canary_original, y=y_train,
                            n_classes=n_classes)
        guesses = guess_canaries(trained["train_outputs"], canaries)
        out["canary_correct"] = np.asarray(int((guesses == canary_labels).sum()), np.int64)
    if "privacy" in trained:
        p = trained["privacy"]
        out.update(noise_multiplier=np.asarray(p["noise_multiplier"], np.float64),
                   sample_rate=np.asarray(p["sample_rate"], np.float64), steps=np.asarray(p["steps"], np.int64),
                   accountant=np.asarray(str(p["accountant"])))
    for name in ("stage_test_acc", "keep_rate"):
        if name in trained:
            out[name] = trained[name]
    out["seconds"] = np.asarray(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- the study


@dataclass
class TrainState:
    """What ``prepare`` found: the data, and the planted canaries (None without)."""

    data: Dataset
    canaries: object | None


@dataclass
class TrainOutcome:
    """What ``fitscope train`` measured.

    Attributes:
        models: one row per model: model, seed, test_acc, spent_eps, canary audit columns.
        curves: one row per (model, epoch): train_acc, test_acc.
        result: the record written as ``result.json`` (see :func:`estimate`).
        seconds: training seconds per model (kept out of the tables).
    """

    models: pd.DataFrame
    curves: pd.DataFrame
    result: dict
    seconds: list[float]


def prepare(cfg: PrivateTrainingConfig) -> Prepared:
    """Load and check the data, the model spec and the mechanism; plant the canaries. Nothing is written."""
    from fitscope.privacy.canary import plant_canaries

    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    check_regularizers(cfg.model, data.input_shape, data.n_classes, cfg.regularizers, epochs=cfg.epochs)
    check_supports_study(data, study="training", min_per_class=1)
    if cfg.canaries and data.n_classes < 3:
        raise ConfigError(f"--canaries: expected data with at least 3 classes (the canary audit), "
                          f"got {data.name} with {data.n_classes}")
    if cfg.canaries > len(data.y_train):
        raise ConfigError(f"--canaries: expected at most the {len(data.y_train)} training rows, got {cfg.canaries}")
    if cfg.mechanism == "instahide" and cfg.k > len(data.y_train):
        raise ConfigError(f"--instahide: expected k at most the {len(data.y_train)} training rows, got {cfg.k}")
    if cfg.mechanism == "label-dp" and cfg.stages > len(data.y_train):
        raise ConfigError(f"--stages: expected at most one stage per training row ({len(data.y_train)}); "
                          f"got {cfg.stages}")
    canary_seed = derive_seed(cfg.seed, "canaries")
    canaries = plant_canaries(data.y_train, cfg.canaries, data.n_classes, seed=canary_seed) if cfg.canaries else None
    empty = np.zeros(0, np.int64)
    shared = dict(x_train=data.x_train, y_train=canaries.y if canaries is not None else data.y_train,
                  x_test=data.x_test, y_test=data.y_test,
                  canary_index=canaries.indices if canaries is not None else empty,
                  canary_original=canaries.original if canaries is not None else empty,
                  canary_labels=canaries.labels if canaries is not None else empty)
    seeds = {"data_seed": cfg.data_seed, "seed": cfg.seed, "canary_seed": canary_seed if cfg.canaries else None,
             "model_seeds": [model_seed(cfg, i) for i in range(cfg.models)]}
    return Prepared(seeds=seeds, shared=shared, state=TrainState(data, canaries))


def plan(cfg: PrivateTrainingConfig, prepared: Prepared) -> list[Unit]:
    """One unit per model (``model-000``, ...), each run by :func:`train_model_task`."""
    n_classes = prepared.state.data.n_classes
    return [Unit(f"model-{i:03d}", train_model_task, (cfg, i, n_classes), work=epochs_of(cfg),
                 info=dict(model=i, seed=model_seed(cfg, i), mechanism=cfg.mechanism))
            for i in range(cfg.models)]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def estimate(cfg: PrivateTrainingConfig, prepared: Prepared, units) -> Outcome:
    """The per-model table, the curves and ``result.json`` from the stored units."""
    from fitscope.privacy.canary import canary_bound

    data: Dataset = prepared.state.data
    rows, curves, audits, seconds = [], [], [], []
    first: dict = {}
    for i in range(cfg.models):
        u = units[f"model-{i:03d}"]
        row = dict(model=i, seed=int(u["seed"]), test_acc=float(u["test_acc"]), spent_eps=float(u["spent_eps"]))
        if cfg.canaries:
            audit = canary_bound(int(u["canary_correct"]), cfg.canaries, data.n_classes, claimed_eps=cfg.claimed_eps)
            audits.append(audit.row())
            row.update(canaries=cfg.canaries, canary_correct=int(u["canary_correct"]),
                       canary_accuracy=audit.accuracy, eps_lower_bound=audit.eps_lower)
        rows.append(row)
        n_epochs = len(u["curve_test_acc"])
        curves.append(pd.DataFrame({"model": i, "epoch": np.arange(1, n_epochs + 1),
                                    "train_acc": u["curve_train_acc"], "test_acc": u["curve_test_acc"]}))
        seconds.append(float(u["seconds"]))
        if i == 0:
            first = u
    models = pd.DataFrame(rows)
    curve = pd.concat(curves, ignore_index=True)
    result: dict = dict(mechanism=cfg.mechanism, model=cfg.model, data=data.name, models=cfg.models,
                        test_acc=float(models.test_acc.mean()), claimed_eps=_finite(cfg.claimed_eps),
                        spent_eps=_finite(float(models.spent_eps.max())))
    if cfg.models > 1:
        result["test_acc_std"] = float(models.test_acc.std(ddof=0))
        result["test_acc_per_model"] = [float(a) for a in models.test_acc]
    if cfg.mechanism == "dp-sgd":
        result["privacy"] = dict(epsilon=float(first["spent_eps"]), delta=cfg.delta,
                                 accountant=str(first["accountant"]),
                                 noise_multiplier=float(first["noise_multiplier"]), max_grad_norm=cfg.max_grad_norm,
                                 sample_rate=float(first["sample_rate"]), steps=int(first["steps"]))
    if cfg.mechanism == "label-dp":
        result["stages"] = cfg.stages
        result["stage_test_acc"] = [float(a) for a in first["stage_test_acc"]]
        if "keep_rate" in first:  # only with reveal_private_stats
            result["keep_rate"] = [float(a) for a in first["keep_rate"]]
    if cfg.mechanism == "instahide":
        result.update(k=cfg.k, sign_mask=cfg.sign_mask)
    if cfg.mechanism in ("label-dp", "dp-sgd"):
        result["private_stats_shown"] = bool(cfg.reveal_private_stats)
    if audits:
        result["canary_audit"] = {k: (_finite(v) if isinstance(v, float) else v) for k, v in audits[0].items()}
        if cfg.models > 1:
            result["canary_audit_per_model"] = [
                {k: (_finite(v) if isinstance(v, float) else v) for k, v in a.items()} for a in audits]
    result["seconds"] = float(sum(seconds))
    summary = _summary(cfg, result)
    outcome = TrainOutcome(models=models, curves=curve, result=result, seconds=seconds)
    return Outcome(tables={"models": models, "curves": curve}, summary=summary,
                   files={"result.json": result}, detail=outcome)


def privacy_claim(cfg: PrivateTrainingConfig) -> str:
    """The guarantee of the mechanism in words, e.g. ``"(1, 1e-05)-DP (DP-SGD)"`` or ``"none"``."""
    if cfg.mechanism == "dp-sgd":
        return f"({cfg.eps:g}, {cfg.delta:g})-DP (DP-SGD)"
    if cfg.mechanism == "label-dp":
        return f"{cfg.eps:g}-label-DP (LP-{cfg.stages}ST)"
    if cfg.mechanism == "instahide":
        return "none (InstaHide gives no DP guarantee)"
    return "none"


def _summary(cfg: PrivateTrainingConfig, result: dict) -> dict:
    """The headline numbers, as the CLI prints them and the catalog lists them."""
    summary: dict = {"mechanism": cfg.mechanism, "privacy claim": privacy_claim(cfg),
                     "test accuracy": result["test_acc"]}
    if cfg.models > 1:
        summary["test accuracy std"] = result["test_acc_std"]
    if cfg.mechanism == "dp-sgd":
        p = result["privacy"]
        summary.update({"accountant epsilon": p["epsilon"], "delta": p["delta"], "accountant": p["accountant"],
                        "noise multiplier": p["noise_multiplier"]})
    if cfg.mechanism == "label-dp":
        summary["label-DP epsilon"] = cfg.eps
    if cfg.mechanism in ("label-dp", "dp-sgd"):
        summary["statistics of the private labels"] = ("shown (--reveal-private-stats)" if cfg.reveal_private_stats
                                                       else "not shown")
    if "canary_audit" in result:
        audit = result["canary_audit"]
        summary["canary guess accuracy"] = audit["attack_accuracy"]
        summary["canary epsilon lower bound (95%)"] = audit["eps_lower_bound"]
    return summary


def report(cfg: PrivateTrainingConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The context of ``train.html.j2`` (:func:`fitscope.report.train.report_context`)."""
    from fitscope.report import train as figures

    detail: TrainOutcome = outcome.detail
    return figures.report_context(cfg, prepared.state.data, detail.models, detail.curves, detail.result,
                                  claim=privacy_claim(cfg))


STUDY = Study(kind="train", command="fitscope train", config=PrivateTrainingConfig, prepare=prepare, plan=plan,
              estimate=estimate, report=report, template="train.html.j2", work_name="epochs",
              flags=FLAGS)


def train_private(cfg: PrivateTrainingConfig, out: str | Path, *, resume: bool = False, **placement):
    """Train ``cfg.models`` models under ``cfg.mechanism`` (with canaries if asked) and write the run.

    Data, model spec and mechanism are checked before the run directory is
    made, so bad input leaves nothing behind.

    Args:
        cfg: the config.
        out: the run directory.
        resume: continue the run in ``out`` (only models not yet stored train).
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, result)``: the finished run and the dict stored as ``result.json``.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    return result.run, result.outcome.detail.result
