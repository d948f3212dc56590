"""Sharpness during training: the edge of stability of full-batch GD, and the flatness SGD selects.

The study, in the order it runs (``fitscope dynamics sharpness``):

1. **Data and model.** ``rows`` training rows (a seeded subset of the
   training split; inputs centred and scaled by their overall mean and
   standard deviation, the test split likewise; MNIST-1D by default, where a
   small MLP keeps sharpening for hundreds of steps while its loss is far
   from zero, rather than digits, which it fits within a few hundred steps)
   and one network of the spec (``mlp:64x3`` by default, a plain ``nn.Sequential``;
   :func:`fitscope.models.build_plain`), initialised once from
   ``derive_seed(seed, "model")``: every run starts from the same weights.
   The loss is the square loss of Cohen et al. 2021 (half the squared error
   to the one-hot label, summed over classes, averaged over rows) or
   cross-entropy.
2. **Full-batch gradient descent** at each learning rate of ``gd_lrs``:
   ``theta <- theta - lr * grad L(theta)`` on all the rows, for ``gd_steps``
   steps; every ``every`` steps the sharpness, the top eigenvalue of the
   training-loss Hessian (:func:`fitscope.dynamics.hessian_top_eigenvalues`,
   Lanczos on Hessian-vector products, warm-started from the previous top
   eigenvector), and the loss. GD on a quadratic with curvature above 2/lr
   diverges, so 2/lr is the stability threshold. Cohen et al. 2021 ("Gradient
   descent on neural networks typically occurs at the edge of stability")
   found that the sharpness rises during training (progressive sharpening)
   until it reaches about 2/lr and then hovers there while the loss keeps
   falling, non-monotonically: the edge of stability.
3. **SGD** at each (lr, batch size) of ``sgd_lrs`` x ``batch_sizes``: plain
   minibatch SGD (no momentum, batches drawn without replacement each epoch
   from ``derive_seed(seed, "batches", batch size)``, the last incomplete
   batch dropped) for the same training time ``lr x steps = sgd_time`` in
   every run (``sgd_time / lr`` steps), so that a small learning rate is not
   merely less trained; ``sgd_measurements`` times along the way, the
   sharpness and Hutchinson estimates of the full-batch Hessian's trace and
   Frobenius norm (:func:`fitscope.dynamics.hessian_trace`, the same
   ``probes`` Rademacher probes at every measurement). The
   dynamical-stability view (Wu, Ma, E 2018; Wu & Su 2023, seed 004): a
   minimum that SGD can stay at must be flat in trace and Frobenius norm, not
   only in its top eigenvalue, and more so at a larger learning rate and a
   smaller batch. GD's trace at the end is measured too, for comparison.
4. **Units.** One per run: ``gd-lr<lr>`` and ``sgd-lr<lr>-b<batch>``, each
   stored as it finishes (``--resume`` continues a killed study). A run whose
   loss becomes non-finite (or above 1e6) stops there and is marked diverged.
5. **Estimates and output.** Tables ``trajectory`` (one row per run and
   measurement) and ``runs`` (one row per run: initial, peak and final
   sharpness against 2/lr, where "final" is the mean over the last quarter of
   the measurements; the final trace and Frobenius norm; losses and
   accuracies), and ``report.html``: sharpness against step with each 2/lr
   line, the loss, and SGD's trace and Frobenius norm against lr and batch size.

Training uses plain torch loops inside the unit, not
:func:`fitscope.train.train_ensemble`: the engine trains batched ensembles with
an optimizer, a schedule and epochs of shuffled minibatches, while this study
needs exactly ``theta - lr * grad`` on the full batch, step by step, with a
Hessian measurement between steps; a loop of ten lines says that directly and
keeps every step seeded and reproducible.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`dynamics_sharpness` is the Python API.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.dynamics import check_hessian_memory, hessian_top_eigenvalues, hessian_trace, per_example_loss
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import build_plain, check_input_shape, flops_per_example, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.validation import message

#: a loss above this (or not finite) stops a run: it diverged
DIVERGED_LOSS = 1e6
#: "reached 2/lr": the peak sharpness came within this share of 2/lr
REACHED = 0.9
#: the final sharpness is the mean over this last share of a run's measurements
FINAL_SHARE = 0.25
#: the most steps an SGD run may take (sgd_time / lr)
MAX_SGD_STEPS = 1_000_000


# --------------------------------------------------------------------------- config


def _check_lrs(value: list[float], *, allow_empty: bool) -> list[float]:
    if not value and not allow_empty:
        raise ValueError("expected at least one learning rate; got none")
    bad = [v for v in value if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"expected finite learning rates > 0; got {bad[0]!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"expected distinct learning rates; got {value}")
    return sorted(float(v) for v in value)


class SharpnessConfig(BaseModel):
    """Everything that determines a sharpness study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "mnist1d"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and of the row subset")
    rows: int = Field(1000, ge=2, description="training rows (a seeded subset); full-batch GD uses them all")
    model: str = "mlp:64x3"
    loss: Literal["mse", "ce"] = "mse"
    gd_lrs: list[float] = Field(default_factory=lambda: [0.05, 0.2, 0.3, 0.4],
                                description="learning rates of the full-batch GD runs")
    gd_steps: int = Field(1000, gt=0, description="steps of each GD run")
    every: int = Field(20, gt=0, description="GD steps between two sharpness measurements")
    sgd_lrs: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.4],
                                 description="learning rates of the SGD runs (empty: no SGD)")
    batch_sizes: list[int] = Field(default_factory=lambda: [16, 64], description="SGD batch sizes")
    sgd_time: float = Field(400.0, gt=0, allow_inf_nan=False,
                            description="training time lr x steps of every SGD run: it takes sgd_time / lr steps")
    sgd_measurements: int = Field(10, gt=0, description="Hessian measurements of each SGD run, evenly spaced")
    probes: int = Field(20, ge=2, description="Rademacher probes per trace / Frobenius estimate")
    tol: float = Field(1e-3, gt=0, lt=1, description="relative tolerance of the Lanczos eigenvalue")
    max_iter: int = Field(100, gt=0, description="most Lanczos steps (Hessian-vector products) per estimate")
    memory_limit: float = Field(4.0, gt=0, allow_inf_nan=False,
                                description="GiB a Hessian computation may take (estimated before anything runs)")
    seed: int = Field(0, ge=0, description="seed of the initial weights, the SGD batches and the probes")

    @field_validator("gd_lrs")
    @classmethod
    def _gd_lrs(cls, value: list[float]) -> list[float]:
        return _check_lrs(value, allow_empty=False)

    @field_validator("sgd_lrs")
    @classmethod
    def _sgd_lrs(cls, value: list[float]) -> list[float]:
        return _check_lrs(value, allow_empty=True)

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"expected distinct batch sizes >= 1; got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _across(self) -> "SharpnessConfig":
        if self.sgd_lrs and not self.batch_sizes:
            raise ValueError("--batch-sizes: expected at least one batch size for the SGD runs, got none")
        too_big = [b for b in self.batch_sizes if b > self.rows]
        if self.sgd_lrs and too_big:
            raise ValueError(f"--batch-sizes: expected batch sizes in [1, {self.rows}] (--rows), got {too_big[0]}")
        if self.sgd_lrs and sgd_steps(self.sgd_time, self.sgd_lrs[0]) > MAX_SGD_STEPS:
            raise ValueError(f"--sgd-time: expected at most {MAX_SGD_STEPS:,} steps (sgd_time / lr) per SGD run, got "
                             f"{sgd_steps(self.sgd_time, self.sgd_lrs[0]):,} at lr {self.sgd_lrs[0]:g}")
        return self


