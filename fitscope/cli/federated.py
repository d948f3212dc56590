"""``fitscope federated``: FedAvg vs FedSGD on Flower's simulation engine, rounds to a target accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fitscope.cli import app
from fitscope.cli.lists import parse_names
from fitscope.errors import ConfigError


def parse_batch_size(text: str | None) -> int | None | str:
    """``--batch-size``: a positive integer, or ``inf`` (the client's whole data); ``"default"`` when not given."""
    if text is None:
        return "default"
    if text.strip().lower() in ("inf", "infinity", "all", "full"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--batch-size: expected a positive integer or inf, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"--batch-size: expected a positive integer or inf, got {text!r}")
    return value


class _RoundProgress:
    """One bar per setting, advanced per round, showing the current test accuracy."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("rounds  test acc {task.fields[acc]}"), TimeElapsedColumn(),
                                  console=console)
        self._task = None
        self._started = False

    def start(self, key: str, rounds: int) -> None:
        if not self._started:
            self._progress.__enter__()
            self._started = True
        self._finish_task()
        self._task = self._progress.add_task(key, total=rounds, acc="-")

    def update(self, info: dict) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=info["round"], acc=f"{info['accuracy']:.3f}")

    def _finish_task(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=self._progress.tasks[self._task].completed)
            self._task = None

    def close(self) -> None:
        if self._started:
            self._finish_task()
            self._progress.__exit__(None, None, None)


@app.command("federated")
def federated(
    data: str = typer.Option("digits", help="Built-in name (see `fitscope data list`) or a data file/folder."),
    model: str = typer.Option("mlp:200x2", help="Model spec (McMahan's 2NN: mlp:200x2)."),
    out: Path = typer.Option(Path("runs/federated"), help="Run directory to create."),
    algorithms: Optional[str] = typer.Option(None, help="fedavg, fedsgd or both: fedavg,fedsgd (default)."),
    partitions: Optional[str] = typer.Option(None, help="iid, noniid or both: iid,noniid (default)."),
    clients: Optional[int] = typer.Option(None, help="Clients K (default 100)."),
    fraction: Optional[float] = typer.Option(None, help="Client fraction C per round, in (0, 1] (default 0.1)."),
    local_epochs: Optional[int] = typer.Option(None, help="FedAvg local epochs E (default 5)."),
    batch_size: Optional[str] = typer.Option(None, help="FedAvg local batch B, or inf for the client's data "
                                                        "(default 10)."),
    shards_per_client: Optional[int] = typer.Option(None, help="Non-IID label shards per client (default 2)."),
    lr: Optional[float] = typer.Option(None, help="FedAvg client learning rate."),
    fedsgd_lr: Optional[float] = typer.Option(None, help="FedSGD learning rate (one full-batch step per round)."),
    target: Optional[float] = typer.Option(None, help="Test accuracy to reach, in (0, 1] (default 0.9)."),
    rounds: Optional[int] = typer.Option(None, help="Most rounds per setting."),
    seed: Optional[int] = typer.Option(None, help="Seed of the partition, model, client selection and training."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: this machine's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed study in --out, running only missing "
                                                        "settings."),
) -> None:
    """FedAvg vs FedSGD (McMahan et al.) on Flower's simulation engine: rounds to reach a target accuracy.

    Example: fitscope federated --data digits --algorithms fedavg,fedsgd --partitions iid,noniid --clients 100
    --fraction 0.1 --local-epochs 5 --batch-size 10 --target 0.9 --rounds 300 --out runs/fed
    """
    from fitscope.experiments.federated import federated_study, make_config

    batch = parse_batch_size(batch_size)
    values = dict(
        data=data, model=model, clients=clients, fraction=fraction, local_epochs=local_epochs,
        shards_per_client=shards_per_client, lr=lr, fedsgd_lr=fedsgd_lr, target=target, rounds=rounds, seed=seed,
        data_seed=data_seed, label_column=label_column, num_cpus=num_cpus,
        algorithms=parse_names(algorithms) if algorithms is not None else None,
        partitions=parse_names(partitions) if partitions is not None else None,
    )
    values = {k: v for k, v in values.items() if v is not None}
    if batch != "default":
        values["batch_size"] = batch
    cfg = make_config(**values)

    console = Console(stderr=True)
    bar = _RoundProgress(console)
    try:
        run, outcome = federated_study(cfg, out, resume=resume, on_setting_start=bar.start, progress=bar.update)
    finally:
        bar.close()
    if outcome.reused_units:
        console.print(f"reused {len(outcome.reused_units)} finished settings, ran {len(outcome.trained_units)}")
    for row in outcome.settings.to_dict("records"):
        hit = row["rounds_to_target"]
        reached = "not reached" if hit != hit else str(int(hit))
        target_text = f"rounds to {cfg.target:g}: {reached}, " if cfg.target is not None else ""
        console.print(f"  {row['setting']}: {target_text}final test accuracy {row['final accuracy']:.3f} "
                      f"after {row['rounds run']} rounds")
    typer.echo(f"report: {run.path / 'report.html'}")
