"""``fitscope train``: one model, with label DP, DP-SGD or InstaHide if asked, audited with canaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fitscope.cli import app
from fitscope.errors import ConfigError


@app.command("train")
def train(
    data: str = typer.Option("digits", help="Built-in name (see `fitscope data list`) or a data file/folder."),
    model: str = typer.Option("mlp:512x2", help="Model spec (see `fitscope models list`)."),
    out: Path = typer.Option(Path("runs/train"), help="Run directory to create."),
    label_dp: Optional[float] = typer.Option(None, help="Label DP by LP-MST with this epsilon (> 0)."),
    stages: int = typer.Option(1, help="LP-MST stages T (with --label-dp): 1 = LP-1ST, 2 = LP-2ST."),
    dp_sgd: bool = typer.Option(False, "--dp-sgd", help="Train with DP-SGD (Opacus); needs --eps."),
    eps: Optional[float] = typer.Option(None, help="DP-SGD target epsilon (> 0)."),
    delta: float = typer.Option(1e-5, help="DP-SGD delta, in (0, 1); keep it below 1/n."),
    max_grad_norm: float = typer.Option(1.0, help="DP-SGD per-example clipping norm C (> 0)."),
    instahide: Optional[int] = typer.Option(None, help="Train on InstaHide encodings mixing K images."),
    no_sign_mask: bool = typer.Option(False, "--no-sign-mask", help="InstaHide without the random sign mask."),
    epochs: int = typer.Option(30, help="Epochs."),
    batch_size: int = typer.Option(64, help="Minibatch size (DP-SGD: expected Poisson batch size)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default Adam 1e-3; DP-SGD 0.5)."),
    canaries: int = typer.Option(0, help="Plant this many random-label canaries and bound epsilon from below."),
    seed: int = typer.Option(0, help="Seed of the model, the mechanism's noise and the canaries."),
    data_seed: int = typer.Option(0, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
) -> None:
    """Train one model, privately if asked, and print its test accuracy and privacy.

    Examples: fitscope train --label-dp 2 --stages 2 --canaries 100 --out runs/lp2st ;
    fitscope train --dp-sgd --eps 1 --delta 1e-5 --max-grad-norm 1 --out runs/dpsgd ;
    fitscope train --instahide 4 --out runs/instahide
    """
    from fitscope.experiments.private_training import make_config, train_private

    chosen = [name for name, on in (("--label-dp", label_dp is not None), ("--dp-sgd", dp_sgd),
                                    ("--instahide", instahide is not None)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"choose one mechanism; got {' and '.join(chosen)}")
    if eps is not None and not dp_sgd:
        raise ConfigError("--eps: is the DP-SGD epsilon and needs --dp-sgd (label DP takes --label-dp EPS)")
    mechanism, extra = "none", {}
    if label_dp is not None:
        mechanism, extra = "label-dp", dict(eps=label_dp, stages=stages)
    elif dp_sgd:
        mechanism, extra = "dp-sgd", dict(eps=eps, delta=delta, max_grad_norm=max_grad_norm)
    elif instahide is not None:
        mechanism, extra = "instahide", dict(k=instahide, sign_mask=not no_sign_mask)
    cfg = make_config(data=data, model=model, mechanism=mechanism, epochs=epochs, batch_size=batch_size, lr=lr,
                      canaries=canaries, seed=seed, data_seed=data_seed, label_column=label_column, **extra)
    console = Console(stderr=True)
    with console.status(f"training ({mechanism})"):
        run, result = train_private(cfg, out)
    console.print(json.dumps(result, indent=1))
    typer.echo(f"run: {run.path}")
