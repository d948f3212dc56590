"""Are all layers created equal? Re-initialisation and re-randomisation robustness of each layer, per epoch.

The study, in the order it runs (``fitscope dynamics layers``), after Zhang,
Bengio and Singer 2019 ("Are all layers created equal?"):

1. **Data and networks.** The data set's own train/test split (digits by
   default: 1,437 training and 360 test images of 8x8 pixels) and each network
   of ``nets``: by default a fully connected ``mlp:256x3`` (the paper's FCN on
   MNIST: three hidden layers of 256) and a small ``resnet:16x3,blocks=2``
   (stem, three stages of two basic residual blocks with batch norm, linear
   head). ``models`` networks of each, each from its own seed.
2. **Training with checkpoints.** Each network trains with
   :func:`fitscope.train.plain_models.train_plain` (mini-batch SGD with
   momentum, cross-entropy, a seeded batch order); the state of the network
   (parameters and batch-norm buffers) is copied at every epoch of
   ``checkpoints`` (epoch 0 is the initialisation, copied before the first step)
   from the training loop's per-epoch callback, so the trainer is used as it is.
3. **Layers.** :func:`fitscope.dynamics.layer_groups`: a linear or
   convolutional layer together with the batch norm that follows it; a whole
   residual block of the ResNet (as in the paper); the stem and the output layer.
4. **Re-initialisation.** For each layer alone and each checkpoint epoch ``e``,
   the layer's parameters are set back to their values at ``e`` (every other
   layer stays trained) and the test error is measured
   (:func:`fitscope.dynamics.layer_robustness`). **Re-randomisation**: the
   layer's parameters are replaced by those of a freshly built network of the
   same spec from a new seed (a fresh draw from the initialisation
   distribution), ``draws`` times. **Batch-norm statistics**: the trained
   running means and variances are kept in every case (the paper's choice);
   only parameters are reset, and evaluation is in eval mode.
5. **Estimates and output.** Tables ``cells`` (one row per network, model,
   layer and checkpoint or draw: the test error), ``layers`` (per network and
   layer, means over the models: the error re-initialised to each checkpoint,
   re-randomised, the rise over the trained error, the relative distance the
   layer moved from its initial weights, and whether it is *critical*:
   re-initialising it to its initial weights raises the test error by more
   than ``critical``), ``training`` (per epoch accuracies), and ``report.html``:
   a heatmap of layer x checkpoint epoch (plus a re-randomisation column) per
   network. The paper's finding: some layers are critical and others robust; in
   fully connected nets the first layer is critical and the later ones robust.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``), one unit per
network and model; :func:`dynamics_layers` is the Python API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from fitscope.data import Dataset, load
from fitscope.dynamics import layer_groups, layer_robustness, snapshot
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import build, build_plain, check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import eval_logits, train_plain
from fitscope.validation import message

#: the most training epochs a study may ask for
MAX_EPOCHS = 1000


# --------------------------------------------------------------------------- config


class LayersConfig(BaseModel):
    """Everything that determines a layer-robustness study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    nets: list[str] = Field(default_factory=lambda: ["mlp:256x3", "resnet:16x3,blocks=2"],
                            description="model specs, each trained and probed layer by layer")
    models: int = Field(3, ge=1, le=100, description="networks of each spec, each from its own seed")
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS, description="training epochs")
    checkpoints: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 5, 10, 20, 30],
                                   description="epochs whose weights a layer is re-initialised to (0: initialisation)")
    batch_size: int = Field(32, ge=1, description="rows per SGD step")
    lr: float = Field(0.05, gt=0, le=10, allow_inf_nan=False, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False, description="L2 penalty")
    draws: int = Field(1, ge=1, le=20, description="re-randomisations of each layer (fresh seeded draws)")
    critical: float = Field(0.05, gt=0, lt=1, description="a layer is critical when re-initialising it to its "
                                                          "initial weights raises the test error by more than this")
    seed: int = Field(0, ge=0, description="seed of the initial weights, batch orders and re-randomisations")

    @field_validator("nets")
    @classmethod
    def _nets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one model spec, e.g. mlp:256x3; got none")
        canonical = []
        for spec in value:
            try:
                canonical.append(str(parse_spec(spec)))
            except ConfigError as err:
                raise ValueError(str(err).removeprefix("spec: ")) from None
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"expected distinct model specs; got {value}")
        return [spec.strip() for spec in value]

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("expected at least one checkpoint epoch, e.g. 0,1,5; got none")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct checkpoint epochs; got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _across(self) -> "LayersConfig":
        bad = [e for e in self.checkpoints if not 0 <= e <= self.epochs]
        if bad:
            raise ValueError(f"--checkpoints: expected epochs in [0, {self.epochs}] (--epochs), got {bad[0]}")
        return self


