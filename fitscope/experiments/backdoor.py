"""Backdoors: a BadNets patch trigger, its attack success, and its inversion by Neural Cleanse and SmoothInv.

The study, in the order it runs (``fitscope backdoor``):

1. **Data and trigger.** The data set (digits by default: 8x8 images with inputs in [0, 1]; MNIST-1D takes
   a 1-D segment) and a patch trigger: a ``trigger_size`` square (a segment for signals) at
   ``trigger_position`` (a corner, bottom-right by default, or first indices ``row,col``) whose pixels
   are set to ``trigger_value`` (default the data's largest value, 1 for digits)
   (:func:`fitscope.robustness.patch_mask`). The inputs' range (the training split's minimum and maximum)
   bounds every inverted trigger.
2. **Poisoning** (Gu et al. 2017, BadNets). For each seed ``s`` and each ``fraction`` of ``fractions``,
   ``round(fraction n)`` training rows not of the ``target`` class, drawn from
   ``derive_seed(s, "poison", fraction)``, get the trigger and the target label
   (:func:`fitscope.robustness.poison_rows`); the other rows and pixels are untouched.
3. **Training.** One network per seed and setting, the clean model (no poison) as the control, all through
   :func:`fitscope.train.plain_models.train_plain` (SGD with momentum, cross-entropy) from the same initial
   weights and batch order for a seed (``derive_seed(s, "model")``, ``derive_seed(s, "batches")``), so a
   poisoned model differs from its clean control only by its data. The plain loop (rather than
   :func:`fitscope.train.train_ensemble`) is used because the inversions need each trained
   ``nn.Module`` itself.
4. **The attack.** Clean accuracy on the test split; attack success: the share of the test rows not of
   the target class that the model classifies as the target once stamped with the trigger.
5. **Neural Cleanse** (Wang et al. 2019) on a support set of clean training rows: all of them by default
   (the authors' code draws its mini-batches from the whole clean set; a 200-row subset moved a clean
   class's anomaly index by up to 0.7 between draws on seeds 3 and 7), or ``support`` rows (the same
   rows, unstamped, for every model of a seed; ``derive_seed(s, "support")``), each class optimised until
   its norm settles (the authors' early stop, at most ``nc_steps`` steps): the smallest mask and
   pattern that flip the support set to each class (:func:`fitscope.robustness.neural_cleanse`), the
   anomaly index of each class from the masks' L1 norms (median absolute deviation x 1.4826; flagged
   above 2 on the small side). Per model: which classes are flagged, how well the target class's mask
   locates the true patch (precision and IoU of its top ``trigger_size^2`` positions), and the attack
   success of the reversed trigger on the test rows.
6. **SmoothInv** (Sun & Kolter 2023, seed 004) from one clean training image (not of the target class,
   ``derive_seed(s, "single image")``): PGD towards the target class through the Gaussian-smoothed model
   with a large L2 budget ``si_eps`` (:func:`fitscope.robustness.smoothinv`); the recovered perturbation's
   attack success when added to the test rows, and how well its largest entries locate the patch. With
   ``si_all_classes`` it also runs towards every other class, and the class whose perturbation flips the
   most support rows is SmoothInv's guess of the target.
7. **Units.** One per (seed, setting): ``clean-s<seed>`` and ``poison-<fraction>-s<seed>``, each trains
   and inverts one model and is stored as it finishes (``--resume`` continues a killed study).
8. **Estimates.** Tables ``models`` (one row per unit), ``classes`` (per unit and class: mask norm,
   anomaly index, flagged, SmoothInv's success per class) and ``settings`` (means over seeds, with each
   poisoned model's clean accuracy against its own seed's clean model).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``); :func:`backdoor` is the Python API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import build_plain, check_input_shape, parse_spec
from fitscope.robustness import (
    ANOMALY_THRESHOLD,
    CORNERS,
    accuracy,
    additive_attack_success,
    apply_trigger,
    attack_success_rate,
    neural_cleanse,
    patch_mask,
    poison_rows,
    smoothinv,
    top_positions_overlap,
)
from fitscope.seeding import derive_seed
from fitscope.train.plain_models import train_plain
from fitscope.validation import check_seed, message

#: the inversion methods
METHODS = ("neural-cleanse", "smoothinv")


# --------------------------------------------------------------------------- config


class BackdoorConfig(BaseModel):
    """Everything that determines a backdoor study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = "mlp:64x2"
    target: int = Field(0, ge=0, description="the class poisoned rows are relabelled to")
    trigger_size: int = Field(3, ge=1, description="side of the square patch (length of the segment for signals)")
    trigger_position: str = Field("bottom-right", description="a corner (bottom-right, bottom-left, top-right, "
                                                              "top-left) or first indices, e.g. 0,5")
    trigger_value: float | None = Field(None, allow_inf_nan=False,
                                        description="value of the patch pixels (None: the data's largest value)")
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.1],
                                   description="shares of the training rows poisoned, each in (0, 1)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(0.05, gt=0, allow_inf_nan=False)
    methods: list[str] = Field(default_factory=lambda: list(METHODS))
    support: int | None = Field(None, ge=10, description="clean training rows Neural Cleanse inverts on "
                                                         "(None: all of them)")
    nc_steps: int = Field(1000, gt=0, description="Neural Cleanse's most Adam steps (full batches of the support "
                                                  "set); each class stops earlier once its norm settles")
    nc_lr: float = Field(0.1, gt=0, allow_inf_nan=False)
    nc_init_cost: float = Field(1e-3, gt=0, allow_inf_nan=False, description="the first lambda of the L1 penalty")
    nc_patience: int = Field(10, gt=0, description="steps on one side of 99% success before lambda moves")
    si_sigma: float = Field(0.5, gt=0, allow_inf_nan=False, description="SmoothInv's smoothing noise (std)")
    si_eps: float = Field(1.5, gt=0, allow_inf_nan=False, description="SmoothInv's L2 budget")
    si_steps: int = Field(400, gt=0)
    si_noise_samples: int = Field(40, gt=0, description="noise draws per SmoothInv step")
    si_all_classes: bool = Field(True, description="also run SmoothInv towards every other class")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("expected at least one poisoning fraction in (0, 1); got none")
        bad = [v for v in value if not 0.0 < v < 1.0]
        if bad:
            raise ValueError(f"expected poisoning fractions in (0, 1); got {bad[0]:g}")
        return sorted(set(float(v) for v in value))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected distinct seeds; got {value}")
        for s in value:
            check_seed(s, "seeds")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in METHODS]
        if unknown:
            raise ValueError(f"expected inversion methods among {', '.join(METHODS)}; got {unknown[0]!r}")
        return [m for m in METHODS if m in value]

    @field_validator("trigger_position")
    @classmethod
    def _position(cls, value: str) -> str:
        parse_position(value)
        return value.strip()


