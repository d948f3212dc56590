"""``fitscope seed-agreement``: how much models that differ only in their seed disagree on the test set."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, RegularizersOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("seed-agreement")
def seed_agreement(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (see `fitscope models list`; default mlp:512x2)."),
    models: Optional[int] = typer.Option(None, help="Models, each with its own seed (default 16, at least 2)."),
    chunk: Optional[int] = typer.Option(None, help="Models per batched ensemble, stored as it finishes (default 4)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default 20)."),
    regularizers: RegularizersOpt = None,
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 0.003)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam (default adam)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 128)."),
    seed: Optional[int] = typer.Option(None, help="Seed from which every model's seed derives."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(False, "--quick",
                               help="A small setting for a demo: 8 models in chunks of 4, 8 epochs."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Train models that differ only in their seed and measure how often they disagree on each test example.

    Example: fitscope seed-agreement --data digits --model mlp:512x2 --models 16 --out runs/seeds

    A quick demo: fitscope seed-agreement --quick --out runs/demo-seeds
    """
    from fitscope.experiments import get_study

    values = dict(data=data, model=model, models=models, chunk=chunk, epochs=epochs, lr=lr, regularizers=regularizers, optimizer=optimizer,
                  batch_size=batch_size, seed=seed, data_seed=data_seed, label_column=label_column)
    run_command(get_study("seed-agreement"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