#: ``--quick``: one network of each spec, 10 epochs, checkpoints at epochs 0, 1, 2, 5 and 10.
QUICK = dict(models=1, epochs=10, checkpoints=[0, 1, 2, 5, 10])


def make_config(**values) -> LayersConfig:
    """Build a :class:`LayersConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(LayersConfig, values)


# --------------------------------------------------------------------------- networks


class OneOfEnsemble(nn.Module):
    """Model 0 of a one-model fitscope ensemble as a plain ``(B, *input_shape) -> (B, C)`` module.

    The ResNet exists only as a batched ensemble (:func:`fitscope.models.build`);
    with one seed it is one network, and ``forward_shared`` takes a plain batch.
    """

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        self.net = ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *input_shape)`` -> ``(B, C)``."""
        return self.net.forward_shared(x)[0]


def build_net(spec: str, input_shape: tuple[int, ...], n_classes: int, *, seed: int) -> nn.Module:
    """One network of ``spec`` initialised from ``seed``: a plain net (batch norm) or a one-model ResNet."""
    if parse_spec(spec).family == "resnet":
        return OneOfEnsemble(build(spec, input_shape, n_classes, seeds=[seed], norm="batch"))
    return build_plain(spec, input_shape, n_classes, seed=seed, norm="batch")


def layer_label(name: str, spec: str) -> str:
    """A layer's name as shown: ``fc1``, ``out``; a ResNet's ``net.blocks.3`` as ``stage2.block2``."""
    parsed = parse_spec(spec)
    name = name.removeprefix("net.")
    m = re.fullmatch(r"blocks\.(\d+)", name)
    if parsed.family == "resnet" and m:
        b = int(m.group(1))
        return f"stage{b // parsed.blocks + 1}.block{b % parsed.blocks + 1}"
    return name


def net_key(spec: str) -> str:
    """A file-name-safe name of a spec: ``mlp-256-256-256``."""
    return re.sub(r"[^a-z0-9]+", "-", spec.lower()).strip("-")


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class NetTask:
    """The task of one unit: train one network with checkpoints, then probe every layer."""

    key: str
    spec: str
    model: int
    input_shape: tuple[int, ...]
    n_classes: int
    epochs: int
    checkpoints: tuple[int, ...]
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    draws: int
    model_seed: int
    order_seed: int
    rerandom_seed: int


def plan_tasks(cfg: LayersConfig, input_shape: tuple[int, ...], n_classes: int) -> list[NetTask]:
    """One task per (spec, model): model ``k`` of every spec starts from ``derive_seed(seed, "model", k)``."""
    return [NetTask(key=f"{net_key(spec)}-m{k}", spec=spec, model=k, input_shape=tuple(input_shape),
                    n_classes=n_classes, epochs=cfg.epochs, checkpoints=tuple(cfg.checkpoints),
                    batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    draws=cfg.draws, model_seed=derive_seed(cfg.seed, "model", k),
                    order_seed=derive_seed(cfg.seed, "order", k),
                    rerandom_seed=derive_seed(cfg.seed, "rerandomize", net_key(spec), k))
            for spec in cfg.nets for k in range(cfg.models)]


