"""``fitscope saliency``: saliency maps (Captum's gradient methods and CGI) and the sanity checks of Adebayo et al."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("saliency")
def saliency(
    data: Optional[str] = typer.Option(
        None, help="Comma list of data sets: built-in names (see `fitscope data list`) or files, each with its "
                   "own model (default digits,mnist1d)."),
    model: Optional[str] = typer.Option(
        None, help="Model spec for every data set: mlp, cnn or cnn1d (default auto: cnn:32-64 for images, "
                   "cnn1d:32x3 for signals, mlp:256x2 for vectors)."),
    methods: Optional[str] = typer.Option(
        None, help="Comma list of saliency methods: gradient, gradient_x_input, integrated_gradients, "
                   "smoothgrad, cgi (default all)."),
    rows: Optional[int] = typer.Option(None, help="Test rows explained, a seeded subset (default 32)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs of each model (default 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 64)."),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate, momentum 0.9 (default 0.05)."),
    random_labels: Optional[bool] = typer.Option(
        None, "--random-labels/--no-random-labels",
        help="Also retrain each model on randomly permuted labels: the data randomization test (default on)."),
    random_label_epochs: Optional[int] = typer.Option(
        None, help="Epochs of the model trained on random labels (default 60)."),
    ig_steps: Optional[int] = typer.Option(None, help="Integration points of integrated gradients (default 32)."),
    smoothgrad_samples: Optional[int] = typer.Option(None, help="Noisy copies per input of SmoothGrad (default 16)."),
    smoothgrad_sigma: Optional[float] = typer.Option(
        None, help="SmoothGrad's noise standard deviation as a share of the inputs' range (default 0.15)."),
    top_k: Optional[int] = typer.Option(None, help="Features of the top-k overlap (default 8)."),
    seed: Optional[int] = typer.Option(
        None, help="Seed of the initial weights, batches, re-drawn layers, SmoothGrad noise and random labels."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and of the explained rows."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick",
        help="A small setting for a demo: 16 rows, 10 epochs (30 on random labels), integrated gradients with 16 "
             "points, SmoothGrad with 8 samples (digits with cnn:32-64, mnist1d with cnn1d:32x3)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Saliency maps and their sanity checks: how similar do the maps stay as the model's layers are re-drawn?

    Units: per data set, the trained model with its cascade of randomized layers, and the model retrained on
    random labels.

    Example: fitscope saliency --data digits,mnist1d --methods gradient_x_input,cgi --rows 32 --out runs/saliency

    A quick demo: fitscope saliency --quick --out runs/demo-saliency
    """
    from fitscope.experiments import get_study

    values = dict(
        data=parse_names(data) if data else None, model=model,
        methods=parse_names(methods) if methods else None, rows=rows, epochs=epochs, batch_size=batch_size, lr=lr,
        random_labels=random_labels, random_label_epochs=random_label_epochs, ig_steps=ig_steps,
        smoothgrad_samples=smoothgrad_samples, smoothgrad_sigma=smoothgrad_sigma, top_k=top_k, seed=seed,
        data_seed=data_seed, label_column=label_column,
    )
    run_command(get_study("saliency"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