def parse_position(text: str) -> str | tuple[int, ...]:
    """A corner name (:data:`fitscope.robustness.CORNERS`) or comma-separated first indices ``"0,5"``."""
    text = str(text).strip()
    if text in CORNERS:
        return text
    try:
        out = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"expected one of {', '.join(CORNERS)} or first indices such as 0,5; got {text!r}") from None
    if any(p < 0 for p in out):
        raise ValueError(f"expected indices >= 0; got {text!r}")
    return out


#: ``--quick``: one seed, poisoning fractions 5% and 10%, 20 epochs, SmoothInv towards the target only (3 units).
QUICK = dict(seeds=[0], fractions=[0.05, 0.1], epochs=20, si_all_classes=False)


def make_config(**values) -> BackdoorConfig:
    """Build a :class:`BackdoorConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(BackdoorConfig, values)


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class BackdoorTask:
    """The task of one unit: poison (or not), train one model, attack it and invert its trigger."""

    key: str
    seed: int
    fraction: float  # 0: the clean control
    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    target: int
    trigger_size: int
    position: str | tuple[int, ...]
    value: float
    bounds: tuple[float, float]
    epochs: int
    batch_size: int
    lr: float
    methods: tuple[str, ...]
    support: int | None  # None: every training row
    nc: dict
    si: dict
    si_all_classes: bool


def unit_key(fraction: float, *, seed: int) -> str:
    """``clean-s0`` for the control, ``poison-0.05-s0`` for a poisoned model."""
    return f"clean-s{seed}" if fraction == 0 else f"poison-{fraction:g}-s{seed}"


def plan_tasks(cfg: BackdoorConfig, prepared_state: "BackdoorData") -> list[BackdoorTask]:
    """Every unit: per seed the clean control, then each poisoning fraction."""
    state = prepared_state
    common = dict(model=cfg.model, input_shape=tuple(state.data.input_shape), n_classes=state.data.n_classes,
                  target=cfg.target, trigger_size=cfg.trigger_size, position=parse_position(cfg.trigger_position),
                  value=state.value, bounds=state.bounds, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                  methods=tuple(cfg.methods), support=cfg.support,
                  nc=dict(steps=cfg.nc_steps, lr=cfg.nc_lr, init_cost=cfg.nc_init_cost, patience=cfg.nc_patience),
                  si=dict(sigma=cfg.si_sigma, eps=cfg.si_eps, steps=cfg.si_steps,
                          noise_samples=cfg.si_noise_samples),
                  si_all_classes=cfg.si_all_classes)
    return [BackdoorTask(unit_key(f, seed=s), s, f, **common) for s in cfg.seeds for f in [0.0, *cfg.fractions]]


def support_rows(y: np.ndarray, size: int | None, *, seed: int) -> np.ndarray:
    """``size`` training rows (sorted) drawn from ``derive_seed(seed, "support")``: Neural Cleanse's support set.

    ``None`` (or ``size`` >= the rows): every row.
    """
    if size is None or size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(derive_seed(seed, "support"))
    return np.sort(rng.choice(len(y), size=min(size, len(y)), replace=False))


def single_image_row(y: np.ndarray, target: int, *, seed: int) -> int:
    """The training row (not of ``target``) SmoothInv starts from, drawn from ``derive_seed(seed, "single image")``."""
    rng = np.random.default_rng(derive_seed(seed, "single image"))
    return int(rng.choice(np.flatnonzero(np.asarray(y) != target)))


def run_unit(task: BackdoorTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Poison, train, attack and invert one model (module-level and pure: the result follows from the arguments).

    Returns:
        Scalars ``clean_acc``, ``train_acc``, ``asr``, ``poisoned``; Neural Cleanse (when asked):
        ``nc_masks (C, *positions)``, ``nc_patterns (C, *input_shape)``, ``nc_norms``, ``nc_success``,
        ``nc_reached``, ``nc_steps_run`` (the steps each class ran), ``anomaly_index``, ``flagged`` (C,),
        ``nc_trigger_asr`` (the target's reversed trigger on the test rows), ``nc_precision``, ``nc_iou``;
        SmoothInv (when asked): ``si_image``,
        ``si_perturbation``, ``si_x_adv`` (input-shaped), ``si_asr``, ``si_precision``, ``si_iou``,
        ``si_norm``, ``si_prob``, ``si_base_prob``, ``si_row``, and with every class ``si_class_success``
        (C,): each class's perturbation's success on the support set (NaN where not run).
    """
    mask = patch_mask(task.input_shape, size=task.trigger_size, position=task.position)
    x, y = np.asarray(x_train, np.float32), np.asarray(y_train, np.int64)
    poisoned = np.zeros(0, np.int64)
    if task.fraction > 0:
        p = poison_rows(x, y, fraction=task.fraction, target=task.target, n_classes=task.n_classes, mask=mask,
                        pattern=task.value, seed=derive_seed(task.seed, "poison", f"{task.fraction:g}"))
        x_fit, y_fit, poisoned = p.x, p.y, p.rows
    else:
        x_fit, y_fit = x, y
    model = build_plain(task.model, task.input_shape, task.n_classes, seed=derive_seed(task.seed, "model"))
    tick = None if progress is None else (lambda info: progress(int(info["epoch"])))
    fit = train_plain(model, x_fit, y_fit, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                      seed=derive_seed(task.seed, "batches"), progress=tick)
    model = fit.model
    out: dict[str, np.ndarray] = {
        "clean_acc": np.asarray(accuracy(model, x_test, y_test)),
        "train_acc": np.asarray(float(fit.train_acc[-1])),
        "asr": np.asarray(attack_success_rate(model, x_test, y_test, target=task.target, mask=mask,
                                              pattern=task.value)),
        "poisoned": np.asarray(len(poisoned), np.int64),
        "poisoned_rows": poisoned.astype(np.int64),
    }
    support = support_rows(y, task.support, seed=task.seed)
    if "neural-cleanse" in task.methods:
        nc = neural_cleanse(model, x[support], y[support], bounds=task.bounds, seed=derive_seed(task.seed, "nc"),
                            **task.nc)
        t = task.target
        overlap = top_positions_overlap(nc.masks[t], mask)
        out.update(nc_masks=nc.masks, nc_patterns=nc.patterns, nc_norms=nc.norms, nc_success=nc.success,
                   nc_reached=nc.reached, anomaly_index=nc.anomaly.index, flagged=nc.anomaly.flagged,
                   nc_steps_run=nc.steps_run,
                   nc_trigger_asr=np.asarray(attack_success_rate(model, x_test, y_test, target=t, mask=nc.masks[t],
                                                                 pattern=nc.patterns[t])),
                   nc_precision=np.asarray(overlap["precision"]), nc_iou=np.asarray(overlap["iou"]))
    if progress is not None:
        progress(task.epochs + 1)
    if "smoothinv" in task.methods:
        row = single_image_row(y, task.target, seed=task.seed)
        classes = range(task.n_classes) if task.si_all_classes else [task.target]
        success = np.full(task.n_classes, np.nan)
        for c in classes:
            if c == y[row]:
                continue  # the image already is of this class: there is nothing to flip
            si = smoothinv(model, x[row], target=c, bounds=task.bounds,
                           seed=derive_seed(task.seed, "smoothinv", c), **task.si)
            success[c] = additive_attack_success(model, x[support], y[support], target=c,
                                                 perturbation=si.perturbation, bounds=task.bounds)
            if c == task.target:
                overlap = top_positions_overlap(np.abs(si.perturbation), mask)
                out.update(si_image=x[row], si_perturbation=si.perturbation, si_x_adv=si.x_adv,
                           si_asr=np.asarray(additive_attack_success(model, x_test, y_test, target=c,
                                                                     perturbation=si.perturbation,
                                                                     bounds=task.bounds)),
                           si_precision=np.asarray(overlap["precision"]), si_iou=np.asarray(overlap["iou"]),
                           si_norm=np.asarray(si.norm), si_prob=np.asarray(si.smoothed_prob),
                           si_base_prob=np.asarray(si.base_prob), si_row=np.asarray(row, np.int64))
        out["si_class_success"] = success
    if progress is not None:
        progress(task.epochs + 2)
    return out


