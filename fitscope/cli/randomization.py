"""``fitscope randomization``: the Zhang et al. (2017) randomization study.

``--corrupt-prob`` is Zhang et al.'s label corruption probability p: each
training label is redrawn uniformly over all C classes with probability p, so
about ``p * (1 - 1/C)`` of the labels end up wrong. It is not ``audit
--noise``, which flips an exact fraction of the labels to another class.
``--noise`` is kept here as a hidden, deprecated alias of ``--corrupt-prob``.
"""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import deprecated_alias, parse_floats, parse_ints, parse_names, parse_settings
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("randomization")
def randomization(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (see `fitscope models list`; default mlp:512x2)."),
    corruptions: Optional[str] = typer.Option(
        None, help="Comma list of none, random_labels, shuffled_pixels, random_pixels, gaussian (default: all)."),
    corrupt_prob: Optional[str] = typer.Option(
        None, "--corrupt-prob",
        help="Label corruption probabilities p (Zhang et al.), e.g. 0,0.2,0.4,0.6,0.8,1: each training label is "
             "redrawn uniformly over all C classes with probability p (it may land on its own class), so about "
             "p(1-1/C) of the labels end up wrong. Not audit's --noise, an exact fraction flipped."),
    noise: Optional[str] = typer.Option(None, "--noise", hidden=True,
                                        help="Deprecated alias of --corrupt-prob."),
    regularizers: Optional[str] = typer.Option(
        None, help="Comma list of regularizer settings, each none or parts joined by + (see `fitscope regularizers "
                   "list`), e.g. none,wd,dropout,augment,wd+dropout+augment (the default), mixup:alpha=0.2, elr. "
                   "wd and dropout without values use --weight-decay and --dropout."),
    seeds: Optional[str] = typer.Option(None, help="Model seeds, e.g. 0,1,2 (default 0,1)."),
    epochs: Optional[int] = typer.Option(
        None, help="Epoch budget per ensemble (default 150; stops early once all models fit)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay of the 'wd' setting."),
    dropout: Optional[float] = typer.Option(None, help="Dropout rate of the 'dropout' setting."),
    parts: Optional[str] = typer.Option(None, help="Comma list of curves, noise, regularizers (default: all)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the corruptions."),
    quick: bool = typer.Option(
        False, "--quick",
        help="A small setting for a demo: seed 0 only, regularizers none,wd,dropout,augment, and a budget of "
             "100 epochs per ensemble (stops early once all models fit)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Train on true labels, random labels, shuffled/random pixels and gaussian inputs; measure fit and generalization.

    Example: fitscope randomization --data digits --model mlp:512x2 --out runs/rand

    A quick demo: fitscope randomization --quick --out runs/demo-rand

    On a Ray cluster: fitscope randomization --executor ray --address 10.0.0.1:6379 --out runs/rand
    (a run started with one executor can be resumed with --resume on the other).
    """
    from fitscope.experiments import get_study

    noise_levels = deprecated_alias("--corrupt-prob", corrupt_prob, "--noise", noise, "randomization",
                                    parse=parse_floats) or None
    values = dict(
        data=data, model=model, label_column=label_column, data_seed=data_seed,
        corruptions=parse_names(corruptions) if corruptions else None,
        noise_levels=noise_levels,
        regularizers=parse_settings(regularizers) if regularizers else None,
        seeds=parse_ints(seeds, "--seeds") if seeds else None,
        epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
        weight_decay=weight_decay, dropout=dropout, parts=parse_names(parts) if parts else None,
    )
    run_command(get_study("randomization"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