def sgd_steps(time: float, lr: float) -> int:
    """Steps of an SGD run of training time ``time`` (lr x steps) at learning rate ``lr``: at least 1."""
    return max(1, int(round(time / lr)))


#: ``--quick``: 500 rows, GD at 3 learning rates for 400 steps, SGD at 2 x 2 (lr, batch) for a time of 100
#: (1000 and 250 steps), 10 probes.
QUICK = dict(rows=500, gd_lrs=[0.05, 0.3, 0.4], gd_steps=400, every=20, sgd_lrs=[0.1, 0.4], batch_sizes=[16, 64],
             sgd_time=100.0, sgd_measurements=5, probes=10)


def make_config(**values) -> SharpnessConfig:
    """Build a :class:`SharpnessConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(SharpnessConfig, values)


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class RunTask:
    """The task of one unit: one training run (GD or SGD) and how its Hessian is measured."""

    key: str
    optimizer: str  # "gd" or "sgd"
    lr: float
    batch_size: int  # all the rows for GD
    steps: int
    every: int
    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    loss: str
    model_seed: int
    batch_seed: int
    lanczos_seed: int
    probe_seed: int
    probes: int
    trace_every_measurement: bool  # SGD: trace and Frobenius at every measurement; GD: at the end only
    tol: float
    max_iter: int


def _key(optimizer: str, lr: float, batch_size: int | None = None) -> str:
    return f"{optimizer}-lr{lr:g}" + (f"-b{batch_size}" if batch_size is not None else "")


def plan_runs(cfg: SharpnessConfig, input_shape: tuple[int, ...], n_classes: int) -> list[RunTask]:
    """Every run: GD at each lr, then SGD at each (lr, batch size); the same initial weights for all."""
    common = dict(model=cfg.model, input_shape=tuple(input_shape), n_classes=n_classes, loss=cfg.loss,
                  model_seed=derive_seed(cfg.seed, "model"), lanczos_seed=derive_seed(cfg.seed, "lanczos"),
                  probe_seed=derive_seed(cfg.seed, "probes"), probes=cfg.probes, tol=cfg.tol, max_iter=cfg.max_iter)
    runs = [RunTask(_key("gd", lr), "gd", lr, cfg.rows, cfg.gd_steps, cfg.every, batch_seed=0,
                    trace_every_measurement=False, **common) for lr in cfg.gd_lrs]
    for b in cfg.batch_sizes:
        for lr in cfg.sgd_lrs:
            steps = sgd_steps(cfg.sgd_time, lr)
            runs.append(RunTask(_key("sgd", lr, b), "sgd", lr, b, steps, max(1, steps // cfg.sgd_measurements),
                                batch_seed=derive_seed(cfg.seed, "batches", b), trace_every_measurement=True,
                                **common))
    return runs


#: below this many FLOPs per full-batch forward pass a unit on the CPU computes with one torch thread
SMALL_WORK = 4e8


@contextlib.contextmanager
def small_work_threads(device: torch.device, work: float):
    """One torch thread inside the block when ``work`` (forward FLOPs x rows) is below :data:`SMALL_WORK` on the CPU.

    The study's networks are small (11,594 parameters by default): each of
    the thousands of steps and Hessian-vector products is a handful of small
    matrix products (23k FLOPs per row for ``mlp:64x3`` on MNIST-1D), and a
    second intra-op thread only adds the cost of waking it: one GD unit of
    ``--quick`` took 16 to 36 times the CPU time with 2 threads as with one
    on the busy 2-core machine (``bench/dynamics.py``). The rule depends on the
    task alone, so results stay the same whichever executor and ``--threads``
    ran them; a larger network keeps the threads the runner pinned.
    """
    if device.type != "cpu" or work >= SMALL_WORK:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measurement_steps(steps: int, every: int) -> list[int]:
    """0, every, 2 every, ... and the last step."""
    return sorted(set(range(0, steps + 1, every)) | {steps})


def _targets(y: torch.Tensor, loss: str, n_classes: int) -> torch.Tensor:
    return y if loss == "ce" else torch.nn.functional.one_hot(y, n_classes).float()


def train_run(task: RunTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one network by full-batch GD or SGD and measure its loss Hessian along the way.

    Module-level and pure: the result follows from the arguments alone. A
    small network on the CPU computes with one torch thread
    (:func:`small_work_threads`).

    Returns:
        Per measurement (``M`` of them, :func:`measurement_steps`): ``step``,
        ``loss`` and ``train_acc`` (full batch), ``sharpness`` (top
        eigenvalue), ``lanczos_steps``, ``converged``, ``trace``,
        ``trace_se``, ``frobenius``, ``frobenius_se`` (NaN where not
        measured); and ``test_acc`` (at the last step), ``diverged_at`` (the
        step at which the loss blew up, -1 if it did not), ``parameters``.
    """
    device = placement_device()  # the run's --device (FITSCOPE_DEVICE inside a unit), else the CPU
    model = build_plain(task.model, task.input_shape, task.n_classes, seed=task.model_seed, norm="group").to(device)
    with small_work_threads(device, flops_per_example(task.model, task.input_shape, task.n_classes) * len(x_train)):
        return _train_run(task, model, device, x_train, y_train, x_test, y_test, progress)