# --------------------------------------------------------------------------- estimates (arrays in, tables out)


@dataclass
class BackdoorData:
    """What ``prepare`` keeps: the data set, the trigger's mask and value, the inputs' bounds."""

    data: Dataset
    mask: np.ndarray
    value: float
    bounds: tuple[float, float]


@dataclass
class BackdoorOutcome:
    """What :func:`backdoor` computed.

    Attributes:
        models: one row per unit (see :func:`model_row`).
        classes: one row per unit and class.
        settings: means over seeds per setting (clean, each fraction).
        arrays: per unit key, the stored masks, patterns and SmoothInv images for the report.
        summary: the headline numbers.
    """

    models: pd.DataFrame
    classes: pd.DataFrame
    settings: pd.DataFrame
    arrays: dict
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def _get(stored, name: str, default=float("nan")):
    return float(stored[name]) if name in stored else default


def model_row(task: BackdoorTask, stored, clean_acc_of_seed: float) -> dict:
    """One row of the ``models`` table from a unit's arrays."""
    flagged = np.flatnonzero(stored["flagged"]) if "flagged" in stored else np.zeros(0, int)
    index = np.asarray(stored["anomaly_index"], float) if "anomaly_index" in stored else None
    norms = np.asarray(stored["nc_norms"], float) if "nc_norms" in stored else None
    small = None
    if index is not None:
        small_side = np.where(norms < np.median(norms), index, 0.0)
        small = int(np.argmax(small_side))
    guess = stored.get("si_class_success")
    si_guess = -1
    if guess is not None and np.isfinite(guess).sum() > 1:
        si_guess = int(np.nanargmax(guess))
    return {
        "unit": task.key, "kind": "clean" if task.fraction == 0 else "poisoned", "fraction": task.fraction,
        "seed": task.seed, "poisoned_rows": int(stored["poisoned"]), "train_acc": float(stored["train_acc"]),
        "clean_acc": float(stored["clean_acc"]), "clean_acc_drop": clean_acc_of_seed - float(stored["clean_acc"]),
        "asr": float(stored["asr"]),
        "flagged_classes": ",".join(str(c) for c in flagged),
        "target_flagged": bool(task.target in flagged) if index is not None else None,
        "others_flagged": int(sum(c != task.target for c in flagged)),
        "target_anomaly_index": float(index[task.target]) if index is not None else float("nan"),
        "most_anomalous_class": small if small is not None else -1,
        "target_norm": float(norms[task.target]) if norms is not None else float("nan"),
        "median_norm": float(np.median(norms)) if norms is not None else float("nan"),
        "nc_trigger_asr": _get(stored, "nc_trigger_asr"), "nc_precision": _get(stored, "nc_precision"),
        "nc_iou": _get(stored, "nc_iou"),
        "nc_steps_max": float(np.max(stored["nc_steps_run"])) if "nc_steps_run" in stored else float("nan"),
        "si_asr": _get(stored, "si_asr"), "si_precision": _get(stored, "si_precision"),
        "si_iou": _get(stored, "si_iou"), "si_norm": _get(stored, "si_norm"), "si_prob": _get(stored, "si_prob"),
        "si_guess": si_guess,
    }


