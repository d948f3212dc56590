"""``fitscope noisy-labels``: clean the labels or regularize? Noise-robust training and label cleaning side by side.

``--noise`` is the fraction of training labels flipped to another class, as in
``fitscope audit --noise`` (:func:`fitscope.data.flip_labels`), not a redraw
probability (``randomization --corrupt-prob``).
"""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("noisy-labels")
def noisy_labels(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`), or a CSV, npz, IDX file or image folder "
                   "(default mnist1d)."),
    noise: Optional[str] = typer.Option(
        None, help="Fractions of training labels flipped to another class, each in [0, 1) "
                   "(default 0,0.2,0.4,0.6,0.8); the same fraction as audit's --noise."),
    noise_mode: Optional[str] = typer.Option(
        None, help="Comma list of uniform (to any other class) and pair (class c to c+1) (default both)."),
    methods: Optional[str] = typer.Option(
        None, help="Comma list of methods: ce (plain cross-entropy), regularizer parts joined by + (see "
                   "`fitscope regularizers list`), clean (drop the rows the audit's label-issue score ranks "
                   "worst, as many as it estimates are wrong, then ce) or clean+PART "
                   "(default ce,ls,mixup,elr,pskd,gce,sce,sam,clean)."),
    method_params: Optional[str] = typer.Option(
        None, help="Hyperparameters of the methods' parts in the regularizers' grammar, parts joined by +, "
                   "e.g. elr:lambda=3,beta=0.7+gce:q=0.7 (a value given here is not tuned)."),
    tune: Optional[bool] = typer.Option(
        None, "--tune/--no-tune",
        help="Choose ELR's lambda in {1, 3} and GCE's q in {0.5, 0.7} on the validation split (default on)."),
    seeds: Optional[str] = typer.Option(
        None, help="Seeds, e.g. 0,1,2 (default): each its own noise draw, validation split and model."),
    model: Optional[str] = typer.Option(
        None, help="Model spec (see `fitscope models list`; default auto: cnn1d:32x3 for signals, cnn:32-64 "
                   "for images, mlp:256x2 for vectors)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default 40)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 128)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 0.003)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam (default adam)."),
    validation: Optional[float] = typer.Option(
        None, help="Share of the noisy training rows held out to choose epochs and hyperparameters "
                   "(default 0.1)."),
    clean_folds: Optional[int] = typer.Option(
        None, help="Cross-validation folds (models per seed) of clean's label-issue detection (default 3)."),
    train_rows: Optional[int] = typer.Option(
        None, help="Use a seeded sample of this many training rows (default: all)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and of --train-rows."),
    quick: bool = typer.Option(
        False, "--quick",
        help="A small setting for a demo: 1000 training rows, uniform noise 0 and 40%, methods "
             "ce,ls,elr,gce,clean, seeds 0,1, 12 epochs, no tuning (the model: auto, cnn1d:32x3 on mnist1d)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Train with noisy labels: plain cross-entropy, noise-robust objectives, or cleaning the labels first.

    Example: fitscope noisy-labels --data mnist1d --noise 0,0.2,0.4,0.6,0.8 --noise-mode uniform,pair
    --methods ce,ls,mixup,elr,pskd,gce,sce,sam,clean --seeds 0,1,2 --out runs/nl

    A quick demo: fitscope noisy-labels --quick --out runs/demo-nl
    """
    from fitscope.experiments import get_study

    values = dict(
        data=data, model=model, label_column=label_column, data_seed=data_seed, train_rows=train_rows,
        noise=parse_floats(noise, "--noise", "0,0.2,0.4") if noise else None,
        noise_mode=parse_names(noise_mode) if noise_mode else None,
        methods=parse_names(methods) if methods else None,
        method_params=method_params, tune=tune,
        seeds=parse_ints(seeds, "--seeds") if seeds else None,
        epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, validation=validation,
        clean_folds=clean_folds,
    )
    run_command(get_study("noisy-labels"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
