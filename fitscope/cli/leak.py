"""``fitscope leak``: membership inference (LiRA online/offline, loss threshold) against subset models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, RegularizersOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("leak")
def leak(
    data: Optional[str] = typer.Option(None, help="Built-in name or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (default mlp:512x2)."),
    models: Optional[int] = typer.Option(None, help="Subset (shadow) models to train (default 64, at least 8)."),
    ratio: Optional[float] = typer.Option(None, help="Subset ratio (default 0.5)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model, a fixed budget so they overfit (default 40)."),
    regularizers: RegularizersOpt = None,
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 0.003)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam (default adam)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 128)."),
    weight_decay: Optional[float] = typer.Option(None, help="L2 weight decay (default 0)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the subsets and models."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    chunk: Optional[int] = typer.Option(None, help="Models per batched ensemble, stored as it finishes (default 32)."),
    from_audit: Optional[Path] = typer.Option(
        None, help="Attack the memorization models of this audit run (its stored masks and train logits); "
                   "no training."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Membership inference: LiRA online/offline and the loss threshold, ROC at low FPR, the examples that leak.

    Example: fitscope leak --data digits --models 64 --out runs/leak

    Reusing an audit's models: fitscope leak --from-audit runs/audit --out runs/leak-audit

    On a Ray cluster: fitscope leak --models 256 --executor ray --address 10.0.0.1:6379 --out runs/leak
    (a run started with one executor can be resumed with --resume on the other).
    """
    from fitscope.experiments import get_study

    values = dict(data=data, model=model, models=models, ratio=ratio, epochs=epochs, lr=lr, regularizers=regularizers, optimizer=optimizer,
                  batch_size=batch_size, weight_decay=weight_decay, seed=seed, data_seed=data_seed,
                  label_column=label_column, chunk=chunk,
                  from_audit=str(from_audit) if from_audit is not None else None)
    run_command(get_study("leak"), values, out=out, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