def settings_table(models: pd.DataFrame) -> pd.DataFrame:
    """Means (and the lowest value where a target asks for it) over seeds, per setting (clean, each fraction)."""
    rows = []
    for fraction, part in models.groupby("fraction", sort=True):
        row = {"kind": part.kind.iloc[0], "fraction": float(fraction), "models": int(len(part)),
               "clean_acc": float(part.clean_acc.mean()), "clean_acc_drop": float(part.clean_acc_drop.mean()),
               "clean_acc_drop_max": float(part.clean_acc_drop.max()), "asr": float(part.asr.mean()),
               "asr_min": float(part.asr.min())}
        if part.target_flagged.notna().any():
            row.update(target_flagged=int(part.target_flagged.fillna(False).sum()),
                       models_with_a_flag=int((part.flagged_classes != "").sum()),
                       target_anomaly_index=float(part.target_anomaly_index.mean()),
                       nc_trigger_asr=float(part.nc_trigger_asr.mean()), nc_precision=float(part.nc_precision.mean()))
        if part.si_asr.notna().any():
            row.update(si_asr=float(part.si_asr.mean()), si_asr_min=float(part.si_asr.min()),
                       si_precision=float(part.si_precision.mean()))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(models: pd.DataFrame, settings: pd.DataFrame, target: int) -> dict:
    """Headline numbers: attack success and accuracy per fraction, detection, SmoothInv's success."""
    out: dict = {"target class": int(target), "models": int(len(models))}
    for _, row in settings.iterrows():
        name = "clean models" if row.kind == "clean" else f"{row.fraction:.0%} poisoned"
        out[f"{name}: clean accuracy"] = row.clean_acc
        if row.kind != "clean":
            out[f"{name}: attack success"] = row.asr
            out[f"{name}: clean accuracy drop (points)"] = 100 * row.clean_acc_drop
        if "target_flagged" in row and pd.notna(row.get("target_flagged")):
            if row.kind == "clean":
                out[f"{name}: models with a class flagged"] = f"{int(row.models_with_a_flag)} of {int(row.models)}"
            else:
                out[f"{name}: target flagged"] = f"{int(row.target_flagged)} of {int(row.models)}"
        if "si_asr" in row and pd.notna(row.get("si_asr")):
            out[f"{name}: SmoothInv attack success"] = row.si_asr
    return out


