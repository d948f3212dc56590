"""The federated study: FedAvg vs FedSGD, IID and non-IID, rounds to a target accuracy (McMahan et al. 2017).

Reads like their section 3: load the data, split the training set among
``clients`` clients (IID, or non-IID label shards: ``clients x
shards_per_client`` shards of the label-sorted data, ``shards_per_client``
per client), and for every (algorithm, partition) setting train one global
model on Flower's simulation engine (:func:`fitscope.privacy.federated.run_federated`),
evaluating it on the test set after every round until it reaches
``target`` or ``rounds`` run out; write ``results.parquet`` (setting, round,
accuracy, loss, ...), ``settings.parquet`` (one row per setting: rounds to
target, final accuracy, seconds per round) and ``report.html`` (accuracy vs
rounds per setting, and the table of rounds to target).

Scale: McMahan et al. give 100 clients 600 MNIST images each (200 shards of
300). Digits has 1437 training images, so 100 clients hold 14-15 each and
the non-IID split is 200 shards of 7-8 images, 2 per client (each shard lies
within one or two labels). FedSGD is FedAvg with one full-batch step per
round (E = 1, B = infinity); it gets its own learning rate (``fedsgd_lr``),
as McMahan et al. tuned the rate per algorithm. Defaults (lr 0.3 for FedAvg,
0.7 for FedSGD, target 0.9) come from a learning-rate sweep on digits: see
``bench/federated.py``.

Units of work: one per setting (``units/fedavg-iid.npz``, ...), stored as
soon as its simulation ends, so ``resume=True`` reruns only missing settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.models import check_input_shape, parse_spec
from fitscope.privacy.federated import (
    FederatedResult,
    check_settings,
    clients_per_round,
    run_federated,
)

#: Config fields that say where the simulation runs, not what it computes: left out of the config hash.
PLACEMENT_FIELDS = frozenset({"num_cpus"})


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
    batch_size: int | None = Field(10, ge=1, description="FedAvg local minibatch B (None: the client's data)")
    shards_per_client: int = Field(2, ge=1, description="non-IID shards per client")
    lr: float = Field(0.3, gt=0, description="FedAvg client learning rate")
    fedsgd_lr: float = Field(0.7, gt=0, description="FedSGD client learning rate (one full-batch step)")
    target: float | None = Field(0.9, gt=0, le=1, description="test accuracy to reach (None: run every round)")
    rounds: int = Field(300, ge=1, description="most rounds per setting")
    seed: int = Field(0, ge=0, description="seed of the partition, model, client selection and local training")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (not in the config hash)")

    @field_validator("algorithms", "partitions")
    @classmethod
    def _unique_non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one name")
        return list(dict.fromkeys(value))


def make_config(**values) -> FederatedConfig:
    """Build a :class:`FederatedConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(FederatedConfig, "federated", values)


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
        raise ConfigError(f"--shards-per-client: {cfg.clients} clients x {cfg.shards_per_client} shards is more "
                          f"than the {n} training examples of {data.name}; use fewer clients or shards")
    for _, algorithm, partition in setting_keys(cfg):
        check_settings(algorithm=algorithm, partition=partition, n_clients=cfg.clients, n_train=len(data.y_train),
                       client_fraction=cfg.fraction, local_epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                       lr=cfg.lr if algorithm == "fedavg" else cfg.fedsgd_lr, rounds=cfg.rounds,
                       target_accuracy=cfg.target, shards_per_client=cfg.shards_per_client)


def run_setting(cfg: FederatedConfig, data: Dataset, algorithm: str, partition: str, *,
                progress: Callable[[dict], None] | None = None) -> FederatedResult:
    """One (algorithm, partition) setting on Flower's simulation engine."""
    fedsgd = algorithm == "fedsgd"
    return run_federated(
        data.x_train, data.y_train, data.x_test, data.y_test, algorithm=algorithm, n_clients=cfg.clients,
        partition=partition, shards_per_client=cfg.shards_per_client, client_fraction=cfg.fraction,
        local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.fedsgd_lr if fedsgd else cfg.lr,
        rounds=cfg.rounds, target_accuracy=cfg.target, seed=cfg.seed, spec=cfg.model, n_classes=data.n_classes,
        num_cpus=cfg.num_cpus, progress=progress)


def _unit_arrays(result: FederatedResult) -> dict[str, np.ndarray]:
    return {"accuracy": result.accuracy, "loss": result.loss, "train_loss": result.train_loss,
            "round_seconds": result.round_seconds, "clients": result.clients, "client_sizes": result.client_sizes}


def _unit_info(result: FederatedResult) -> dict:
    return {"rounds_to_target": result.rounds_to_target, "wall_seconds": round(result.wall_seconds, 3),
            "startup_seconds": round(result.startup_seconds, 3), "engine": result.engine,
            "versions": result.settings.get("versions", {})}


@dataclass
class FederatedOutcome:
    """What the study measured.

    Attributes:
        results: one row per (setting, round), round 0 = the initial model:
            setting, algorithm, partition, round, accuracy, loss, train_loss, seconds.
        settings: one row per setting: E, B, lr, clients per round, rounds run,
            rounds to target (NaN: not reached), final and best accuracy,
            median seconds per round, start-up seconds.
        speedups: per partition, FedSGD's rounds to target over FedAvg's.
        reused_units / trained_units: settings loaded from an earlier attempt / run now.
    """

    results: pd.DataFrame
    settings: pd.DataFrame
    speedups: pd.DataFrame
    reused_units: list[str]
    trained_units: list[str]

    @property
    def summary(self) -> dict:
        """Headline numbers for run.json and the catalog: rounds to target per setting."""
        out: dict = {}
        for row in self.settings.itertuples():
            value = row.rounds_to_target
            out[f"rounds_to_target.{row.setting}"] = None if pd.isna(value) else int(value)
        for row in self.speedups.itertuples():
            if not pd.isna(row.speedup):
                out[f"speedup.{row.partition}"] = float(row.speedup)
        return out


def tables(cfg: FederatedConfig, stored: dict[str, dict], infos: dict[str, dict]) -> FederatedOutcome:
    """Build the results/settings/speedup tables from the stored units (``key -> arrays``, ``key -> info``)."""
    rows, per_setting = [], []
    for key, algorithm, partition in setting_keys(cfg):
        arrays, info = stored[key], infos.get(key, {})
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
            "start-up seconds": info.get("startup_seconds", np.nan),
        })
    settings = pd.DataFrame(per_setting)
    speed = []
    for partition in cfg.partitions:
        by = settings[settings.partition == partition].set_index("algorithm")["rounds_to_target"]
        avg, sgd = by.get("fedavg", np.nan), by.get("fedsgd", np.nan)
        speed.append({"partition": partition, "fedavg rounds": avg, "fedsgd rounds": sgd,
                      "speedup": sgd / avg if avg > 0 and sgd > 0 else np.nan})
    return FederatedOutcome(results=pd.concat(rows, ignore_index=True), settings=settings,
                            speedups=pd.DataFrame(speed), reused_units=[], trained_units=[])


def federated_study(
    cfg: FederatedConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_setting_start: Callable[[str, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
):
    """The whole study: validate, run every missing setting on Flower, write tables and ``report.html``.

    Data, model spec and settings are checked *before* the run directory is
    made, so bad input leaves nothing behind.

    Args:
        cfg: the study config.
        out: run directory to create (or resume).
        resume: continue a run in ``out`` made with the same config.
        on_setting_start: called with ``(setting key, rounds)`` before each setting runs.
        progress: called after every round (see :func:`run_federated`).

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and :class:`FederatedOutcome`.
    """
    from fitscope.report import federated as report
    from fitscope.report import write_report
    from fitscope.runs import Run

    t0 = time.perf_counter()
    data = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    load_seconds = time.perf_counter() - t0
    check_config(cfg, data)
    seeds = {"seed": cfg.seed, "data_seed": cfg.data_seed}
    config = cfg.model_dump(exclude=set(PLACEMENT_FIELDS))
    with Run.create(out, kind="federated", config=config, seeds=seeds, resume=resume) as run:
        run.timings.setdefault("load data", round(load_seconds, 3))
        stored, infos, reused, trained = {}, {}, [], []
        for key, algorithm, partition in setting_keys(cfg):
            if run.has_unit(key):
                stored[key] = run.load_unit(key)
                infos[key] = run.meta.get("units", {}).get(key, {})
                reused.append(key)
                continue
            if on_setting_start is not None:
                on_setting_start(key, cfg.rounds)
            with run.timer(f"setting {key}"):
                result = run_setting(cfg, data, algorithm, partition, progress=progress)
            run.save_unit(key, _unit_arrays(result), info=_unit_info(result))
            stored[key], infos[key] = _unit_arrays(result), _unit_info(result)
            trained.append(key)
        outcome = tables(cfg, stored, infos)
        outcome.reused_units, outcome.trained_units = reused, trained
        run.write_table("results", outcome.results)
        run.write_table("settings", outcome.settings)
        run.finish(summary=outcome.summary)
        with run.timer("report"):
            write_report(run, "federated.html.j2", report.report_context(cfg, data, outcome))
    return run, outcome