def probe_net(task: NetTask, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
              progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train one network, keeping its state at the checkpoint epochs, and measure every layer's robustness.

    Module-level and pure: the result follows from the arguments alone.

    Returns:
        ``layers`` ``(L,)`` names as in the model, ``sizes`` ``(L,)`` parameter
        counts, ``epochs`` ``(E,)``, ``reinit`` ``(L, E)`` and ``rerandom``
        ``(L, draws)`` test errors, ``distance`` ``(L, E)``, ``trained``
        (the trained test error), ``train_acc`` and ``test_acc`` ``(epochs,)``.
    """
    def make(seed: int) -> nn.Module:
        return build_net(task.spec, task.input_shape, task.n_classes, seed=seed)

    model = make(task.model_seed)
    wanted = set(task.checkpoints)
    states = {0: snapshot(model)} if 0 in wanted else {}

    def tick(info: dict) -> None:
        epoch = int(info["epoch"])
        if epoch in wanted:
            states[epoch] = snapshot(model)
        if progress is not None:
            progress(epoch)

    result = train_plain(model, x_train, y_train, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                         momentum=task.momentum, weight_decay=task.weight_decay, seed=task.order_seed,
                         x_test=x_test, y_test=y_test, progress=tick)
    device = placement_device()
    xt = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)).to(device)
    labels = np.asarray(y_test)

    def test_error(net: nn.Module) -> float:
        return float((eval_logits(net, xt).argmax(1).cpu().numpy() != labels).mean())

    groups = layer_groups(model)
    robust = layer_robustness(model, states, test_error, layers=groups, seed=task.rerandom_seed, draws=task.draws,
                              fresh=lambda s: make(s).to(device))
    return {
        "layers": np.asarray([g.name for g in groups]),
        "sizes": np.asarray([g.size for g in groups], np.int64),
        "epochs": robust.epochs,
        "reinit": robust.reinit,
        "rerandom": robust.rerandom,
        "distance": robust.distance,
        "trained": np.float64(robust.trained),
        "train_acc": result.train_acc,
        "test_acc": result.test_acc,
    }


# --------------------------------------------------------------------------- estimates


@dataclass
class LayersOutcome:
    """What :func:`dynamics_layers` computed.

    Attributes:
        cells: one row per spec, model, layer and measurement (``net``, ``model``,
            ``layer``, ``index``, ``kind`` reinit/rerandom, ``epoch`` (-1 for
            rerandom), ``draw``, ``error``, ``trained``).
        layers: one row per spec and layer, means over the models (see :func:`layer_table`).
        training: one row per spec, model and epoch (``train_acc``, ``test_acc``).
        summary: the headline numbers.
    """

    cells: pd.DataFrame
    layers: pd.DataFrame
    training: pd.DataFrame
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


@dataclass
class LayersData:
    """What ``prepare`` keeps for ``plan``, ``estimate`` and ``report``: the data set."""

    data: Dataset


def cells_table(tasks: list[NetTask], units) -> pd.DataFrame:
    """The long table of every measurement of every unit, in plan order."""
    frames = []
    for task in tasks:
        stored = units[task.key]
        names = [layer_label(str(n), task.spec) for n in stored["layers"]]
        epochs = stored["epochs"].astype(np.int64)
        rows = []
        for i, name in enumerate(names):
            for j, e in enumerate(epochs):
                rows.append((name, i, "reinit", int(e), 0, float(stored["reinit"][i, j])))
            for d in range(stored["rerandom"].shape[1]):
                rows.append((name, i, "rerandom", -1, d, float(stored["rerandom"][i, d])))
        frame = pd.DataFrame(rows, columns=["layer", "index", "kind", "epoch", "draw", "error"])
        frame.insert(0, "model", task.model)
        frame.insert(0, "net", task.spec)
        frame["trained"] = float(stored["trained"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def layer_table(cells: pd.DataFrame, distances: pd.DataFrame, *, critical: float) -> pd.DataFrame:
    """Per spec and layer (means over the models): the error re-initialised to the first checkpoint and re-randomised.

    Columns: ``net``, ``index``, ``layer``, ``parameters``, ``trained`` (the
    trained test error), ``reinit_first`` (re-initialised to the earliest
    checkpoint, the initial weights when epoch 0 is one), ``rise`` (``reinit_first
    - trained``), ``rerandom``, ``distance`` (relative distance of the trained
    layer from its weights at the earliest checkpoint), ``critical`` (``rise >
    critical``), and one ``reinit_e<epoch>`` column per checkpoint.
    """
    re_ = cells[cells.kind == "reinit"]
    first = int(re_.epoch.min())
    wide = re_.groupby(["net", "index", "layer", "epoch"], sort=False).error.mean().unstack("epoch")
    wide.columns = [f"reinit_e{int(e)}" for e in wide.columns]
    out = wide.reset_index()
    trained = cells.groupby("net", sort=False).trained.mean()
    rr = cells[cells.kind == "rerandom"].groupby(["net", "index"], sort=False).error.mean()
    out.insert(3, "trained", out.net.map(trained).to_numpy(float))
    out.insert(4, "reinit_first", out[f"reinit_e{first}"].to_numpy(float))
    out.insert(5, "rise", out.reinit_first - out.trained)
    out.insert(6, "rerandom", [float(rr.get((n, i), np.nan)) for n, i in zip(out.net, out["index"])])
    dist = distances.groupby(["net", "index"], sort=False)[["distance", "parameters"]].mean()
    out.insert(3, "parameters", [int(dist.loc[(n, i), "parameters"]) for n, i in zip(out.net, out["index"])])
    out.insert(8, "distance", [float(dist.loc[(n, i), "distance"]) for n, i in zip(out.net, out["index"])])
    out.insert(9, "critical", out.rise > critical)
    return out


def summarize(layers: pd.DataFrame, first_epoch: int) -> dict:
    """Headline numbers per spec: trained error, the first layer's and the later layers' errors when reset."""
    out: dict = {"checkpoint the layers are reset to for 'critical'": f"epoch {first_epoch}"}
    for net, part in layers.groupby("net", sort=False):
        part = part.sort_values("index")
        first, later = part.iloc[0], part.iloc[1:]
        out[f"{net}: trained test error"] = float(first.trained)
        out[f"{net}: test error, first layer ({first.layer}) reset"] = float(first.reinit_first)
        if len(later):
            worst = later.loc[later.rise.idxmax()]
            out[f"{net}: test error, worst later layer ({worst.layer}) reset"] = float(worst.reinit_first)
        out[f"{net}: critical layers"] = ", ".join(part.layer[part.critical]) or "none"
        out[f"{net}: robust layers"] = ", ".join(part.layer[~part.critical]) or "none"
        out[f"{net}: test error, re-randomised, lowest"] = float(part.rerandom.min())
    return out


# --------------------------------------------------------------------------- the study's functions


def prepare(cfg: LayersConfig) -> Prepared:
    """Load the data and check every spec against it; nothing is written yet."""
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    for spec in cfg.nets:
        try:
            check_input_shape(parse_spec(spec), data.input_shape)
        except ConfigError as err:
            raise ConfigError("--nets: " + str(err).removeprefix("spec: ")) from None
    if len(data.y_test) == 0:
        raise ConfigError(message("--data", "a data set with a test split (the error is measured on it)",
                                  f"{data.name} with no test rows"))
    tasks = plan_tasks(cfg, data.input_shape, data.n_classes)
    shared = {"x_train": data.x_train.astype(np.float32), "y_train": data.y_train.astype(np.int64),
              "x_test": data.x_test.astype(np.float32), "y_test": data.y_test.astype(np.int64)}
    return Prepared(
        seeds={"seed": cfg.seed, "data_seed": cfg.data_seed,
               "model_seeds": [derive_seed(cfg.seed, "model", k) for k in range(cfg.models)],
               "order_seeds": [derive_seed(cfg.seed, "order", k) for k in range(cfg.models)],
               "rerandom_seeds": {t.key: t.rerandom_seed for t in tasks}},
        shared=shared,
        state=LayersData(data=data),
    )


def plan(cfg: LayersConfig, prepared: Prepared) -> list[Unit]:
    """One unit per spec and model (:func:`plan_tasks`), computed by :func:`probe_net`; work = epochs."""
    data = prepared.state.data
    return [Unit(t.key, probe_net, t, work=t.epochs, label=f"{t.spec} #{t.model}",
                 info=dict(net=t.spec, model=t.model))
            for t in plan_tasks(cfg, data.input_shape, data.n_classes)]


def estimate(cfg: LayersConfig, prepared: Prepared, units) -> Outcome:
    """The cells, layers and training tables and the headline numbers, from the stored units."""
    data = prepared.state.data
    tasks = plan_tasks(cfg, data.input_shape, data.n_classes)
    cells = cells_table(tasks, units)
    dist_rows, train_rows = [], []
    for task in tasks:
        stored = units[task.key]
        for i, size in enumerate(stored["sizes"]):
            dist_rows.append(dict(net=task.spec, index=i, parameters=int(size),
                                  distance=float(stored["distance"][i, 0])))
        for e in range(len(stored["train_acc"])):
            train_rows.append(dict(net=task.spec, model=task.model, epoch=e + 1,
                                   train_acc=float(stored["train_acc"][e]), test_acc=float(stored["test_acc"][e])))
    layers = layer_table(cells, pd.DataFrame(dist_rows), critical=cfg.critical)
    training = pd.DataFrame(train_rows)
    summary = summarize(layers, cfg.checkpoints[0])
    detail = LayersOutcome(cells=cells, layers=layers, training=training, summary=summary)
    return Outcome(tables={"cells": cells, "layers": layers, "training": training}, summary=summary, detail=detail)


def report(cfg: LayersConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_layers.report_context`)."""
    from fitscope.report.dynamics_layers import report_context

    data = prepared.state.data
    info = dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind)
    detail: LayersOutcome = outcome.detail
    return report_context(cfg.model_dump(), info, detail.cells, detail.layers, detail.training, detail.summary)


STUDY = Study(kind="dynamics-layers", command="fitscope dynamics layers", config=LayersConfig, prepare=prepare,
              plan=plan, estimate=estimate, report=report, template="dynamics_layers.html.j2", quick=QUICK,
              work_name="epochs")


def dynamics_layers(cfg: LayersConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), probe every layer, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing networks train).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`LayersOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: LayersOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