def prepare(cfg: BackdoorConfig) -> Prepared:
    """Load the data, check the model, the trigger and the target; nothing is written yet."""
    spec = parse_spec(cfg.model)
    if spec.family == "resnet":
        raise ConfigError(message("--model", "an mlp, cnn or cnn1d spec (a plain network)", repr(cfg.model)))
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    if len(data.input_shape) not in (2, 3):
        raise ConfigError(message("--data", "images or signals (a patch trigger needs positions)",
                                  f"{data.name} with input shape {data.input_shape}"))
    check_input_shape(spec, data.input_shape)
    if cfg.target >= data.n_classes:
        raise ConfigError(message("--target", f"a class in [0, {data.n_classes - 1}] of {data.name}",
                                  str(cfg.target)))
    try:
        mask = patch_mask(data.input_shape, size=cfg.trigger_size, position=parse_position(cfg.trigger_position))
    except ConfigError as err:
        raise ConfigError(str(err).replace("trigger_size:", "--trigger-size:", 1)
                          .replace("trigger_position:", "--trigger-position:", 1)) from None
    low, high = float(data.x_train.min()), float(data.x_train.max())
    value = high if cfg.trigger_value is None else float(cfg.trigger_value)
    if not low <= value <= high:
        raise ConfigError(message("--trigger-value", f"a value in the data's range [{low:g}, {high:g}]", f"{value:g}"))
    n = len(data.y_train)
    others = int((data.y_train != cfg.target).sum())
    for f in cfg.fractions:
        k = int(round(f * n))
        if k < 1 or k > others:
            raise ConfigError(message("--fractions", f"shares of the {n} training rows between 1 row and the {others} "
                                      f"rows not of class {cfg.target}", f"{f:g} ({k} rows)"))
    if cfg.support is not None and cfg.support > n:
        raise ConfigError(message("--support", f"at most the {n} training rows of {data.name}", str(cfg.support)))
    state = BackdoorData(data=data, mask=mask, value=value, bounds=(low, high))
    shared = {"x_train": data.x_train.astype(np.float32), "y_train": data.y_train.astype(np.int64),
              "x_test": data.x_test.astype(np.float32), "y_test": data.y_test.astype(np.int64)}
    seeds = {"seeds": list(cfg.seeds), "data_seed": cfg.data_seed,
             "per_seed": {str(s): {"model": derive_seed(s, "model"), "batches": derive_seed(s, "batches"),
                                   "support": derive_seed(s, "support"), "single image": derive_seed(s, "single image"),
                                   "poison": {f"{f:g}": derive_seed(s, "poison", f"{f:g}") for f in cfg.fractions}}
                          for s in cfg.seeds}}
    return Prepared(seeds=seeds, shared=shared, state=state)


