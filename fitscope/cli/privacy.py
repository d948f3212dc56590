"""``fitscope privacy-study``: test accuracy against measured leakage for each defense."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import deprecated_alias, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)


@app.command("privacy-study")
def privacy_study(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (default mlp:64x1)."),
    defenses: Optional[str] = typer.Option(
        None, help="Comma-separated: none, label-dp:EPS, dp-sgd:EPS, instahide:K, pruning:FRACTION, mid:BETA "
                   "(default none,label-dp:1,label-dp:4,dp-sgd:1,dp-sgd:4,instahide:2,pruning:0.9,mid:0.01)."),
    attacks: Optional[str] = typer.Option(
        None, help="Defense-specific studies beside the trade-off, comma-separated: instahide, pruning-vs-noise, "
                   "mid-inversion (default all three; --attacks '' runs none; instahide needs image data)."),
    models: Optional[int] = typer.Option(None, help="Models per defense (LiRA's shadow models), >= 4 (default 16)."),
    shadow_models: Optional[int] = typer.Option(None, "--shadow-models", hidden=True,
                                                help="Deprecated alias of --models."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the non-DP trainers (default 40)."),
    dp_epochs: Optional[int] = typer.Option(None, help="DP-SGD epochs (default 30)."),
    delta: Optional[float] = typer.Option(None, help="DP-SGD delta, in (0, 1) (default 1e-5)."),
    max_grad_norm: Optional[float] = typer.Option(None, help="DP-SGD clipping norm (default 1.0)."),
    canaries: Optional[int] = typer.Option(None, help="Canaries planted per defense, 0 for none (default 100)."),
    attack_images: Optional[int] = typer.Option(
        None, help="Private images the InstaHide attack encodes (default 100)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the subsets, models, canaries and mechanisms."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A first look: 8 shadow models per defense, 30 epochs (DP-SGD 20), 60 canaries, "
                               "40 attack images, defenses none,label-dp:1,dp-sgd:1,instahide:2,pruning:0.9,mid:0.01 "
                               "(about 5 minutes on 2 cores)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Test accuracy vs measured leakage (LiRA, canary epsilon bound) for label DP, DP-SGD, InstaHide, pruning, MID.

    Example: fitscope privacy-study --data digits --quick --out runs/privacy

    On a Ray cluster: fitscope privacy-study --data digits --executor ray --address 10.0.0.1:6379
    (each defense's shadow models, its canary model and each attack setting are separate units).
    """
    from fitscope.experiments import get_study

    models = deprecated_alias("--models", models, "--shadow-models", shadow_models, "privacy-study")
    values = dict(data=data, model=model, models=models, epochs=epochs, dp_epochs=dp_epochs,
                  delta=delta, max_grad_norm=max_grad_norm, canaries=canaries, attack_images=attack_images,
                  seed=seed, data_seed=data_seed, label_column=label_column,
                  defenses=parse_names(defenses) if defenses else None,
                  attacks=parse_names(attacks) if attacks is not None else None)
    run_command(get_study("privacy-study"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
