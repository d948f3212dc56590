"""Weight decay or an exponentially growing learning rate: the same function (Li & Arora 2019).

The study, in the order it runs (``fitscope dynamics exp-lr``):

1. **Data.** The training split of ``data`` (digits by default; ``rows``
   limits it to a seeded subset) and its test split, inputs centred and scaled
   by the training rows' overall mean and standard deviation.
2. **A scale-invariant network** per spec of ``nets``
   (:func:`scale_invariant_net`): ``mlp:WxD`` is linear layers without bias,
   each followed by batch norm (no affine parameters) and ReLU; ``cnn:W1-W2``
   is 3x3 convolutions without bias, batch norm, ReLU and 2x2 max-pooling,
   then global average pooling. The output layer is kept fixed at its random
   initialization: Li & Arora's theorem needs the loss to be invariant to the
   scale of *every* trained parameter, and a trained output layer is not (the
   other way out, a normalization after the output layer, changes the
   network more; Hoffer et al. 2018, "Fix your classifier", found a fixed
   classifier costs little accuracy). Batch norm's ``eps`` is :data:`BN_EPS` (1e-12), not torch's
   1e-5: ``var + eps`` does not scale with the weights, so with 1e-5 the two
   runs differ from the first step, and training amplifies it: in the quick
   setting their predictions end up 0.07 apart in float64 instead of 4e-11
   (``bench/dynamics_exp_lr.py``). Before anything trains, :func:`prepare`
   checks the invariance numerically
   (:func:`fitscope.dynamics.check_scale_invariant`); ``--norm none`` or
   ``--head trained`` build networks that fail it and are refused, naming
   the layers.
3. **Two runs per unit**, from the same initial weights with the same
   minibatches (drawn from ``derive_seed(seed, "batches")``, the last
   incomplete batch of each epoch dropped): ``torch.optim.SGD`` with
   ``momentum``, ``weight_decay`` and the ``schedule`` (step: ``lr`` times
   ``decay`` at each of the ``milestones``), and the same optimizer with the
   same momentum, *no* weight decay and the per-step rates of
   :func:`fitscope.dynamics.equivalent_exp_schedule` (derivation there), which
   grow exponentially within each phase (the paper's TEXP). One unit per
   (model, precision) of ``precisions``. Float64 is the precision of the
   equivalence check: the two runs compute different numbers (weights apart
   by the factor ``c_t``, up to ~240 here), so their rounding errors differ
   from the first step on, and SGD on a network amplifies a difference of
   weights step by step (most in the first, large-lr phase); in float64 these
   start near 1e-16 and stay far below any visible difference, in float32
   they start near 1e-7 and grow to visible ones (the float32 unit measures
   how far). So that "equal up to float error" is a measurement, not a
   threshold picked after the fact, each unit trains a third network, the
   control (:func:`rescaled_copy`): the weight-decay run with its weights
   times 3, lr times 9 and weight decay over 9, the same function in exact
   arithmetic with different rounding at every step. The exp-lr run agrees
   with the weight-decay run up to float error when its difference stays
   within :data:`WITHIN` (10) times the control's.
4. **Measurements**, every ``every`` steps on both runs: the softmax outputs on
   all training and test rows, with batch-norm statistics recomputed on all
   the training rows at the current weights
   (:func:`fitscope.dynamics.predict_with_fresh_statistics`; running averages
   mix batches at different weight scales and break the equivalence, which
   is measured too), their largest absolute difference (and the control's),
   losses, accuracies,
   and the norms of the trained weights against the predicted factor
   ``c_t``.
5. **Estimates and output.** Tables ``trajectory`` (one row per unit and
   measurement) and ``runs`` (one row per unit), and ``report.html``: both
   runs' loss and accuracy curves, the largest difference of predictions per
   step (log scale), the weight norms and the two learning-rate schedules.

Training uses plain torch loops, not :func:`fitscope.train.train_ensemble`:
the engine trains batched ensembles of its own layers (with biases, affine
batch norm and a trained head), while this study needs two single networks
(and the control) stepped in lockstep on the same minibatch with a learning rate set per step,
and their predictions compared between steps.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`dynamics_exp_lr` is the Python API.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from fitscope.data import Dataset, load
from fitscope.dynamics import (
    SCHEDULES,
    check_scale_invariant,
    equivalent_exp_schedule,
    lr_schedule,
    predict_with_fresh_statistics,
)
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.validation import message

#: batch norm's eps in the study's networks: small enough not to break the scale invariance
BN_EPS = 1e-12
#: "the same function": the largest difference of softmax outputs in float64 stays below this
SAME_FUNCTION = 1e-8
#: "up to float error": the exp-lr twin is no farther from the weight-decay run than this many times the control
#: (the run against its rescaled copy, :func:`rescaled_copy`), fixed before any run
WITHIN = 10
#: the control: the weight-decay run with its weights times this, lr times its square, weight decay over it
CONTROL_FACTOR = 3.0
#: the most steps a run may take
MAX_STEPS = 1_000_000
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


# --------------------------------------------------------------------------- config


class ExpLrConfig(BaseModel):
    """Everything that determines an exp-lr study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and of the row subset")
    rows: int | None = Field(None, ge=2, description="training rows (a seeded subset); None: all")
    nets: list[str] = Field(default_factory=lambda: ["mlp:64x2", "cnn:16-32"],
                      description="model specs: mlp:WxD or cnn:W1-W2 (built scale-invariant)")
    precisions: list[Literal["float64", "float32"]] = Field(default_factory=lambda: ["float64", "float32"])
    norm: Literal["batch", "none"] = "batch"
    head: Literal["fixed", "trained"] = "fixed"
    schedule: str = "step"
    lr: float = Field(0.1, gt=0, allow_inf_nan=False, description="initial learning rate of the weight-decay run")
    weight_decay: float = Field(5e-3, ge=0, allow_inf_nan=False)
    momentum: float = Field(0.9, ge=0, lt=1)
    steps: int = Field(2000, gt=0, le=MAX_STEPS)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75],
                                    description="step schedule: fractions of the steps where lr is multiplied by decay")
    decay: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(64, ge=2)
    every: int = Field(10, gt=0, description="steps between two measurements")
    seed: int = Field(0, ge=0, description="seed of the initial weights and the minibatches")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value not in SCHEDULES:
            raise ValueError(f"expected one of {', '.join(SCHEDULES)}; got {value!r}")
        return value

    @field_validator("nets")
    @classmethod
    def _nets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one model spec; got none")
        for spec in value:
            parsed = parse_spec(spec)
            if parsed.family not in ("mlp", "cnn") or parsed.dropout:
                raise ValueError(f"expected mlp or cnn specs without dropout; got {spec!r}")
        if len({str(parse_spec(s)) for s in value}) != len(value):
            raise ValueError(f"expected distinct model specs; got {value}")
        return value

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"expected distinct precisions, at least one; got {value}")
        return value

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, value: list[float]) -> list[float]:
        if any(not (0 < m < 1) for m in value) or value != sorted(set(value)):
            raise ValueError(f"expected increasing fractions of the steps in (0, 1); got {value}")
        return value

    @model_validator(mode="after")
    def _across(self) -> "ExpLrConfig":
        if self.rows is not None and self.batch_size > self.rows:
            raise ValueError(f"--batch-size: expected at most --rows {self.rows}, got {self.batch_size}")
        # lr x weight_decay out of range: the same one-line message as the library's
        equivalent_exp_schedule(schedule_of(self), self.weight_decay, self.momentum)
        return self