def plan(cfg: BackdoorConfig, prepared: Prepared) -> list[Unit]:
    """One unit per (seed, setting) (:func:`plan_tasks`), computed by :func:`run_unit`; work = epochs + 2."""
    return [Unit(t.key, run_unit, t, work=t.epochs + 2, info=dict(seed=t.seed, fraction=t.fraction))
            for t in plan_tasks(cfg, prepared.state)]


#: the arrays of a unit the report draws
_REPORT_ARRAYS = ("nc_masks", "nc_patterns", "anomaly_index", "nc_norms", "flagged", "si_image", "si_perturbation",
                  "si_x_adv", "si_class_success")


def estimate(cfg: BackdoorConfig, prepared: Prepared, units) -> Outcome:
    """The ``models``, ``classes`` and ``settings`` tables and the headline numbers, from the stored units."""
    state: BackdoorData = prepared.state
    tasks = plan_tasks(cfg, state)
    clean_acc = {t.seed: float(units[t.key]["clean_acc"]) for t in tasks if t.fraction == 0}
    rows, class_rows, arrays = [], [], {}
    for task in tasks:
        stored = units[task.key]
        stored = {k: stored[k] for k in stored}
        rows.append(model_row(task, stored, clean_acc[task.seed]))
        arrays[task.key] = {k: np.asarray(stored[k]) for k in _REPORT_ARRAYS if k in stored}
        for c in range(state.data.n_classes):
            class_rows.append({
                "unit": task.key, "seed": task.seed, "fraction": task.fraction, "class": c,
                "is_target": c == task.target,
                "mask_norm": float(stored["nc_norms"][c]) if "nc_norms" in stored else float("nan"),
                "nc_success": float(stored["nc_success"][c]) if "nc_success" in stored else float("nan"),
                "anomaly_index": float(stored["anomaly_index"][c]) if "anomaly_index" in stored else float("nan"),
                "flagged": bool(stored["flagged"][c]) if "flagged" in stored else False,
                "si_success": float(stored["si_class_success"][c]) if "si_class_success" in stored
                else float("nan"),
            })
    models = pd.DataFrame(rows)
    classes = pd.DataFrame(class_rows)
    settings = settings_table(models)
    summary = summarize(models, settings, cfg.target)
    detail = BackdoorOutcome(models=models, classes=classes, settings=settings, arrays=arrays, summary=summary)
    return Outcome(tables={"models": models, "classes": classes, "settings": settings}, summary=summary,
                   detail=detail)


def report(cfg: BackdoorConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.backdoor.report_context`)."""
    from fitscope.report.backdoor import report_context

    state: BackdoorData = prepared.state
    data = state.data
    info = dict(name=data.name, n_train=len(data.y_train), n_test=len(data.y_test), n_classes=data.n_classes,
                input_shape="x".join(map(str, data.input_shape)), kind=data.kind, low=state.bounds[0],
                high=state.bounds[1], value=state.value)
    example = data.x_train[data.y_train != cfg.target][:4]
    stamped = apply_trigger(example, state.mask, state.value)
    return report_context(cfg.model_dump(), info, outcome.detail, mask=state.mask, examples=example,
                          stamped=stamped, threshold=ANOMALY_THRESHOLD)


STUDY = Study(kind="backdoor", command="fitscope backdoor", config=BackdoorConfig, prepare=prepare, plan=plan,
              estimate=estimate, report=report, template="backdoor.html.j2", quick=QUICK, work_name="epochs")


def backdoor(cfg: BackdoorConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, poison and train (or resume), invert, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units run).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`BackdoorOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: BackdoorOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail

