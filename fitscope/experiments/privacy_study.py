"""The privacy trade-off study: test accuracy against measured leakage for each defense.

Reads like section 6 of METHODS.md. For each defense setting (no defense,
label DP, DP-SGD, InstaHide, pruning, MID; see
:mod:`fitscope.experiments.privacy_defenses`):

1. train K shadow models on random halves of the training set (every example
   in some models and out of others: :func:`fitscope.estimators.subsets.subset_masks`),
   under the defense, keeping every model's logits on every training row;
2. attack them with LiRA (online, leave one model out: each model in turn is
   the target, the others its shadows) and with the loss-threshold baseline:
   AUC and TPR at 0.1% / 1% FPR;
3. run the canary audit: plant ``canaries`` random-label examples, train one
   model under the defense on all rows, guess the canary labels, and turn the
   guessing accuracy into an empirical lower bound on epsilon (Clopper-Pearson)
   next to the epsilon the defense claims.

Beside the trade-off, the defense-specific studies of :mod:`fitscope.privacy`
(``attacks``): the InstaHide reconstruction attack, pruning against activation
noise at matched accuracy, and MID against model inversion.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``), which owns the
run directory, ``--resume``, the executor and progress. Units of work, each
computed by the pure module-level :func:`privacy_unit` with the data arrays
shared:

- ``defense-<name>``: the K shadow models of one defense (progress per epoch:
  K x epochs model-epochs);
- ``canary-<name>``: the canary model of one defense (with ``canaries > 0``);
- ``attack-instahide-k<k>-<mask|nomask>``: the InstaHide attack at one k and
  sign-mask setting (images only);
- ``attack-pruning-vs-noise``: pruning vs noise (one unit: every fraction is
  measured on the same trained models);
- ``attack-mid-inversion-beta<beta>``: MID vs model inversion at one beta.

Output: ``results.parquet`` (one row per defense), ``roc.parquet`` (LiRA ROC
curves), ``attack_<name>.parquet`` per attack, ``seconds.json`` (the training
seconds of every unit: kept out of the tables, which are the same bits on any
executor) and ``report.html`` with the trade-off plot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.estimators.subsets import subset_masks
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.privacy_defenses import Defense, Settings, defense_epochs, parse_defense, train_defended
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed

ATTACKS = ("instahide", "pruning-vs-noise", "mid-inversion")
DEFAULT_DEFENSES = ["none", "label-dp:1", "label-dp:4", "dp-sgd:1", "dp-sgd:4", "instahide:2", "pruning:0.9",
                    "mid:0.01"]
#: The settings of the defense-specific studies (each setting one unit, except the pruning fractions,
#: which are measured on the same trained models).
INSTAHIDE_KS = (2, 4, 6)
INSTAHIDE_MASKS = (False, True)
PRUNING_FRACTIONS = (0.5, 0.9, 0.98, 0.99)
MID_BETAS = (0.0, 0.003, 0.01, 0.1, 1.0)
#: Epochs a MID unit trains besides the MID model: the evaluation classifier (40) and the attacker's decoder
#: (150), the defaults of :func:`fitscope.privacy.mid.mid_tradeoff`; they weigh the unit in the progress bar.
MID_OTHER_EPOCHS = 40 + 150


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
    # ``shadow_models`` is read too: runs stored before the flag became --models (one word for a count of models)
    models: int = Field(16, ge=4, validation_alias=AliasChoices("models", "shadow_models"),
                        description="models per defense (LiRA: each is target once)")
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

    @field_validator("attacks")
    @classmethod
    def _unique_attacks(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _enough_shadows(self) -> "PrivacyStudyConfig":
        # LiRA's leave-one-model-out evaluation fits "in" and "out" Gaussians from the other K - 1
        # models; fitscope.estimators.membership needs >= 2 of each per example on average.
        k = self.models - 1
        if k * self.ratio < 2 or k * (1 - self.ratio) < 2:
            need = math.ceil(2 / min(self.ratio, 1 - self.ratio)) + 1
            raise ValueError(f"--models: LiRA needs at least {need} models at ratio {self.ratio:g} "
                             f"(2 with and 2 without each example besides the target); got {self.models}")
        return self

    @classmethod
    def quick(cls, **overrides) -> "PrivacyStudyConfig":
        """The ``--quick`` setting (:data:`QUICK`) with ``overrides`` (None values ignored) on top."""
        return make_config(**{**QUICK, **{k: v for k, v in overrides.items() if v is not None}})


#: ``--quick``: 8 shadow models per defense, 30 epochs (DP-SGD 20), 60 canaries, 40 InstaHide attack
#: images and six defenses (about 5 minutes on 2 cores).
QUICK = dict(models=8, epochs=30, dp_epochs=20, canaries=60, attack_images=40,
             defenses=["none", "label-dp:1", "dp-sgd:1", "instahide:2", "pruning:0.9", "mid:0.01"])


def make_config(**values) -> PrivacyStudyConfig:
    """Build a :class:`PrivacyStudyConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(PrivacyStudyConfig, values)


@dataclass
class PrivacyOutcome:
    """What :func:`privacy_study` computed.

    Attributes:
        results: one row per defense (accuracy, LiRA and loss-threshold leakage, claimed and spent
            epsilon, canary audit).
        roc: defense, label, fpr, tpr: the LiRA (online) ROC curve of every defense.
        attacks: attack name -> its table.
        seconds: unit key -> its training seconds (kept out of the tables).
        trained_units / reused_units: units trained by this attempt / found stored (set before the report).
    """

    results: pd.DataFrame
    roc: pd.DataFrame
    attacks: dict
    seconds: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def settings_of(cfg: PrivacyStudyConfig, data: Dataset) -> Settings:
    """How every defense of the study trains (:class:`Settings`), from the config and the data's value range."""
    lo, hi = _input_range(data)
    return Settings(spec=cfg.model, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, dp_epochs=cfg.dp_epochs,
                    dp_lr=cfg.dp_lr, delta=cfg.delta, max_grad_norm=cfg.max_grad_norm, n_classes=data.n_classes,
                    input_range=(lo, hi if hi > lo else lo + 1.0))


def _input_range(data: Dataset) -> tuple[float, float]:
    return (float(min(data.x_train.min(), data.x_test.min())), float(max(data.x_train.max(), data.x_test.max())))


def _safe(name: str) -> str:
    return name.replace(":", "-")


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class PrivacyTask:
    """The input of one unit (see the module docstring for the parts).

    Attributes:
        part: ``"shadows"``, ``"canary"`` or ``"attack"``.
        name: the defense name (``"dp-sgd:1"``) or the attack name.
        settings: the defenses' training settings.
        seeds: the model seeds (shadows: K; canary: one).
        attack: the attack's own keyword arguments (one setting of it).
    """

    part: Literal["shadows", "canary", "attack"]
    name: str
    settings: Settings
    seeds: tuple[int, ...] = ()
    attack: dict = field(default_factory=dict)


def plan_units(cfg: PrivacyStudyConfig, data: Dataset) -> list[tuple[str, PrivacyTask, int]]:
    """``(unit key, task, work)`` of every unit, defenses first (shadows, then canary), then the attacks.

    ``work`` counts the model-epochs the unit trains (an InstaHide attack setting trains none: 1).
    """
    settings = settings_of(cfg, data)
    out: list[tuple[str, PrivacyTask, int]] = []
    for name in cfg.defenses:
        defense = parse_defense(name)
        epochs = defense_epochs(defense, settings)
        seeds = tuple(derive_seed(cfg.seed, defense.name, "model", k) for k in range(cfg.models))
        out.append((f"defense-{_safe(defense.name)}", PrivacyTask("shadows", defense.name, settings, seeds),
                    cfg.models * epochs))
        if cfg.canaries:
            out.append((f"canary-{_safe(defense.name)}", PrivacyTask(
                "canary", defense.name, settings, (derive_seed(cfg.seed, defense.name, "canary-model"),)), epochs))
    for name in run_attacks(cfg, data):
        seed = derive_seed(cfg.seed, "attack", name)
        if name == "instahide":
            for k in INSTAHIDE_KS:
                for mask in INSTAHIDE_MASKS:
                    kwargs = dict(seed=seed, k=k, mask=mask, n_private=min(cfg.attack_images, len(data.y_train)),
                                  input_range=_input_range(data))
                    out.append((f"attack-instahide-k{k}-{'mask' if mask else 'nomask'}",
                                PrivacyTask("attack", name, settings, attack=kwargs), 1))
        elif name == "pruning-vs-noise":
            kwargs = dict(seed=seed, fractions=PRUNING_FRACTIONS, models=cfg.models)
            # the target and K shadow models, trained once for every fraction
            out.append(("attack-pruning-vs-noise", PrivacyTask("attack", name, settings, attack=kwargs),
                         (1 + cfg.models) * cfg.epochs))
        else:
            for beta in MID_BETAS:  # the MID model, the evaluator (40 epochs) and the attacker's decoder (150)
                out.append((f"attack-mid-inversion-beta{beta:g}",
                            PrivacyTask("attack", name, settings, attack=dict(seed=seed, beta=beta)),
                            cfg.epochs + MID_OTHER_EPOCHS))
    return out


def run_attacks(cfg: PrivacyStudyConfig, data: Dataset) -> list[str]:
    """The attacks of ``cfg`` that run on ``data`` (the InstaHide reconstruction needs images)."""
    return [a for a in cfg.attacks if a != "instahide" or data.kind == "image"]


def privacy_unit(task: PrivacyTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray, masks: np.ndarray, canary_y: np.ndarray,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: train the shadow models, the canary model, or run one attack setting.

    Module-level and pure (what it returns follows from its arguments alone), so the ``local`` and
    ``ray`` executors give the same bits for the same threads per task. The shared arrays: the data,
    ``masks`` ``(K, n)`` (the shadow models' subsets) and ``canary_y`` ``(n,)`` (the training labels
    with the canaries planted). ``progress(model-epochs done)`` is called after every epoch.

    Returns:
        shadows: ``logits`` ``(K, n, C)`` float16, ``test_acc`` ``(K,)``, ``spent_eps``, ``seconds``;
        canary: ``logits`` ``(n, C)`` float32 of the canary model, ``seconds``;
        attack: the table's columns (``columns`` and ``col:<name>``), ``seconds``.
    """
    t0 = time.perf_counter()
    if task.part == "attack":
        table = _run_attack(task.name, task.attack, task.settings, x_train, y_train, x_test, y_test)
        return {**frame_to_arrays(table), "seconds": np.asarray(time.perf_counter() - t0)}
    defense = parse_defense(task.name)
    if task.part == "shadows":
        trained = train_defended(defense, x_train, y_train, masks, task.settings, x_test, y_test,
                                 seeds=task.seeds, progress=progress)
        return {"logits": trained.logits.astype(np.float16), "test_acc": trained.test_acc,
                "spent_eps": np.asarray(trained.spent_eps), "seconds": np.asarray(time.perf_counter() - t0)}
    everything = np.ones((1, len(canary_y)), bool)
    trained = train_defended(defense, x_train, canary_y, everything, task.settings, x_test, y_test,
                             seeds=task.seeds, progress=progress)
    return {"logits": trained.logits[0].astype(np.float32), "seconds": np.asarray(time.perf_counter() - t0)}


def _run_attack(name: str, kw: dict, s: Settings, x, y, x_test, y_test) -> pd.DataFrame:
    """One setting of a defense-specific study as a table (wiring of :mod:`fitscope.privacy`'s functions)."""
    if name == "instahide":
        from fitscope.privacy.instahide_attack import instahide_study

        return instahide_study(x, y, public=x_test, seed=kw["seed"], ks=(kw["k"],), masks=(kw["mask"],),
                               n_private=kw["n_private"], input_range=tuple(kw["input_range"]))
    if name == "pruning-vs-noise":
        from fitscope.privacy.pruning import pruning_vs_noise

        return pruning_vs_noise(x, y, x_test, y_test, spec=s.spec, fractions=kw["fractions"], epochs=s.epochs,
                                models=kw["models"], seed=kw["seed"]).to_frame()
    from fitscope.privacy.mid import mid_tradeoff

    return mid_tradeoff(x, y, x_test, y_test, betas=(kw["beta"],), spec=s.spec, epochs=s.epochs,
                        seed=kw["seed"]).to_frame()


def frame_to_arrays(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """A table as arrays a unit can store: ``columns`` (the names, in order) and ``col:<name>`` per column."""
    out = {"columns": np.asarray([str(c) for c in table.columns])}
    for column in table.columns:
        values = table[column].to_numpy()
        out[f"col:{column}"] = values.astype(str) if values.dtype == object else values
    return out


def arrays_to_frame(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """The table :func:`frame_to_arrays` stored."""
    return pd.DataFrame({str(c): arrays[f"col:{c}"] for c in arrays["columns"]})


# --------------------------------------------------------------------------- estimates


def leakage_row(defense: Defense, arrays: dict[str, np.ndarray], masks: np.ndarray, labels: np.ndarray,
                n_classes: int, canary: tuple[int, int] | None = None,
                confidence: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """The results-table row of one defense and its LiRA ROC curve.

    Args:
        defense: the defense.
        arrays: its shadow unit (``logits``, ``test_acc``, ``spent_eps``).
        masks: ``(K, n)`` the shadow models' training rows.
        labels: ``(n,)`` the training labels.
        n_classes: classes.
        canary: ``(right guesses, canaries)`` of its canary model, or None (no canary audit).
        confidence: of the canary bound.
    """
    from fitscope.estimators.membership import (lira_leave_one_out, lira_score, loss_threshold_scores,
                                                membership_metrics)
    from fitscope.privacy.canary import canary_bound

    logits = arrays["logits"].astype(np.float32)
    member = np.asarray(masks, bool)
    # fixed (pooled) variance: with tens of shadow models it beats per-example variances (Carlini et al.;
    # bench/lira.py: TPR@0.1% 2.98% vs 1.51% with 32 models)
    lira = membership_metrics(lira_leave_one_out(lira_score(logits, labels), member, method="online",
                                                 global_variance=True), member)
    loss = membership_metrics(loss_threshold_scores(logits, labels), member)
    row = dict(defense=defense.name, label=defense.label, test_acc=float(np.mean(arrays["test_acc"])),
               test_acc_std=float(np.std(arrays["test_acc"])), lira_auc=lira.auc,
               lira_tpr_at_0_1pct=lira.tpr_at_0_1pct, lira_tpr_at_1pct=lira.tpr_at_1pct, loss_auc=loss.auc,
               loss_tpr_at_1pct=loss.tpr_at_1pct, claimed_eps=defense.claimed_eps,
               spent_eps=float(arrays["spent_eps"]))
    if canary is not None:
        correct, m = canary
        audit = canary_bound(int(correct), int(m), n_classes, confidence=confidence, claimed_eps=defense.claimed_eps)
        row.update(canaries=int(m), canary_accuracy=audit.accuracy, eps_lower_bound=audit.eps_lower)
    else:
        row.update(canaries=0, canary_accuracy=math.nan, eps_lower_bound=math.nan)
    roc = pd.DataFrame({"defense": defense.name, "label": defense.label, "fpr": lira.fpr, "tpr": lira.tpr})
    return row, roc


@dataclass
class PrivacyState:
    """What ``prepare`` found: the data, the shadow masks, the planted canaries (None without)."""

    data: Dataset
    masks: np.ndarray
    canaries: object | None


def check_lira_masks(masks: np.ndarray) -> None:
    """Fail now, not after training, if LiRA's leave-one-model-out evaluation cannot use these subsets.

    :func:`fitscope.estimators.membership.lira_leave_one_out` needs, with any model as the target, at
    least 2 other models with and 2 without each example on average; the config's check assumes subsets
    of exactly ``ratio * n`` rows, which rounding can miss (``n`` odd at ratio 0.5).
    """
    from fitscope.estimators.membership import MIN_SHADOWS_PER_SIDE

    member = np.asarray(masks, bool)
    others_in = (member.sum(0) - member).mean(axis=1).min()
    others_out = ((~member).sum(0) - ~member).mean(axis=1).min()
    if min(others_in, others_out) < MIN_SHADOWS_PER_SIDE:
        raise ConfigError(f"--models: with {len(member)} models on {member.shape[1]} rows LiRA would have "
                          f"{min(others_in, others_out):.3g} models with or without an example besides the target, "
                          f"on average (it needs {MIN_SHADOWS_PER_SIDE}); use {len(member) + 1} or more")


def prepare(cfg: PrivacyStudyConfig) -> Prepared:
    """Load and check the data and model; draw the shadow subsets and plant the canaries. Nothing is written."""
    from fitscope.privacy.canary import plant_canaries

    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    check_supports_study(data, study="the privacy study", min_per_class=2)
    if data.n_classes < 3 and cfg.canaries:
        raise ConfigError(f"--canaries: the canary audit needs at least 3 classes, {data.name} has "
                          f"{data.n_classes}; pass --canaries 0")
    if cfg.canaries > len(data.y_train):
        raise ConfigError(f"--canaries: expected at most the {len(data.y_train)} training rows; got {cfg.canaries}")
    masks = subset_masks(len(data.y_train), cfg.ratio, cfg.models, seed=derive_seed(cfg.seed, "masks"))
    check_lira_masks(masks)
    canary_seed = derive_seed(cfg.seed, "canaries")
    canaries = plant_canaries(data.y_train, cfg.canaries, data.n_classes, seed=canary_seed) if cfg.canaries else None
    return Prepared(
        seeds={"data_seed": cfg.data_seed, "seed": cfg.seed, "canary_seed": canary_seed if cfg.canaries else None},
        shared=dict(x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test, masks=masks,
                    canary_y=canaries.y if canaries is not None else data.y_train),
        state=PrivacyState(data, masks, canaries),
    )


def plan(cfg: PrivacyStudyConfig, prepared: Prepared) -> list[Unit]:
    """Every unit of :func:`plan_units`, each run by :func:`privacy_unit`."""
    return [Unit(key, privacy_unit, task, work=work, info=dict(part=task.part, name=task.name))
            for key, task, work in plan_units(cfg, prepared.state.data)]


def estimate(cfg: PrivacyStudyConfig, prepared: Prepared, units) -> Outcome:
    """The leakage table, ROC curves and attack tables from the stored units."""
    from fitscope.privacy.canary import guess_canaries

    state: PrivacyState = prepared.state
    data = state.data
    rows, rocs, seconds = [], [], {}
    for name in cfg.defenses:
        defense = parse_defense(name)
        key = f"defense-{_safe(defense.name)}"
        shadows = units[key]
        seconds[key] = float(shadows["seconds"])
        canary = None
        if state.canaries is not None:
            ckey = f"canary-{_safe(defense.name)}"
            stored = units[ckey]
            seconds[ckey] = float(stored["seconds"])
            guesses = guess_canaries(stored["logits"], state.canaries)
            canary = (int((guesses == state.canaries.labels).sum()), cfg.canaries)
        row, roc = leakage_row(defense, shadows, state.masks, data.y_train, data.n_classes, canary)
        rows.append(row)
        rocs.append(roc)
    attacks: dict[str, list[pd.DataFrame]] = {}
    for key, task, _ in plan_units(cfg, data):
        if task.part == "attack":
            stored = units[key]
            seconds[key] = float(stored["seconds"])
            attacks.setdefault(task.name, []).append(arrays_to_frame(stored))
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in attacks.items()}
    outcome = PrivacyOutcome(pd.DataFrame(rows), pd.concat(rocs, ignore_index=True), tables, seconds)
    summary: dict = {}
    for r in outcome.results.itertuples():
        summary[f"{r.defense} test_acc"] = float(r.test_acc)
        summary[f"{r.defense} lira_tpr@1%"] = float(r.lira_tpr_at_1pct)
        if cfg.canaries:
            summary[f"{r.defense} eps_lower_bound"] = float(r.eps_lower_bound)
    out_tables = {"results": outcome.results, "roc": outcome.roc}
    out_tables.update({f"attack_{name.replace('-', '_')}": table for name, table in tables.items()})
    return Outcome(tables=out_tables, summary=summary, files={"seconds.json": seconds}, detail=outcome)


def report(cfg: PrivacyStudyConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The context of ``privacy.html.j2`` (figures and tables of :mod:`fitscope.report.privacy`)."""
    from fitscope.report import privacy as figures

    data = prepared.state.data
    detail: PrivacyOutcome = outcome.detail
    detail.trained_units, detail.reused_units = list(outcome.trained), list(outcome.reused)
    results = detail.results
    shown = results.copy()  # the report's table also shows the training seconds of each defense
    shown["seconds"] = [sum(v for k, v in detail.seconds.items()
                            if k in (f"defense-{_safe(d)}", f"canary-{_safe(d)}")) for d in results.defense]
    return dict(
        title=f"Privacy study: {cfg.model} on {data.name}",
        data=dict(name=data.name, n_train=len(data.y_train), n_test=len(data.y_test), n_classes=data.n_classes),
        cfg=cfg.model_dump(),
        results=results,
        results_table=figures.results_table(shown),
        private_stats_note=figures.private_stats_note(cfg.defenses),
        tradeoff_png=figures.tradeoff_figure(results),
        roc_png=figures.roc_figure(detail.roc),
        canary_png=figures.canary_figure(results) if cfg.canaries else None,
        attacks={name: figures.attack_table(name, table) for name, table in detail.attacks.items()},
        skipped_attacks=[a for a in cfg.attacks if a not in detail.attacks],
        baseline=results.iloc[0].to_dict(),
        trained_units=detail.trained_units,
        reused_units=detail.reused_units,
    )


STUDY = Study(kind="privacy-study", command="fitscope privacy-study", config=PrivacyStudyConfig, prepare=prepare,
              plan=plan, estimate=estimate, report=report, template="privacy.html.j2", quick=QUICK,
              work_name="model-epochs")


def privacy_study(cfg: PrivacyStudyConfig, out: str | Path, *, resume: bool = False, **placement):
    """The whole study: validate, train every defense and attack (or resume), write tables and ``report.html``.

    Data, model spec and canaries are checked before the run directory is made,
    so bad input leaves nothing behind.

    Args:
        cfg: the study config.
        out: the run directory.
        resume: continue the run in ``out`` (only missing units train).
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`PrivacyOutcome`
        (``outcome.trained_units`` / ``reused_units`` say what this call trained).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: PrivacyOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
