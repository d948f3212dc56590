"""Saliency maps and their sanity checks: do the maps change when the model's parameters or labels are randomized?

The study, in the order it runs (``fitscope saliency``):

1. **Data and model.** Each data set of ``data`` (digits, 8 x 8 images with
   inputs in [0, 1], and MNIST-1D, 40-sample signals, by default) and one
   network per data set (``--model auto``: ``cnn:32-64`` for images,
   ``cnn1d:32x3`` for signals, ``mlp:256x2`` for vectors; a plain
   ``nn.Sequential`` of :func:`fitscope.models.build_plain` initialised from
   ``derive_seed(seed, "model", data)``) trained on the training split with
   :func:`fitscope.train.plain_models.train_plain` (minibatch SGD with momentum,
   cross-entropy). ``rows`` test rows, a seeded subset
   (``derive_seed(data_seed, "rows", data)``), are explained, each for its
   true class.
2. **Saliency maps** (:mod:`fitscope.explain.saliency`): gradient,
   gradient x input, integrated gradients and SmoothGrad through Captum, and
   competitive gradient x input (CGI; Gupta & Arora 2019), written here.
3. **Cascading randomization** (Adebayo et al. 2018;
   :func:`fitscope.explain.cascading_randomization`): the layers with
   parameters are re-drawn from the top, output layer first, one more at each
   depth, down to the first; every method's maps at every depth.
4. **Data randomization** (:func:`fitscope.explain.retrain_on_random_labels`):
   the same architecture from the same initial weights trained on the
   training labels permuted at random, for ``random_label_epochs`` epochs; its
   maps of the same rows.
5. **Similarity** (:mod:`fitscope.explain.similarity`) of each randomized
   map with the trained model's map of the same row: Spearman rank
   correlation of the absolute values and of the signed maps, SSIM of the
   maps normalized to [0, 1], and the overlap of the ``top_k`` most salient
   features. Tables: per row, and mean and spread over the rows per data set,
   test, depth, method and metric.

Finding to show (Gupta & Arora 2019, seeds 000/001): CGI's maps change
strongly under randomization (mean Spearman similarity of the absolute maps
after every layer is re-drawn at most 0.2) while gradient x input's stay
similar (Adebayo et al.: it is dominated by the input). The headline metric
(Spearman of the absolute values) was fixed before the study was run.

Units: one per data set for the trained model and its cascade
(``cascade-<data>``), one per data set for the random-label model
(``random-labels-<data>``); each stored as it finishes (``--resume``).

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`saliency_study` is the Python API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.explain import METHODS, METRICS, cascade_layers, cascading_randomization, retrain_on_random_labels
from fitscope.explain.saliency import saliency_maps
from fitscope.explain.similarity import similarities
from fitscope.models import build_plain, check_input_shape, parse_spec
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import train_plain
from fitscope.validation import message

#: the finding: CGI's mean Spearman similarity (absolute maps) after full randomization is at most this
CGI_BOUND = 0.2
#: the metric of the finding
HEADLINE = "spearman_abs"


# --------------------------------------------------------------------------- config


class SaliencyConfig(BaseModel):
    """Everything that determines a saliency study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(default_factory=lambda: ["digits", "mnist1d"],
                            description="data sets (built-in names or files), each with its own model")
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split and of the explained rows")
    model: str = Field("auto", description="model spec for every data set; auto: cnn:32-64 for images, "
                                           "cnn1d:32x3 for signals, mlp:256x2 for vectors")
    methods: list[str] = Field(default_factory=lambda: list(METHODS), description="saliency methods")
    rows: int = Field(32, ge=1, description="test rows explained (a seeded subset)")
    epochs: int = Field(20, gt=0, description="training epochs of the model")
    batch_size: int = Field(64, gt=0)
    lr: float = Field(0.05, gt=0, allow_inf_nan=False, description="SGD learning rate (momentum 0.9)")
    random_labels: bool = Field(True, description="also retrain on randomly permuted labels")
    random_label_epochs: int = Field(60, gt=0, description="epochs of the model trained on random labels")
    ig_steps: int = Field(32, gt=0, description="integration points of integrated gradients")
    smoothgrad_samples: int = Field(16, gt=0, description="noisy copies per input of SmoothGrad")
    smoothgrad_sigma: float = Field(0.15, gt=0, allow_inf_nan=False,
                                    description="SmoothGrad's noise std as a share of the training inputs' range")
    top_k: int = Field(8, ge=1, description="features of the top-k overlap")
    seed: int = Field(0, ge=0, description="seed of the initial weights, batches, re-drawn layers, noise, labels")

    @field_validator("data")
    @classmethod
    def _data(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one data set; got none")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct data sets; got {value}")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"expected at least one of {', '.join(METHODS)}; got none")
        bad = [m for m in value if m not in METHODS]
        if bad:
            raise ValueError(f"expected methods among {', '.join(METHODS)}; got {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct methods; got {value}")
        return [m for m in METHODS if m in value]


