"""Mode connectivity: two networks from different seeds, the paths between them, and dropout stability.

The study, in the order it runs (``fitscope dynamics connectivity``):

1. **Data and models.** The training and test splits of ``data`` (digits by
   default: two MLPs fit it within a minute on one core and the straight line
   between them already shows a barrier; inputs centred and scaled by the
   training split's overall mean and standard deviation). The default width,
   ``mlp:1024x2``, makes the networks dropout-stable (half of a layer dropped
   costs well under a point of test error), so that the dropout path shows
   its low barrier too; at width 256 the curve's finding holds but dropping
   half a layer doubles the test error (``bench/dynamics_connectivity.py``
   measures both). Two networks of the
   spec, ``A`` (``--model``) and ``B`` (``--model-b``, default the same spec;
   its parameter names and shapes must match ``A``'s), plain
   ``nn.Sequential`` MLPs (:func:`fitscope.models.build_plain`), initialised
   from ``derive_seed(seed, "model", "a")`` and ``(..., "b")`` and trained by
   :func:`fitscope.train.plain_models.train_plain` (SGD with momentum 0.9,
   cross-entropy) with their own batch orders.
2. **Dropout stability** of each network: for each hidden layer alone, and
   for all of them at once, the loss and error after dropping a random half
   of its units and doubling the rest (``draws`` seeded draws,
   :func:`fitscope.dynamics.dropout_stability`). Kuditipudi et al. 2019
   ("Explaining landscape connectivity of low-cost solutions for multilayer
   nets", seed 000) explain mode connectivity by this property.
3. **Three paths from A to B**, each evaluated on the training and the test
   split (:func:`fitscope.dynamics.path_losses`):
   (a) the straight line ``(1-t) wA + t wB`` at ``points`` evenly spaced ``t``;
   (b) the quadratic Bezier curve ``(1-t)^2 wA + 2t(1-t) theta + t^2 wB`` of
   Garipov et al. 2018, ``theta`` initialised at the midpoint and trained by
   SGD on the expected training loss over ``t ~ U[0, 1]``, one ``t`` per batch
   (:func:`fitscope.dynamics.train_bezier`), at the same ``points``;
   (c) the piecewise-linear path of Kuditipudi et al. through the dropped-out
   versions of ``A`` and ``B`` (:func:`fitscope.dynamics.dropout_path`; its
   docstring says where it simplifies the paper), at :data:`SEGMENT_POINTS`
   points per segment (the loss along each segment is convex in ``t`` or
   constant, so its corners bound it).
   The **barrier** of a path (:func:`fitscope.dynamics.barrier`, one
   definition throughout) is the most its loss rises above the straight
   interpolation of its two end losses. The finding of Garipov et al. and
   Draxler et al. 2018: the trained curve's barrier is a small fraction of the
   line's (here: at most a tenth, :data:`FINDING_RATIO`).
4. **Units.** ``endpoint-a`` and ``endpoint-b`` (train one network, measure its
   dropout stability) and ``paths`` (the three paths). The study runner's
   units are independent pure tasks, so ``paths`` trains the two end points
   again from the same seeds (bit-identical on the same device and thread
   count; the summary reports the largest relative difference between its
   end losses and the endpoint units', :func:`endpoint_mismatch`); training
   them is a few seconds of the study's time.
5. **Estimates and output.** Tables ``paths`` (one row per path and point),
   ``barriers`` (one row per path), ``dropout`` (one row per network, split,
   layer and draw) and ``report.html`` (loss and error against ``t`` for the
   three paths; error after dropout per layer).

Training of the curve is a plain torch loop inside
:func:`~fitscope.dynamics.train_bezier`: the engine of ``fitscope.train``
trains a module's own parameters, while the curve trains ``theta`` through
the Bezier formula at a random ``t`` per batch.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`dynamics_connectivity` is the Python API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from fitscope.data import Dataset, load
from fitscope.dynamics import (
    barrier, check_same_architecture, dropout_path, dropout_stability, interpolate, mlp_layers, path_losses,
    train_bezier,
)
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import build_plain, check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import train_plain
from fitscope.validation import message

#: the finding: the trained curve's barrier is at most this share of the straight line's
FINDING_RATIO = 0.1
#: points evaluated per segment of the dropout path (its corners and the points between)
SEGMENT_POINTS = 4
#: the three paths, in the order of the tables and figures
PATHS = ("line", "curve", "dropout")


class ConnectivityConfig(BaseModel):
    """Everything that determines a connectivity study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = "mlp:1024x2"
    model_b: str | None = Field(None, description="spec of network B (default: --model); same parameter shapes")
    epochs: int = Field(20, gt=0, description="training epochs of each network")
    batch_size: int = Field(64, gt=0, description="rows per SGD step (networks and curve)")
    lr: float = Field(0.05, gt=0, allow_inf_nan=False, description="learning rate of the networks (momentum 0.9)")
    curve_epochs: int = Field(100, gt=0, description="training epochs of the Bezier curve's bend")
    curve_lr: float = Field(0.05, gt=0, allow_inf_nan=False, description="learning rate of the bend (momentum 0.9)")
    points: int = Field(21, ge=3, description="evenly spaced points evaluated along the line and the curve")
    draws: int = Field(5, gt=0, description="seeded dropout draws per layer")
    seed: int = Field(0, ge=0, description="seed of the networks, the batches, the curve's t and the dropout draws")


