"""Adversarial robustness: PGD training, robust accuracy against eps, the width sweep, and an L0 defense.

The study, in the order it runs (``fitscope robust``):

1. **Data.** A built-in or user data set (digits by default: 8x8 images
   scaled to [0, 1]). The input range ``[low, high]`` is that of the training
   inputs; every attack clips to it and every radius must lie within it.
2. **Standard vs PGD training** (Madry et al. 2018, "Towards Deep Learning
   Models Resistant to Adversarial Attacks"). Each network of ``specs`` is
   trained by the engine (:func:`fitscope.train.train_ensemble`) with plain
   cross-entropy and with the ``pgd`` part (:mod:`fitscope.train.regularizers.pgd`:
   every batch replaced by its PGD adversarial rows, ``train_steps`` steps) in
   each norm of ``norms``: L-inf at radius ``eps``, L2 at ``l2_eps``; the same
   initial weights for every training of a spec. Then, on the test split,
   PGD (:func:`fitscope.robustness.pgd_attack`: ``attack_steps`` steps,
   ``restarts`` random restarts, each row keeping its worst) gives the robust
   accuracy at every L-inf radius of ``eps_curve`` and at ``l2_eps`` in L2,
   and on the training rows the robust training loss (the cross-entropy at
   the PGD points at ``eps``).
3. **Width sweep** (seed 000: Zhang, Plevrakis, Du, Li, Song & Arora 2020,
   "Over-parameterized Adversarial Training": adversarial training of a ReLU
   network of polynomial width reaches a low robust training loss). PGD training
   (L-inf, ``eps``) of ``mlp:<w>x2`` for each ``mlp_widths`` and ``cnn:<w>-<2w>`` for each ``cnn_widths``; the robust
   training loss and robust test accuracy against width.
4. **L0 attacks and the sparse-Fourier defense** (Bafna, Murtagh & Vyas
   2018, seed 003). ``l0_spec`` trained on the raw inputs (no defense) and on
   Fourier-sparse inputs; the defended classifier recovers each input by IHT
   (:class:`fitscope.robustness.FourierIHTDefense`, ``fourier_k``
   coefficients, corruption budget ``defense_pixels``, ``iht_rounds`` rounds)
   before classifying. The paper trains the classifier on the ``k``-sparse
   Fourier projections (``fourier_training="projection"``); by default we
   train it on the IHT recovery of the training inputs (``"iht"``), what it
   sees at test time: on a validation split of digits' training rows (never
   the test split) that kept 83% clean accuracy against 69% with projections
   at k = 24, t = 8, and 58% against 40% under a 4-pixel attack; the defaults
   k = 24 and t = 8 were chosen on that split too. Accuracy
   under the L0 attacks of ``l0_attacks`` at growing budgets: ``pixels``
   (PGD_0 of Croce & Hein 2019 with ``l0_budgets`` pixels) and ``patch`` (one
   square patch of side ``patch_sizes``). The defended model is attacked
   white-box through the IHT (it is differentiable almost everywhere) and by
   transfer from its undefended classifier; a row counts as broken if either
   broke it.
5. **Units.** One per trained network: ``main-<spec>-<training>``,
   ``width-<family>-<w>``, ``l0-<defense>``; each stored as it finishes
   (``--resume`` continues a killed study).
6. **Output.** Tables ``models``, ``curves``, ``widths``, ``l0`` and ``report.html``.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``); :func:`robust` is the Python API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.robustness import (
    FourierIHTDefense, accuracy, fourier_sparse_projection, iht_recover, l0_pixel_attack, patch_attack,
    pgd_attack, pixel_count, predict_labels,
)
from fitscope.robustness.attacks import pixel_axes
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.adversarial import check_norm_name
from fitscope.validation import message

#: the L0 attacks, by name
L0_ATTACKS = ("pixels", "patch")
#: the trainings of a spec: plain cross-entropy, and PGD in a norm
STANDARD = "standard"


# --------------------------------------------------------------------------- config


class RobustConfig(BaseModel):
    """Everything that determines a robustness study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    specs: list[str] = Field(default_factory=lambda: ["mlp:256x2", "cnn:16-32"],
                             description="networks trained with standard and PGD training")
    norms: list[str] = Field(default_factory=lambda: ["inf", "2"], description="norms of PGD training (inf, 2)")
    eps: float = Field(0.1, gt=0, allow_inf_nan=False, description="L-inf radius of PGD training and evaluation")
    l2_eps: float = Field(0.5, gt=0, allow_inf_nan=False, description="L2 radius of PGD training and evaluation")
    eps_curve: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1, 0.15, 0.2],
                                   description="L-inf radii of the robust-accuracy curve")
    train_steps: int = Field(7, ge=1, description="PGD steps per training batch")
    attack_steps: int = Field(20, ge=1, description="PGD steps of the evaluation attacks")
    restarts: int = Field(2, ge=1, description="random restarts of the evaluation PGD (worst case per row kept)")
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    mlp_widths: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256, 512],
                                  description="widths of the MLP sweep (mlp:<w>x2)")
    cnn_widths: list[int] = Field(default_factory=lambda: [4, 8, 16, 32],
                                  description="widths of the CNN sweep (cnn:<w>-<2w>)")
    l0_spec: str = "mlp:256x2"
    l0_attacks: list[str] = Field(default_factory=lambda: ["pixels", "patch"], description="pixels, patch")
    l0_budgets: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="pixels the L0 attack changes")
    patch_sizes: list[int] = Field(default_factory=lambda: [2, 3, 4], description="sides of the patch attack")
    patch_stride: int = Field(2, ge=1, description="grid step of the patch positions tried")
    l0_steps: int = Field(10, ge=1, description="steps of the L0 attacks")
    fourier_k: int = Field(24, ge=1, description="Fourier coefficients the defense keeps")
    defense_pixels: int = Field(8, ge=1, description="pixels of corruption the IHT recovery removes")
    iht_rounds: int = Field(10, ge=1, description="IHT rounds")
    fourier_training: Literal["iht", "projection"] = Field(
        "iht", description="the defended classifier trains on the IHT recovery of the training inputs (iht) or on "
                           "their k-sparse Fourier projection (projection, the paper's)")
    seed: int = Field(0, ge=0, description="seed of the weights, the batches and the attacks")

    @field_validator("norms")
    @classmethod
    def _norms(cls, value: list[str]) -> list[str]:
        out = []
        for v in value:
            try:
                out.append(check_norm_name(v, "--norms"))
            except ConfigError:
                raise ValueError(f"expected norms inf or 2; got {v!r}") from None
        if len(set(out)) != len(out):
            raise ValueError(f"expected distinct norms; got {value}")
        return out

    @field_validator("eps_curve")
    @classmethod
    def _curve(cls, value: list[float]) -> list[float]:
        if not value or any(not (math.isfinite(v) and v > 0) for v in value):
            raise ValueError(f"expected radii > 0; got {value}")
        return sorted(set(float(v) for v in value))

    @field_validator("l0_attacks")
    @classmethod
    def _attacks(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in L0_ATTACKS]
        if bad:
            raise ValueError(f"expected L0 attacks among {', '.join(L0_ATTACKS)}; got {bad[0]!r}")
        return list(dict.fromkeys(value))

    @field_validator("mlp_widths", "cnn_widths", "l0_budgets", "patch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"expected integers >= 1; got {value}")
        return sorted(set(value))

    @field_validator("specs")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one model spec; got none")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _across(self) -> "RobustConfig":
        if "pixels" in self.l0_attacks and not self.l0_budgets:
            raise ValueError("--l0-budgets: expected at least one budget for the pixels attack, got none")
        if "patch" in self.l0_attacks and not self.patch_sizes:
            raise ValueError("--patch-sizes: expected at least one patch side for the patch attack, got none")
        return self


#: ``--quick``: mlp:128x2 only, L-inf only, 15 epochs, 10-step attacks without restarts, an MLP sweep of 3 widths,
#: no CNN sweep, the pixel attack at 3 budgets and the patch attack at 2 sizes.
QUICK = dict(specs=["mlp:128x2"], norms=["inf"], epochs=15, eps_curve=[0.05, 0.1, 0.2], attack_steps=10, restarts=1,
             mlp_widths=[16, 64, 256], cnn_widths=[], l0_spec="mlp:128x2", l0_budgets=[1, 4, 8], patch_sizes=[2, 3])


def make_config(**values) -> RobustConfig:
    """Build a :class:`RobustConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(RobustConfig, values)


# --------------------------------------------------------------------------- the unit tasks


@dataclass(frozen=True)
class NetTask:
    """The task of one unit: train one network (standard, PGD or on Fourier-sparse inputs) and attack it."""

    key: str
    kind: str  # "main", "width" or "l0"
    spec: str
    training: str  # "standard", "pgd-inf", "pgd-2"; "fourier" for the defended L0 classifier
    input_shape: tuple[int, ...]
    n_classes: int
    low: float
    high: float
    train: dict  # TrainConfig fields
    model_seed: int
    attack_seed: int
    eps: float
    l2_eps: float
    eps_curve: tuple[float, ...] = ()
    attack_steps: int = 20
    restarts: int = 1
    l0_attacks: tuple[str, ...] = ()
    l0_budgets: tuple[int, ...] = ()
    patch_sizes: tuple[int, ...] = ()
    patch_stride: int = 2
    l0_steps: int = 10
    fourier_k: int = 0
    defense_pixels: int = 0
    iht_rounds: int = 10
    fourier_training: str = "iht"


def _spec_key(spec: str) -> str:
    return spec.replace(":", "_").replace("-", "_")


def _pgd_parts(norm: str, eps: float, steps: int, low: float, high: float) -> str:
    return f"pgd:eps={eps:g},norm={norm},steps={steps},low={low:g},high={high:g}"


def width_spec(family: str, width: int) -> str:
    """The network of a width sweep: ``mlp:<w>x2`` or ``cnn:<w>-<2w>``."""
    return f"mlp:{width}x2" if family == "mlp" else f"cnn:{width}-{2 * width}"


def plan_tasks(cfg: RobustConfig, input_shape: tuple[int, ...], n_classes: int, low: float, high: float
               ) -> list[NetTask]:
    """Every unit: the main trainings, the width sweep, the two L0 classifiers."""
    base = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr, record="none")
    common = dict(input_shape=tuple(input_shape), n_classes=n_classes, low=low, high=high, eps=cfg.eps,
                  l2_eps=cfg.l2_eps, attack_steps=cfg.attack_steps, restarts=cfg.restarts)
    radius = {"inf": cfg.eps, "2": cfg.l2_eps}
    tasks = []
    for spec in cfg.specs:
        for training in [STANDARD] + [f"pgd-{n}" for n in cfg.norms]:
            parts = "ce" if training == STANDARD else _pgd_parts(training[4:], radius[training[4:]],
                                                                 cfg.train_steps, low, high)
            key = f"main-{_spec_key(spec)}-{training.replace('-', '')}"
            tasks.append(NetTask(key, "main", spec, training, train=dict(base, regularizers=parts),
                                 model_seed=derive_seed(cfg.seed, "model", spec),
                                 attack_seed=derive_seed(cfg.seed, "attack", key), eps_curve=tuple(cfg.eps_curve),
                                 **common))
    for family, widths in (("mlp", cfg.mlp_widths), ("cnn", cfg.cnn_widths)):
        for w in widths:
            spec = width_spec(family, w)
            key = f"width-{family}-{w:04d}"
            tasks.append(NetTask(key, "width", spec, "pgd-inf",
                                 train=dict(base, regularizers=_pgd_parts("inf", cfg.eps, cfg.train_steps, low, high)),
                                 model_seed=derive_seed(cfg.seed, "model", spec),
                                 attack_seed=derive_seed(cfg.seed, "attack", key), **common))
    if cfg.l0_attacks:
        for training in (STANDARD, "fourier"):
            key = f"l0-{'none' if training == STANDARD else 'fourier'}"
            tasks.append(NetTask(key, "l0", cfg.l0_spec, training, train=dict(base, regularizers="ce"),
                                 model_seed=derive_seed(cfg.seed, "model", cfg.l0_spec),
                                 attack_seed=derive_seed(cfg.seed, "attack", key), l0_attacks=tuple(cfg.l0_attacks),
                                 l0_budgets=tuple(cfg.l0_budgets), patch_sizes=tuple(cfg.patch_sizes),
                                 patch_stride=cfg.patch_stride,
                                 l0_steps=cfg.l0_steps, fourier_k=cfg.fourier_k, defense_pixels=cfg.defense_pixels,
                                 iht_rounds=cfg.iht_rounds, fourier_training=cfg.fourier_training, **common))
    return tasks


class EnsembleMember(torch.nn.Module):
    """Model ``k`` of a trained ensemble as a plain classifier: ``(b, *input_shape)`` -> ``(b, C)`` logits."""

    def __init__(self, ensemble: torch.nn.Module, k: int = 0) -> None:
        super().__init__()
        self.ensemble, self.k, self.n_models = ensemble, k, ensemble.n_models

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of model ``k`` (the others see the same rows and are dropped)."""
        if self.n_models == 1:
            return self.ensemble(x.unsqueeze(0))[0]
        return self.ensemble.forward_shared(x)[self.k]


def _robust_loss(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, adv: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy at the adversarial rows ``adv``."""
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(adv[i:i + 1024])) for i in range(0, len(adv), 1024)])
    yt = torch.from_numpy(y.astype(np.int64))
    return (float(torch.nn.functional.cross_entropy(logits, yt)), float((logits.argmax(1) == yt).float().mean()))


def _budget_pixels(size: int, input_shape: tuple[int, ...]) -> int:
    return size ** len(pixel_axes(input_shape))


def train_net(task: NetTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one network with the engine and measure it under attack (pure: the result follows from the arguments).

    Returns (by ``task.kind``):
        main: ``clean_acc``, ``train_acc``, ``curve_eps`` / ``curve_acc`` (L-inf robust test accuracy per
        radius), ``linf_acc`` and ``l2_acc`` (at ``eps`` / ``l2_eps``), ``robust_train_loss`` /
        ``robust_train_acc`` (at the L-inf PGD points of ``eps`` on the training rows), ``examples`` /
        ``examples_adv`` (8 test inputs and their L-inf adversarial versions) and ``parameters``;
        width: the same without the curves and examples;
        l0: ``clean_acc`` and, per (attack, budget), ``l0_attack`` (0 pixels, 1 patch), ``l0_budget`` and
        ``l0_acc``.
    """
    x_fit, x_eval = x_train, x_test
    if task.training == "fourier" and task.fourier_training == "projection":
        x_fit = fourier_sparse_projection(torch.from_numpy(x_train), k=task.fourier_k).numpy()
    elif task.training == "fourier":
        x_fit = iht_recover(torch.from_numpy(x_train), k=task.fourier_k, pixels=task.defense_pixels,
                            rounds=task.iht_rounds)[0].numpy()
    tick = None if progress is None else (lambda info: progress(int(info["epoch"])))
    result = train_ensemble(task.spec, x_fit, y_train, config=TrainConfig(**task.train), seeds=[task.model_seed],
                            n_classes=task.n_classes, keep_model=True, progress=tick)
    net = EnsembleMember(result.model)
    out: dict[str, np.ndarray] = {"parameters": np.asarray(sum(p.numel() for p in net.parameters()), np.int64)}
    box = dict(low=task.low, high=task.high)
    if task.kind == "l0":
        return {**out, **_l0_measures(task, net, x_eval, y_test, box)}
    out["clean_acc"] = np.asarray(accuracy(net, x_eval, y_test))
    out["train_acc"] = np.asarray(accuracy(net, x_train, y_train))
    attack = dict(steps=task.attack_steps, restarts=task.restarts, **box)
    seed = task.attack_seed
    adv_train = pgd_attack(net, x_train, y_train, eps=task.eps, norm="inf", steps=task.attack_steps, restarts=1,
                           seed=derive_seed(seed, "train"), **box)
    out["robust_train_loss"], out["robust_train_acc"] = map(np.asarray, _robust_loss(net, x_train, y_train, adv_train))
    adv = pgd_attack(net, x_eval, y_test, eps=task.eps, norm="inf", seed=derive_seed(seed, "inf", task.eps), **attack)
    out["linf_acc"] = np.asarray(accuracy(net, adv, y_test))
    if task.kind == "main":
        out["l2_acc"] = np.asarray(accuracy(net, pgd_attack(net, x_eval, y_test, eps=task.l2_eps, norm="2",
                                                             seed=derive_seed(seed, "2", task.l2_eps), **attack),
                                             y_test))
        accs = []
        for eps in task.eps_curve:
            a = adv if eps == task.eps else pgd_attack(net, x_eval, y_test, eps=eps, norm="inf",
                                                       seed=derive_seed(seed, "inf", eps), **attack)
            accs.append(accuracy(net, a, y_test))
        out["curve_eps"] = np.asarray(task.eps_curve, float)
        out["curve_acc"] = np.asarray(accs, float)
        out["examples"] = x_eval[:8].astype(np.float32)
        out["examples_adv"] = adv[:8].astype(np.float32)
        out["examples_pred"] = predict_labels(net, adv[:8]).astype(np.int64)
    return out


def _l0_measures(task: NetTask, net: torch.nn.Module, x: np.ndarray, y: np.ndarray, box: dict) -> dict:
    """Accuracy under each L0 attack and budget; for the Fourier classifier, behind the IHT defense."""
    model = net
    if task.training == "fourier":
        model = FourierIHTDefense(net, k=task.fourier_k, pixels=task.defense_pixels, input_shape=task.input_shape,
                                  rounds=task.iht_rounds)
    clean = predict_labels(model, x) == y
    kinds, budgets, accs = [], [], []
    settings = [("pixels", b) for b in task.l0_budgets if "pixels" in task.l0_attacks]
    settings += [("patch", s) for s in task.patch_sizes if "patch" in task.l0_attacks]
    for name, value in settings:
        seed = derive_seed(task.attack_seed, name, value)

        def attack(target):
            if name == "pixels":
                return l0_pixel_attack(target, x, y, pixels=value, steps=task.l0_steps, seed=seed, **box)
            return patch_attack(target, x, y, size=value, steps=task.l0_steps, stride=task.patch_stride, seed=seed,
                                **box)

        right = predict_labels(model, attack(model)) == y
        if model is not net:  # transfer from the undefended classifier too: the row must survive both
            right &= predict_labels(model, attack(net)) == y
        kinds.append(L0_ATTACKS.index(name))
        budgets.append(value if name == "pixels" else _budget_pixels(value, task.input_shape))
        accs.append(float(right.mean()))
    return {"clean_acc": np.asarray(float(clean.mean())), "l0_attack": np.asarray(kinds, np.int64),
            "l0_budget": np.asarray(budgets, np.int64), "l0_acc": np.asarray(accs, float)}


# --------------------------------------------------------------------------- estimates


@dataclass
class RobustOutcome:
    """What :func:`robust` computed.

    Attributes:
        models: one row per main network (spec, training, clean / L-inf / L2 robust test accuracy, robust
            training loss and accuracy, parameters).
        curves: robust test accuracy per (spec, training, L-inf radius), radius 0 being the clean accuracy.
        widths: one row per width of the sweep (family, width, parameters, robust training loss and accuracy,
            robust and clean test accuracy).
        l0: accuracy per (defense, attack, budget in pixels), budget 0 being clean.
        examples: per main unit key, ``(clean, adversarial, predicted)`` of 8 test inputs.
        summary: the headline numbers.
    """

    models: pd.DataFrame
    curves: pd.DataFrame
    widths: pd.DataFrame
    l0: pd.DataFrame
    examples: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


@dataclass
class RobustData:
    """What ``prepare`` keeps: the data set and its input range."""

    data: Dataset
    low: float
    high: float


def prepare(cfg: RobustConfig) -> Prepared:
    """Load the data, check the specs, radii and budgets against it; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    shape = tuple(data.input_shape)
    for name, spec in [("--specs", s) for s in cfg.specs] + [("--l0-spec", cfg.l0_spec)]:
        check_input_shape(parse_spec(spec), shape)
    if cfg.cnn_widths:
        check_input_shape(parse_spec(width_spec("cnn", cfg.cnn_widths[0])), shape)
    low, high = float(data.x_train.min()), float(data.x_train.max())
    span = high - low
    if not span > 0:
        raise ConfigError(message("--data", "inputs that are not all equal", f"every input {low:g}"))
    for name, value in [("--eps", cfg.eps)] + [("--eps-curve", e) for e in cfg.eps_curve]:
        if value > span:
            raise ConfigError(message(name, f"an L-inf radius in (0, {span:g}] (the input range [{low:g}, {high:g}])",
                                      f"{value:g}"))
    diameter = span * math.sqrt(math.prod(shape))
    if cfg.l2_eps > diameter:
        raise ConfigError(message("--l2-eps", f"an L2 radius in (0, {diameter:.4g}] (the input box's diameter)",
                                  f"{cfg.l2_eps:g}"))
    pixels = pixel_count(shape)
    for name, values in (("--l0-budgets", cfg.l0_budgets if "pixels" in cfg.l0_attacks else []),
                         ("--defense-pixels", [cfg.defense_pixels])):
        if values and max(values) > pixels:
            raise ConfigError(message(name, f"at most the {pixels} pixels of a {'x'.join(map(str, shape))} input",
                                      str(max(values))))
    side = min(shape[a] for a in pixel_axes(shape))
    if "patch" in cfg.l0_attacks and cfg.patch_sizes and max(cfg.patch_sizes) > side:
        raise ConfigError(message("--patch-sizes", f"patch sides of at most {side} (the input's side)",
                                  str(max(cfg.patch_sizes))))
    if cfg.fourier_k > math.prod(shape):
        raise ConfigError(message("--fourier-k", f"at most the {math.prod(shape)} Fourier coefficients of an input",
                                  str(cfg.fourier_k)))
    shared = {"x_train": data.x_train.astype(np.float32), "y_train": data.y_train.astype(np.int64),
              "x_test": data.x_test.astype(np.float32), "y_test": data.y_test.astype(np.int64)}
    tasks = plan_tasks(cfg, shape, data.n_classes, low, high)
    return Prepared(seeds={"seed": cfg.seed, "data_seed": cfg.data_seed,
                           "model_seeds": {t.key: t.model_seed for t in tasks},
                           "attack_seeds": {t.key: t.attack_seed for t in tasks}},
                    shared=shared, state=RobustData(data=data, low=low, high=high))


def plan(cfg: RobustConfig, prepared: Prepared) -> list[Unit]:
    """One unit per network (:func:`plan_tasks`), each computed by :func:`train_net`; work = epochs."""
    state: RobustData = prepared.state
    return [Unit(t.key, train_net, t, work=cfg.epochs, info=dict(spec=t.spec, training=t.training))
            for t in plan_tasks(cfg, state.data.input_shape, state.data.n_classes, state.low, state.high)]


def estimate(cfg: RobustConfig, prepared: Prepared, units) -> Outcome:
    """The four tables and the headline numbers from the stored units."""
    state: RobustData = prepared.state
    tasks = plan_tasks(cfg, state.data.input_shape, state.data.n_classes, state.low, state.high)
    models, curves, widths, l0, examples = [], [], [], [], {}
    for t in tasks:
        u = units[t.key]
        if t.kind == "main":
            models.append(dict(spec=t.spec, training=t.training, parameters=int(u["parameters"]),
                               clean_acc=float(u["clean_acc"]), linf_acc=float(u["linf_acc"]),
                               l2_acc=float(u["l2_acc"]), robust_train_loss=float(u["robust_train_loss"]),
                               robust_train_acc=float(u["robust_train_acc"]), train_acc=float(u["train_acc"])))
            curves.append(dict(spec=t.spec, training=t.training, eps=0.0, robust_acc=float(u["clean_acc"])))
            curves += [dict(spec=t.spec, training=t.training, eps=float(e), robust_acc=float(a))
                       for e, a in zip(u["curve_eps"], u["curve_acc"])]
            examples[t.key] = (u["examples"], u["examples_adv"], u["examples_pred"])
        elif t.kind == "width":
            family = t.spec.split(":")[0]
            width = int(t.key.rsplit("-", 1)[1])
            widths.append(dict(family=family, width=width, spec=t.spec, parameters=int(u["parameters"]),
                               robust_train_loss=float(u["robust_train_loss"]),
                               robust_train_acc=float(u["robust_train_acc"]), robust_test_acc=float(u["linf_acc"]),
                               clean_test_acc=float(u["clean_acc"]), train_acc=float(u["train_acc"])))
        else:
            defense = "fourier" if t.training == "fourier" else "none"
            for attack in t.l0_attacks:
                l0.append(dict(defense=defense, attack=attack, budget=0, accuracy=float(u["clean_acc"])))
            for kind, budget, acc in zip(u["l0_attack"], u["l0_budget"], u["l0_acc"]):
                l0.append(dict(defense=defense, attack=L0_ATTACKS[int(kind)], budget=int(budget),
                               accuracy=float(acc)))
    cols = {"models": ["spec", "training", "parameters", "clean_acc", "linf_acc", "l2_acc", "robust_train_loss",
                       "robust_train_acc", "train_acc"],
            "curves": ["spec", "training", "eps", "robust_acc"],
            "widths": ["family", "width", "spec", "parameters", "robust_train_loss", "robust_train_acc",
                       "robust_test_acc", "clean_test_acc", "train_acc"],
            "l0": ["defense", "attack", "budget", "accuracy"]}
    frames = {name: pd.DataFrame(rows, columns=cols[name]) for name, rows in
              (("models", models), ("curves", curves), ("widths", widths), ("l0", l0))}
    summary = summarize(cfg, frames)
    detail = RobustOutcome(summary=summary, examples=examples, **frames)
    return Outcome(tables=frames, summary=summary, detail=detail)


def summarize(cfg: RobustConfig, frames: dict[str, pd.DataFrame]) -> dict:
    """Headline numbers: robust accuracy of standard vs PGD training per spec; the width trend; the L0 defense."""
    out: dict = {}
    models = frames["models"]
    for spec in models.spec.unique():
        rows = models[models.spec == spec].set_index("training")
        std = float(rows.loc[STANDARD, "linf_acc"])
        out[f"{spec}: L-inf robust accuracy at eps {cfg.eps:g}, standard"] = std
        if "pgd-inf" in rows.index:
            pgd = float(rows.loc["pgd-inf", "linf_acc"])
            out[f"{spec}: L-inf robust accuracy at eps {cfg.eps:g}, PGD-trained"] = pgd
            out[f"{spec}: gain of PGD training (points)"] = round(100 * (pgd - std), 1)
            out[f"{spec}: clean accuracy, standard / PGD-trained"] = (
                f"{rows.loc[STANDARD, 'clean_acc']:.3f} / {rows.loc['pgd-inf', 'clean_acc']:.3f}")
        if "pgd-2" in rows.index:
            out[f"{spec}: L2 robust accuracy at eps {cfg.l2_eps:g}, standard / PGD-L2-trained"] = (
                f"{rows.loc[STANDARD, 'l2_acc']:.3f} / {rows.loc['pgd-2', 'l2_acc']:.3f}")
    widths = frames["widths"]
    for family in widths.family.unique():
        rows = widths[widths.family == family].sort_values("width")
        loss = rows.robust_train_loss.to_numpy()
        out[f"{family} sweep: robust training loss, narrowest -> widest"] = f"{loss[0]:.3f} -> {loss[-1]:.3f}"
        out[f"{family} sweep: robust training loss falls with width (Spearman rho)"] = round(
            float(pd.Series(rows.width.to_numpy()).corr(pd.Series(loss), method="spearman")), 3)
    l0 = frames["l0"]
    for attack in l0.attack.unique():
        rows = l0[(l0.attack == attack) & (l0.budget > 0)]
        if rows.empty:
            continue
        top = int(rows.budget.max())
        at = rows[rows.budget == top].set_index("defense").accuracy
        out[f"L0 {attack} attack, {top} pixels: accuracy without / with the Fourier defense"] = (
            f"{at.get('none', float('nan')):.3f} / {at.get('fourier', float('nan')):.3f}")
    return out


def report(cfg: RobustConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.robust.report_context`)."""
    from fitscope.report.robust import report_context

    state: RobustData = prepared.state
    data = state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind,
                low=state.low, high=state.high, pixels=pixel_count(tuple(data.input_shape)))
    return report_context(cfg.model_dump(), info, outcome.detail)


STUDY = Study(kind="robust", command="fitscope robust", config=RobustConfig, prepare=prepare, plan=plan,
              estimate=estimate, report=report, template="robust.html.j2", quick=QUICK, work_name="epochs")


def robust(cfg: RobustConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), attack, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing networks train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`RobustOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: RobustOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