QUICK = dict(rows=16, epochs=10, random_label_epochs=30, ig_steps=16, smoothgrad_samples=8)


def make_config(**values) -> SaliencyConfig:
    """A :class:`SaliencyConfig` from keyword values; a bad value is a one-line :class:`ConfigError`."""
    return build_config(SaliencyConfig, values)


def default_model(input_shape: tuple[int, ...]) -> str:
    """The model of ``--model auto`` for an input shape: mlp for vectors, cnn1d for signals, cnn for images."""
    return {1: "mlp:256x2", 2: "cnn1d:32x3"}.get(len(input_shape), "cnn:32-64")


def slug(name: str) -> str:
    """A data set's name as a file-name-safe key part (``digits``, ``my-data-csv``)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(name).name).strip("-").lower() or "data"


# --------------------------------------------------------------------------- plan and units


@dataclass(frozen=True)
class SaliencyTask:
    """The input of one unit: which data set, which model and how to train and explain it."""

    key: str
    kind: str  # "cascade" or "random-labels"
    data: str  # the slug: the shared arrays' suffix
    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    model_seed: int
    seed: int
    epochs: int
    batch_size: int
    lr: float
    methods: tuple[str, ...]
    options: dict = field(default_factory=dict)


def plan_tasks(cfg: SaliencyConfig, data_sets: list[Dataset]) -> list[SaliencyTask]:
    """The units: per data set a cascade unit and (with ``random_labels``) a random-label unit."""
    tasks = []
    for data in data_sets:
        name = slug(data.name)
        model = default_model(data.input_shape) if cfg.model == "auto" else cfg.model
        span = float(data.x_train.max() - data.x_train.min()) or 1.0
        options = dict(steps=cfg.ig_steps, samples=cfg.smoothgrad_samples, sigma=cfg.smoothgrad_sigma * span)
        common = dict(data=name, model=model, input_shape=tuple(data.input_shape), n_classes=int(data.n_classes),
                      model_seed=derive_seed(cfg.seed, "model", name), batch_size=cfg.batch_size, lr=cfg.lr,
                      methods=tuple(cfg.methods), options=options)
        tasks.append(SaliencyTask(key=f"cascade-{name}", kind="cascade", seed=derive_seed(cfg.seed, "cascade", name),
                                  epochs=cfg.epochs, **common))
        if cfg.random_labels:
            tasks.append(SaliencyTask(key=f"random-labels-{name}", kind="random-labels",
                                      seed=derive_seed(cfg.seed, "random-labels", name),
                                      epochs=cfg.random_label_epochs, **common))
    return tasks


def saliency_unit(task: SaliencyTask, *, progress=None, **shared) -> dict[str, np.ndarray]:
    """Train one model and compute its maps (cascade: at every depth; random labels: of the retrained model).

    Module-level and pure: the result follows from the task and the shared
    arrays (``x_train__<data>``, ``y_train__<data>``, ``x_rows__<data>``,
    ``y_rows__<data>``, ``x_test__<data>``, ``y_test__<data>``).

    Returns:
        ``maps_<method>``: ``(depths, rows, *input_shape)`` (one depth for the
        random-label model), ``accuracy``: ``(depths,)`` on the explained
        rows, ``layers``: the cascade's layers top first, ``train_acc`` (on the
        labels trained on), ``test_acc``, ``epochs_acc``: training accuracy per epoch.
    """
    device = placement_device()
    x_train, y_train = shared[f"x_train__{task.data}"], shared[f"y_train__{task.data}"]
    x_rows, y_rows = shared[f"x_rows__{task.data}"], shared[f"y_rows__{task.data}"]
    x_test, y_test = shared[f"x_test__{task.data}"], shared[f"y_test__{task.data}"]
    model = build_plain(task.model, task.input_shape, task.n_classes, seed=task.model_seed, norm="group")
    tick = None if progress is None else (lambda info: progress(int(info["epoch"])))
    if task.kind == "cascade":
        result = train_plain(model, x_train, y_train, epochs=task.epochs, batch_size=task.batch_size, lr=task.lr,
                             seed=derive_seed(task.seed, "batches"), x_test=x_test, y_test=y_test, progress=tick,
                             device=str(device))
        done = task.epochs
        cascade = cascading_randomization(
            result.model, x_rows, y_rows, methods=task.methods, labels=y_rows, seed=task.seed,
            progress=None if progress is None else (lambda depth: progress(done + depth + 1)), **task.options)
        out = {f"maps_{m}": cascade.maps[m] for m in task.methods}
        out["accuracy"] = cascade.accuracy
        out["layers"] = np.asarray(cascade.layers, dtype=str)
        trained_on = y_train
    else:
        result, trained_on = retrain_on_random_labels(model, x_train, y_train, epochs=task.epochs,
                                                      batch_size=task.batch_size, lr=task.lr, seed=task.seed,
                                                      x_test=x_test, y_test=y_test, progress=tick,
                                                      device=str(device))
        out = {f"maps_{m}": saliency_maps(result.model, x_rows, y_rows, method=m,
                                          seed=derive_seed(task.seed, "smoothgrad"), **task.options)[None]
               for m in task.methods}
        with torch.no_grad():
            predicted = result.model(torch.as_tensor(x_rows).to(device)).argmax(1).cpu().numpy()
        out["accuracy"] = np.asarray([(predicted == y_rows).mean()])
        out["layers"] = np.asarray(cascade_layers(result.model), dtype=str)
        if progress is not None:
            progress(task.epochs + 1)
    out["train_acc"] = np.asarray(float((result.train_logits.argmax(1) == trained_on).mean()))
    out["test_acc"] = np.asarray(float((result.test_logits.argmax(1) == y_test).mean())
                                 if len(result.test_logits) else float("nan"))
    out["epochs_acc"] = np.asarray(result.train_acc, np.float64)
    return out


# --------------------------------------------------------------------------- prepare and plan


@dataclass
class SaliencyData:
    """What ``prepare`` keeps: the data sets, the explained rows of each, and the tasks."""

    data: list[Dataset]
    rows: dict[str, np.ndarray]
    tasks: list[SaliencyTask]


def prepare(cfg: SaliencyConfig) -> Prepared:
    """Load every data set, check the model fits it and the methods and ``top_k`` suit it; nothing written yet."""
    data_sets, shared, rows, seeds = [], {}, {}, {}
    for name in cfg.data:
        data = load(name, label_column=cfg.label_column, seed=cfg.data_seed)
        model = default_model(data.input_shape) if cfg.model == "auto" else cfg.model
        spec = parse_spec(model)
        if spec.family == "resnet":
            raise ConfigError(message("--model", "an mlp, cnn or cnn1d spec (a plain network)", repr(model)))
        try:
            check_input_shape(spec, data.input_shape)
        except ConfigError as err:  # the check names the spec; the user typed --model
            raise ConfigError("--model: " + str(err).removeprefix("spec: ")) from None
        if "cgi" in cfg.methods and data.n_classes < 2:
            raise ConfigError(message("--methods", "methods without cgi for a data set of one class (cgi lets "
                                      "classes compete)", f"cgi on {data.name} with {data.n_classes} class"))
        n_test = len(data.y_test)
        if cfg.rows > n_test:
            raise ConfigError(message("--rows", f"at most the {n_test} test rows of {data.name}", str(cfg.rows)))
        features = int(np.prod(data.input_shape))
        if cfg.top_k > features:
            raise ConfigError(message("--top-k", f"at most the {features} features of {data.name}", str(cfg.top_k)))
        key = slug(data.name)
        if key in rows:
            raise ConfigError(message("--data", "data sets with distinct names", repr(cfg.data)))
        chosen = np.sort(np.random.default_rng(derive_seed(cfg.data_seed, "rows", key)).choice(
            n_test, cfg.rows, replace=False))
        rows[key] = chosen
        seeds[key] = {"model_seed": derive_seed(cfg.seed, "model", key),
                      "cascade_seed": derive_seed(cfg.seed, "cascade", key),
                      "random_labels_seed": derive_seed(cfg.seed, "random-labels", key)}
        shared.update({f"x_train__{key}": data.x_train.astype(np.float32),
                       f"y_train__{key}": data.y_train.astype(np.int64),
                       f"x_test__{key}": data.x_test.astype(np.float32),
                       f"y_test__{key}": data.y_test.astype(np.int64),
                       f"x_rows__{key}": data.x_test[chosen].astype(np.float32),
                       f"y_rows__{key}": data.y_test[chosen].astype(np.int64)})
        data_sets.append(data)
    tasks = plan_tasks(cfg, data_sets)
    return Prepared(seeds={"seed": cfg.seed, "data_seed": cfg.data_seed, **seeds}, shared=shared,
                    state=SaliencyData(data=data_sets, rows=rows, tasks=tasks))


def _depths(task: SaliencyTask) -> int:
    """How many cascade depths a task's model has (trained model included)."""
    with torch.device("meta"):
        model = build_plain(task.model, task.input_shape, task.n_classes, seed=0, norm="group")
    return len(cascade_layers(model)) + 1


