"""The randomization study of Zhang, Bengio, Hardt, Recht and Vinyals (2017).

Reads like section 1 of METHODS.md: load data, corrupt it, train until the
network fits (or the epoch budget runs out), record how long fitting took and
what the fit generalizes to, write tables, then a report.

Three parts, each a list of *units* (one batched ensemble each, stored in the
run as soon as it finishes so a killed study resumes where it stopped):

- ``curves``: one unit per corruption (true labels, random labels, shuffled
  pixels, random pixels, gaussian), ``len(seeds)`` models each, full
  learning curves (Zhang et al. figure 1a).
- ``noise``: one unit holding every label-noise level x seed as one ensemble
  (the inputs are shared, only the labels differ per model): epochs to fit
  and test error against the noise level p (figures 1b, 1c).
- ``regularizers``: one unit per regularizer setting (none, weight decay,
  dropout, augmentation, all three), true and random labels side by side
  (table 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, corrupt, load
from fitscope.experiments.config_errors import build_config
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train import EnsembleResult, TrainConfig, train_ensemble

CORRUPTIONS = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
REGULARIZERS = ("none", "wd", "dropout", "augment", "wd+dropout+augment")


class RandomizationConfig(BaseModel):
    """Everything that determines a randomization study; stored in run.json.

    Unknown keys are rejected so that a typo in a config file is an error,
    not a silently ignored setting.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = 0
    model: str = "mlp:512x2"
    corruptions: list[str] = Field(default_factory=lambda: list(CORRUPTIONS))
    noise_levels: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    regularizers: list[str] = Field(default_factory=lambda: list(REGULARIZERS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    epochs: int = Field(150, gt=0, description="epoch budget; training stops early once every model fits")
    # Adam at 3e-3 with batch 128 fits every noise level on digits within about 65 epochs; SGD
    # (lr 0.05-0.1, momentum 0.9) left random labels at 46-73% training accuracy after 60-100 epochs.
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.003, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, description="used by the 'wd' regularizer settings")
    dropout: float = Field(0.3, ge=0, lt=1, description="used by the 'dropout' regularizer settings")
    augment_flip: bool = Field(False, description="flip images in the 'augment' setting (off: digits are not mirror-symmetric)")
    parts: list[Literal["curves", "noise", "regularizers"]] = Field(
        default_factory=lambda: ["curves", "noise", "regularizers"]
    )

    @field_validator("corruptions", "regularizers")
    @classmethod
    def _known_names(cls, value: list[str], info) -> list[str]:
        known = CORRUPTIONS if info.field_name == "corruptions" else REGULARIZERS
        if not value or any(v not in known for v in value):
            raise ValueError(f"expected a non-empty list of {', '.join(known)}; got {value}")
        return value

    @field_validator("noise_levels")
    @classmethod
    def _noise_in_unit_interval(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 <= p <= 1.0 for p in value):
            raise ValueError(f"expected label-noise levels in [0, 1]; got {value}")
        return sorted(set(value))

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected distinct integer seeds; got {value}")
        return value

    @classmethod
    def quick(cls, **overrides) -> "RandomizationConfig":
        """The ``--quick`` setting of ``make demo``: one seed, fewer levels, a smaller epoch budget."""
        base = dict(
            seeds=[0],
            noise_levels=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            regularizers=["none", "wd", "dropout", "augment"],
            epochs=100,
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return make_config(**base)


def make_config(**values) -> RandomizationConfig:
    """Build a :class:`RandomizationConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(RandomizationConfig, "randomization", values)


@dataclass(frozen=True)
class Unit:
    """One batched ensemble of the study: what to train and how to label its rows."""

    key: str
    part: str
    rows: list[dict]  # one dict of descriptive columns per model (corruption, noise, regularizers, seed)
    dataset: Dataset
    labels: np.ndarray  # (K, n) per-model training labels
    train: TrainConfig
    dropout: float


@dataclass
class StudyOutcome:
    """What :func:`run_randomization` did: the tables and which units it trained or reused."""

    results: pd.DataFrame
    curves: pd.DataFrame
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def _train_config(cfg: RandomizationConfig, *, weight_decay: float = 0.0, augment: bool = False) -> TrainConfig:
    return TrainConfig(
        flip=cfg.augment_flip,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=weight_decay,
        augment=augment,
        schedule="constant",
        early_stop="fit",
        record=False,
    )


def plan_units(cfg: RandomizationConfig, data: Dataset) -> list[Unit]:
    """Every ensemble the study trains, in order, with the seeds of every corruption.

    Corruption seeds derive from ``(data_seed, corruption, noise, seed)`` so
    that a unit's data never depends on which other units are in the study.
    """
    units: list[Unit] = []
    base_train = _train_config(cfg)
    n = len(data.y_train)

    if "curves" in cfg.parts:
        for kind in cfg.corruptions:
            # One corrupted dataset per corruption; label corruptions differ per seed, so
            # the per-model label matrix carries them. Input corruptions use the first seed's draw.
            first = corrupt(data, kind, noise=1.0, seed=derive_seed(cfg.data_seed, "curves", kind))
            labels = np.stack(
                [
                    corrupt(data, kind, noise=1.0, seed=derive_seed(cfg.data_seed, "curves", kind, s)).dataset.y_train
                    if kind == "random_labels"
                    else first.dataset.y_train
                    for s in cfg.seeds
                ]
            )
            # ``noise`` is the fraction of labels redrawn: 1 for random labels, 0 where only inputs change.
            rows = [dict(part="curves", corruption=kind, noise=1.0 if kind == "random_labels" else 0.0,
                         regularizers="none", seed=s) for s in cfg.seeds]
            units.append(Unit(f"curves-{kind}", "curves", rows, first.dataset, labels, base_train, 0.0))

    if "noise" in cfg.parts:
        rows, labels = [], []
        for p in cfg.noise_levels:
            for s in cfg.seeds:
                c = corrupt(data, "labels", noise=p, seed=derive_seed(cfg.data_seed, "noise", int(round(p * 1000)), s))
                labels.append(c.dataset.y_train)
                rows.append(dict(part="noise", corruption="labels", noise=p, regularizers="none", seed=s))
        units.append(Unit("noise", "noise", rows, data, np.stack(labels), base_train, 0.0))

    if "regularizers" in cfg.parts:
        for reg in cfg.regularizers:
            parts = set(reg.split("+")) - {"none"}
            train = _train_config(
                cfg,
                weight_decay=cfg.weight_decay if "wd" in parts else 0.0,
                augment="augment" in parts,
            )
            rows, labels = [], []
            for kind in ("none", "random_labels"):
                for s in cfg.seeds:
                    c = corrupt(data, kind, noise=1.0, seed=derive_seed(cfg.data_seed, "reg", kind, s))
                    labels.append(c.dataset.y_train)
                    rows.append(dict(part="regularizers", corruption=kind, noise=0.0 if kind == "none" else 1.0,
                                     regularizers=reg, seed=s))
            units.append(Unit(f"reg-{reg.replace('+', '_')}", "regularizers", rows, data, np.stack(labels),
                              train, cfg.dropout if "dropout" in parts else 0.0))
    for unit in units:
        # Ground truth of the label corruption, per model: the fraction of labels that differ from the
        # given ones (about p * (1 - 1/C) for a redraw with probability p, as in Zhang et al.).
        for row, labels_k in zip(unit.rows, unit.labels):
            row["labels_changed"] = float(np.mean(labels_k != data.y_train))
    assert all(u.labels.shape == (len(u.rows), n) for u in units)
    return units


def _train_unit(unit: Unit, cfg: RandomizationConfig, progress: Callable[[dict], None] | None) -> EnsembleResult:
    seeds = [derive_seed(row["seed"], unit.key, i) for i, row in enumerate(unit.rows)]
    return train_ensemble(
        cfg.model,
        unit.dataset.x_train,
        unit.labels,
        config=unit.train,
        seeds=seeds,
        x_test=unit.dataset.x_test,
        y_test=unit.dataset.y_test,
        dropout=unit.dropout,
        progress=progress,
        n_classes=unit.dataset.n_classes,
    )


def _tables(unit: Unit, result: EnsembleResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    last = result.epochs_run - 1
    # Epochs to 90% training accuracy: a few near-duplicate images with conflicting labels decide
    # when the last example is fit; the 90% point shows how the bulk of the memorization scales.
    reached = result.train_acc[:, : result.epochs_run] >= 0.9
    to_90 = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, -1)
    rows = []
    for k, row in enumerate(unit.rows):
        rows.append(
            dict(
                row,
                train_acc=float(result.train_acc[k, last]),
                test_acc=float(result.test_acc[k, last]),
                epochs_to_fit=int(result.epochs_to_fit[k]),
                epochs_to_90pct=int(to_90[k]),
                final_loss=float(result.train_loss[k, last]),
                epochs_run=int(result.epochs_run),
            )
        )
    curves = []
    for k, row in enumerate(unit.rows):
        for e in range(result.epochs_run):
            curves.append(
                dict(
                    row,
                    epoch=e + 1,
                    train_acc=float(result.train_acc[k, e]),
                    train_loss=float(result.train_loss[k, e]),
                    test_acc=float(result.test_acc[k, e]),
                )
            )
    return pd.DataFrame(rows), pd.DataFrame(curves)


def run_randomization(
    cfg: RandomizationConfig,
    run,
    *,
    data: Dataset | None = None,
    units: list[Unit] | None = None,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
) -> StudyOutcome:
    """Run (or resume) the study into ``run`` and write its tables.

    Args:
        cfg: the study configuration.
        run: a :class:`fitscope.runs.Run`; units already stored in it are reused.
        data: the loaded dataset (loaded from ``cfg`` when None).
        units: the study's units as :func:`plan_units` made them for ``data`` (planned here when None).
        on_unit_start: called with ``(unit key, n_models, epoch budget)`` before each unit trains.
        progress: per-epoch callback handed to the trainer.

    Returns:
        A :class:`StudyOutcome` with ``results`` (one row per corruption,
        noise, regularizers and seed) and ``curves`` (one row per epoch too).
    """
    if data is None:
        with run.timer("load data"):
            data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    if units is None:
        units = plan_units(cfg, data)
    outcome = StudyOutcome(results=pd.DataFrame(), curves=pd.DataFrame())
    results, curves = [], []
    for unit in units:
        if run.has_unit(unit.key):
            result = EnsembleResult.from_arrays(run.load_unit(unit.key))
            outcome.reused_units.append(unit.key)
        else:
            if on_unit_start is not None:
                on_unit_start(unit.key, len(unit.rows), unit.train.epochs)
            with run.timer(f"train {unit.part}"):
                t0 = time.perf_counter()
                result = _train_unit(unit, cfg, progress)
            run.save_unit(
                unit.key,
                result.to_arrays(),
                info=dict(models=len(unit.rows), epochs=int(result.epochs_run),
                          seconds=round(time.perf_counter() - t0, 3)),
            )
            outcome.trained_units.append(unit.key)
        r, c = _tables(unit, result)
        results.append(r)
        curves.append(c)
    outcome.results = pd.concat(results, ignore_index=True)
    outcome.curves = pd.concat(curves, ignore_index=True)
    run.write_table("results", outcome.results)
    run.write_table("curves", outcome.curves)
    return outcome


def findings(results: pd.DataFrame, n_classes: int) -> list[dict]:
    """The four checks of the study, measured: name, value, target and whether it holds.

    Each check is computed from ``results`` only, so the report and the
    benchmark state the same numbers.
    """
    out: list[dict] = []
    chance = 1.0 / n_classes
    rand = results[(results.corruption == "random_labels") & (results.regularizers == "none")]
    true = results[(results.corruption == "none") & (results.regularizers == "none")]
    if len(rand):
        v = float(rand.train_acc.min())
        out.append(dict(check="random labels: train accuracy (min over seeds)", value=v, target=">= 0.99",
                        holds=v >= 0.99))
        v = float(rand.test_acc.mean())
        out.append(dict(check="random labels: test accuracy minus chance", value=v - chance,
                        target="within +-0.05", holds=abs(v - chance) <= 0.05))
    if len(true):
        v = float(true.test_acc.mean())
        out.append(dict(check="true labels: test accuracy", value=v, target=">= 0.95", holds=v >= 0.95))
    noise = results[results.part == "noise"]
    if noise.noise.nunique() >= 3:
        from scipy.stats import spearmanr

        for column, what in (("epochs_to_fit", "100%"), ("epochs_to_90pct", "90%")):
            # Models that never got there count at the budget they used (a lower bound on their time).
            epochs = noise[column].where(noise[column] > 0, noise.epochs_run + 1)
            # No model got there in a tiny budget: every time is the budget and rho is undefined.
            rho = float(spearmanr(noise.noise, epochs).statistic) if epochs.nunique() > 1 else float("nan")
            means = epochs.groupby(noise.noise).mean()
            out.append(dict(check=f"epochs to {what} train accuracy vs noise p: Spearman rho over models",
                            value=rho, target="> 0.5, and p = max slower than p = min",
                            holds=bool(rho > 0.5) and bool(means.iloc[-1] > means.iloc[0])))
    return out


def randomization_study(
    cfg: RandomizationConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
):
    """The whole study: validate, train (or resume), write tables and ``report.html``.

    The data are loaded and checked *before* the run directory is made, so a
    bad ``--data`` leaves nothing behind.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a killed run with the same config, reusing its finished units.
        on_unit_start: called with ``(unit key, n_models, epoch budget)`` before a unit trains.
        progress: per-epoch callback handed to the trainer.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the
        :class:`StudyOutcome`.
    """
    from fitscope.report import write_report
    from fitscope.report import randomization as figures
    from fitscope.runs import Run

    t0 = time.perf_counter()
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    load_seconds = time.perf_counter() - t0
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    units = plan_units(cfg, data)  # bad corruptions fail here, before the run exists; planned once
    seeds = {"data_seed": cfg.data_seed, "model_seeds": cfg.seeds}
    with Run.create(out, kind="randomization", config=cfg.model_dump(), seeds=seeds, resume=resume) as run:
        run.timings.setdefault("load data", round(load_seconds, 3))
        outcome = run_randomization(cfg, run, data=data, units=units, on_unit_start=on_unit_start, progress=progress)
        checks = findings(outcome.results, data.n_classes)
        # Finished before the report is written, so the report shows the final status and timings.
        run.finish(summary={c["check"]: c["value"] for c in checks})
        with run.timer("report"):
            context = dict(
                title=f"Randomization study: {cfg.model} on {data.name}",
                data=dict(name=data.name, source=data.source, n_train=len(data.y_train),
                          n_test=len(data.y_test), n_classes=data.n_classes,
                          input_shape="x".join(map(str, data.input_shape))),
                cfg=cfg.model_dump(),
                findings=checks,
                corruption_table=figures.corruption_table(outcome.results) if "curves" in cfg.parts else None,
                regularizer_table=figures.regularizer_table(outcome.results) if "regularizers" in cfg.parts else None,
                curves_png=figures.learning_curves_figure(outcome.curves) if "curves" in cfg.parts else None,
                fit_png=figures.fit_time_figure(outcome.results, cfg.epochs) if "noise" in cfg.parts else None,
                error_png=figures.test_error_figure(outcome.results, data.n_classes) if "noise" in cfg.parts else None,
                trained_units=outcome.trained_units,
                reused_units=outcome.reused_units,
                n_models=len(outcome.results),
            )
            write_report(run, "randomization.html.j2", context)
    return run, outcome
