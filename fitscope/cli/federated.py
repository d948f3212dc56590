"""``fitscope federated``: FedAvg vs FedSGD on Flower's simulation engine, rounds to a target accuracy."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)
from fitscope.errors import ConfigError


def parse_batch_size(text: str | None) -> int | str | None:
    """``--batch-size``: a positive integer, or ``"inf"`` (the client's whole data); None when not given."""
    if text is None:
        return None
    if text.strip().lower() in ("inf", "infinity", "all", "full"):
        return "inf"
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--batch-size: expected a positive integer or inf, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"--batch-size: expected a positive integer or inf, got {text!r}")
    return value


@app.command("federated")
def federated(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (McMahan's 2NN: mlp:200x2, the default)."),
    algorithms: Optional[str] = typer.Option(None, help="fedavg, fedsgd or both: fedavg,fedsgd (default)."),
    partitions: Optional[str] = typer.Option(None, help="iid, noniid or both: iid,noniid (default)."),
    clients: Optional[int] = typer.Option(None, help="Clients K (default 100)."),
    fraction: Optional[float] = typer.Option(None, help="Client fraction C per round, in (0, 1] (default 0.1)."),
    local_epochs: Optional[int] = typer.Option(None, help="FedAvg local epochs E (default 5)."),
    batch_size: Optional[str] = typer.Option(None, help="FedAvg local batch B, or inf for the client's data "
                                                        "(default 10)."),
    shards_per_client: Optional[int] = typer.Option(None, help="Non-IID label shards per client (default 2)."),
    lr: Optional[float] = typer.Option(None, help="FedAvg client learning rate (default 0.3)."),
    fedsgd_lr: Optional[float] = typer.Option(
        None, help="FedSGD learning rate, one full-batch step per round (default 0.7)."),
    target: Optional[float] = typer.Option(None, help="Test accuracy to reach, in (0, 1] (default 0.9)."),
    rounds: Optional[int] = typer.Option(None, help="Most rounds per setting (default 300)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the partition, model, client selection and training."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    engine: Optional[str] = typer.Option(
        None, help="flower (default): Flower's simulation engine (with --executor ray, or while a Ray runs in "
                   "this process, the in-process loop); in-process: the same rounds as a plain loop here, no "
                   "Flower or Ray start-up (the same numbers)."),
    num_cpus: Optional[int] = typer.Option(
        None, help="CPUs of Flower's local Ray, i.e. clients trained at once (the same as --threads; "
                   "default: this machine's)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """FedAvg vs FedSGD (McMahan et al.) on Flower's simulation engine: rounds to reach a target accuracy.

    Example: fitscope federated --data digits --algorithms fedavg,fedsgd --partitions iid,noniid --clients 100
    --fraction 0.1 --local-epochs 5 --batch-size 10 --target 0.9 --rounds 300 --out runs/fed

    On a Ray cluster every setting is one Ray task running the same rounds in-process (identical numbers):
    fitscope federated --data digits --executor ray --address 10.0.0.1:6379
    """
    from fitscope.experiments import get_study

    if num_cpus is not None and threads is not None and num_cpus != threads:
        raise ConfigError(f"--num-cpus {num_cpus} and --threads {threads}: they are the same setting here; "
                          "give one of them")
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus: expected an integer >= 1, got {num_cpus}")
    values = dict(
        data=data, model=model, clients=clients, fraction=fraction, local_epochs=local_epochs,
        shards_per_client=shards_per_client, lr=lr, fedsgd_lr=fedsgd_lr, target=target, rounds=rounds, seed=seed,
        data_seed=data_seed, label_column=label_column, engine=engine, batch_size=parse_batch_size(batch_size),
        algorithms=parse_names(algorithms) if algorithms is not None else None,
        partitions=parse_names(partitions) if partitions is not None else None,
    )
    run_command(get_study("federated"), values, out=out, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads if threads is not None else num_cpus,
                device=device, gpus_per_task=gpus_per_task)