def plan(cfg: SaliencyConfig, prepared: Prepared) -> list[Unit]:
    """The units of :func:`plan_tasks`, each computed by :func:`saliency_unit`; work = epochs + map depths."""
    state: SaliencyData = prepared.state
    return [Unit(t.key, saliency_unit, t, work=t.epochs + (_depths(t) if t.kind == "cascade" else 1),
                 info=dict(kind=t.kind, data=t.data, model=t.model)) for t in state.tasks]


# --------------------------------------------------------------------------- estimates


def row_similarities(reference: dict[str, np.ndarray], maps: dict[str, np.ndarray], *, k: int) -> pd.DataFrame:
    """Per method, depth and row, every metric of ``maps[method][depth]`` against ``reference[method]``.

    Args:
        reference: ``{method: (rows, *input_shape)}`` the trained model's maps.
        maps: ``{method: (depths, rows, *input_shape)}``.
        k: the top-k overlap's k.
    """
    frames = []
    for method, stack in maps.items():
        for depth in range(len(stack)):
            values = similarities(reference[method], stack[depth], k=k)
            frames.append(pd.DataFrame({"method": method, "depth": depth, "row": np.arange(len(stack[depth])),
                                        **values}))
    return pd.concat(frames, ignore_index=True)


def aggregate(per_row: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, quartiles and defined rows of each metric per data, test, depth and method."""
    keys = ["data", "model", "test", "depth", "layer", "method"]
    long = per_row.melt(id_vars=keys + ["row"], value_vars=list(METRICS), var_name="metric", value_name="value")
    grouped = long.groupby(keys + ["metric"], sort=False)["value"]
    table = grouped.agg(mean="mean", std="std", q25=lambda v: v.quantile(0.25), q75=lambda v: v.quantile(0.75),
                        rows="count").reset_index()
    return table


@dataclass
class SaliencyOutcome:
    """What :func:`saliency_study` computed.

    Attributes:
        similarity: mean and spread per data, test (``cascade`` / ``random labels``), depth, layer, method, metric.
        per_row: every row's similarities.
        models: one row per trained model (train and test accuracy).
        depths: accuracy on the explained rows at each cascade depth.
        maps: ``{data: {"cascade": {method: (depths, rows, ...)}, "random labels": {...}, "x": rows' inputs,
            "y": their labels, "layers": [...]}}`` for the report.
        summary: the headline numbers.
    """

    similarity: pd.DataFrame
    per_row: pd.DataFrame
    models: pd.DataFrame
    depths: pd.DataFrame
    maps: dict
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def estimate(cfg: SaliencyConfig, prepared: Prepared, units) -> Outcome:
    """The similarity tables and the headline numbers, from the stored maps."""
    state: SaliencyData = prepared.state
    per_row, models, depths, maps = [], [], [], {}
    for data in state.data:
        name = slug(data.name)
        by_kind = {t.kind: t for t in state.tasks if t.data == name}
        cascade = units[by_kind["cascade"].key]
        layers = [str(v) for v in cascade["layers"]]
        model = by_kind["cascade"].model
        stacks = {m: cascade[f"maps_{m}"] for m in cfg.methods}
        reference = {m: s[0] for m, s in stacks.items()}
        entry = {"cascade": stacks, "layers": layers, "model": model,
                 "x": prepared.shared[f"x_rows__{name}"], "y": prepared.shared[f"y_rows__{name}"]}
        table = row_similarities(reference, stacks, k=cfg.top_k)
        table.insert(0, "test", "cascade")
        table.insert(2, "layer", ["(trained)" if d == 0 else layers[d - 1] for d in table.depth])
        parts = [table]
        models.append({"data": data.name, "model": model, "labels": "true", "train_acc": float(cascade["train_acc"]),
                       "test_acc": float(cascade["test_acc"]), "epochs": cfg.epochs})
        for d, acc in enumerate(cascade["accuracy"]):
            depths.append({"data": data.name, "model": model, "depth": d,
                           "layer": "(trained)" if d == 0 else layers[d - 1], "accuracy": float(acc)})
        if "random-labels" in by_kind:
            random = units[by_kind["random-labels"].key]
            rl = {m: random[f"maps_{m}"] for m in cfg.methods}
            entry["random labels"] = rl
            table = row_similarities(reference, rl, k=cfg.top_k)
            table.insert(0, "test", "random labels")
            table["depth"] = -1
            table.insert(2, "layer", "(random labels)")
            parts.append(table)
            models.append({"data": data.name, "model": model, "labels": "random",
                           "train_acc": float(random["train_acc"]), "test_acc": float(random["test_acc"]),
                           "epochs": cfg.random_label_epochs})
        frame = pd.concat(parts, ignore_index=True)
        frame.insert(0, "data", data.name)
        frame.insert(1, "model", model)
        per_row.append(frame)
        maps[data.name] = entry
    per_row_table = pd.concat(per_row, ignore_index=True)
    per_row_table = per_row_table[["data", "model", "test", "depth", "layer", "method", "row", *METRICS]]
    similarity = aggregate(per_row_table)
    models_table, depths_table = pd.DataFrame(models), pd.DataFrame(depths)
    summary = summarize(similarity, models_table, cfg.methods)
    detail = SaliencyOutcome(similarity=similarity, per_row=per_row_table, models=models_table, depths=depths_table,
                             maps=maps, summary=summary)
    return Outcome(tables={"similarity": similarity, "per_row": per_row_table, "models": models_table,
                           "depths": depths_table}, summary=summary, detail=detail)


def full_randomization(similarity: pd.DataFrame, metric: str = HEADLINE) -> pd.DataFrame:
    """The rows of ``similarity`` at the last cascade depth (every layer re-drawn) for ``metric``."""
    cascade = similarity[(similarity.test == "cascade") & (similarity.metric == metric)]
    last = cascade.groupby("data").depth.transform("max")
    return cascade[cascade.depth == last]


def summarize(similarity: pd.DataFrame, models: pd.DataFrame, methods) -> dict:
    """Headline numbers: test accuracy and every method's mean Spearman (absolute) after full randomization."""
    out: dict = {}
    full = full_randomization(similarity)
    for data in dict.fromkeys(similarity.data):
        trained = models[(models.data == data) & (models.labels == "true")]
        out[f"{data}: test accuracy"] = float(trained.test_acc.iloc[0])
        part = full[full.data == data].set_index("method")["mean"]
        for method in methods:
            out[f"{data}: mean Spearman (|map|) after full randomization, {method}"] = float(part[method])
        if "cgi" in part and "gradient_x_input" in part:
            cgi, gxi = float(part["cgi"]), float(part["gradient_x_input"])
            out[f"{data}: CGI at most {CGI_BOUND} and below gradient x input"] = bool(cgi <= CGI_BOUND and cgi < gxi)
        random = models[(models.data == data) & (models.labels == "random")]
        if len(random):
            out[f"{data}: random-label model's training accuracy"] = float(random.train_acc.iloc[0])
    return out


def report(cfg: SaliencyConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.saliency.report_context`)."""
    from fitscope.report.saliency import report_context

    state: SaliencyData = prepared.state
    info = [dict(name=d.name, source=d.source, n_train=len(d.y_train), n_test=len(d.y_test), n_classes=d.n_classes,
                 input_shape="x".join(map(str, d.input_shape)), kind=d.kind) for d in state.data]
    detail: SaliencyOutcome = outcome.detail
    return report_context(cfg.model_dump(), info, detail.similarity, detail.models, detail.depths, detail.maps,
                          detail.summary, bound=CGI_BOUND)


STUDY = Study(kind="saliency", command="fitscope saliency", config=SaliencyConfig, prepare=prepare, plan=plan,
              estimate=estimate, report=report, template="saliency.html.j2", quick=QUICK, work_name="steps")


def saliency_study(cfg: SaliencyConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: validate, train (or resume), compute the maps, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units run).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`SaliencyOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: SaliencyOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
