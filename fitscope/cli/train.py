"""``fitscope train``: one model, with label DP, DP-SGD or InstaHide if asked, audited with canaries."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, RegularizersOpt, ResumeOpt, ThreadsOpt,
    run_command,
)
from fitscope.errors import ConfigError


def mechanism_values(*, label_dp: float | None, stages: int | None, dp_sgd: bool, eps: float | None,
                     delta: float | None, max_grad_norm: float | None, instahide: int | None,
                     no_sign_mask: bool, resume: bool) -> dict:
    """The config values of the mechanism flags (absent when not given), with one-line errors naming the flag.

    ``--label-dp EPS``, ``--dp-sgd`` (with ``--eps``) and ``--instahide K`` choose the mechanism; with none
    of them it is ``none`` (or, on ``--resume``, the run's own).
    """
    chosen = [name for name, on in (("--label-dp", label_dp is not None), ("--dp-sgd", dp_sgd),
                                    ("--instahide", instahide is not None)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"--label-dp/--dp-sgd/--instahide: expected one mechanism, got {' and '.join(chosen)}")
    if label_dp is not None and not label_dp > 0:
        raise ConfigError(f"--label-dp: expected an epsilon > 0, got {label_dp:g}")
    if eps is not None and not dp_sgd and not resume:
        raise ConfigError("--eps: expected it with --dp-sgd (it is the DP-SGD epsilon; label DP takes --label-dp EPS), "
                          "got it without --dp-sgd")
    values: dict = dict(stages=stages, delta=delta, max_grad_norm=max_grad_norm, eps=eps,
                        sign_mask=False if no_sign_mask else None)
    if label_dp is not None:
        values.update(mechanism="label-dp", eps=label_dp)
    elif dp_sgd:
        values.update(mechanism="dp-sgd")
    elif instahide is not None:
        values.update(mechanism="instahide", k=instahide)
    elif not resume:
        values.update(mechanism="none")
    return values


@app.command("train")
def train(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (see `fitscope models list`; default mlp:512x2)."),
    label_dp: Optional[float] = typer.Option(None, help="Label DP by LP-MST with this epsilon (> 0)."),
    stages: Optional[int] = typer.Option(None, help="LP-MST stages T (with --label-dp): 1 = LP-1ST (default), "
                                                    "2 = LP-2ST."),
    dp_sgd: bool = typer.Option(False, "--dp-sgd", help="Train with DP-SGD (Opacus); needs --eps."),
    eps: Optional[float] = typer.Option(None, help="DP-SGD target epsilon (> 0)."),
    delta: Optional[float] = typer.Option(None, help="DP-SGD delta, in (0, 1); keep it below 1/n (default 1e-5)."),
    max_grad_norm: Optional[float] = typer.Option(None, help="DP-SGD per-example clipping norm C (> 0; default 1)."),
    instahide: Optional[int] = typer.Option(None, help="Train on InstaHide encodings mixing K images."),
    no_sign_mask: bool = typer.Option(False, "--no-sign-mask", help="InstaHide without the random sign mask."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (LP-MST: per stage; default 30)."),
    batch_size: Optional[int] = typer.Option(
        None, help="Minibatch size (DP-SGD: expected Poisson batch size; default 64)."),
    regularizers: RegularizersOpt = None,
    lr: Optional[float] = typer.Option(None, help="Learning rate (default Adam 1e-3; DP-SGD 0.5)."),
    canaries: Optional[int] = typer.Option(
        None, help="Plant this many random-label canaries and bound epsilon from below (default 0)."),
    models: Optional[int] = typer.Option(
        None, help="Models to train, each with its own seed; the test accuracy is their mean (default 1)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the models, the mechanism's noise and the canaries."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    reveal_private_stats: bool = typer.Option(
        False, "--reveal-private-stats",
        help="Also store and show statistics of the private training labels (label DP: the share of labels "
             "randomized response kept; DP-SGD: training accuracy). They are outside the DP claim; off by default."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Train one model, privately if asked; print its test accuracy and privacy, and write a report.

    Examples: fitscope train --label-dp 2 --stages 2 --canaries 100 --out runs/lp2st ;
    fitscope train --dp-sgd --eps 1 --delta 1e-5 --max-grad-norm 1 --out runs/dpsgd ;
    fitscope train --instahide 4 --out runs/instahide
    """
    from fitscope.experiments import get_study

    values = dict(data=data, model=model, epochs=epochs, batch_size=batch_size, lr=lr, regularizers=regularizers, canaries=canaries,
                  models=models, seed=seed, data_seed=data_seed, label_column=label_column,
                  reveal_private_stats=True if reveal_private_stats else None)
    values.update(mechanism_values(label_dp=label_dp, stages=stages, dp_sgd=dp_sgd, eps=eps, delta=delta,
                                   max_grad_norm=max_grad_norm, instahide=instahide, no_sign_mask=no_sign_mask,
                                   resume=resume))
    run_command(get_study("train"), values, out=out, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
                address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