#: ``--quick``: mlp:256x2 (a quarter of the default width), 10 epochs per network, 40 for the curve, 11 points,
#: 3 dropout draws
QUICK = dict(model="mlp:256x2", epochs=10, curve_epochs=40, points=11, draws=3)


def make_config(**values) -> ConnectivityConfig:
    """Build a :class:`ConnectivityConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(ConnectivityConfig, values)


# --------------------------------------------------------------------------- the unit tasks


@dataclass(frozen=True)
class EndpointTask:
    """How to train one network: its spec, seeds and the training settings."""

    name: str  # "a" or "b"
    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    model_seed: int
    batch_seed: int
    epochs: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class PathsTask:
    """The three paths between the two networks of ``a`` and ``b``."""

    a: EndpointTask
    b: EndpointTask
    curve_epochs: int
    curve_lr: float
    curve_seed: int
    path_seed: int
    points: int


@dataclass(frozen=True)
class StabilityTask:
    """One network and the dropout draws that measure its stability."""

    endpoint: EndpointTask
    draws: int
    dropout_seed: int


def endpoint_tasks(cfg: ConnectivityConfig, input_shape: tuple[int, ...], n_classes: int) -> tuple:
    """The two networks' tasks: A from ``--model``, B from ``--model-b``, each with its own seeds."""
    common = dict(input_shape=tuple(input_shape), n_classes=n_classes, epochs=cfg.epochs, batch_size=cfg.batch_size,
                  lr=cfg.lr)
    return tuple(EndpointTask(name=name, model=spec, model_seed=derive_seed(cfg.seed, "model", name),
                              batch_seed=derive_seed(cfg.seed, "batches", name), **common)
                 for name, spec in (("a", cfg.model), ("b", cfg.model_b or cfg.model)))


def train_endpoint(task: EndpointTask, x_train: np.ndarray, y_train: np.ndarray) -> torch.nn.Module:
    """One trained network (pure: the result follows from the task and the rows)."""
    model = build_plain(task.model, task.input_shape, task.n_classes, seed=task.model_seed)
    train_plain(model, x_train, y_train, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                seed=task.batch_seed, device=str(placement_device()))
    return model.cpu().eval()


