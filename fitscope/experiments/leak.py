"""Leakage study: membership inference (LiRA online/offline and the loss threshold) against subset models.

Reads like the LiRA evaluation of Carlini et al. (2022), METHODS section 6:

1. models: K models, each trained on a random half (``ratio``) of the
   training set with overfitting settings (a fixed epoch budget, no early
   stop), storing each model's logits on every training example; or, with
   ``from_audit``, the memorization models an audit already stored (their
   subset masks and ``train_logits``), with no training;
2. scores: LiRA's ``log p_y - log sum_{y' != y} p_y'`` of every model on
   every example (:func:`fitscope.estimators.membership.lira_score`);
3. attacks, leave one model out: each model in turn is the target and the
   other K - 1 are its shadow models; LiRA online and offline, each with
   per-example and with a fixed (pooled) variance, and the loss-threshold
   baseline; ROC AUC and TPR at 0.1% / 1% FPR over all (model, example) pairs;
4. per example: the shadow-score statistics, how often the best LiRA attack
   flagged it at 1% FPR when it was a member (``leak_rate``), and its
   memorization (from the audit's ``examples.parquet`` with ``from_audit``,
   else Feldman & Zhang's estimate from the same models);
5. ``leak.parquet``, ``metrics.parquet`` and ``report.html``.

Units: the models train in chunks of ``chunk`` (one batched ensemble each),
stored as ``units/leak-000.npz`` ... (masks, seeds, float16 train logits,
subset and test accuracy) as they finish, so ``resume=True`` trains only the
missing chunks. With ``from_audit`` there are no units: the study reads the
audit's run (:func:`read_audit`) and goes straight to the attacks.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``): the runner owns
the run directory, ``--resume``, the executor (``local`` or ``ray``), progress
and the report; this module supplies ``prepare`` (load the data or read the
audit, check), ``plan`` (one unit per chunk, trained by the pure module-level
:func:`train_unit_task` with the data arrays shared), ``estimate_study`` and
the report context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.errors import ConfigError, DataError, RunError
from fitscope.estimators.membership import (
    MIN_MODELS,
    MembershipMetrics,
    lira_leave_one_out,
    lira_score,
    loss_threshold_scores,
    membership_metrics,
)
from fitscope.estimators.subsets import min_models, subset_masks
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.seeding import derive_seed
from fitscope.train.objective import check_regularizers
from fitscope.train.regularizers import Parts

#: Fewest models ``fitscope leak`` trains: LiRA's leave-one-out needs >= 2 "in" and 2 "out" shadows
#: per example on average; 8 models at ratio 0.5 give about 3.5 of each.
MIN_LEAK_MODELS = 8
#: The false positive rate at which ``leak_rate`` counts an example as leaked.
LEAK_FPR = 0.01
ATTACKS = ("LiRA online", "LiRA online (fixed variance)", "LiRA offline", "LiRA offline (fixed variance)",
           "loss threshold")
_TRAINING_FIELDS = ("data", "label_column", "data_seed", "model", "models", "ratio", "epochs", "batch_size",
                    "optimizer", "lr", "weight_decay", "regularizers", "seed", "chunk")


class LeakConfig(BaseModel):
    """Everything that determines a leakage study; stored in run.json. Unknown keys are rejected.

    With ``from_audit`` the models, data and labels come from that audit run and the training
    fields must be left at their defaults; the audit's path is stored absolute.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = "mlp:512x2"
    models: int = Field(64, gt=0, description="subset (shadow) models")
    ratio: float = Field(0.5, gt=0, lt=1, description="subset ratio")
    epochs: int = Field(40, gt=0, description="epochs per model (a fixed budget: the models overfit)")
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.003, gt=0)
    regularizers: Parts = Field(default_factory=list, description="parts of the training objective "
                                "(fitscope regularizers list), e.g. elr:lambda=3+mixup; empty: plain cross-entropy")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0, description="seed of the subsets and the models")
    chunk: int = Field(32, gt=0, description="models per batched ensemble (unit of work)")
    from_audit: str | None = Field(None, description="an audit run directory whose memorization models to attack")

    @field_validator("from_audit")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else str(Path(value).absolute())

    @model_validator(mode="after")
    def _check(self) -> "LeakConfig":
        if self.from_audit is not None:
            # A training field away from its default: given (a run.json repeats the defaults, which is fine).
            given = [name for name in _TRAINING_FIELDS
                     if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)]
            if given:
                raise ValueError(f"--{given[0].replace('_', '-')}: not used with --from-audit (the audit's models, "
                                 "data and labels are attacked as they are)")
            return self
        need = max(MIN_LEAK_MODELS, min_models(self.ratio))
        if self.models < need:
            raise ValueError(f"--models: LiRA needs at least {need} models at ratio {self.ratio:g} (each example "
                             f"needs shadow models trained with and without it); got {self.models}")
        return self