def schedule_of(cfg: ExpLrConfig) -> np.ndarray:
    """The weight-decay run's per-step learning rates."""
    return lr_schedule(cfg.schedule, cfg.lr, cfg.steps, milestones=tuple(cfg.milestones), decay=cfg.decay)


#: ``--quick``: the MLP alone (float64 and float32), 600 steps on all the digits training rows.
QUICK = dict(nets=["mlp:64x2"], steps=600, every=5)


def make_config(**values) -> ExpLrConfig:
    """Build an :class:`ExpLrConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(ExpLrConfig, values)


# --------------------------------------------------------------------------- the network


def scale_invariant_net(spec: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int, norm: str = "batch",
                        head: str = "fixed") -> nn.Sequential:
    """A network whose loss is invariant to the scale of its trained weights (when ``norm="batch"``, ``head="fixed"``).

    ``mlp:W1-W2-..``: ``flatten, fc1, norm1, relu1, fc2, ...``; ``cnn:W1-W2-..``:
    ``conv1, norm1, relu1, [pool1,] conv2, ..., gap, flatten`` (3x3, padding
    1, max-pool 2 while the image is at least 2x2); then ``out``, a linear
    layer with bias. Normalized layers have no bias (it would be removed by the
    mean anyway); the batch norms have no affine parameters and eps
    :data:`BN_EPS`. ``head="fixed"`` freezes ``out`` at its initialization.
    ``norm="none"`` drops the batch norms and gives every layer a bias (a
    network that is *not* scale-invariant, for the refusal).

    Initial weights: torch's default initialization under a forked RNG seeded with ``seed``.
    """
    parsed = parse_spec(spec)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    bias = norm == "none"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if parsed.family == "mlp":
            layers["flatten"] = nn.Flatten()
            width = int(np.prod(input_shape))
            for i, w in enumerate(parsed.widths, 1):
                layers[f"fc{i}"] = nn.Linear(width, w, bias=bias)
                if norm == "batch":
                    layers[f"norm{i}"] = nn.BatchNorm1d(w, affine=False, eps=BN_EPS)
                layers[f"relu{i}"] = nn.ReLU()
                width = w
        else:
            channels, size = input_shape[0], min(input_shape[1:])
            for i, w in enumerate(parsed.widths, 1):
                layers[f"conv{i}"] = nn.Conv2d(channels, w, 3, padding=1, bias=bias)
                if norm == "batch":
                    layers[f"norm{i}"] = nn.BatchNorm2d(w, affine=False, eps=BN_EPS)
                layers[f"relu{i}"] = nn.ReLU()
                if size >= 2:
                    layers[f"pool{i}"] = nn.MaxPool2d(2)
                    size //= 2
                channels = w
            layers["gap"] = nn.AdaptiveAvgPool2d(1)
            layers["flatten"] = nn.Flatten()
            width = channels
        layers["out"] = nn.Linear(width, n_classes)
    model = nn.Sequential(layers)
    model.out.requires_grad_(head == "trained")
    return model


def trained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters SGD updates (all but a fixed head)."""
    return [p for p in model.parameters() if p.requires_grad]


