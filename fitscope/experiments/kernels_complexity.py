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
   level and seed; the seeds of a noise level train as one ensemble until
   each fits its labels (or the budget runs out): epochs to fit, and test
   error on the true test labels.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``). Units:
``measure`` (every measure value, :func:`measure_task`, progress per label
vector) and ``train-p<noise>`` (the ensemble of one noise level,
:func:`train_task`, progress per epoch); a resumed run reuses whichever are
stored. The inputs and every label vector are the shared arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, corrupt, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.seeding import derive_seed


class ComplexityConfig(BaseModel):
    """Everything that determines a complexity study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and the subsample")
    classes: list[int] | None = Field(default_factory=lambda: [0, 1],
                                      description="classes kept (None or 'all': all); the paper's setting is binary")
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
    jitter: float = Field(0.0, ge=0, description="ridge on H relative to its mean diagonal (for duplicate inputs)")

    @field_validator("noise_levels")
    @classmethod
    def _noise(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 <= p <= 1.0 for p in value):
            raise ValueError(f"expected label corruption probabilities in [0, 1]; got {value}")
        return sorted(set(float(p) for p in value))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"expected distinct non-negative integer seeds; got {value}")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _all_classes(cls, value):
        return None if isinstance(value, str) and value.strip().lower() == "all" else value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(set(value)) < 2 or len(set(value)) != len(value) or any(c < 0 for c in value):
            raise ValueError(f"expected at least two distinct class indices, or all; got {value}")
        return sorted(value)


#: Config fields whose CLI flag is not ``--`` + the field with dashes (named in errors and on --resume).
FLAGS = {"noise_levels": "--corrupt-prob"}


def make_config(**values) -> ComplexityConfig:
    """Build a :class:`ComplexityConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(ComplexityConfig, values, FLAGS)


# --------------------------------------------------------------------------- data


def _unit_rows(x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norms > 0, norms, 1.0)


def prepare_data(data: Dataset, cfg: ComplexityConfig) -> Dataset:
    """The study's data set: kept classes relabelled ``0..C-1``, subsampled, flattened, unit-norm rows.

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


def measure_values(x: np.ndarray, labels: np.ndarray, *, jitter: float = 0.0,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``(M,)`` complexity measure of each label vector of ``labels`` ``(M, n)`` on inputs ``x`` ``(n, D)``.

    ``jitter`` is handed to :func:`fitscope.kernels.complexity_measure` (a ridge on H, relative to its
    mean diagonal; 0 raises on a singular H, e.g. duplicate inputs). ``progress`` gets the number of
    label vectors done after each one.
    """
    from fitscope.kernels import complexity_measure

    values = []
    for y in labels:
        values.append(complexity_measure(x, y, jitter=jitter).true_measure)
        if progress is not None:
            progress(len(values))
    return np.asarray(values, dtype=np.float64)


def measure_task(jitter: float, *, x_train: np.ndarray, labels: np.ndarray,
                 x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of the ``measure`` unit: :func:`measure_values` of every label vector (``task``: the jitter).

    Module-level and pure, so both executors give the same bits; the test arrays (shared with the
    training units) are not used here.
    """
    return {"measure": measure_values(x_train.astype(np.float64), labels, jitter=jitter, progress=progress)}


@dataclass(frozen=True)
class NoiseLevelJob:
    """The models of one noise level (the task of a ``train-p<noise>`` unit).

    Attributes:
        key: the unit key; noise: the level p.
        index: rows of the shared ``labels`` (and of the results) of this level, one per seed.
        model_seeds: one per row.
        cfg: the study configuration (model and training settings); n_classes: C.
    """

    key: str
    noise: float
    index: tuple[int, ...]
    model_seeds: tuple[int, ...]
    cfg: ComplexityConfig
    n_classes: int


def train_task(job: NoiseLevelJob, *, x_train: np.ndarray, labels: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train the models of one noise level as one ensemble until each fits (or the budget ends).

    Module-level and pure (seeds in ``job``, shared arrays read-only), so both executors give the
    same bits. ``progress(model-epochs done)`` is called after every epoch.

    Returns:
        ``test_error``, ``train_acc`` (at the last epoch), ``epochs_to_fit`` (-1: never) per model,
        ``epochs_run`` and ``seconds``.
    """
    from fitscope.train import TrainConfig, train_ensemble

    cfg, k = job.cfg, len(job.index)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                       early_stop="fit", record=False)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    result = train_ensemble(cfg.model, x_train, labels[list(job.index)], config=tcfg, seeds=list(job.model_seeds),
                            x_test=x_test, y_test=y_test, progress=tick, n_classes=job.n_classes)
    last = result.epochs_run - 1
    return dict(test_error=1 - result.test_acc[:, last], train_acc=result.train_acc[:, last],
                epochs_to_fit=result.epochs_to_fit, epochs_run=np.asarray(result.epochs_run),
                seconds=np.asarray(result.seconds))


# --------------------------------------------------------------------------- study


@dataclass
class ComplexityOutcome:
    """What :func:`complexity_study` did: one row per noise level and seed; computed and reused units.

    Attributes:
        results: one row per noise level and seed.
        computed, reused: unit keys computed by this call and found stored.
        seconds: ``train-p<noise>`` unit key -> training seconds.
    """

    results: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


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


@dataclass
class ComplexityState:
    """What ``prepare`` found: the study's data and one row (noise, seed, labels_changed) per label vector."""

    data: Dataset
    rows: list[dict]


def model_seeds(rows: list[dict]) -> list[int]:
    """The seed of the model of each label vector (row ``i`` of :func:`noisy_labels`)."""
    return [derive_seed(r["seed"], "complexity", i) for i, r in enumerate(rows)]


def noise_jobs(cfg: ComplexityConfig, state: ComplexityState) -> list[NoiseLevelJob]:
    """One job per noise level: the rows of its seeds and their model seeds."""
    seeds = model_seeds(state.rows)
    jobs = []
    for p in cfg.noise_levels:
        index = tuple(i for i, r in enumerate(state.rows) if r["noise"] == p)
        jobs.append(NoiseLevelJob(f"train-p{p:g}", p, index, tuple(seeds[i] for i in index), cfg,
                                  state.data.n_classes))
    return jobs


def prepare(cfg: ComplexityConfig) -> Prepared:
    """Load and prepare the data, check the model, draw every noisy label vector; nothing is written yet."""
    from fitscope.models import check_input_shape, parse_spec

    data = prepare_data(load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed), cfg)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    check_supports_study(data, study="the complexity study", min_per_class=1)
    rows, labels = noisy_labels(data, cfg)
    seeds = {"data_seed": cfg.data_seed, "label_seeds": cfg.seeds, "model_seeds": model_seeds(rows)}
    shared = {"x_train": data.x_train, "labels": labels, "x_test": data.x_test, "y_test": data.y_test}
    return Prepared(seeds=seeds, shared=shared, state=ComplexityState(data, rows))


def plan(cfg: ComplexityConfig, prepared: Prepared) -> list[Unit]:
    """The ``measure`` unit (:func:`measure_task`) and a ``train-p<noise>`` unit per level (:func:`train_task`)."""
    state: ComplexityState = prepared.state
    units = [Unit("measure", measure_task, cfg.jitter, work=len(state.rows), label="complexity measure",
                  info=dict(values=len(state.rows)))]
    units += [Unit(job.key, train_task, job, work=len(job.index) * cfg.epochs,
                   info=dict(noise=job.noise, models=len(job.index)))
              for job in noise_jobs(cfg, state)]
    return units


def estimate(cfg: ComplexityConfig, prepared: Prepared, units) -> Outcome:
    """The results table (one row per noise level and seed) and the findings as the summary."""
    state: ComplexityState = prepared.state
    measure = units["measure"]["measure"]
    per_row: dict[int, dict] = {}
    seconds: dict[str, float] = {}
    for job in noise_jobs(cfg, state):
        stored = units[job.key]
        seconds[job.key] = float(stored["seconds"])
        for j, i in enumerate(job.index):
            per_row[i] = dict(test_error=float(stored["test_error"][j]), train_acc=float(stored["train_acc"][j]),
                              epochs_to_fit=int(stored["epochs_to_fit"][j]), epochs_run=int(stored["epochs_run"]))
    results = pd.DataFrame([dict(row, measure=float(measure[i]), **per_row[i]) for i, row in enumerate(state.rows)])
    outcome = ComplexityOutcome(results, seconds=seconds)
    checks = findings(results)
    return Outcome(tables={"results": results}, summary={c["check"]: c["value"] for c in checks},
                   files={"timings.json": {"training seconds per noise level": seconds}}, detail=outcome)


def report(cfg: ComplexityConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The context of ``kernels_complexity.html.j2``."""
    from fitscope.report import kernels as figures

    data = prepared.state.data
    detail: ComplexityOutcome = outcome.detail
    return dict(
        title=f"Kernel study: complexity measure and label noise on {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  classes=", ".join(data.classes), n_features=int(data.x_train.shape[1])),
        findings=findings(detail.results),
        noise_table=figures.complexity_table(detail.results),
        complexity_png=figures.complexity_figure(detail.results, cfg.epochs),
        computed=detail.computed,
        reused=detail.reused,
    )


STUDY = Study(kind="kernels-complexity", command="fitscope kernels complexity", config=ComplexityConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="kernels_complexity.html.j2",
              flags=FLAGS)


def complexity_study(cfg: ComplexityConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: data, noisy labels, measure, networks, tables and ``report.html``.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a run with the same config, reusing its finished units.
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`ComplexityOutcome`
        (``computed`` / ``reused``: the unit keys this call computed or found stored).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: ComplexityOutcome = result.outcome.detail
    detail.computed, detail.reused = list(result.trained), list(result.reused)
    return result.run, detail