def make_config(**values) -> LeakConfig:
    """Build a :class:`LeakConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(LeakConfig, values)


# --------------------------------------------------------------------------- the models' outputs


@dataclass
class LeakArrays:
    """What the attacks need: membership, logits and labels of K models on n examples."""

    masks: np.ndarray  # (K, n) bool
    train_logits: np.ndarray  # (K, n, C) float16/32
    labels: np.ndarray  # (n,) int64, as the models saw them
    subset_acc: np.ndarray  # (K,)
    test_acc: np.ndarray  # (K,)
    mem: np.ndarray | None = None  # (n,) from an audit's examples.parquet
    extra: pd.DataFrame | None = None  # audit columns to carry over (true_label, corrupted)
    source: str = "trained"


@dataclass(frozen=True)
class LeakUnit:
    """One batched ensemble of the study's models."""

    key: str
    masks: np.ndarray
    seeds: list[int]


def plan_units(cfg: LeakConfig, n: int) -> list[LeakUnit]:
    """The ensembles to train: masks from ``(seed, "leak-masks")``, model seeds from ``(seed, "leak-model", k)``."""
    masks = subset_masks(n, cfg.ratio, cfg.models, seed=derive_seed(cfg.seed, "leak-masks"))
    seeds = [derive_seed(cfg.seed, "leak-model", k) for k in range(cfg.models)]
    return [LeakUnit(f"leak-{c:03d}", masks[s:s + cfg.chunk], seeds[s:s + cfg.chunk])
            for c, s in enumerate(range(0, cfg.models, cfg.chunk))]