def stability_unit(task: StabilityTask, *, x_train, y_train, x_test, y_test,
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one network and measure its dropout stability on both splits (one unit).

    Returns:
        ``layer`` (names), ``split`` (``train``/``test``), ``draw``, ``units``, ``kept``, ``loss``, ``error``: one
        entry per (split, layer, draw) of :func:`fitscope.dynamics.dropout_stability`.
    """
    model = train_endpoint(task.endpoint, x_train, y_train)
    if progress is not None:
        progress(task.endpoint.epochs)
    frames = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        table = dropout_stability(model, x, y, seed=task.dropout_seed, draws=task.draws)
        table.insert(0, "split", split)
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    return {"layer": table.layer.to_numpy(str), "split": table.split.to_numpy(str),
            "draw": table.draw.to_numpy(np.int64), "units": table.units.to_numpy(np.int64),
            "kept": table.kept.to_numpy(np.int64), "loss": table.loss.to_numpy(float),
            "error": table.error.to_numpy(float)}


def paths_unit(task: PathsTask, *, x_train, y_train, x_test, y_test,
               progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train both networks, then the Bezier curve, and evaluate the three paths on both splits (one unit).

    Returns:
        Per path ``p`` in :data:`PATHS`: ``p_t`` (the points), ``p_train_loss``, ``p_train_error``,
        ``p_test_loss``, ``p_test_error``; ``curve_epoch_loss`` (the curve's training loss per epoch);
        ``dropout_corners`` (the ``t`` of the dropout path's corners) and ``dropout_kinds`` (each segment's
        kind, ``switch`` or ``free``).
    """
    out: dict[str, np.ndarray] = {}
    done = 0

    def tick(step: int) -> None:
        if progress is not None:
            progress(done + step)

    model_a = train_endpoint(task.a, x_train, y_train)
    model_b = train_endpoint(task.b, x_train, y_train)
    done = task.a.epochs + task.b.epochs
    tick(0)
    curve = train_bezier(model_a, model_b, x_train, y_train, epochs=task.curve_epochs, seed=task.curve_seed,
                         batch_size=task.a.batch_size, lr=task.curve_lr, progress=tick)
    route = dropout_path(model_a, model_b, seed=task.path_seed)
    even = np.linspace(0.0, 1.0, task.points)
    points = {
        "line": (lambda t: interpolate(model_a, model_b, t), even),
        "curve": (curve.point, even),
        "dropout": (route.point, np.linspace(0.0, 1.0, route.segments * SEGMENT_POINTS + 1)),
    }
    for name, (point, ts) in points.items():
        out[f"{name}_t"] = ts
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            table = path_losses(model_a, point, ts, x, y)
            out[f"{name}_{split}_loss"] = table.loss.to_numpy(float)
            out[f"{name}_{split}_error"] = table.error.to_numpy(float)
    out["curve_epoch_loss"] = curve.losses
    out["dropout_corners"] = route.corners()
    out["dropout_kinds"] = np.asarray(route.kinds, str)
    out["dropout_labels"] = np.asarray(route.labels, str)
    tick(task.curve_epochs)
    return out


def plan_tasks(cfg: ConnectivityConfig, input_shape: tuple[int, ...], n_classes: int) -> dict:
    """The three units' tasks, by unit key."""
    a, b = endpoint_tasks(cfg, input_shape, n_classes)
    stability = {f"endpoint-{e.name}": StabilityTask(e, cfg.draws, derive_seed(cfg.seed, "dropout", e.name))
                 for e in (a, b)}
    paths = PathsTask(a, b, cfg.curve_epochs, cfg.curve_lr, derive_seed(cfg.seed, "curve"),
                      derive_seed(cfg.seed, "halves"), cfg.points)
    return {**stability, "paths": paths}


# --------------------------------------------------------------------------- prepare, plan, estimate


@dataclass
class ConnectivityData:
    """What ``prepare`` keeps for ``plan``, ``estimate`` and ``report``: the data set and the networks' size."""

    data: Dataset
    parameters: int


def _check_models(cfg: ConnectivityConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Both specs build MLPs of the same architecture with even hidden widths; return the parameter count."""
    specs = {"--model": parse_spec(cfg.model), "--model-b": parse_spec(cfg.model_b or cfg.model)}
    for flag, spec in specs.items():
        if spec.family != "mlp":
            raise ConfigError(message(flag, "an mlp spec (the dropout path of Kuditipudi et al. is built for MLPs)",
                                      repr(str(spec))))
        check_input_shape(spec, input_shape)
    with torch.device("meta"):
        model_a = build_plain(cfg.model, input_shape, n_classes, seed=0)
        model_b = build_plain(cfg.model_b or cfg.model, input_shape, n_classes, seed=0)
    check_same_architecture(model_a, model_b, names=("--model", "--model-b"))
    mlp_layers(model_a, name="--model")  # hidden layers of even width: half of each hosts the other network
    return int(sum(p.numel() for p in model_a.parameters()))


def prepare(cfg: ConnectivityConfig) -> Prepared:
    """Load the data, check the two specs (MLPs of one architecture); nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    parameters = _check_models(cfg, data.input_shape, data.n_classes)
    x = data.x_train.astype(np.float32)
    mean, std = float(x.mean()), float(x.std())
    std = std if std > 0 else 1.0
    shared = {"x_train": (x - mean) / std, "y_train": data.y_train.astype(np.int64),
              "x_test": (data.x_test.astype(np.float32) - mean) / std, "y_test": data.y_test.astype(np.int64)}
    tasks = plan_tasks(cfg, data.input_shape, data.n_classes)
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed,
               "model_seeds": {e.name: e.model_seed for e in (tasks["paths"].a, tasks["paths"].b)},
               "batch_seeds": {e.name: e.batch_seed for e in (tasks["paths"].a, tasks["paths"].b)},
               "curve_seed": tasks["paths"].curve_seed, "halves_seed": tasks["paths"].path_seed,
               "dropout_seeds": {k: t.dropout_seed for k, t in tasks.items() if k != "paths"}},
        shared=shared,
        state=ConnectivityData(data=data, parameters=parameters),
    )