def _train_run(task, model, device, x_train, y_train, x_test, y_test, progress) -> dict[str, np.ndarray]:
    params = [p for p in model.parameters()]
    x = torch.from_numpy(np.ascontiguousarray(x_train)).to(device)
    y = torch.from_numpy(np.ascontiguousarray(y_train)).long().to(device)
    targets = _targets(y, task.loss, task.n_classes)
    n = len(x)
    marks = measurement_steps(task.steps, task.every)
    m = len(marks)
    out = {name: np.full(m, np.nan) for name in ("loss", "train_acc", "sharpness", "trace", "trace_se", "frobenius",
                                                   "frobenius_se")}
    out["step"] = np.asarray(marks, np.int64)
    out["lanczos_steps"] = np.zeros(m, np.int64)
    out["converged"] = np.zeros(m, bool)
    gen = torch.Generator().manual_seed(task.batch_seed)
    order = torch.empty(0, dtype=torch.long)
    diverged_at, start, mark = -1, None, 0
    for step in range(task.steps + 1):
        if step == marks[mark]:
            with torch.no_grad():
                logits = model(x)
                loss_value = float(per_example_loss(logits, targets, task.loss).mean())
            out["loss"][mark] = loss_value
            out["train_acc"][mark] = float((logits.argmax(1) == y).float().mean())
            if not math.isfinite(loss_value) or loss_value > DIVERGED_LOSS:
                diverged_at = step
                break
            top = hessian_top_eigenvalues(model, x, targets, loss=task.loss, tol=task.tol, max_iter=task.max_iter,
                                          seed=task.lanczos_seed, start=start, device=device)
            start = top.eigenvectors[0]
            out["sharpness"][mark], out["lanczos_steps"][mark], out["converged"][mark] = (
                top.top, top.iterations, top.converged)
            if task.trace_every_measurement or step == task.steps:
                tr = hessian_trace(model, x, targets, samples=task.probes, loss=task.loss, seed=task.probe_seed,
                                   device=device)
                out["trace"][mark], out["trace_se"][mark] = tr.trace, tr.trace_se
                out["frobenius"][mark], out["frobenius_se"][mark] = tr.frobenius, tr.frobenius_se
            mark += 1
        if step == task.steps:
            break
        if task.optimizer == "gd":
            xb, tb = x, targets
        else:
            if len(order) < task.batch_size:  # a new epoch: a fresh permutation, the incomplete rest dropped
                order = torch.randperm(n, generator=gen)
            rows, order = order[:task.batch_size].to(device), order[task.batch_size:]
            xb, tb = x[rows], targets[rows]
        loss = per_example_loss(model(xb), tb, task.loss).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(task.lr * g)
        value = loss.item()
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            diverged_at = step
            break
        if progress is not None and (step + 1) % 10 == 0:
            progress(step + 1)
    if diverged_at >= 0:
        test_acc = np.nan
    else:
        with torch.no_grad():
            predicted = model(torch.from_numpy(np.ascontiguousarray(x_test)).to(device)).argmax(1).cpu()
            test_acc = float((predicted == torch.from_numpy(np.ascontiguousarray(y_test)).long()).float().mean())
    if progress is not None:
        progress(task.steps)
    out["test_acc"] = np.asarray(test_acc)
    out["diverged_at"] = np.asarray(diverged_at, np.int64)
    out["parameters"] = np.asarray(sum(p.numel() for p in params), np.int64)
    return out


