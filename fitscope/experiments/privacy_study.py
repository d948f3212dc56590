"""The privacy trade-off study: test accuracy against measured leakage for each defense.

Reads like section 6 of METHODS.md. For each defense setting (no defense,
label DP, DP-SGD, InstaHide, pruning, MID; see
:mod:`fitscope.experiments.privacy_defenses`):

1. train K shadow models on random halves of the training set (every example
   in some models and out of others, the audit's :func:`subset_masks`), under
   the defense, keeping every model's logits on every training row;
2. attack them with LiRA (online, leave one model out: each model in turn is
   the target, the others its shadows) and with the loss-threshold baseline:
   AUC and TPR at 0.1% / 1% FPR;
3. run the canary audit: plant ``canaries`` random-label examples, train one
   model under the defense on all rows, guess the canary labels, and turn the
   guessing accuracy into an empirical lower bound on epsilon (Clopper-Pearson)
   next to the epsilon the defense claims.

Each defense is one unit of the run (stored when it finishes; ``resume=True``
skips finished ones). Output: ``results.parquet`` (one row per defense),
``roc.parquet`` (LiRA ROC curves) and ``report.html`` with the trade-off plot.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.privacy_defenses import Defense, Settings, Trained, parse_defense, train_defended
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed

ATTACKS = ("instahide", "pruning-vs-noise", "mid-inversion")
DEFAULT_DEFENSES = ["none", "label-dp:1", "label-dp:4", "dp-sgd:1", "dp-sgd:4", "instahide:2", "pruning:0.9",
                    "mid:0.01"]


class PrivacyStudyConfig(BaseModel):
    """Everything that determines a privacy study; stored in run.json."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = 0
    # One hidden layer of 64: DP-SGD's accuracy on 1437 digits falls fast with width (bench/dp_sgd.py:
    # eps 3 -> 0.87 with mlp:128x2, 0.92 with mlp:64x1), and the undefended model still overfits.
    model: str = "mlp:64x1"
    defenses: list[str] = Field(default_factory=lambda: list(DEFAULT_DEFENSES))
    shadow_models: int = Field(16, ge=4, description="models per defense (LiRA: each is target once)")
    ratio: float = Field(0.5, gt=0, lt=1, description="share of the training rows each shadow model sees")
    epochs: int = Field(40, gt=0, description="epochs of the non-DP trainers (long enough to overfit)")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate (no defense, label DP, InstaHide)")
    batch_size: int = Field(64, gt=0)
    dp_epochs: int = Field(30, gt=0)
    dp_lr: float = Field(0.5, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    canaries: int = Field(100, ge=0, description="canaries planted per defense (0: no canary audit)")
    attacks: list[Literal["instahide", "pruning-vs-noise", "mid-inversion"]] = Field(
        default_factory=lambda: list(ATTACKS),
        description="the defense-specific studies beside the trade-off: InstaHide reconstruction (k = 2, 4, 6, "
                    "with and without the sign mask), pruning vs activation noise at matched accuracy, MID vs a "
                    "model-inversion attack")
    attack_images: int = Field(100, ge=10, description="private images the InstaHide attack encodes")
    seed: int = 0

    @field_validator("defenses")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one defense")
        names = [parse_defense(v).name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"expected each defense once; got {value}")
        return names

    @model_validator(mode="after")
    def _enough_shadows(self) -> "PrivacyStudyConfig":
        # LiRA's leave-one-model-out evaluation fits "in" and "out" Gaussians from the other K - 1
        # models; fitscope.estimators.membership needs >= 2 of each per example on average.
        k = self.shadow_models - 1
        if k * self.ratio < 2 or k * (1 - self.ratio) < 2:
            need = math.ceil(2 / min(self.ratio, 1 - self.ratio)) + 1
            raise ValueError(f"--shadow-models: LiRA needs at least {need} models at ratio {self.ratio:g} "
                             f"(2 with and 2 without each example besides the target); got {self.shadow_models}")
        return self

    @classmethod
    def quick(cls, **overrides) -> "PrivacyStudyConfig":
        """A small study for a first look (about 5 minutes on 2 cores): 8 models, fewer defenses."""
        base = dict(shadow_models=8, epochs=30, dp_epochs=20, canaries=60, attack_images=40,
                    defenses=["none", "label-dp:1", "dp-sgd:1", "instahide:2", "pruning:0.9", "mid:0.01"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return make_config(**base)


def make_config(**values) -> PrivacyStudyConfig:
    """Build a :class:`PrivacyStudyConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(PrivacyStudyConfig, "privacy-study", values)


@dataclass
class PrivacyOutcome:
    """What :func:`privacy_study` computed."""

    results: pd.DataFrame  # one row per defense
    roc: pd.DataFrame  # defense, fpr, tpr (LiRA online)
    attacks: dict  # attack name -> its table (DataFrame)
    trained_units: list[str]
    reused_units: list[str]


def _settings(cfg: PrivacyStudyConfig, data: Dataset) -> Settings:
    lo = float(min(data.x_train.min(), data.x_test.min()))
    hi = float(max(data.x_train.max(), data.x_test.max()))
    return Settings(spec=cfg.model, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, dp_epochs=cfg.dp_epochs,
                    dp_lr=cfg.dp_lr, delta=cfg.delta, max_grad_norm=cfg.max_grad_norm, n_classes=data.n_classes,
                    input_range=(lo, hi if hi > lo else lo + 1.0))


def _unit_key(defense: Defense) -> str:
    return "defense-" + defense.name.replace(":", "-")


def run_defense(defense: Defense, cfg: PrivacyStudyConfig, data: Dataset, masks: np.ndarray,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Train the shadow models and the canary model of one defense; the arrays a unit stores."""
    from fitscope.privacy.canary import plant_canaries, guess_canaries

    settings = _settings(cfg, data)
    seeds = [derive_seed(cfg.seed, defense.name, "model", k) for k in range(len(masks))]
    t0 = time.perf_counter()
    shadows = train_defended(defense, data.x_train, data.y_train, masks, seeds, settings, data.x_test, data.y_test,
                             progress=progress)
    out = {"masks": masks, "logits": shadows.logits.astype(np.float16), "test_acc": shadows.test_acc,
           "spent_eps": np.asarray(shadows.spent_eps), "canary_m": np.asarray(cfg.canaries),
           "canary_correct": np.asarray(-1)}
    if cfg.canaries:
        canaries = plant_canaries(data.y_train, cfg.canaries, data.n_classes, derive_seed(cfg.seed, "canaries"))
        everything = np.ones((1, len(data.y_train)), bool)
        trained: Trained = train_defended(defense, data.x_train, canaries.y, everything,
                                          [derive_seed(cfg.seed, defense.name, "canary-model")], settings,
                                          data.x_test, data.y_test)
        out["canary_correct"] = np.asarray(int((guess_canaries(trained.logits[0], canaries) == canaries.labels).sum()))
    out["seconds"] = np.asarray(time.perf_counter() - t0)
    return out


def leakage_row(defense: Defense, arrays: dict[str, np.ndarray], labels: np.ndarray, n_classes: int,
                confidence: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """The results-table row of one defense and its LiRA ROC curve, from a unit's arrays."""
    from fitscope.estimators.membership import (lira_leave_one_out, lira_score, loss_threshold_scores,
                                                membership_metrics)
    from fitscope.privacy.canary import canary_bound

    logits = arrays["logits"].astype(np.float32)
    member = arrays["masks"].astype(bool)
    # fixed (pooled) variance: with tens of shadow models it beats per-example variances (Carlini et al.;
    # bench/lira.py: TPR@0.1% 2.98% vs 1.51% with 32 models)
    lira = membership_metrics(lira_leave_one_out(lira_score(logits, labels), member, method="online",
                                                 global_variance=True), member)
    loss = membership_metrics(loss_threshold_scores(logits, labels), member)
    row = dict(defense=defense.name, label=defense.label, test_acc=float(np.mean(arrays["test_acc"])),
               test_acc_std=float(np.std(arrays["test_acc"])), lira_auc=lira.auc,
               lira_tpr_at_0_1pct=lira.tpr_at_0_1pct, lira_tpr_at_1pct=lira.tpr_at_1pct, loss_auc=loss.auc,
               loss_tpr_at_1pct=loss.tpr_at_1pct, claimed_eps=defense.claimed_eps,
               spent_eps=float(arrays["spent_eps"]), seconds=float(arrays["seconds"]))
    m = int(arrays["canary_m"])
    if m > 0 and int(arrays["canary_correct"]) >= 0:
        audit = canary_bound(int(arrays["canary_correct"]), m, n_classes, confidence=confidence,
                             claimed_eps=defense.claimed_eps)
        row.update(canaries=m, canary_accuracy=audit.accuracy, eps_lower_bound=audit.eps_lower)
    else:
        row.update(canaries=0, canary_accuracy=math.nan, eps_lower_bound=math.nan)
    roc = pd.DataFrame({"defense": defense.name, "label": defense.label, "fpr": lira.fpr, "tpr": lira.tpr})
    return row, roc


def run_attack(name: str, cfg: PrivacyStudyConfig, data: Dataset) -> pd.DataFrame:
    """One defense-specific study as a table (wiring of :mod:`fitscope.privacy`'s study functions)."""
    seed = derive_seed(cfg.seed, "attack", name)
    if name == "instahide":
        from fitscope.privacy.instahide_attack import instahide_study

        lo = float(min(data.x_train.min(), data.x_test.min()))
        hi = float(max(data.x_train.max(), data.x_test.max()))
        return instahide_study(data.x_train, data.y_train, public=data.x_test, seed=seed,
                               n_private=min(cfg.attack_images, len(data.y_train)), input_range=(lo, hi))
    if name == "pruning-vs-noise":
        from fitscope.privacy.pruning import pruning_vs_noise

        return pruning_vs_noise(data.x_train, data.y_train, data.x_test, data.y_test, spec=cfg.model,
                                fractions=(0.5, 0.9, 0.98, 0.99), epochs=cfg.epochs,
                                shadow_models=cfg.shadow_models, seed=seed).to_frame()
    from fitscope.privacy.mid import mid_tradeoff

    return mid_tradeoff(data.x_train, data.y_train, data.x_test, data.y_test, betas=(0.0, 0.003, 0.01, 0.1, 1.0),
                        spec=cfg.model, epochs=cfg.epochs, seed=seed).to_frame()


def run_privacy_study(cfg: PrivacyStudyConfig, run, *, data: Dataset,
                      on_defense_start: Callable[[str, int], None] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> PrivacyOutcome:
    """Train (or reuse) every defense's unit in ``run`` and compute the leakage table."""
    from fitscope.experiments.audit import subset_masks

    masks = subset_masks(len(data.y_train), cfg.ratio, cfg.shadow_models, seed=derive_seed(cfg.seed, "masks"))
    rows, rocs, trained, reused = [], [], [], []
    for name in cfg.defenses:
        defense = parse_defense(name)
        key = _unit_key(defense)
        if run.has_unit(key):
            arrays = run.load_unit(key)
            reused.append(key)
        else:
            if on_defense_start is not None:
                on_defense_start(defense.label, cfg.shadow_models)
            with run.timer(f"train {defense.name}"):
                arrays = run_defense(defense, cfg, data, masks, progress=progress)
            run.save_unit(key, arrays, info=dict(defense=defense.name, seconds=round(float(arrays["seconds"]), 3)))
            trained.append(key)
        row, roc = leakage_row(defense, arrays, data.y_train, data.n_classes)
        rows.append(row)
        rocs.append(roc)
    attacks = {}
    for name in cfg.attacks:
        if name == "instahide" and data.kind != "image":
            continue  # the reconstruction attack and SSIM work on images; the note in the report says so
        key = f"attack-{name}"
        if run.has_unit(key):
            attacks[name] = pd.read_json(io.StringIO(str(run.load_unit(key)["table"])), orient="split")
            reused.append(key)
            continue
        if on_defense_start is not None:
            on_defense_start(f"attack: {name}", 1)
        with run.timer(f"attack {name}"):
            attacks[name] = run_attack(name, cfg, data)
        run.save_unit(key, {"table": np.asarray(attacks[name].to_json(orient="split"))}, info=dict(attack=name))
        trained.append(key)
        if progress is not None:
            progress(1, 1)
    return PrivacyOutcome(pd.DataFrame(rows), pd.concat(rocs, ignore_index=True), attacks, trained, reused)


def privacy_study(cfg: PrivacyStudyConfig, out: str | Path, *, resume: bool = False,
                  on_defense_start: Callable[[str, int], None] | None = None,
                  progress: Callable[[int, int], None] | None = None):
    """The whole study: validate, train every defense (or resume), write tables and ``report.html``.

    Data and model spec are checked before the run directory is made, so bad
    input leaves nothing behind.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`PrivacyOutcome`.
    """
    from fitscope.report import privacy as figures
    from fitscope.report import write_report
    from fitscope.runs import Run

    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    if data.n_classes < 3 and cfg.canaries:
        raise ConfigError(f"--canaries: the canary audit needs at least 3 classes, {data.name} has "
                          f"{data.n_classes}; pass --canaries 0")
    if cfg.canaries > len(data.y_train):
        raise ConfigError(f"--canaries: expected at most the {len(data.y_train)} training rows; got {cfg.canaries}")
    seeds = {"data_seed": cfg.data_seed, "seed": cfg.seed}
    with Run.create(out, kind="privacy-study", config=cfg.model_dump(), seeds=seeds, resume=resume) as run:
        outcome = run_privacy_study(cfg, run, data=data, on_defense_start=on_defense_start, progress=progress)
        run.write_table("results", outcome.results)
        run.write_table("roc", outcome.roc)
        for name, table in outcome.attacks.items():
            run.write_table(f"attack_{name.replace('-', '_')}", table)
        base = outcome.results.iloc[0]
        run.finish(summary={f"{r.defense} test_acc": r.test_acc for r in outcome.results.itertuples()}
                   | {f"{r.defense} lira_tpr@1%": r.lira_tpr_at_1pct for r in outcome.results.itertuples()})
        with run.timer("report"):
            context = dict(
                title=f"Privacy study: {cfg.model} on {data.name}",
                data=dict(name=data.name, n_train=len(data.y_train), n_test=len(data.y_test),
                          n_classes=data.n_classes),
                cfg=cfg.model_dump(),
                results_table=figures.results_table(outcome.results),
                tradeoff_png=figures.tradeoff_figure(outcome.results),
                roc_png=figures.roc_figure(outcome.roc),
                canary_png=figures.canary_figure(outcome.results) if cfg.canaries else None,
                attacks={name: figures.attack_table(name, table) for name, table in outcome.attacks.items()},
                skipped_attacks=[a for a in cfg.attacks if a not in outcome.attacks],
                baseline=base.to_dict(),
                trained_units=outcome.trained_units,
                reused_units=outcome.reused_units,
            )
            write_report(run, "privacy.html.j2", context)
    return run, outcome
