"""The randomization study of Zhang, Bengio, Hardt, Recht and Vinyals (2017).

Reads like section 1 of METHODS.md: load data, corrupt it, train until the
network fits (or the epoch budget runs out), record how long fitting took and
what the fit generalizes to, write tables, then a report.

Three parts, each a list of *ensembles* (one batched ensemble each, one unit
of the run, stored as soon as it finishes so a killed study resumes where it
stopped):

- ``curves``: one ensemble per corruption (true labels, random labels,
  shuffled pixels, random pixels, gaussian), ``len(seeds)`` models each, full
  learning curves (Zhang et al. figure 1a).
- ``noise``: one ensemble holding every label-corruption probability p x seed
  (the inputs are shared, only the labels differ per model; each label is
  redrawn uniformly at random with probability p, so about ``p * (1 - 1/C)``
  of them end up wrong): time to fit and test error against p (figures 1b,
  1c). Its per-epoch correctness is kept, to find the examples still wrong
  late in training and test whether their nearest training neighbour carries
  another label (:mod:`fitscope.estimators.neighbours`).
- ``regularizers``: one ensemble per regularizer setting (none, weight decay,
  dropout, augmentation, all three), true and random labels side by side
  (table 1).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``): the runner owns
the run directory, ``--resume``, the executor (``local`` or ``ray``), progress
and the report; this module supplies ``prepare`` (load, check, plan the label
corruptions), ``plan`` (one unit per ensemble, trained by the pure
module-level :func:`train_ensemble_task` with the clean data arrays shared;
input corruptions are drawn inside the task from their seed), ``estimate``
(the ``results``, ``curves`` and ``late_examples`` tables and the findings)
and the report context.

What the noise sweep measures (:func:`findings`): the time to 90% training
accuracy grows with p (the bulk of the memorization), while the time to fit
the *last* example jumps at any p > 0, because it is
decided by a few near-duplicate inputs whose labels conflict, and those exist
at any p > 0.
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
from fitscope.estimators.neighbours import late_examples, neighbour_conflicts
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train import EnsembleResult, TrainConfig, train_ensemble, unpack_correct
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import parse_regularizers

CORRUPTIONS = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
REGULARIZERS = ("none", "wd", "dropout", "augment", "wd+dropout+augment")
#: Corruptions of the inputs (the labels stay): drawn inside the unit's task from their seed.
INPUT_CORRUPTIONS = ("shuffled_pixels", "random_pixels", "gaussian")
#: The examples a model still gets wrong at this fraction of its time to fit are its "late" examples.
LATE_AT = 0.8


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
    noise_levels: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        description="label corruption probabilities p (--corrupt-prob): each training label is redrawn "
                    "uniformly over all classes with probability p, so about p * (1 - 1/C) end up wrong")
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

    @field_validator("corruptions")
    @classmethod
    def _known_names(cls, value: list[str]) -> list[str]:
        if not value or any(v not in CORRUPTIONS for v in value):
            raise ValueError(f"expected a non-empty list of {', '.join(CORRUPTIONS)}; got {value}")
        return value

    @field_validator("regularizers")
    @classmethod
    def _settings(cls, value: list[str]) -> list[str]:
        # every setting is "none" or parts in the regularizers' grammar (fitscope regularizers list)
        if not value:
            raise ValueError(f"expected a non-empty list of settings such as {', '.join(REGULARIZERS)}; got []")
        for setting in value:
            parse_regularizers(_as_grammar(setting))
        return value

    @field_validator("noise_levels")
    @classmethod
    def _noise_in_unit_interval(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 <= p <= 1.0 for p in value):
            raise ValueError(f"expected label corruption probabilities in [0, 1]; got {value}")
        return sorted(set(value))

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected distinct integer seeds; got {value}")
        return value

    @classmethod
    def quick(cls, **overrides) -> "RandomizationConfig":
        """The ``--quick`` setting (:data:`QUICK`) with ``overrides`` (None values ignored) on top."""
        return make_config(**{**QUICK, **{k: v for k, v in overrides.items() if v is not None}})


#: ``--quick``, the setting of ``make demo``: one seed, four regularizer settings and a budget of
#: 100 epochs (every ensemble stops once all its models fit); the other values are the defaults.
QUICK = dict(seeds=[0], regularizers=["none", "wd", "dropout", "augment"], epochs=100)


#: Config fields whose CLI flag is not ``--`` + the field with dashes (named in errors and on --resume).
FLAGS = {"noise_levels": "--corrupt-prob"}


def make_config(**values) -> RandomizationConfig:
    """Build a :class:`RandomizationConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(RandomizationConfig, values, FLAGS)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Ensemble:
    """One batched ensemble of the study (one unit of the run): what to train and how to label its rows.

    Attributes:
        key: the unit's key (``"curves-gaussian"``, ``"noise"``, ``"reg-wd"``...).
        part: ``"curves"``, ``"noise"`` or ``"regularizers"``.
        rows: one dict of descriptive columns per model (corruption, noise, regularizers, seed, labels_changed).
        labels: ``(K, n)`` per-model training labels (the label corruptions already applied).
        train: how to train.
        dropout: the dropout rate of the models (None: as the regularizer parts say).
        inputs: ``(corruption, seed)`` of an input corruption drawn inside the task, or None (clean inputs).
    """

    key: str
    part: str
    rows: list[dict]
    labels: np.ndarray
    train: TrainConfig
    dropout: float | None
    inputs: tuple[str, int] | None = None


@dataclass
class StudyOutcome:
    """What the study computed: the tables, the findings and which units it trained or reused."""

    results: pd.DataFrame
    curves: pd.DataFrame
    late_examples: pd.DataFrame | None = None
    findings: list[dict] = field(default_factory=list)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def _as_grammar(setting: str) -> str:
    """A setting as parts text: ``none`` is plain cross-entropy (``ce``)."""
    return "+".join("ce" if token.strip() == "none" else token for token in setting.split("+"))


def setting_parts(cfg: RandomizationConfig, setting: str) -> list[dict]:
    """The parts of a regularizer setting; ``wd``, ``dropout`` and ``augment`` named without values take the
    study's ``weight_decay``, ``dropout`` and ``augment_flip``."""
    study_values = {"wd": {"decay": cfg.weight_decay}, "dropout": {"p": cfg.dropout},
                    "augment": {"flip": int(cfg.augment_flip)}}
    tokens = []
    for token in _as_grammar(setting).split("+"):
        name = token.strip()
        if name in study_values and all(v > 0 or k == "flip" for k, v in study_values[name].items()):
            token = name + ":" + ",".join(f"{k}={v}" for k, v in study_values[name].items())
        elif name in ("wd", "dropout"):  # the study's value is 0: the setting trains without it
            token = "ce"
        tokens.append(token)
    return parse_regularizers("+".join(tokens))


def _unit_name(setting: str) -> str:
    """A file-name-safe unit name of a setting (``wd+dropout`` -> ``wd_dropout``)."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in setting.replace("+", "_"))


def _train_config(cfg: RandomizationConfig, *, parts: list[dict] | None = None,
                  record: bool = False) -> TrainConfig:
    return TrainConfig(
        flip=cfg.augment_flip,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        schedule="constant",
        early_stop="fit",
        record=record,
        regularizers=parts or [],
    )


def plan_units(cfg: RandomizationConfig, data: Dataset) -> list[Ensemble]:
    """Every ensemble the study trains, in order, with the seeds of every corruption.

    Corruption seeds derive from ``(data_seed, corruption, noise, seed)`` so
    that an ensemble's data never depends on which other ensembles are in the
    study. Label corruptions are drawn here (``Ensemble.labels``); input
    corruptions only name their seed (``Ensemble.inputs``) and are drawn by
    the task that trains the ensemble.
    """
    units: list[Ensemble] = []
    base_train = _train_config(cfg)
    n = len(data.y_train)

    if "curves" in cfg.parts:
        for kind in cfg.corruptions:
            # Label corruptions differ per seed, so the per-model label matrix carries them;
            # input corruptions use one draw (the corruption's own seed) for every model.
            labels = np.stack(
                [
                    corrupt(data, kind, noise=1.0, seed=derive_seed(cfg.data_seed, "curves", kind, s)).dataset.y_train
                    if kind == "random_labels"
                    else data.y_train.astype(np.int64)
                    for s in cfg.seeds
                ]
            )
            inputs = (kind, derive_seed(cfg.data_seed, "curves", kind)) if kind in INPUT_CORRUPTIONS else None
            # ``noise`` is the fraction of labels redrawn: 1 for random labels, 0 where only inputs change.
            rows = [dict(part="curves", corruption=kind, noise=1.0 if kind == "random_labels" else 0.0,
                         regularizers="none", seed=s) for s in cfg.seeds]
            units.append(Ensemble(f"curves-{kind}", "curves", rows, labels, base_train, 0.0, inputs))

    if "noise" in cfg.parts:
        rows, labels = [], []
        for p in cfg.noise_levels:
            for s in cfg.seeds:
                c = corrupt(data, "labels", noise=p, seed=derive_seed(cfg.data_seed, "noise", int(round(p * 1000)), s))
                labels.append(c.dataset.y_train)
                rows.append(dict(part="noise", corruption="labels", noise=p, regularizers="none", seed=s))
        # Per-epoch correctness kept (only it is stored: see train_ensemble_task) to find the late examples.
        units.append(Ensemble("noise", "noise", rows, np.stack(labels), _train_config(cfg, record=True), 0.0))

    if "regularizers" in cfg.parts:
        for reg in cfg.regularizers:
            train = _train_config(cfg, parts=setting_parts(cfg, reg))
            rows, labels = [], []
            for kind in ("none", "random_labels"):
                for s in cfg.seeds:
                    c = corrupt(data, kind, noise=1.0, seed=derive_seed(cfg.data_seed, "reg", kind, s))
                    labels.append(c.dataset.y_train)
                    rows.append(dict(part="regularizers", corruption=kind, noise=0.0 if kind == "none" else 1.0,
                                     regularizers=reg, seed=s))
            units.append(Ensemble(f"reg-{_unit_name(reg)}", "regularizers", rows, np.stack(labels), train, None))
    for unit in units:
        # Ground truth of the label corruption, per model: the fraction of labels that differ from the
        # given ones (about p * (1 - 1/C) for a redraw with probability p, as in Zhang et al.).
        for row, labels_k in zip(unit.rows, unit.labels):
            row["labels_changed"] = float(np.mean(labels_k != data.y_train))
    assert all(u.labels.shape == (len(u.rows), n) for u in units)
    return units


def model_seeds(unit: Ensemble) -> list[int]:
    """The seeds of the ensemble's models: from ``(row seed, unit key, model index)``."""
    return [derive_seed(row["seed"], unit.key, i) for i, row in enumerate(unit.rows)]


# --------------------------------------------------------------------------- training


def train_ensemble_task(task: tuple[Ensemble, str, int], *, x_train: np.ndarray, y_train: np.ndarray,
                        x_test: np.ndarray, y_test: np.ndarray,
                        progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: ``task = (ensemble, model spec, n_classes)``, the clean data shared (read-only).

    Module-level and pure: an input corruption is drawn here from its seed, so
    the result follows from the arguments alone and the ``local`` and ``ray``
    executors give the same bits for the same threads per task.
    ``progress(model-epochs done)`` is called after every epoch.

    Returns:
        :meth:`fitscope.train.EnsembleResult.to_arrays` of the trained ensemble;
        of the per-example records (kept by the noise ensemble) only the
        bit-packed correctness (``records_correct``, ``records_n``) is stored.
    """
    unit, spec, n_classes = task
    if unit.inputs is not None:
        kind, seed = unit.inputs
        clean = Dataset(name="shared", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        classes=tuple(str(c) for c in range(n_classes)), source="")
        corrupted = corrupt(clean, kind, noise=1.0, seed=seed).dataset
        x_train, x_test = corrupted.x_train, corrupted.x_test
    k = len(unit.rows)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    result = train_ensemble(spec, x_train, unit.labels, config=unit.train, seeds=model_seeds(unit),
                            x_test=x_test, y_test=y_test, dropout=unit.dropout, progress=tick,
                            n_classes=n_classes)
    arrays = result.to_arrays()
    arrays.pop("records_loss", None)
    arrays.pop("records_margin", None)
    return arrays


def _tables(unit: Ensemble, result: EnsembleResult) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def late_example_table(unit: Ensemble, arrays, x_train: np.ndarray) -> pd.DataFrame | None:
    """Per label-corruption probability p: the late examples and how often their nearest neighbour has another label.

    The late examples of a model are those it still gets wrong at
    :data:`LATE_AT` of its time to fit (:func:`fitscope.estimators.neighbours.late_examples`).
    For each of them and for every example, the nearest *other* training
    input (Euclidean, on the clean inputs every model of the noise ensemble
    shares) is compared under the model's own corrupted labels
    (:func:`fitscope.estimators.neighbours.neighbour_conflicts`). Models of one
    p are pooled.

    Args:
        unit: the noise ensemble.
        arrays: its stored arrays (``records_correct``, ``records_n``, ``epochs_to_fit``).
        x_train: the shared training inputs ``(n, ...)``.

    Returns:
        One row per p: ``noise``, ``models``, ``late_examples`` (model, example
        pairs), ``late_conflicting``, ``pairs`` (models x n), ``all_conflicting``,
        ``late_conflict`` and ``all_conflict`` (shares), ``late_nn_distance_median``
        and ``all_nn_distance_median``; None when the unit kept no correctness
        records (a run stored before they were kept).
    """
    if "records_correct" not in arrays:
        return None
    n = unit.labels.shape[1]
    correct = unpack_correct(np.asarray(arrays["records_correct"]), n)
    late = late_examples(correct, np.asarray(arrays["epochs_to_fit"], np.int64), at=LATE_AT)
    conflicts = neighbour_conflicts(x_train, unit.labels)
    noise = np.array([row["noise"] for row in unit.rows])
    rows = []
    for p in sorted(set(noise.tolist())):
        models = noise == p
        late_p = late & models[:, None]
        all_p = np.zeros_like(late) | models[:, None]
        rows.append(dict(
            noise=p, models=int(models.sum()),
            late_examples=conflicts.count(late_p), late_conflicting=int(conflicts.conflict[late_p].sum()),
            pairs=conflicts.count(all_p), all_conflicting=int(conflicts.conflict[all_p].sum()),
            late_conflict=conflicts.rate(late_p), all_conflict=conflicts.rate(all_p),
            late_nn_distance_median=conflicts.distance_median(late_p),
            all_nn_distance_median=conflicts.distance_median(all_p),
        ))
    return pd.DataFrame(rows)


#: The check names of the noise sweep (the report and the benchmark look them up by name).
CHECK_90 = "epochs to 90% train accuracy vs label corruption p: Spearman rho over models"
CHECK_ALL = "epochs to fit every example (100% train accuracy): smallest p > 0 over p = 0"
CHECK_LATE = (f"examples still wrong at {LATE_AT:.0%} of the time to fit (p > 0): "
              "share whose nearest training neighbour has another label")


def findings(results: pd.DataFrame, n_classes: int, late: pd.DataFrame | None = None) -> list[dict]:
    """The checks of the study, measured: name, value, target, whether it holds, and how to show the value.

    Random labels are fit and generalize at chance, true labels generalize
    (Zhang et al.). For the label-corruption sweep, what was measured on
    digits replaces the paper's "time to fit grows with p":

    - the time to **90%** training accuracy grows with p (Spearman rho over
      models > 0.5, and the largest p is slower than the smallest);
    - the time to fit **every** example jumps at any p > 0: the mean epochs to
      100% training accuracy at the fastest p > 0 is at least twice that at
      p = 0;
    - why (when ``late`` is given, :func:`late_example_table`): the examples
      still wrong late in training have a nearest training neighbour with
      another label more often than the examples overall (pooled over p > 0).

    Models that never got there count at their budget plus one (a lower bound
    on their time). Each check is computed from ``results`` (and ``late``)
    only, so the report and the benchmark state the same numbers.

    Returns:
        A list of dicts ``check, value, target, holds, format`` (``format``:
        ``"pct"``, ``"ratio"`` or ``"number"``).
    """
    out: list[dict] = []
    chance = 1.0 / n_classes
    rand = results[(results.corruption == "random_labels") & (results.regularizers == "none")]
    true = results[(results.corruption == "none") & (results.regularizers == "none")]
    if len(rand):
        v = float(rand.train_acc.min())
        out.append(dict(check="random labels: train accuracy (min over seeds)", value=v, target=">= 0.99",
                        holds=v >= 0.99, format="pct"))
        v = float(rand.test_acc.mean())
        out.append(dict(check="random labels: test accuracy minus chance", value=v - chance,
                        target="within +-0.05", holds=abs(v - chance) <= 0.05, format="pct"))
    if len(true):
        v = float(true.test_acc.mean())
        out.append(dict(check="true labels: test accuracy", value=v, target=">= 0.95", holds=v >= 0.95,
                        format="pct"))
    noise = results[results.part == "noise"]

    def epochs(column: str) -> pd.Series:
        return noise[column].where(noise[column] > 0, noise.epochs_run + 1)

    if noise.noise.nunique() >= 3:
        from scipy.stats import spearmanr

        to_90 = epochs("epochs_to_90pct")
        # No model got there in a tiny budget: every time is the budget and rho is undefined.
        rho = float(spearmanr(noise.noise, to_90).statistic) if to_90.nunique() > 1 else float("nan")
        means = to_90.groupby(noise.noise).mean()
        out.append(dict(check=CHECK_90, value=rho, target="> 0.5, and p = max slower than p = min",
                        holds=bool(rho > 0.5) and bool(means.iloc[-1] > means.iloc[0]), format="number"))
    if (noise.noise == 0).any() and (noise.noise > 0).any():
        means = epochs("epochs_to_fit").groupby(noise.noise).mean()
        ratio = float(means[means.index > 0].min() / means.loc[0.0])
        out.append(dict(check=CHECK_ALL, value=ratio, target=">= 2x: a jump at any p > 0",
                        holds=bool(ratio >= 2.0), format="ratio"))
    if late is not None and (late.noise > 0).any():
        some = late[late.noise > 0]
        n_late, n_all = int(some.late_examples.sum()), int(some.pairs.sum())
        v = float(some.late_conflicting.sum() / n_late) if n_late else float("nan")
        base = float(some.all_conflicting.sum() / n_all)
        out.append(dict(check=CHECK_LATE, value=v, target=f"above {base:.3f}, the share over all examples",
                        holds=bool(v > base), format="pct"))
    return out


# --------------------------------------------------------------------------- the study


@dataclass
class RandomizationState:
    """What ``prepare`` found: the data and the planned ensembles."""

    data: Dataset
    ensembles: list[Ensemble]


def prepare(cfg: RandomizationConfig) -> Prepared:
    """Load the data, check model and data, plan the corruptions; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    for setting in cfg.regularizers:  # a part that does not apply to the model (polarize on an mlp)
        check_regularizers(cfg.model, data.input_shape, data.n_classes, setting_parts(cfg, setting),
                           epochs=cfg.epochs)
    check_supports_study(data, study="the randomization study", min_per_class=1)
    ensembles = plan_units(cfg, data)
    return Prepared(
        seeds={"data_seed": cfg.data_seed, "model_seeds": list(cfg.seeds)},
        shared={"x_train": data.x_train, "y_train": data.y_train.astype(np.int64), "x_test": data.x_test,
                "y_test": data.y_test},
        state=RandomizationState(data, ensembles),
    )


def plan(cfg: RandomizationConfig, prepared: Prepared) -> list[Unit]:
    """One unit per ensemble (:func:`plan_units`), each trained by :func:`train_ensemble_task`."""
    state: RandomizationState = prepared.state
    return [Unit(e.key, train_ensemble_task, (e, cfg.model, state.data.n_classes), work=len(e.rows) * cfg.epochs,
                 info=dict(models=len(e.rows), part=e.part))
            for e in state.ensembles]


def estimate(cfg: RandomizationConfig, prepared: Prepared, units) -> Outcome:
    """The ``results`` and ``curves`` tables (and ``late_examples`` of the noise ensemble) and the findings."""
    state: RandomizationState = prepared.state
    results, curves = [], []
    for ensemble in state.ensembles:
        r, c = _tables(ensemble, EnsembleResult.from_arrays(units[ensemble.key]))
        results.append(r)
        curves.append(c)
    late = None
    noise_unit = next((e for e in state.ensembles if e.part == "noise"), None)
    if noise_unit is not None:
        late = late_example_table(noise_unit, units[noise_unit.key], state.data.x_train)
    detail = StudyOutcome(results=pd.concat(results, ignore_index=True),
                          curves=pd.concat(curves, ignore_index=True), late_examples=late)
    detail.findings = findings(detail.results, state.data.n_classes, late)
    tables = {"results": detail.results, "curves": detail.curves}
    if late is not None:
        tables["late_examples"] = late
    return Outcome(tables=tables, summary={c["check"]: c["value"] for c in detail.findings}, detail=detail)


def report(cfg: RandomizationConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The context of ``randomization.html.j2`` (figures and tables of :mod:`fitscope.report.randomization`)."""
    from fitscope.report import randomization as figures

    data: Dataset = prepared.state.data
    detail: StudyOutcome = outcome.detail
    detail.trained_units, detail.reused_units = list(outcome.trained), list(outcome.reused)
    return dict(
        title=f"Randomization study: {cfg.model} on {data.name}",
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train),
                  n_test=len(data.y_test), n_classes=data.n_classes,
                  input_shape="x".join(map(str, data.input_shape))),
        cfg=cfg.model_dump(),
        findings=detail.findings,
        corruption_table=figures.corruption_table(detail.results) if "curves" in cfg.parts else None,
        regularizer_table=figures.regularizer_table(detail.results) if "regularizers" in cfg.parts else None,
        curves_png=figures.learning_curves_figure(detail.curves) if "curves" in cfg.parts else None,
        fit_png=figures.fit_time_figure(detail.results, cfg.epochs) if "noise" in cfg.parts else None,
        error_png=figures.test_error_figure(detail.results, data.n_classes) if "noise" in cfg.parts else None,
        late_table=figures.late_example_table(detail.late_examples) if detail.late_examples is not None else None,
        late_at=LATE_AT,
        trained_units=detail.trained_units,
        reused_units=detail.reused_units,
        n_models=len(detail.results),
    )


STUDY = Study(kind="randomization", command="fitscope randomization", config=RandomizationConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="randomization.html.j2",
              quick=QUICK, work_name="model-epochs", flags=FLAGS)


def randomization_study(cfg: RandomizationConfig, out: str | Path, *, resume: bool = False, **placement):
    """The whole study: validate, train (or resume), write tables and ``report.html``.

    The data, model spec and corruptions are checked *before* the run
    directory is made, so bad input leaves nothing behind.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a killed run with the same config, reusing its finished units.
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the
        :class:`StudyOutcome` (``trained_units`` / ``reused_units`` say what this call trained).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: StudyOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = list(result.trained), list(result.reused)
    return result.run, detail
