"""The federated study: FedAvg vs FedSGD, IID and non-IID, rounds to a target accuracy (McMahan et al. 2017).

Reads like their section 3: load the data, split the training set among
``clients`` clients (IID, or non-IID label shards: ``clients x
shards_per_client`` shards of the label-sorted data, ``shards_per_client``
per client), and for every (algorithm, partition) setting train one global
model on Flower's simulation engine (:func:`fitscope.privacy.federated.run_federated`),
evaluating it on the test set after every round until it reaches
``target`` or ``rounds`` run out; write ``results.parquet`` (setting, round,
accuracy, loss, train loss), ``settings.parquet`` (one row per setting: rounds
to target, final and best accuracy), ``simulation.json`` (per setting: the
engine it ran on, start-up and per-round seconds) and ``report.html``
(accuracy vs rounds per setting, and the table of rounds to target).

Scale: McMahan et al. give 100 clients 600 MNIST images each (200 shards of
300). Digits has 1437 training images, so 100 clients hold 14-15 each and
the non-IID split is 200 shards of 7-8 images, 2 per client (each shard lies
within one or two labels). FedSGD is FedAvg with one full-batch step per
round (E = 1, B = infinity); it gets its own learning rate (``fedsgd_lr``),
as McMahan et al. tuned the rate per algorithm. Defaults (lr 0.3 for FedAvg,
0.7 for FedSGD, target 0.9) come from a learning-rate sweep on digits: see
``bench/federated.py``.

Units of work and engines. The study runs on :mod:`fitscope.experiments.study`
(``STUDY``): one unit per setting (``fedavg-iid``, ...), computed by the pure
module-level :func:`federated_unit`. Flower's simulation starts its own Ray
and calls ``ray.shutdown()`` when it ends, also for a Ray that was running
before, and it cannot run inside a Ray task. So a unit runs on Flower only
where no Ray is running in its process: with ``--executor local`` (and no
Ray of the caller's). Everywhere else (every unit of ``--executor ray``,
which runs inside a Ray task; a local unit while the caller has Ray
running), and always with ``engine="in-process"``, the unit runs
:func:`fitscope.privacy.federated.run_federated_in_process`: the same rounds as a plain loop in the
task's process (the same seeded partition, initial model, client selection
and local SGD with one torch thread, and Flower's weighted average in
Flower's order), which gives the Flower run's numbers bit for bit. So the
tables are the same on either executor; ``simulation.json`` records which
engine ran each setting. Flower's Ray gets the executor's threads per task
as its CPUs (``--threads``; ``--num-cpus`` on the command line is the same).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.models import check_input_shape, parse_spec
from fitscope.privacy.federated import check_settings, clients_per_round, run_federated, run_federated_in_process

ENGINES = ("flower", "in-process")


class FederatedConfig(BaseModel):
    """Everything that determines a federated study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    model: str = Field("mlp:200x2", description="model spec; McMahan's 2NN is mlp:200x2")
    algorithms: list[Literal["fedavg", "fedsgd"]] = Field(default_factory=lambda: ["fedavg", "fedsgd"])
    partitions: list[Literal["iid", "noniid"]] = Field(default_factory=lambda: ["iid", "noniid"])
    clients: int = Field(100, ge=1, description="clients K")
    fraction: float = Field(0.1, gt=0, le=1, description="client fraction C per round")
    local_epochs: int = Field(5, ge=1, description="FedAvg local epochs E")
    batch_size: int | None = Field(10, ge=1, description="FedAvg local minibatch B (None or 'inf': the client's data)")
    shards_per_client: int = Field(2, ge=1, description="non-IID shards per client")
    lr: float = Field(0.3, gt=0, description="FedAvg client learning rate")
    fedsgd_lr: float = Field(0.7, gt=0, description="FedSGD client learning rate (one full-batch step)")
    target: float | None = Field(0.9, gt=0, le=1, description="test accuracy to reach (None: run every round)")
    rounds: int = Field(300, ge=1, description="most rounds per setting")
    seed: int = Field(0, ge=0, description="seed of the partition, model, client selection and local training")
    engine: Literal["flower", "in-process"] = Field(
        "flower", description="flower: Flower's simulation engine where no Ray runs in the unit's process, else the "
                              "in-process loop; in-process: always the in-process loop (the same numbers)")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _inf_is_the_whole_client(cls, value):
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
            return None
        return value

    @field_validator("algorithms", "partitions")
    @classmethod
    def _unique_non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one name")
        return list(dict.fromkeys(value))