def rescaled_copy(model: nn.Module, factor: float = 3.0) -> nn.Module:
    """A copy of ``model`` with every trained weight multiplied by ``factor``: the control of "up to float error".

    Trained with the learning rates times ``factor**2`` and the weight decay
    divided by ``factor**2`` (the same momentum and minibatches), a
    scale-invariant network stays exactly ``factor`` times the weight-decay
    run (``v' = v / factor``, so ``w' = factor w`` at every step): the same
    function in exact arithmetic, computed with different rounding at every
    step, as the exp-lr run is, but without any schedule to get wrong.
    Training amplifies rounding differences, so the distance between the
    weight-decay run and this copy is what "equal up to float error" means
    after ``t`` steps. ``factor`` 3, not a power of two, whose products would
    round exactly as the original's.
    """
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in trained_parameters(twin):
            p.mul_(factor)
    return twin


def _norm(params) -> float:
    return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in params)))


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class PairTask:
    """The task of one unit: the weight-decay run and its exponential-lr twin, for one model and precision."""

    key: str
    model: str
    precision: str
    input_shape: tuple[int, ...]
    n_classes: int
    lrs: tuple[float, ...]
    weight_decay: float
    momentum: float
    batch_size: int
    every: int
    model_seed: int
    batch_seed: int