# --------------------------------------------------------------------------- estimates (arrays in, tables out)


def final_mean(values: np.ndarray) -> float:
    """The mean of the finite values among the last :data:`FINAL_SHARE` of ``values`` (at least the last one)."""
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan")
    tail = max(1, int(math.ceil(FINAL_SHARE * len(finite))))
    return float(finite[-tail:].mean())


def run_summary(task: RunTask, stored: dict) -> dict:
    """One row of the ``runs`` table from a unit's arrays."""
    sharp = np.asarray(stored["sharpness"], float)
    steps = np.asarray(stored["step"])
    threshold = 2.0 / task.lr
    finite = np.isfinite(sharp)
    peak = float(sharp[finite].max()) if finite.any() else float("nan")
    reached = bool(finite.any() and peak >= REACHED * threshold)
    first = int(steps[finite & (sharp >= REACHED * threshold)][0]) if reached else -1
    final = final_mean(sharp)
    last = np.flatnonzero(np.isfinite(stored["trace"]))
    at = last[-1] if len(last) else None
    diverged = int(stored["diverged_at"])
    return {
        "unit": task.key,
        "optimizer": task.optimizer,
        "lr": task.lr,
        "batch_size": int(task.batch_size),
        "steps": int(task.steps),
        "threshold": threshold,
        "initial_sharpness": float(sharp[0]) if finite[0] else float("nan"),
        "peak_sharpness": peak,
        "final_sharpness": final,
        "final_over_threshold": final / threshold,
        "reached_threshold": reached,
        "step_reached": first,
        "final_loss": float(stored["loss"][-1]) if diverged < 0 else float("nan"),
        "final_train_acc": float(stored["train_acc"][-1]) if diverged < 0 else float("nan"),
        "test_acc": float(stored["test_acc"]),
        "final_trace": final_mean(stored["trace"]) if task.optimizer == "sgd" else (
            float(stored["trace"][at]) if at is not None else float("nan")),
        "trace_se": float(stored["trace_se"][at]) if at is not None else float("nan"),
        "final_frobenius": final_mean(stored["frobenius"]) if task.optimizer == "sgd" else (
            float(stored["frobenius"][at]) if at is not None else float("nan")),
        "frobenius_se": float(stored["frobenius_se"][at]) if at is not None else float("nan"),
        "lanczos_steps": float(np.mean(stored["lanczos_steps"][finite])) if finite.any() else float("nan"),
        "all_converged": bool(np.all(np.asarray(stored["converged"])[finite])),
        "diverged_at": diverged,
    }