def train_unit_task(task: tuple[LeakUnit, LeakConfig, int], *, x_train: np.ndarray, y_train: np.ndarray,
                    x_test: np.ndarray, y_test: np.ndarray,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: ``task = (unit, cfg, n_classes)``, the data arrays shared (read-only).

    Module-level and pure (no globals, no writes to the run): the result follows from the
    arguments alone, so the ``local`` and ``ray`` executors give the same bits for the same
    threads per task. ``progress(model-epochs done)`` is called after every epoch.

    Returns:
        What the unit stores (no per-epoch records): masks, seeds, float16 train logits, final
        subset and test accuracy, and the training seconds.
    """
    from fitscope.train import TrainConfig, train_ensemble

    unit, cfg, n_classes = task
    k = len(unit.seeds)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                     weight_decay=cfg.weight_decay, schedule="constant", early_stop="none", record=False,
                     regularizers=cfg.regularizers)
    t0 = time.perf_counter()
    result = train_ensemble(cfg.model, x_train, y_train, config=tc, seeds=unit.seeds, masks=unit.masks,
                            x_test=x_test, y_test=y_test, progress=tick, n_classes=n_classes)
    return {"masks": unit.masks, "seeds": np.asarray(unit.seeds, np.int64),
            "train_logits": result.train_logits.astype(np.float16),
            "subset_acc": result.train_acc[:, -1].astype(np.float32),
            "test_acc": result.test_acc[:, -1].astype(np.float32),
            "seconds": np.asarray(time.perf_counter() - t0)}


def read_audit(path: str | Path) -> tuple[LeakArrays, dict]:
    """The memorization models of the audit run at ``path``: ``(arrays, the audit's run.json)``.

    Raises:
        RunError: ``path`` is not a run directory.
        DataError: it is not an audit, or its units lack the masks or train logits LiRA needs.
    """
    from fitscope.runs import Run

    try:
        run = Run.open(path)
    except RunError as err:
        raise RunError(f"--from-audit: {err}") from None
    if run.kind != "audit":
        raise DataError(f"--from-audit: {path} is a {run.kind!r} run, expected an audit run (fitscope audit)")
    keys = [k for k in run.unit_keys() if k.startswith("mem-")]
    if not keys:
        raise DataError(f"--from-audit: {path} has no stored memorization models (units/mem-*.npz); "
                        "finish the audit first (fitscope audit ... --resume)")
    parts = []
    for key in keys:
        arrays = run.load_unit(key)
        missing = [name for name in ("masks", "train_logits") if name not in arrays]
        if missing:
            raise DataError(f"--from-audit: unit {key} of {path} lacks {', '.join(missing)}; "
                            "LiRA needs each model's subset mask and train logits")
        parts.append(arrays)
    masks = np.concatenate([p["masks"] for p in parts]).astype(bool)
    logits = np.concatenate([p["train_logits"] for p in parts])
    if logits.ndim != 3 or logits.shape[:2] != masks.shape:
        raise DataError(f"--from-audit: train_logits of shape {logits.shape} do not match masks {masks.shape}")
    path_examples = Path(run.path) / "examples.parquet"
    if not path_examples.is_file():
        raise DataError(f"--from-audit: {path} has no examples.parquet (the audit did not finish)")
    table = pd.read_parquet(path_examples)
    if "label" not in table.columns or len(table) != masks.shape[1]:
        raise DataError(f"--from-audit: {path_examples} does not hold one 'label' per example "
                        f"({len(table)} rows, {masks.shape[1]} examples in the units)")
    nan = np.full(masks.shape[0], np.nan, np.float32)
    extra = table[[c for c in ("true_label", "corrupted") if c in table.columns]]
    arrays = LeakArrays(
        masks=masks, train_logits=logits, labels=table["label"].to_numpy(np.int64),
        subset_acc=np.concatenate([p.get("subset_acc", nan[: len(p["masks"])]) for p in parts]),
        test_acc=np.concatenate([p.get("test_acc", nan[: len(p["masks"])]) for p in parts]),
        mem=table["mem"].to_numpy(np.float64) if "mem" in table.columns else None,
        extra=extra if len(extra.columns) else None, source=f"audit {run.id}",
    )
    return arrays, run.meta


# --------------------------------------------------------------------------- estimation


@dataclass
class LeakOutcome:
    """What :func:`estimate` computed."""

    examples: pd.DataFrame  # one row per training example (leak.parquet)
    metrics: pd.DataFrame  # one row per attack
    roc: dict  # attack -> (fpr, tpr)
    summary: dict
    leak_attack: str = ""
    score_in: list = field(default_factory=list)  # for the report: scores of the top leakers, in and out
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def attack_scores(masks: np.ndarray, train_logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every attack's ``(K, n)`` scores, leave one model out (see :data:`ATTACKS`)."""
    scores = lira_score(train_logits, labels)
    return {
        "LiRA online": lira_leave_one_out(scores, masks, method="online"),
        "LiRA online (fixed variance)": lira_leave_one_out(scores, masks, method="online", global_variance=True),
        "LiRA offline": lira_leave_one_out(scores, masks, method="offline"),
        "LiRA offline (fixed variance)": lira_leave_one_out(scores, masks, method="offline", global_variance=True),
        "loss threshold": loss_threshold_scores(train_logits, labels),
    }


def _group_stats(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = keep.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(keep, values, 0).sum(0) / count
        var = np.where(keep, (values - mean) ** 2, 0).sum(0) / (count - 1)
    return np.where(count > 0, mean, np.nan), np.sqrt(np.where(count > 1, var, np.nan))


def estimate(arrays: LeakArrays) -> LeakOutcome:
    """Attacks, metrics and the per-example table from the models' outputs (no training)."""
    from fitscope.estimators import memorization_scores

    masks, labels = arrays.masks, arrays.labels
    k, n = masks.shape
    if k < max(MIN_MODELS, MIN_LEAK_MODELS):
        raise ConfigError(f"models: LiRA needs at least {max(MIN_MODELS, MIN_LEAK_MODELS)} models with and "
                          f"without each example; the source has {k}")
    attacks = attack_scores(masks, arrays.train_logits, labels)
    metrics: dict[str, MembershipMetrics] = {name: membership_metrics(s, masks) for name, s in attacks.items()}
    lira_names = [a for a in ATTACKS if a.startswith("LiRA")]
    best = max(lira_names, key=lambda a: (metrics[a].tpr_at_1pct, metrics[a].auc))
    flagged = attacks[best] >= metrics[best].threshold_at(LEAK_FPR)
    n_in = masks.sum(0)
    scores = lira_score(arrays.train_logits, labels)
    in_mean, in_std = _group_stats(scores, masks)
    out_mean, out_std = _group_stats(scores, ~masks)
    with np.errstate(invalid="ignore", divide="ignore"):
        leak_rate = np.where(n_in > 0, (flagged & masks).sum(0) / n_in, np.nan)
        false_rate = (flagged & ~masks).sum(0) / np.maximum((~masks).sum(0), 1)
    attack_in, _ = _group_stats(np.nan_to_num(attacks[best], nan=0.0), masks & np.isfinite(attacks[best]))
    if arrays.mem is not None:
        mem, mem_source = arrays.mem, "audit examples.parquet"
    else:
        correct = arrays.train_logits.argmax(-1) == labels
        mem, mem_source = memorization_scores(correct, masks).mem, "these models (Feldman-Zhang)"
    examples = pd.DataFrame({"index": np.arange(n, dtype=np.int64), "label": labels.astype(np.int64)})
    if arrays.extra is not None:
        for column in arrays.extra.columns:
            examples[column] = arrays.extra[column].to_numpy()
    examples["n_in"] = n_in.astype(np.int64)
    examples["n_out"] = (k - n_in).astype(np.int64)
    examples["lira_score_in_mean"] = in_mean
    examples["lira_score_in_std"] = in_std
    examples["lira_score_out_mean"] = out_mean
    examples["lira_score_out_std"] = out_std
    examples["lira_gap"] = in_mean - out_mean
    examples["attack_in_mean"] = attack_in
    examples["leak_rate"] = leak_rate
    examples["false_alarm_rate"] = false_rate
    examples["mem"] = mem
    rows = [{"attack": name, **m.row()} for name, m in metrics.items()]
    table = pd.DataFrame(rows)
    base = metrics["loss threshold"]
    summary = {
        "models": int(k),
        "examples": int(n),
        "subset train accuracy": float(np.nanmean(arrays.subset_acc)),
        "test accuracy": float(np.nanmean(arrays.test_acc)),
        "best LiRA attack": best,
        "LiRA AUC": metrics[best].auc,
        "LiRA TPR at 0.1% FPR": metrics[best].tpr_at_0_1pct,
        "LiRA TPR at 1% FPR": metrics[best].tpr_at_1pct,
        "loss threshold AUC": base.auc,
        "loss threshold TPR at 1% FPR": base.tpr_at_1pct,
        "examples leaked at 1% FPR (leak_rate >= 0.5)": int(np.nansum(leak_rate >= 0.5)),
        "memorization source": mem_source,
    }
    ok = np.isfinite(mem) & np.isfinite(leak_rate)
    if ok.sum() > 2:
        from scipy.stats import spearmanr

        summary["leak_rate vs mem Spearman rho"] = float(spearmanr(leak_rate[ok], mem[ok]).statistic)
    roc = {name: (m.fpr, m.tpr) for name, m in metrics.items()}
    top = np.argsort(-np.nan_to_num(examples["lira_gap"].to_numpy(), nan=-np.inf), kind="stable")[:4]
    score_in = [(int(i), scores[masks[:, i], i], scores[~masks[:, i], i]) for i in top]
    return LeakOutcome(examples=examples, metrics=table, roc=roc, summary=summary, leak_attack=best,
                       score_in=score_in)


# --------------------------------------------------------------------------- the study


@dataclass
class LeakState:
    """What ``prepare`` found: the data, the model spec, and the audit's arrays (``from_audit``) or None."""

    data: object  # fitscope.data.Dataset
    model: str
    audit: LeakArrays | None = None


def prepare(cfg: LeakConfig) -> Prepared:
    """Load the data (or read the audit run and its data), check them; nothing is written yet."""
    from fitscope.data import load
    from fitscope.data.support import check_supports_study
    from fitscope.models import check_input_shape, parse_spec

    if cfg.from_audit is not None:
        arrays, audit_meta = read_audit(cfg.from_audit)
        acfg = audit_meta.get("config", {})
        data = load(acfg.get("data", "digits"), label_column=acfg.get("label_column"),
                    seed=int(acfg.get("data_seed", 0)))
        if len(data.y_train) != arrays.masks.shape[1]:
            raise DataError(f"--from-audit: the audit's data {acfg.get('data')!r} now has {len(data.y_train)} "
                            f"training examples, its models {arrays.masks.shape[1]}")
        if arrays.masks.shape[0] < MIN_LEAK_MODELS:
            raise ConfigError(f"--from-audit: LiRA needs at least {MIN_LEAK_MODELS} models, the audit stored "
                              f"{arrays.masks.shape[0]}")
        return Prepared(seeds={"audit_id": audit_meta.get("id"), "audit_seeds": audit_meta.get("seeds", {})},
                        state=LeakState(data, acfg.get("model", "?"), arrays))
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)  # a bad --model fails before anything is written
    check_regularizers(cfg.model, data.input_shape, data.n_classes, cfg.regularizers, epochs=cfg.epochs)
    # every example must be in some subsets and out of others
    check_supports_study(data, study="the leakage study", min_per_class=2)
    plan_units(cfg, len(data.y_train))
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed},
        shared={"x_train": data.x_train, "y_train": data.y_train.astype(np.int64), "x_test": data.x_test,
                "y_test": data.y_test},
        state=LeakState(data, cfg.model),
    )