def plan(cfg: ConnectivityConfig, prepared: Prepared) -> list[Unit]:
    """``endpoint-a``, ``endpoint-b`` (:func:`stability_unit`) and ``paths`` (:func:`paths_unit`); work = epochs."""
    state: ConnectivityData = prepared.state
    tasks = plan_tasks(cfg, state.data.input_shape, state.data.n_classes)
    units = [Unit(key, stability_unit, task, work=task.endpoint.epochs, info=dict(network=task.endpoint.name))
             for key, task in tasks.items() if key != "paths"]
    paths = tasks["paths"]
    units.append(Unit("paths", paths_unit, paths, work=paths.a.epochs + paths.b.epochs + paths.curve_epochs,
                      info=dict(points=paths.points)))
    return units


def path_table(stored: dict) -> pd.DataFrame:
    """One row per path and point: ``path``, ``t``, ``train_loss``, ``train_error``, ``test_loss``, ``test_error``."""
    frames = []
    for name in PATHS:
        t = np.asarray(stored[f"{name}_t"], float)
        frames.append(pd.DataFrame({"path": [name] * len(t), "t": t,
                                    **{f"{split}_{what}": np.asarray(stored[f"{name}_{split}_{what}"], float)
                                       for split in ("train", "test") for what in ("loss", "error")}}))
    return pd.concat(frames, ignore_index=True)


def barrier_table(paths: pd.DataFrame) -> pd.DataFrame:
    """One row per path: the barrier of the training and test loss, and the largest error along it."""
    rows = []
    for name in PATHS:
        part = paths[paths.path == name].sort_values("t")
        rows.append({"path": name, "points": int(len(part)),
                     "train_barrier": barrier(part.train_loss, part.t), "test_barrier": barrier(part.test_loss, part.t),
                     "train_loss_max": float(part.train_loss.max()), "test_loss_max": float(part.test_loss.max()),
                     "train_error_max": float(part.train_error.max()), "test_error_max": float(part.test_error.max()),
                     "train_error_ends": float(max(part.train_error.iloc[0], part.train_error.iloc[-1])),
                     "test_error_ends": float(max(part.test_error.iloc[0], part.test_error.iloc[-1]))})
    return pd.DataFrame(rows)


def dropout_table(units) -> pd.DataFrame:
    """One row per network, split, layer and draw of the two endpoint units."""
    frames = []
    for name in ("a", "b"):
        stored = units[f"endpoint-{name}"]
        frames.append(pd.DataFrame({"network": name.upper(), "split": stored["split"].astype(str),
                                    "layer": stored["layer"].astype(str), "draw": stored["draw"].astype(np.int64),
                                    "units": stored["units"].astype(np.int64), "kept": stored["kept"].astype(np.int64),
                                    "loss": stored["loss"], "error": stored["error"]}))
    return pd.concat(frames, ignore_index=True)