def make_config(**values) -> FederatedConfig:
    """Build a :class:`FederatedConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(FederatedConfig, values)


def setting_keys(cfg: FederatedConfig) -> list[tuple[str, str, str]]:
    """``(unit key, algorithm, partition)`` of every setting, algorithms outer, partitions inner."""
    return [(f"{a}-{p}", a, p) for a in cfg.algorithms for p in cfg.partitions]


def check_config(cfg: FederatedConfig, data: Dataset) -> None:
    """Checks that need the data (clients vs examples, shards, model spec); one-line ConfigErrors."""
    check_input_shape(parse_spec(cfg.model), data.input_shape)
    n = len(data.y_train)
    if cfg.clients > n:
        raise ConfigError(f"--clients: expected at most the {n} training examples of {data.name} "
                          f"(every client needs one), got {cfg.clients}")
    if "noniid" in cfg.partitions and cfg.clients * cfg.shards_per_client > n:
        raise ConfigError(f"--shards-per-client: expected clients x shards at most the {n} training examples of "
                          f"{data.name} (use fewer clients or shards), got {cfg.clients} x {cfg.shards_per_client}")
    for _, algorithm, partition in setting_keys(cfg):
        check_settings(algorithm=algorithm, partition=partition, n_clients=cfg.clients, n_train=len(data.y_train),
                       client_fraction=cfg.fraction, local_epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                       lr=cfg.lr if algorithm == "fedavg" else cfg.fedsgd_lr, rounds=cfg.rounds,
                       target_accuracy=cfg.target, shards_per_client=cfg.shards_per_client)


def ray_running() -> bool:
    """Whether a Ray is running in this process (a Ray task's worker, or a caller's ``ray.init``)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


# --------------------------------------------------------------------------- units


