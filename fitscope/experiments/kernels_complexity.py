"""The fine-grained complexity measure against label noise, next to a trained network (Arora et al. 2019).

Reads like the last part of METHODS section 5:

1. **Data**: the training split restricted to a pair of classes (binary, as
   in the paper; ``classes=None`` keeps every class), subsampled to at most
   ``max_examples`` rows (seeded, stratified), inputs flattened and scaled to
   unit norm (the measure's H assumes unit-norm inputs; the network sees the
   same inputs). The test split gets the same classes and scaling.
2. **Labels**: for each noise level p and seed, every training label is
   redrawn uniformly over the classes with probability p
   (:func:`fitscope.data.corrupt` ``"labels"``, as in the randomization study).
3. **Measure**: ``sqrt(2 y^T H^-1 y / n)`` with ``H_ij = x_i.x_j (pi -
   arccos(x_i.x_j)) / (2 pi)`` (:func:`fitscope.kernels.complexity_measure`),
   on exactly the labels the network trains on.
4. **Network**: a two-layer ReLU MLP (``mlp:512x1`` by default) per noise
   level and seed, all trained as one ensemble until each fits its labels
   (or the budget runs out): epochs to fit, and test error on the true test labels.

Units: ``measure`` (every measure value) and ``train`` (the ensemble's
results); a resumed run reuses whichever is stored.
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
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.seeding import derive_seed


class ComplexityConfig(BaseModel):
    """Everything that determines a complexity study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and the subsample")
    classes: list[int] | None = Field(default_factory=lambda: [0, 1],
                                      description="classes kept (None: all); the paper's setting is binary")
    max_examples: int = Field(1000, ge=2, description="largest number of training rows (the measure inverts H)")
    noise_levels: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    model: str = "mlp:512x1"
    epochs: int = Field(400, gt=0, description="epoch budget; training stops once every model fits")
    batch_size: int = Field(64, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    # Adam at 1e-2 fits random binary labels of ~300 unit-norm digits in ~160 epochs; at 1e-3 the
    # random-label models were still at 62% training accuracy after 60 epochs.
    lr: float = Field(1e-2, gt=0)
    threads: int = Field(1, gt=0, description="torch threads while training (tiny batches: 1 is fastest)")
    jitter: float = Field(0.0, ge=0, description="ridge on H relative to its mean diagonal (for duplicate inputs)")

    @field_validator("noise_levels")
    @classmethod
    def _noise(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 <= p <= 1.0 for p in value):
            raise ValueError(f"expected label-noise levels in [0, 1]; got {value}")
        return sorted(set(float(p) for p in value))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"expected distinct non-negative integer seeds; got {value}")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(set(value)) < 2 or len(set(value)) != len(value) or any(c < 0 for c in value):
            raise ValueError(f"expected at least two distinct class indices, or all; got {value}")
        return sorted(value)


def make_config(**values) -> ComplexityConfig:
    """Build a :class:`ComplexityConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(ComplexityConfig, "kernels complexity", values)


# --------------------------------------------------------------------------- data


def _unit_rows(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norms > 0, norms, 1.0)


def prepare_data(data: Dataset, cfg: ComplexityConfig) -> Dataset:
    """The study's data set: kept classes relabelled ``0..K-1``, subsampled, flattened, unit-norm rows.

    Raises:
        ConfigError: a class index the data set does not have.
        DataError: an all-zero input row (it has no direction).
    """
    from fitscope.errors import DataError

    classes = list(range(data.n_classes)) if cfg.classes is None else cfg.classes
    bad = [c for c in classes if c >= data.n_classes]
    if bad:
        raise ConfigError(f"--classes: {data.name} has classes 0..{data.n_classes - 1}; got {bad[0]}")
    remap = np.full(data.n_classes, -1)
    remap[classes] = np.arange(len(classes))
    keep = np.flatnonzero(remap[data.y_train] >= 0)
    if len(keep) > cfg.max_examples:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(keep, train_size=cfg.max_examples, stratify=data.y_train[keep],
                                   random_state=derive_seed(cfg.data_seed, "complexity", "subsample") % 2**32)
        keep = np.sort(keep)
    test = np.flatnonzero(remap[data.y_test] >= 0)
    x_train = _unit_rows(data.x_train[keep])
    if np.any(np.linalg.norm(data.x_train[keep].reshape(len(keep), -1), axis=1) == 0):
        raise DataError(f"{data.name}: a training input is all zeros; the measure needs unit-norm directions")
    return data.replace(
        x_train=x_train.astype(np.float32), y_train=remap[data.y_train[keep]].astype(np.int64),
        x_test=_unit_rows(data.x_test[test]).astype(np.float32), y_test=remap[data.y_test[test]].astype(np.int64),
        classes=tuple(data.classes[c] for c in classes),
        meta=dict(data.meta, complexity_classes=classes, complexity_rows=len(keep)),
    )


def noisy_labels(data: Dataset, cfg: ComplexityConfig) -> tuple[list[dict], np.ndarray]:
    """One row (noise, seed, labels_changed) and one label vector per noise level and seed.

    Returns:
        ``(rows, labels)`` with ``labels`` of shape ``(levels * seeds, n)``.
    """
    rows, labels = [], []
    for p in cfg.noise_levels:
        for s in cfg.seeds:
            c = corrupt(data, "labels", noise=p, seed=derive_seed(cfg.data_seed, "complexity", int(round(p * 1000)), s))
            labels.append(c.dataset.y_train)
            rows.append(dict(noise=p, seed=s, labels_changed=float(np.mean(c.dataset.y_train != data.y_train))))
    return rows, np.stack(labels)


def measure_values(x: np.ndarray, labels: np.ndarray, *, jitter: float = 0.0) -> np.ndarray:
    """``(M,)`` complexity measure of each label vector of ``labels`` ``(M, n)`` on inputs ``x`` ``(n, D)``.

    ``jitter`` is handed to :func:`fitscope.kernels.complexity_measure` (a ridge on H, relative to its
    mean diagonal; 0 raises on a singular H, e.g. duplicate inputs).
    """
    from fitscope.kernels import complexity_measure

    return np.asarray([complexity_measure(x, y, jitter=jitter).true_measure for y in labels], dtype=np.float64)


# --------------------------------------------------------------------------- study


@dataclass
class ComplexityOutcome:
    """What :func:`complexity_study` did: one row per noise level and seed; computed and reused units."""

    results: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def findings(results: pd.DataFrame) -> list[dict]:
    """The paper's three shapes, measured: measure, test error and time to fit all grow with the noise."""
    from scipy.stats import spearmanr

    out = []
    budget = int(results.epochs_run.max()) + 1
    epochs = results.epochs_to_fit.where(results.epochs_to_fit > 0, budget)
    for column, values, what in (("measure", results.measure, "complexity measure"),
                                 ("test_error", results.test_error, "test error of the trained network"),
                                 ("epochs_to_fit", epochs, "epochs to fit (not fit: the budget + 1)")):
        means = values.groupby(results.noise).mean()
        if len(means) < 2:
            continue
        rho = float(spearmanr(means.index, means.to_numpy()).statistic) if means.nunique() > 1 else float("nan")
        out.append(dict(check=f"{what} against noise p: Spearman rho of the means",
                        value=rho, target="> 0, and p = max above p = min",
                        holds=bool(rho > 0) and bool(means.iloc[-1] > means.iloc[0])))
    return out