def dropout_summary(dropout: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over the draws, per network, split and layer (``none``: nothing dropped)."""
    grouped = dropout.groupby(["network", "split", "layer"], sort=False)
    table = grouped.agg(units=("units", "first"), draws=("draw", lambda d: int((d >= 0).sum())),
                        error_mean=("error", "mean"), error_std=("error", "std"), loss_mean=("loss", "mean"),
                        loss_std=("loss", "std")).reset_index()
    return table


def endpoint_mismatch(paths: pd.DataFrame, dropout: pd.DataFrame) -> float:
    """The largest relative difference between the paths unit's end losses and the endpoint units' (0: the same).

    The ``paths`` unit trains both networks again from the same seeds; on one device and thread count the two
    trainings are bit-identical. A difference (units run on different devices) is reported, not hidden.
    """
    worst = 0.0
    for name, t in (("A", 0.0), ("B", 1.0)):
        base = dropout[(dropout.network == name) & (dropout.layer == "none") & (dropout.split == "train")]
        ends = paths[(paths.path == "line") & (paths.t == t)]
        if len(base) and len(ends):
            ref, got = float(base.loss.iloc[0]), float(ends.train_loss.iloc[0])
            worst = max(worst, abs(got - ref) / max(abs(ref), 1e-12))
    return worst


def summarize(barriers: pd.DataFrame, dropout: pd.DataFrame) -> dict:
    """Headline numbers: the three barriers, the curve's share of the line's, and the errors after dropout."""
    b = barriers.set_index("path")
    line, curve = float(b.loc["line", "train_barrier"]), float(b.loc["curve", "train_barrier"])
    ratio = curve / line if line > 0 else float("nan")
    out: dict = {
        "line barrier (train loss)": line,
        "curve barrier (train loss)": curve,
        "dropout-path barrier (train loss)": float(b.loc["dropout", "train_barrier"]),
        "curve barrier / line barrier": ratio,
        "curve barrier at most a tenth of the line's": bool(line > 0 and curve <= FINDING_RATIO * line),
        "line barrier (test loss)": float(b.loc["line", "test_barrier"]),
        "curve barrier (test loss)": float(b.loc["curve", "test_barrier"]),
        "largest test error on the line": float(b.loc["line", "test_error_max"]),
        "largest test error on the curve": float(b.loc["curve", "test_error_max"]),
        "largest test error on the dropout path": float(b.loc["dropout", "test_error_max"]),
    }
    test = dropout[dropout.split == "test"]
    for name in ("A", "B"):
        part = test[test.network == name]
        out[f"test error of {name}"] = float(part[part.layer == "none"].error.iloc[0])
    one = test[~test.layer.isin(["none", "all"])]
    if len(one):
        means = one.groupby(["network", "layer"]).error.mean()
        out["test error, half of one layer dropped: lowest mean"] = float(means.min())
        out["test error, half of one layer dropped: highest mean"] = float(means.max())
    every = test[test.layer == "all"]
    if len(every):
        out["test error, half of every layer dropped: mean"] = float(every.error.mean())
    return out


@dataclass
class ConnectivityOutcome:
    """What :func:`dynamics_connectivity` computed.

    Attributes:
        paths: one row per path and point (:func:`path_table`).
        barriers: one row per path (:func:`barrier_table`).
        dropout: one row per network, split, layer and draw (:func:`dropout_table`).
        dropout_summary: mean and spread over the draws (:func:`dropout_summary`).
        curve_loss: the curve's training loss per epoch.
        corners: the dropout path's corners (``t``, kind of the segment that ends there, label).
        summary: the headline numbers.
    """

    paths: pd.DataFrame
    barriers: pd.DataFrame
    dropout: pd.DataFrame
    dropout_summary: pd.DataFrame
    curve_loss: np.ndarray
    corners: pd.DataFrame
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def estimate(cfg: ConnectivityConfig, prepared: Prepared, units) -> Outcome:
    """The path, barrier and dropout tables and the headline numbers, from the stored units."""
    state: ConnectivityData = prepared.state
    stored = units["paths"]
    paths = path_table(stored)
    barriers = barrier_table(paths)
    dropout = dropout_table(units)
    summary = {"parameters": int(state.parameters), **summarize(barriers, dropout),
               "end points of the paths unit: largest relative loss difference": endpoint_mismatch(paths, dropout)}
    kinds = [str(k) for k in stored["dropout_kinds"]]
    corners = pd.DataFrame({"t": np.asarray(stored["dropout_corners"], float),
                            "segment": ["start"] + kinds, "label": [str(s) for s in stored["dropout_labels"]]})
    detail = ConnectivityOutcome(paths=paths, barriers=barriers, dropout=dropout,
                                 dropout_summary=dropout_summary(dropout),
                                 curve_loss=np.asarray(stored["curve_epoch_loss"], float), corners=corners,
                                 summary=summary)
    return Outcome(tables={"paths": paths, "barriers": barriers, "dropout": dropout}, summary=summary, detail=detail)


def report(cfg: ConnectivityConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_connectivity.report_context`)."""
    from fitscope.report.dynamics_connectivity import report_context

    state: ConnectivityData = prepared.state
    data = state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)))
    detail: ConnectivityOutcome = outcome.detail
    return report_context(cfg.model_dump(), info, detail)


STUDY = Study(kind="dynamics-connectivity", command="fitscope dynamics connectivity", config=ConnectivityConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="dynamics_connectivity.html.j2",
              quick=QUICK, work_name="epochs")


def dynamics_connectivity(cfg: ConnectivityConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), measure the paths, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units run).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`ConnectivityOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: ConnectivityOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
