"""``fitscope robust``: standard vs PGD adversarial training, robust accuracy against eps, the width sweep, and
L0 attacks against the sparse-Fourier (IHT) defense."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


def _ints(text: Optional[str], flag: str) -> Optional[list[int]]:
    return None if text is None else parse_ints(text, flag, "16,64,256")


@app.command("robust")
def robust(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`), or a CSV, npz, IDX file or image folder "
                   "(default digits, 8x8 images in [0, 1])."),
    specs: Optional[str] = typer.Option(
        None, help="Comma list of model specs trained standard and with PGD (default mlp:256x2,cnn:16-32)."),
    norms: Optional[str] = typer.Option(None, help="Norms of PGD training: inf, 2 or both (default inf,2)."),
    eps: Optional[float] = typer.Option(
        None, help="L-inf radius of PGD training and of the headline attack, in input units (default 0.1)."),
    l2_eps: Optional[float] = typer.Option(None, help="L2 radius of PGD training and evaluation (default 0.5)."),
    eps_curve: Optional[str] = typer.Option(
        None, help="L-inf radii of the robust-accuracy curve (default 0.02,0.05,0.1,0.15,0.2)."),
    train_steps: Optional[int] = typer.Option(None, help="PGD steps per training batch (default 7)."),
    attack_steps: Optional[int] = typer.Option(None, help="PGD steps of the evaluation attacks (default 20)."),
    restarts: Optional[int] = typer.Option(None, help="Random restarts of the evaluation PGD (default 2)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per network (default 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size (default 64)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default 0.001)."),
    mlp_widths: Optional[str] = typer.Option(
        None, help="Widths of the MLP sweep, mlp:<w>x2 (default 16,32,64,128,256,512; empty: none)."),
    cnn_widths: Optional[str] = typer.Option(
        None, help="Widths of the CNN sweep, cnn:<w>-<2w> (default 4,8,16,32; empty: none)."),
    l0_spec: Optional[str] = typer.Option(None, help="Network of the L0 part (default mlp:256x2)."),
    l0_attacks: Optional[str] = typer.Option(
        None, help="L0 attacks: pixels (PGD_0 on single pixels), patch (a square patch) (default both; empty: "
                   "no L0 part)."),
    l0_budgets: Optional[str] = typer.Option(
        None, help="Pixels the pixels attack may change (default 1,2,4,8,16)."),
    patch_sizes: Optional[str] = typer.Option(None, help="Sides of the square patch (default 2,3,4)."),
    patch_stride: Optional[int] = typer.Option(None, help="Grid step of the patch positions tried (default 2)."),
    l0_steps: Optional[int] = typer.Option(None, help="Steps of the L0 attacks (default 10)."),
    fourier_k: Optional[int] = typer.Option(None, help="Fourier coefficients the defense keeps (default 24)."),
    defense_pixels: Optional[int] = typer.Option(
        None, help="Pixels of corruption the defense's IHT removes (default 8)."),
    iht_rounds: Optional[int] = typer.Option(None, help="IHT rounds of the defense (default 10)."),
    fourier_training: Optional[str] = typer.Option(
        None, help="What the defended classifier trains on: iht (the IHT recovery of the training inputs, default) "
                   "or projection (their k-sparse Fourier projection, as in the paper)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    seed: Optional[int] = typer.Option(None, help="Seed of the weights, batches and attacks (default 0)."),
    quick: bool = typer.Option(
        False, "--quick",
        help="A small setting for a demo: mlp:128x2 only, L-inf only, 15 epochs, 10-step attacks without restarts, "
             "MLP widths 16,64,256 and no CNN sweep, pixel budgets 1,4,8 and patch sides 2,3."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Adversarial robustness: PGD training vs standard, accuracy against eps, width sweep, L0 attacks and defense.

    Example: fitscope robust --data digits --specs mlp:256x2,cnn:32-64 --eps 0.1 --out runs/robust

    A quick demo: fitscope robust --quick --out runs/demo-robust
    """
    from fitscope.experiments import get_study

    values = dict(
        data=data, label_column=label_column, data_seed=data_seed, seed=seed,
        specs=parse_names(specs) if specs is not None else None,
        norms=parse_names(norms) if norms is not None else None,
        eps=eps, l2_eps=l2_eps,
        eps_curve=parse_floats(eps_curve, "--eps-curve", "0.05,0.1,0.2") if eps_curve is not None else None,
        train_steps=train_steps, attack_steps=attack_steps, restarts=restarts, epochs=epochs,
        batch_size=batch_size, lr=lr, mlp_widths=_ints(mlp_widths, "--mlp-widths"),
        cnn_widths=_ints(cnn_widths, "--cnn-widths"), l0_spec=l0_spec,
        l0_attacks=parse_names(l0_attacks) if l0_attacks is not None else None,
        l0_budgets=_ints(l0_budgets, "--l0-budgets"), patch_sizes=_ints(patch_sizes, "--patch-sizes"),
        patch_stride=patch_stride, l0_steps=l0_steps, fourier_k=fourier_k, defense_pixels=defense_pixels, iht_rounds=iht_rounds,
        fourier_training=fourier_training,
    )
    run_command(get_study("robust"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
