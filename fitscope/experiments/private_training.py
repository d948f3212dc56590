"""``fitscope train``: one model trained with or without a privacy mechanism, audited with canaries.

Mechanisms (METHODS section 6): none; label DP by LP-MST (randomized
response with prior, T stages: :func:`fitscope.privacy.label_dp.lp_mst`);
DP-SGD through Opacus (:func:`fitscope.train.dp_sgd.train_dp_sgd`); InstaHide
encodings drawn afresh every epoch (:func:`fitscope.privacy.instahide.train_instahide`).

With ``canaries > 0`` the training labels of that many random rows are
replaced by random other labels before training, and the trained model's
guesses of them give an empirical lower bound on epsilon
(:func:`fitscope.privacy.canary.canary_bound`) next to the claimed one. The run
stores ``result.json`` (accuracy, privacy spent, canary audit) and a report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fitscope.data import load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed


class PrivateTrainingConfig(BaseModel):
    """Everything that determines one ``fitscope train`` run; stored in run.json."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = 0
    model: str = "mlp:512x2"
    mechanism: Literal["none", "label-dp", "dp-sgd", "instahide"] = "none"
    eps: float | None = Field(None, gt=0, description="label DP or DP-SGD epsilon")
    stages: int = Field(1, ge=1, description="LP-MST stages T")
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    k: int = Field(2, ge=1, description="InstaHide: images mixed per encoding")
    sign_mask: bool = True
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float | None = Field(None, gt=0, description="default: Adam 1e-3; DP-SGD (SGD) 0.5")
    canaries: int = Field(0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _eps_given(self) -> "PrivateTrainingConfig":
        if self.mechanism in ("label-dp", "dp-sgd") and self.eps is None:
            raise ValueError(f"--eps: {self.mechanism} needs an epsilon > 0, e.g. --eps 1")
        if self.mechanism not in ("label-dp", "dp-sgd") and self.eps is not None:
            raise ValueError("--eps: only label DP (--label-dp) and DP-SGD (--dp-sgd) take an epsilon")
        return self

    @property
    def claimed_eps(self) -> float:
        """The epsilon the mechanism guarantees (inf without one: InstaHide gives no DP guarantee)."""
        return float(self.eps) if self.eps is not None else math.inf


def make_config(**values) -> PrivateTrainingConfig:
    """Build a :class:`PrivateTrainingConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(PrivateTrainingConfig, "train", values)


def _train(cfg: PrivateTrainingConfig, x, y, x_test, y_test, n_classes: int,
           progress: Callable[[dict], None] | None) -> dict:
    """Train one model under ``cfg.mechanism``; returns test accuracy, train-row outputs and privacy spent."""
    from fitscope.train import TrainConfig, train_ensemble

    adam = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr or 1e-3)
    if cfg.mechanism == "none":
        r = train_ensemble(cfg.model, x, y, config=adam, seeds=[cfg.seed], x_test=x_test, y_test=y_test,
                           n_classes=n_classes, progress=progress)
        return dict(test_acc=float(r.test_acc[0, -1]), train_outputs=r.train_logits[0], spent_eps=math.inf)
    if cfg.mechanism == "label-dp":
        from fitscope.privacy.label_dp import lp_mst

        r = lp_mst(x, y, eps=cfg.eps, stages=cfg.stages, spec=cfg.model, train_config=adam, seed=cfg.seed,
                   x_test=x_test, y_test=y_test, n_classes=n_classes, progress=progress)
        return dict(test_acc=float(r.test_acc), train_outputs=r.train_probs, spent_eps=r.eps,
                    stage_test_acc=[float(a) for a in r.stage_test_acc], keep_rate=[float(a) for a in r.keep_rate])
    if cfg.mechanism == "dp-sgd":
        from fitscope.train.dp_sgd import train_dp_sgd

        r = train_dp_sgd(cfg.model, x, y, eps=cfg.eps, delta=cfg.delta, max_grad_norm=cfg.max_grad_norm,
                         epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr or 0.5, seed=cfg.seed,
                         x_test=x_test, y_test=y_test, n_classes=n_classes, progress=progress)
        return dict(test_acc=float(r.test_acc[-1]), train_outputs=r.train_logits, spent_eps=r.epsilon,
                    privacy=r.privacy())
    from fitscope.experiments.privacy_defenses import predict_instahide
    from fitscope.privacy.instahide import train_instahide

    lo, hi = float(min(x.min(), x_test.min())), float(max(x.max(), x_test.max()))
    span = (lo, hi if hi > lo else lo + 1.0)  # InstaHide maps this range to [-1, 1]

    r = train_instahide(cfg.model, x, y, k=cfg.k, seed=cfg.seed, x_test=x_test, y_test=y_test, epochs=cfg.epochs,
                        sign_mask=cfg.sign_mask, batch_size=cfg.batch_size, lr=cfg.lr or 1e-3,
                        n_classes=n_classes, input_range=span, keep_model=True)
    return dict(test_acc=r.final_test_acc, train_outputs=predict_instahide(r.model, x, input_range=span),
                spent_eps=math.inf)


def train_private(cfg: PrivateTrainingConfig, out: str | Path, *, resume: bool = False,
                  progress: Callable[[dict], None] | None = None):
    """Train one model under ``cfg.mechanism`` (with canaries if asked) and write the run.

    Returns:
        ``(run, result)``: the finished run and the dict stored as ``result.json``.
    """
    from fitscope.privacy.canary import canary_bound, guess_canaries, plant_canaries
    from fitscope.runs import Run

    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    if cfg.canaries and data.n_classes < 3:
        raise ConfigError(f"--canaries: the canary audit needs at least 3 classes; {data.name} has {data.n_classes}")
    if cfg.canaries > len(data.y_train):
        raise ConfigError(f"--canaries: expected at most the {len(data.y_train)} training rows; got {cfg.canaries}")
    if cfg.mechanism == "instahide" and cfg.k > len(data.y_train):
        raise ConfigError(f"--instahide: k must be at most the {len(data.y_train)} training rows; got {cfg.k}")
    seeds = {"data_seed": cfg.data_seed, "seed": cfg.seed, "canary_seed": derive_seed(cfg.seed, "canaries")}
    with Run.create(out, kind="train", config=cfg.model_dump(), seeds=seeds, resume=resume) as run:
        y = data.y_train
        canaries = None
        if cfg.canaries:
            canaries = plant_canaries(y, cfg.canaries, data.n_classes, seeds["canary_seed"])
            y = canaries.y
        t0 = time.perf_counter()
        with run.timer("train"):
            trained = _train(cfg, data.x_train, y, data.x_test, data.y_test, data.n_classes, progress)
        result = {k: v for k, v in trained.items() if k != "train_outputs"}
        result.update(mechanism=cfg.mechanism, claimed_eps=cfg.claimed_eps, seconds=time.perf_counter() - t0)
        if canaries is not None:
            guesses = guess_canaries(trained["train_outputs"], canaries)
            audit = canary_bound(int((guesses == canaries.labels).sum()), cfg.canaries, data.n_classes,
                                 claimed_eps=cfg.claimed_eps)
            result["canary_audit"] = audit.row()
        result = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
        run.write_json("result", result)
        run.finish(summary={"test_acc": result["test_acc"]})
    return run, result
