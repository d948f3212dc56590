"""``fitscope backdoor``: a BadNets patch trigger, its attack success, and its inversion (Neural Cleanse, SmoothInv)."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt, run_command,
)


@app.command("backdoor")
def backdoor(
    data: Optional[str] = typer.Option(
        None, help="Built-in name or data file/folder of images or signals (default digits, inputs in [0, 1])."),
    model: Optional[str] = typer.Option(None, help="Model spec: mlp, cnn or cnn1d (default mlp:64x2)."),
    target: Optional[int] = typer.Option(None, help="The class poisoned rows are relabelled to (default 0)."),
    trigger_size: Optional[int] = typer.Option(
        None, help="Side of the square patch, or length of the segment for signals (default 3)."),
    trigger_position: Optional[str] = typer.Option(
        None, help="bottom-right (default), bottom-left, top-right, top-left, or first indices such as 0,5."),
    trigger_value: Optional[float] = typer.Option(
        None, help="Value of the patch pixels, within the data's range (default: the data's largest value)."),
    fractions: Optional[str] = typer.Option(
        None, help="Shares of the training rows poisoned, each in (0, 1) (default 0.01,0.05,0.1)."),
    seeds: Optional[str] = typer.Option(None, help="Seeds, e.g. 0,1,2 (default): one clean and one poisoned model "
                                                   "per fraction each."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default 30)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 64)."),
    lr: Optional[float] = typer.Option(None, help="SGD learning rate, momentum 0.9 (default 0.05)."),
    methods: Optional[str] = typer.Option(
        None, help="Inversion methods: neural-cleanse, smoothinv (default both)."),
    support: Optional[int] = typer.Option(
        None, help="Clean training rows Neural Cleanse inverts on (default all of them)."),
    nc_steps: Optional[int] = typer.Option(
        None, help="Neural Cleanse's most Adam steps; each class stops once its norm settles (default 1000)."),
    nc_lr: Optional[float] = typer.Option(None, help="Neural Cleanse's Adam learning rate (default 0.1)."),
    nc_init_cost: Optional[float] = typer.Option(None, help="First lambda of the mask's L1 penalty (default 0.001)."),
    nc_patience: Optional[int] = typer.Option(None, help="Steps before lambda moves (default 10)."),
    si_sigma: Optional[float] = typer.Option(None, help="SmoothInv's Gaussian smoothing noise (default 0.5)."),
    si_eps: Optional[float] = typer.Option(None, help="SmoothInv's L2 budget (default 1.5)."),
    si_steps: Optional[int] = typer.Option(None, help="SmoothInv's steps (default 400)."),
    si_noise_samples: Optional[int] = typer.Option(None, help="Noise draws per SmoothInv step (default 40)."),
    si_all_classes: Optional[bool] = typer.Option(
        None, "--si-all-classes/--si-target-only",
        help="Also run SmoothInv towards every other class to guess the target (default on)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: seed 0, fractions 5% and 10%, 20 epochs, SmoothInv "
                               "towards the target only (mlp:64x2 on digits)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Poison a share of the training rows with a patch trigger, measure the attack, and invert the trigger.

    Units: per seed, a clean model (the control) and one poisoned model per fraction; each is attacked and
    inverted by Neural Cleanse (anomaly index per class) and SmoothInv (from one image).

    Example: fitscope backdoor --data digits --fractions 0.01,0.05,0.1 --trigger-size 3 --target 0 --out runs/bd

    A quick demo: fitscope backdoor --quick --out runs/demo-backdoor
    """
    from fitscope.experiments import get_study

    values = dict(
        data=data, model=model, target=target, trigger_size=trigger_size, trigger_position=trigger_position,
        trigger_value=trigger_value,
        fractions=parse_floats(fractions, "--fractions", "0.01,0.05") if fractions else None,
        seeds=parse_ints(seeds, "--seeds") if seeds else None,
        epochs=epochs, batch_size=batch_size, lr=lr,
        methods=parse_names(methods) if methods else None,
        support=support, nc_steps=nc_steps, nc_lr=nc_lr, nc_init_cost=nc_init_cost, nc_patience=nc_patience,
        si_sigma=si_sigma, si_eps=si_eps, si_steps=si_steps, si_noise_samples=si_noise_samples,
        si_all_classes=si_all_classes, label_column=label_column, data_seed=data_seed,
    )
    run_command(get_study("backdoor"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