@dataclass
class SharpnessOutcome:
    """What :func:`dynamics_sharpness` computed.

    Attributes:
        trajectory: one row per run and measurement (``unit``, ``optimizer``,
            ``lr``, ``batch_size``, ``step``, ``loss``, ``train_acc``,
            ``sharpness``, ``threshold`` = 2/lr, ``lanczos_steps``,
            ``converged``, ``trace``, ``trace_se``, ``frobenius``, ``frobenius_se``).
        runs: one row per run (see :func:`run_summary`).
        summary: the headline numbers.
    """

    trajectory: pd.DataFrame
    runs: pd.DataFrame
    summary: dict = field(default_factory=dict)
    parameters: int = 0
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


@dataclass
class SharpnessData:
    """What ``prepare`` keeps for ``plan``, ``estimate`` and ``report``: the data set and the model's size."""

    data: Dataset
    rows: np.ndarray
    parameters: int
    scale: tuple[float, float]


def _parameters(cfg: SharpnessConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """The model's trainable parameter count, from a build on the meta device (no memory, no computation)."""
    with torch.device("meta"):
        model = build_plain(cfg.model, input_shape, n_classes, seed=0, norm="group")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def prepare(cfg: SharpnessConfig) -> Prepared:
    """Load the data, pick the rows, check the model and the memory its Hessian needs; nothing is written yet."""
    spec = parse_spec(cfg.model)
    if spec.family == "resnet":
        raise ConfigError(message("--model", "an mlp, cnn or cnn1d spec (a plain network; resnet has batch norm)",
                                  repr(cfg.model)))
    if spec.dropout:
        raise ConfigError(message("--model", "a spec without dropout (the Hessian of a random loss is not defined)",
                                  repr(cfg.model)))
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_input_shape(spec, data.input_shape)
    n_train = len(data.y_train)
    if cfg.rows > n_train:
        raise ConfigError(message("--rows", f"at most the {n_train} training rows of {data.name}", str(cfg.rows)))
    parameters = _parameters(cfg, data.input_shape, data.n_classes)
    check_hessian_memory(parameters, limit_gb=cfg.memory_limit, max_iter=cfg.max_iter, name="--model",
                         hint="--memory-limit")
    rng = np.random.default_rng(derive_seed(cfg.data_seed, "rows"))
    rows = np.sort(rng.choice(n_train, cfg.rows, replace=False))
    x = data.x_train[rows].astype(np.float32)
    mean, std = float(x.mean()), float(x.std())
    std = std if std > 0 else 1.0
    shared = {"x_train": (x - mean) / std, "y_train": data.y_train[rows].astype(np.int64),
              "x_test": ((data.x_test.astype(np.float32) - mean) / std), "y_test": data.y_test.astype(np.int64)}
    runs = plan_runs(cfg, data.input_shape, data.n_classes)
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, "model_seed": runs[0].model_seed,
               "lanczos_seed": runs[0].lanczos_seed, "probe_seed": runs[0].probe_seed,
               "batch_seeds": {str(b): derive_seed(cfg.seed, "batches", b) for b in cfg.batch_sizes}},
        shared=shared,
        state=SharpnessData(data=data, rows=rows, parameters=parameters, scale=(mean, std)),
    )