def federated_unit(task: tuple[FederatedConfig, str, str, int], *, x_train: np.ndarray, y_train: np.ndarray,
                   x_test: np.ndarray, y_test: np.ndarray,
                   progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of one unit: one (algorithm, partition) setting; ``task = (cfg, algorithm, partition, n_classes)``.

    On Flower's simulation engine when ``cfg.engine == "flower"`` and no Ray runs in this process (its
    Ray gets this task's torch threads as CPUs), else :func:`run_federated_in_process` (the same
    numbers; see the module docstring). ``progress(rounds done)`` is called after every round.
    """
    cfg, algorithm, partition, n_classes = task
    fedsgd = algorithm == "fedsgd"
    kwargs = dict(algorithm=algorithm, n_clients=cfg.clients, partition=partition,
                  shards_per_client=cfg.shards_per_client, client_fraction=cfg.fraction,
                  local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.fedsgd_lr if fedsgd else cfg.lr,
                  rounds=cfg.rounds, target_accuracy=cfg.target, seed=cfg.seed, spec=cfg.model, n_classes=n_classes,
                  progress=None if progress is None else (lambda info: progress(int(info["round"]))))
    if cfg.engine == "flower" and not ray_running():
        result = run_federated(x_train, y_train, x_test, y_test, num_cpus=torch.get_num_threads(), **kwargs)
    else:
        result = run_federated_in_process(x_train, y_train, x_test, y_test, **kwargs)
    return {"accuracy": result.accuracy, "loss": result.loss, "train_loss": result.train_loss,
            "round_seconds": result.round_seconds, "clients": result.clients, "client_sizes": result.client_sizes,
            "engine": np.asarray(result.engine), "startup_seconds": np.asarray(result.startup_seconds),
            "wall_seconds": np.asarray(result.wall_seconds)}


@dataclass
class FederatedOutcome:
    """What the study measured.

    Attributes:
        results: one row per (setting, round), round 0 = the initial model:
            setting, algorithm, partition, round, accuracy, loss, train_loss
            (and ``seconds`` of the round here; not in ``results.parquet``).
        settings: one row per setting: E, B, lr, clients per round, rounds run,
            rounds to target (NaN: not reached), final and best accuracy (and,
            here but not in ``settings.parquet``, the median seconds per round
            and the start-up seconds).
        speedups: per partition, FedSGD's rounds to target over FedAvg's.
        simulation: per setting, the engine it ran on and its seconds (``simulation.json``).
        reused_units / trained_units: settings loaded from an earlier attempt / run now
            (set before the report).
    """

    results: pd.DataFrame
    settings: pd.DataFrame
    speedups: pd.DataFrame
    simulation: dict = field(default_factory=dict)
    reused_units: list[str] = field(default_factory=list)
    trained_units: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        """Headline numbers for run.json and the catalog: rounds to target and final accuracy per setting."""
        out: dict = {}
        for row in self.settings.itertuples():
            value = row.rounds_to_target
            out[f"rounds_to_target.{row.setting}"] = None if pd.isna(value) else int(value)
        for row in self.settings.to_dict("records"):
            out[f"final_accuracy.{row['setting']}"] = float(row["final accuracy"])
        for row in self.speedups.itertuples():
            if not pd.isna(row.speedup):
                out[f"speedup.{row.partition}"] = float(row.speedup)
        return out


#: The timing columns of the tables: measured, so not the same bits twice; kept out of the Parquet files.
TIMING_COLUMNS = {"results": ["seconds"], "settings": ["seconds per round (median)", "start-up seconds"]}


def tables(cfg: FederatedConfig, stored: dict[str, dict]) -> FederatedOutcome:
    """Build the results/settings/speedup tables from the stored units (``key -> arrays``)."""
    rows, per_setting, simulation = [], [], {}
    for key, algorithm, partition in setting_keys(cfg):
        arrays = stored[key]
        acc = arrays["accuracy"]
        n_rounds = len(acc) - 1
        rows.append(pd.DataFrame({
            "setting": key, "algorithm": algorithm, "partition": partition, "round": np.arange(n_rounds + 1),
            "accuracy": acc, "loss": arrays["loss"],
            "train_loss": np.concatenate([[np.nan], arrays["train_loss"]]),
            "seconds": np.concatenate([[np.nan], arrays["round_seconds"]]),
        }))
        reached = np.flatnonzero(acc[1:] >= cfg.target) if cfg.target is not None else np.zeros(0)
        fedsgd = algorithm == "fedsgd"
        per_setting.append({
            "setting": key, "algorithm": algorithm, "partition": partition,
            "E": 1 if fedsgd else cfg.local_epochs,
            "B": "inf" if fedsgd or cfg.batch_size is None else str(cfg.batch_size),
            "lr": cfg.fedsgd_lr if fedsgd else cfg.lr,
            "clients per round": clients_per_round(cfg.clients, cfg.fraction),
            "rounds run": n_rounds,
            "rounds_to_target": float(reached[0] + 1) if len(reached) else np.nan,
            "final accuracy": float(acc[-1]), "best accuracy": float(acc.max()),
            "seconds per round (median)": float(np.median(arrays["round_seconds"])),
            "start-up seconds": float(arrays["startup_seconds"]),
        })
        simulation[key] = {"engine": str(arrays["engine"]), "start-up seconds": float(arrays["startup_seconds"]),
                           "wall seconds": float(arrays["wall_seconds"]),
                           "seconds per round (median)": float(np.median(arrays["round_seconds"])),
                           "round seconds": [float(s) for s in arrays["round_seconds"]]}
    settings = pd.DataFrame(per_setting)
    speed = []
    for partition in cfg.partitions:
        by = settings[settings.partition == partition].set_index("algorithm")["rounds_to_target"]
        avg, sgd = by.get("fedavg", np.nan), by.get("fedsgd", np.nan)
        speed.append({"partition": partition, "fedavg rounds": avg, "fedsgd rounds": sgd,
                      "speedup": sgd / avg if avg > 0 and sgd > 0 else np.nan})
    return FederatedOutcome(results=pd.concat(rows, ignore_index=True), settings=settings,
                            speedups=pd.DataFrame(speed), simulation=simulation)


# --------------------------------------------------------------------------- the study


def prepare(cfg: FederatedConfig) -> Prepared:
    """Load the data and check the settings (and that Flower is installed); nothing is written yet."""
    import importlib.util

    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    check_supports_study(data, study="the federated study", min_per_class=1)
    check_config(cfg, data)
    if cfg.engine == "flower" and importlib.util.find_spec("flwr") is None:
        raise ConfigError("--engine flower: federated training needs Flower's simulation engine: "
                          "pip install 'fitscope[federated]' (or pass --engine in-process)")
    return Prepared(seeds={"seed": cfg.seed, "data_seed": cfg.data_seed},
                    shared=dict(x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test),
                    state=data)


def plan(cfg: FederatedConfig, prepared: Prepared) -> list[Unit]:
    """One unit per (algorithm, partition) setting, each run by :func:`federated_unit`."""
    data: Dataset = prepared.state
    return [Unit(key, federated_unit, (cfg, algorithm, partition, data.n_classes), work=cfg.rounds,
                 info=dict(algorithm=algorithm, partition=partition))
            for key, algorithm, partition in setting_keys(cfg)]


def estimate(cfg: FederatedConfig, prepared: Prepared, units) -> Outcome:
    """The results, settings and speed-up tables from the stored units."""
    outcome = tables(cfg, {key: units[key] for key, _, _ in setting_keys(cfg)})
    written = {name: getattr(outcome, name).drop(columns=TIMING_COLUMNS[name]) for name in TIMING_COLUMNS}
    return Outcome(tables=written, summary=outcome.summary, files={"simulation.json": outcome.simulation},
                   detail=outcome)


def report(cfg: FederatedConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.federated.report_context`)."""
    from fitscope.report import federated as figures

    detail: FederatedOutcome = outcome.detail
    detail.trained_units, detail.reused_units = list(outcome.trained), list(outcome.reused)
    return figures.report_context(cfg, prepared.state, detail)


STUDY = Study(kind="federated", command="fitscope federated", config=FederatedConfig, prepare=prepare, plan=plan,
              estimate=estimate, report=report, template="federated.html.j2", work_name="rounds")


def federated_study(cfg: FederatedConfig, out: str | Path, *, resume: bool = False, **placement):
    """The whole study: validate, run every missing setting, write tables and ``report.html``.

    Data, model spec and settings are checked *before* the run directory is
    made, so bad input leaves nothing behind.

    Args:
        cfg: the study config.
        out: run directory to create (or resume).
        resume: continue a run in ``out`` made with the same config.
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study` (with the local executor, ``threads`` is also
            the CPUs of Flower's Ray).

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and :class:`FederatedOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: FederatedOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