def complexity_study(
    cfg: ComplexityConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[str], None] | None = None,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
):
    """The whole study: data, noisy labels, measure, network, tables and ``report.html``.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a run with the same config, reusing its finished units.
        on_step: called with a short description before the measure is computed.
        on_unit_start: called with ``(unit key, n_models, epoch budget)`` before the ensemble trains.
        progress: per-epoch callback handed to the trainer.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`ComplexityOutcome`.
    """
    from fitscope.experiments.kernels_small_data import torch_threads
    from fitscope.models import check_input_shape, parse_spec
    from fitscope.report import kernels as figures
    from fitscope.report import write_report
    from fitscope.runs import Run
    from fitscope.train import EnsembleResult, TrainConfig, train_ensemble

    t0 = time.perf_counter()
    data = prepare_data(load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed), cfg)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    rows, labels = noisy_labels(data, cfg)
    load_seconds = time.perf_counter() - t0
    model_seeds = [derive_seed(r["seed"], "complexity", i) for i, r in enumerate(rows)]
    seeds = {"data_seed": cfg.data_seed, "label_seeds": cfg.seeds, "model_seeds": model_seeds}
    with Run.create(out, kind="kernels-complexity", config=cfg.model_dump(), seeds=seeds, resume=resume) as run:
        run.timings.setdefault("load data", round(load_seconds, 3))
        outcome = ComplexityOutcome(pd.DataFrame())
        if run.has_unit("measure"):
            measure = run.load_unit("measure")["measure"]
            outcome.reused.append("measure")
        else:
            if on_step:
                on_step(f"complexity measure: {len(rows)} label vectors of {len(data.y_train)} examples")
            with run.timer("measure"):
                measure = measure_values(data.x_train.astype(np.float64), labels, jitter=cfg.jitter)
            run.save_unit("measure", {"measure": measure}, info=dict(values=len(measure)))
            outcome.computed.append("measure")
        if run.has_unit("train"):
            result = EnsembleResult.from_arrays(run.load_unit("train"))
            outcome.reused.append("train")
        else:
            tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                               early_stop="fit", record=False)
            if on_unit_start:
                on_unit_start("train", len(rows), cfg.epochs)
            with run.timer("train"), torch_threads(cfg.threads):
                result = train_ensemble(cfg.model, data.x_train, labels, config=tcfg, seeds=model_seeds,
                                        x_test=data.x_test, y_test=data.y_test, progress=progress,
                                        n_classes=data.n_classes)
            run.save_unit("train", result.to_arrays(), info=dict(models=len(rows), epochs=int(result.epochs_run)))
            outcome.computed.append("train")
        last = result.epochs_run - 1
        outcome.results = pd.DataFrame([
            dict(row, measure=float(measure[k]), test_error=float(1 - result.test_acc[k, last]),
                 train_acc=float(result.train_acc[k, last]), epochs_to_fit=int(result.epochs_to_fit[k]),
                 epochs_run=int(result.epochs_run))
            for k, row in enumerate(rows)])
        run.write_table("results", outcome.results)
        checks = findings(outcome.results)
        run.finish(summary={c["check"]: c["value"] for c in checks})
        with run.timer("report"):
            context = dict(
                title=f"Kernel study: complexity measure and label noise on {data.name}",
                cfg=cfg.model_dump(),
                data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                          classes=", ".join(data.classes), n_features=int(data.x_train.shape[1])),
                findings=checks,
                noise_table=figures.complexity_table(outcome.results),
                complexity_png=figures.complexity_figure(outcome.results, cfg.epochs),
                computed=outcome.computed,
                reused=outcome.reused,
            )
            write_report(run, "kernels_complexity.html.j2", context)
    return run, outcome