def _key(spec: str, precision: str) -> str:
    return f"{str(parse_spec(spec)).replace(':', '-')}-{precision}"


def plan_pairs(cfg: ExpLrConfig, input_shape: tuple[int, ...], n_classes: int) -> list[PairTask]:
    """One task per (model, precision); the same initial weights and minibatches for every precision."""
    lrs = tuple(float(v) for v in schedule_of(cfg))
    return [PairTask(_key(spec, p), spec, p, tuple(input_shape), n_classes, lrs, cfg.weight_decay, cfg.momentum,
                     cfg.batch_size, cfg.every, derive_seed(cfg.seed, "model", spec), derive_seed(cfg.seed, "batches"))
            for spec in cfg.nets for p in cfg.precisions]


def measurement_steps(steps: int, every: int) -> list[int]:
    """0, every, 2 every, ... and the last step (a measurement at step t is taken before step t's update)."""
    return sorted(set(range(0, steps + 1, every)) | {steps})


def train_pair(task: PairTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train the weight-decay run and its exponential-lr twin in lockstep and compare their predictions.

    Module-level and pure: the result follows from the arguments alone. Runs
    on the CPU with one torch thread inside the unit (the networks are tiny:
    a second thread only adds the cost of waking it).

    Returns:
        Per measurement (:func:`measurement_steps`): ``step``, ``lr_wd``,
        ``lr_exp`` (the rate of the step that follows), ``scale`` (the
        predicted factor ``c_t``), ``norm_wd``, ``norm_exp`` (norms of the
        trained weights), ``loss_wd``, ``loss_exp`` (cross-entropy on the
        training rows), ``train_acc_wd/exp``, ``test_acc_wd/exp``,
        ``diff_train``, ``diff_test`` (largest absolute difference of the two
        runs' softmax outputs on the training / test rows), ``disagree_test``
        (share of test rows whose predicted class differs), ``diff_running``
        (the same difference on the test rows in evaluation mode with the
        running averages of batch norm), ``diff_control`` (the largest
        difference between the weight-decay run and its rescaled copy,
        :func:`rescaled_copy`: the same function in exact arithmetic, so
        this is the float error of the comparison); and ``parameters``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_pair(task, x_train, y_train, x_test, y_test, progress)
    finally:
        torch.set_num_threads(before)


def _train_pair(task, x_train, y_train, x_test, y_test, progress) -> dict[str, np.ndarray]:
    dtype = _DTYPES[task.precision]
    wd_net = scale_invariant_net(task.model, task.input_shape, task.n_classes, seed=task.model_seed).to(dtype)
    exp_net = copy.deepcopy(wd_net)
    control_net = rescaled_copy(wd_net, CONTROL_FACTOR)
    schedule = equivalent_exp_schedule(np.asarray(task.lrs), task.weight_decay, task.momentum)
    params = {"wd": trained_parameters(wd_net), "exp": trained_parameters(exp_net),
              "control": trained_parameters(control_net)}
    opts = {"wd": torch.optim.SGD(params["wd"], lr=task.lrs[0], momentum=task.momentum,
                                  weight_decay=task.weight_decay),
            "exp": torch.optim.SGD(params["exp"], lr=float(schedule.lrs[0]), momentum=task.momentum),
            "control": torch.optim.SGD(params["control"], lr=task.lrs[0], momentum=task.momentum,
                                       weight_decay=task.weight_decay / CONTROL_FACTOR ** 2)}
    nets = {"wd": wd_net, "exp": exp_net}
    x = torch.from_numpy(np.ascontiguousarray(x_train)).to(dtype)
    y = torch.from_numpy(np.ascontiguousarray(y_train)).long()
    xt = torch.from_numpy(np.ascontiguousarray(x_test)).to(dtype)
    yt = torch.from_numpy(np.ascontiguousarray(y_test)).long()
    steps = len(task.lrs)
    marks = measurement_steps(steps, task.every)
    names = ("lr_wd", "lr_exp", "scale", "norm_wd", "norm_exp", "loss_wd", "loss_exp", "train_acc_wd",
             "train_acc_exp", "test_acc_wd", "test_acc_exp", "diff_train", "diff_test", "disagree_test",
             "diff_running", "diff_control")
    out = {name: np.full(len(marks), np.nan) for name in names}
    out["step"] = np.asarray(marks, np.int64)
    gen = torch.Generator().manual_seed(task.batch_seed)
    order = torch.empty(0, dtype=torch.long)
    n = len(x)
    mark = 0
    for step in range(steps + 1):
        if step == marks[mark]:
            probs = {}
            with torch.no_grad():
                for run, net in nets.items():
                    train_out, test_out = predict_with_fresh_statistics(net, x, [x, xt])
                    out[f"loss_{run}"][mark] = float(nn.functional.cross_entropy(train_out, y))
                    out[f"train_acc_{run}"][mark] = float((train_out.argmax(1) == y).double().mean())
                    out[f"test_acc_{run}"][mark] = float((test_out.argmax(1) == yt).double().mean())
                    out[f"norm_{run}"][mark] = _norm(params[run])
                    net.eval()
                    running = net(xt).softmax(1)
                    net.train()
                    probs[run] = (train_out.softmax(1), test_out.softmax(1), running)
            out["diff_train"][mark] = float((probs["wd"][0] - probs["exp"][0]).abs().max())
            out["diff_test"][mark] = float((probs["wd"][1] - probs["exp"][1]).abs().max())
            out["disagree_test"][mark] = float((probs["wd"][1].argmax(1) != probs["exp"][1].argmax(1)).double().mean())
            out["diff_running"][mark] = float((probs["wd"][2] - probs["exp"][2]).abs().max())
            with torch.no_grad():
                control = [o.softmax(1) for o in predict_with_fresh_statistics(control_net, x, [x, xt])]
            out["diff_control"][mark] = max(float((probs["wd"][i] - control[i]).abs().max()) for i in (0, 1))
            out["scale"][mark] = float(schedule.scale[step])
            if step < steps:
                out["lr_wd"][mark], out["lr_exp"][mark] = task.lrs[step], float(schedule.lrs[step])
            mark += 1
        if step == steps:
            break
        if len(order) < task.batch_size:  # a new epoch: a fresh permutation, the incomplete rest dropped
            order = torch.randperm(n, generator=gen)
        rows, order = order[:task.batch_size], order[task.batch_size:]
        for run, lr in (("wd", task.lrs[step]), ("exp", float(schedule.lrs[step])), ("control", task.lrs[step] * CONTROL_FACTOR ** 2)):
            for group in opts[run].param_groups:
                group["lr"] = lr
            opts[run].zero_grad(set_to_none=True)
            net = control_net if run == "control" else nets[run]
            nn.functional.cross_entropy(net(x[rows]), y[rows]).backward()
            opts[run].step()
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1)
    if progress is not None:
        progress(steps)
    out["parameters"] = np.asarray(sum(p.numel() for p in params["wd"]), np.int64)
    return out


# --------------------------------------------------------------------------- estimates (arrays in, tables out)


def pair_summary(task: PairTask, stored: dict) -> dict:
    """One row of the ``runs`` table from a unit's arrays."""
    ratio = np.asarray(stored["norm_exp"]) / np.asarray(stored["norm_wd"])
    scale = np.asarray(stored["scale"])
    return {
        "unit": task.key,
        "model": task.model,
        "precision": task.precision,
        "parameters": int(stored["parameters"]),
        "steps": int(stored["step"][-1]),
        "max_diff_train": float(np.max(stored["diff_train"])),
        "max_diff_test": float(np.max(stored["diff_test"])),
        "final_diff_test": float(stored["diff_test"][-1]),
        "max_disagree_test": float(np.max(stored["disagree_test"])),
        "max_diff_running": float(np.max(stored["diff_running"])),
        "max_diff_control": float(np.max(stored["diff_control"])),
        "same_function": bool(max(np.max(stored["diff_train"]), np.max(stored["diff_test"])) < SAME_FUNCTION),
        "within_float_error": bool(max(np.max(stored["diff_train"]), np.max(stored["diff_test"]))
                                   <= WITHIN * np.max(stored["diff_control"])),
        "final_scale": float(scale[-1]),
        "max_scale_error": float(np.max(np.abs(ratio / scale - 1))),
        "initial_norm": float(stored["norm_wd"][0]),
        "final_norm_wd": float(stored["norm_wd"][-1]),
        "final_norm_exp": float(stored["norm_exp"][-1]),
        "final_lr_exp": float(np.asarray(stored["lr_exp"])[np.isfinite(stored["lr_exp"])][-1]),
        "final_loss_wd": float(stored["loss_wd"][-1]),
        "final_loss_exp": float(stored["loss_exp"][-1]),
        "test_acc_wd": float(stored["test_acc_wd"][-1]),
        "test_acc_exp": float(stored["test_acc_exp"][-1]),
    }


@dataclass
class ExpLrOutcome:
    """What :func:`dynamics_exp_lr` computed.

    Attributes:
        trajectory: one row per unit and measurement (the columns of :func:`train_pair` plus ``unit``,
            ``model``, ``precision``).
        runs: one row per unit (:func:`pair_summary`).
        summary: the headline numbers.
    """

    trajectory: pd.DataFrame
    runs: pd.DataFrame
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


@dataclass
class ExpLrData:
    """What ``prepare`` keeps for ``plan``, ``estimate`` and ``report``."""

    data: Dataset
    rows: np.ndarray
    invariance: dict


def prepare(cfg: ExpLrConfig) -> Prepared:
    """Load the data, pick the rows, build each network and check its scale invariance; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    n_train = len(data.y_train)
    rows_wanted = n_train if cfg.rows is None else cfg.rows
    if rows_wanted > n_train:
        raise ConfigError(message("--rows", f"at most the {n_train} training rows of {data.name}", str(cfg.rows)))
    if cfg.batch_size > rows_wanted:
        raise ConfigError(message("--batch-size", f"at most the {rows_wanted} training rows", str(cfg.batch_size)))
    for spec in cfg.nets:
        parsed = parse_spec(spec)
        check_input_shape(parsed, data.input_shape)
    rng = np.random.default_rng(derive_seed(cfg.data_seed, "rows"))
    rows = np.arange(n_train) if cfg.rows is None else np.sort(rng.choice(n_train, cfg.rows, replace=False))
    x = data.x_train[rows].astype(np.float32)
    mean, std = float(x.mean()), float(x.std()) or 1.0
    shared = {"x_train": (x - mean) / std, "y_train": data.y_train[rows].astype(np.int64),
              "x_test": (data.x_test.astype(np.float32) - mean) / std, "y_test": data.y_test.astype(np.int64)}
    probe = torch.from_numpy(shared["x_train"][:256])
    invariance = {}
    for spec in cfg.nets:
        net = scale_invariant_net(spec, data.input_shape, data.n_classes, seed=derive_seed(cfg.seed, "model", spec),
                                  norm=cfg.norm, head=cfg.head)
        flag = "--head" if cfg.head == "trained" else "--norm" if cfg.norm == "none" else "--nets"
        invariance[spec] = check_scale_invariant(net, probe, name=f"{flag} ({spec})")
    tasks = plan_pairs(cfg, data.input_shape, data.n_classes)
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, "batch_seed": tasks[0].batch_seed,
               "model_seeds": {spec: derive_seed(cfg.seed, "model", spec) for spec in cfg.nets}},
        shared=shared,
        state=ExpLrData(data=data, rows=rows, invariance=invariance),
    )


def plan(cfg: ExpLrConfig, prepared: Prepared) -> list[Unit]:
    """One unit per (model, precision) (:func:`plan_pairs`), each computed by :func:`train_pair`; work = steps."""
    state: ExpLrData = prepared.state
    return [Unit(t.key, train_pair, t, work=len(t.lrs), info=dict(model=t.model, precision=t.precision))
            for t in plan_pairs(cfg, state.data.input_shape, state.data.n_classes)]


_COLUMNS = ("step", "lr_wd", "lr_exp", "scale", "norm_wd", "norm_exp", "loss_wd", "loss_exp", "train_acc_wd",
            "train_acc_exp", "test_acc_wd", "test_acc_exp", "diff_train", "diff_test", "disagree_test",
            "diff_running", "diff_control")


def estimate(cfg: ExpLrConfig, prepared: Prepared, units) -> Outcome:
    """The trajectory and per-unit tables and the headline numbers, from the stored units."""
    state: ExpLrData = prepared.state
    frames, rows = [], []
    for task in plan_pairs(cfg, state.data.input_shape, state.data.n_classes):
        stored = units[task.key]
        m = len(stored["step"])
        frame = pd.DataFrame({"unit": [task.key] * m, "model": [task.model] * m, "precision": [task.precision] * m})
        for column in _COLUMNS:
            frame[column] = np.asarray(stored[column])
        frames.append(frame)
        rows.append(pair_summary(task, stored))
    trajectory = pd.concat(frames, ignore_index=True)
    runs = pd.DataFrame(rows)
    summary = summarize(runs)
    summary = {"training rows": int(len(state.rows)), "steps": int(cfg.steps), **summary}
    detail = ExpLrOutcome(trajectory=trajectory, runs=runs, summary=summary)
    return Outcome(tables={"trajectory": trajectory, "runs": runs}, summary=summary, detail=detail)


def summarize(runs: pd.DataFrame) -> dict:
    """Headline numbers: per precision the largest prediction difference against the control's; the weight growth."""
    out: dict = {}
    for precision in ("float64", "float32"):
        part = runs[runs.precision == precision]
        if not len(part):
            continue
        worst = float(max(part.max_diff_train.max(), part.max_diff_test.max()))
        out[f"{precision}: largest prediction difference"] = worst
        out[f"{precision}: largest difference of the control"] = float(part.max_diff_control.max())
        out[f"{precision}: units within {WITHIN}x their control"] = (
            f"{int(part.within_float_error.sum())} of {len(part)}")
        out[f"{precision}: largest share of test rows classified differently"] = float(part.max_disagree_test.max())
    f64 = runs[runs.precision == "float64"]
    if len(f64):
        out["float64: units below 1e-8"] = f"{int(f64.same_function.sum())} of {len(f64)}"
        out["float64: largest error of the weight-norm ratio against c_t"] = float(f64.max_scale_error.max())
    out["weight growth c_T of the exp-lr run"] = float(runs.final_scale.iloc[0])
    out["final lr of the exp-lr run"] = float(runs.final_lr_exp.iloc[0])
    out["largest difference with running-average statistics"] = float(runs.max_diff_running.max())
    return out


def report(cfg: ExpLrConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_exp_lr.report_context`)."""
    from fitscope.report.dynamics_exp_lr import report_context

    state: ExpLrData = prepared.state
    data = state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), rows=int(len(state.rows)),
                n_test=len(data.y_test), n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)))
    return report_context(cfg.model_dump(), info, outcome.detail.trajectory, outcome.detail.runs,
                          outcome.detail.summary, state.invariance)


STUDY = Study(kind="dynamics-exp-lr", command="fitscope dynamics exp-lr", config=ExpLrConfig, prepare=prepare,
              plan=plan, estimate=estimate, report=report, template="dynamics_exp_lr.html.j2", quick=QUICK,
              work_name="steps")


def dynamics_exp_lr(cfg: ExpLrConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), compare, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`ExpLrOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: ExpLrOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