def plan(cfg: SharpnessConfig, prepared: Prepared) -> list[Unit]:
    """One unit per run (:func:`plan_runs`), each computed by :func:`train_run`; work = training steps."""
    state: SharpnessData = prepared.state
    return [Unit(t.key, train_run, t, work=t.steps,
                 info=dict(optimizer=t.optimizer, lr=t.lr, batch_size=t.batch_size))
            for t in plan_runs(cfg, state.data.input_shape, state.data.n_classes)]


def estimate(cfg: SharpnessConfig, prepared: Prepared, units) -> Outcome:
    """The trajectory and per-run tables and the headline numbers, from the stored units."""
    state: SharpnessData = prepared.state
    tasks = plan_runs(cfg, state.data.input_shape, state.data.n_classes)
    frames, rows = [], []
    for task in tasks:
        stored = units[task.key]
        m = len(stored["step"])
        frames.append(pd.DataFrame({
            "unit": [task.key] * m, "optimizer": [task.optimizer] * m, "lr": np.full(m, task.lr),
            "batch_size": np.full(m, task.batch_size, np.int64), "step": stored["step"].astype(np.int64),
            "loss": stored["loss"], "train_acc": stored["train_acc"], "sharpness": stored["sharpness"],
            "threshold": np.full(m, 2.0 / task.lr), "lanczos_steps": stored["lanczos_steps"].astype(np.int64),
            "converged": stored["converged"].astype(bool), "trace": stored["trace"], "trace_se": stored["trace_se"],
            "frobenius": stored["frobenius"], "frobenius_se": stored["frobenius_se"],
        }))
        rows.append(run_summary(task, stored))
    trajectory = pd.concat(frames, ignore_index=True)
    runs = pd.DataFrame(rows)
    summary = summarize(runs)
    summary = {"parameters": int(state.parameters), "training rows": int(cfg.rows),
               "initial sharpness": float(runs.initial_sharpness.iloc[0]), **summary}
    detail = SharpnessOutcome(trajectory=trajectory, runs=runs, summary=summary, parameters=state.parameters)
    return Outcome(tables={"trajectory": trajectory, "runs": runs}, summary=summary, detail=detail)


def summarize(runs: pd.DataFrame) -> dict:
    """Headline numbers: how many GD runs reached 2/lr and where their sharpness ended; SGD's flattest run."""
    gd = runs[runs.optimizer == "gd"]
    edge = gd[gd.reached_threshold & (gd.diverged_at < 0)]
    below = gd[~gd.reached_threshold & (gd.diverged_at < 0)]
    out: dict = {
        "GD runs": int(len(gd)),
        "GD runs that reached 2/lr": int(len(edge)),
        "GD runs that diverged": int((gd.diverged_at >= 0).sum()),
    }
    if len(edge):
        ratio = edge.final_over_threshold.to_numpy(float)
        out["final sharpness / (2/lr), GD at the edge: lowest"] = float(ratio.min())
        out["final sharpness / (2/lr), GD at the edge: highest"] = float(ratio.max())
    if len(below):
        out["final sharpness / (2/lr), GD below the edge: highest"] = float(below.final_over_threshold.max())
    sgd = runs[(runs.optimizer == "sgd") & (runs.diverged_at < 0)]
    if len(sgd):
        flat = sgd.loc[sgd.final_trace.idxmin()]
        sharp = sgd.loc[sgd.final_trace.idxmax()]
        out["SGD runs"] = int((runs.optimizer == "sgd").sum())
        out["SGD lowest final trace"] = float(flat.final_trace)
        out["SGD lowest final trace at (lr, batch)"] = f"({flat.lr:g}, {int(flat.batch_size)})"
        out["SGD highest final trace"] = float(sharp.final_trace)
        out["SGD highest final trace at (lr, batch)"] = f"({sharp.lr:g}, {int(sharp.batch_size)})"
    return out


def report(cfg: SharpnessConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_sharpness.report_context`)."""
    from fitscope.report.dynamics_sharpness import report_context

    state: SharpnessData = prepared.state
    data = state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), rows=int(cfg.rows),
                n_test=len(data.y_test), n_classes=data.n_classes,
                input_shape="x".join(map(str, data.input_shape)), kind=data.kind)
    return report_context(cfg.model_dump(), info, outcome.detail.trajectory, outcome.detail.runs,
                          outcome.detail.summary)


STUDY = Study(kind="dynamics-sharpness", command="fitscope dynamics sharpness", config=SharpnessConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="dynamics_sharpness.html.j2",
              quick=QUICK, work_name="steps")


def dynamics_sharpness(cfg: SharpnessConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), measure, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing runs train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`SharpnessOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: SharpnessOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