def plan(cfg: LeakConfig, prepared: Prepared) -> list[Unit]:
    """One unit per chunk of models (:func:`plan_units`), trained by :func:`train_unit_task`; none with ``from_audit``."""
    state: LeakState = prepared.state
    if state.audit is not None:
        return []
    return [Unit(u.key, train_unit_task, (u, cfg, state.data.n_classes), work=len(u.seeds) * cfg.epochs,
                 info=dict(models=len(u.seeds)))
            for u in plan_units(cfg, len(state.data.y_train))]


def estimate_study(cfg: LeakConfig, prepared: Prepared, units) -> Outcome:
    """The attacks on the stored units (or the audit's models): the ``leak`` and ``metrics`` tables."""
    state: LeakState = prepared.state
    arrays = state.audit
    if arrays is None:
        planned = plan_units(cfg, len(state.data.y_train))
        stored = {u.key: units[u.key] for u in planned}
        for u in planned:
            if not np.array_equal(stored[u.key].get("masks"), u.masks):
                raise RunError(f"unit {u.key} was trained on other subsets than this config's; use another --out")

        def cat(name):
            return np.concatenate([stored[u.key][name] for u in planned])

        arrays = LeakArrays(masks=cat("masks"), train_logits=cat("train_logits"),
                            labels=state.data.y_train.astype(np.int64), subset_acc=cat("subset_acc"),
                            test_acc=cat("test_acc"))
    outcome = estimate(arrays)
    outcome.summary["source"] = arrays.source
    return Outcome(tables={"leak": outcome.examples, "metrics": outcome.metrics}, summary=outcome.summary,
                   detail=outcome)


def report(cfg: LeakConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.leak.report_context`)."""
    from fitscope.report import leak as figures

    state: LeakState = prepared.state
    detail: LeakOutcome = outcome.detail
    detail.trained_units, detail.reused_units = list(outcome.trained), list(outcome.reused)
    return figures.report_context(state.data, outcome.detail, model=state.model, from_audit=cfg.from_audit)


STUDY = Study(kind="leak", command="fitscope leak", config=LeakConfig, prepare=prepare, plan=plan,
              estimate=estimate_study, report=report, template="leak.html.j2",
              work_name="model-epochs")


def leak(cfg: LeakConfig, out: str | Path, *, resume: bool = False, **placement):
    """The whole study: validate, train (or read the audit), attack, write tables and ``report.html``.

    Bad input (data, model spec, an audit without the arrays LiRA needs) fails before the run
    directory is made.

    Args:
        cfg: the study configuration.
        out: the run directory.
        resume: continue the run in ``out`` (only missing chunks train).
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`LeakOutcome`
        (``trained_units`` / ``reused_units`` say what this call trained).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: LeakOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = list(result.trained), list(result.reused)
    return result.run, detail
