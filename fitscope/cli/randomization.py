"""``fitscope randomization``: the Zhang et al. (2017) randomization study."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fitscope.cli import app
from fitscope.cli.progress import EnsembleProgress
from fitscope.cli.lists import parse_floats, parse_ints, parse_names


@app.command("randomization")
def randomization(
    data: str = typer.Option("digits", help="Built-in name (see `fitscope data list`) or a data file/folder."),
    model: str = typer.Option("mlp:512x2", help="Model spec (see `fitscope models list`)."),
    out: Path = typer.Option(Path("runs/randomization"), help="Run directory to create."),
    corruptions: Optional[str] = typer.Option(
        None, help="Comma list of none, random_labels, shuffled_pixels, random_pixels, gaussian."),
    noise: Optional[str] = typer.Option(None, help="Label-noise levels p, e.g. 0,0.2,0.4,0.6,0.8,1."),
    regularizers: Optional[str] = typer.Option(
        None, help="Comma list of none, wd, dropout, augment, wd+dropout+augment."),
    seeds: Optional[str] = typer.Option(None, help="Model seeds, e.g. 0,1,2."),
    epochs: Optional[int] = typer.Option(None, help="Epoch budget per ensemble (stops early once all models fit)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay of the 'wd' setting."),
    dropout: Optional[float] = typer.Option(None, help="Dropout rate of the 'dropout' setting."),
    parts: Optional[str] = typer.Option(None, help="Comma list of curves, noise, regularizers (default: all)."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the corruptions."),
    quick: bool = typer.Option(False, "--quick", help="A small setting for a demo (one seed, 60-epoch budget)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in --out, reusing finished units."),
) -> None:
    """Train on true labels, random labels, shuffled/random pixels and gaussian inputs; measure fit and generalization.

    Example: fitscope randomization --data digits --model mlp:512x2 --out runs/rand
    """
    from fitscope.experiments.randomization import RandomizationConfig, make_config, randomization_study

    values = dict(
        data=data, model=model, label_column=label_column, data_seed=data_seed,
        corruptions=parse_names(corruptions) if corruptions else None,
        noise_levels=parse_floats(noise, "--noise") if noise else None,
        regularizers=parse_names(regularizers) if regularizers else None,
        seeds=parse_ints(seeds, "--seeds") if seeds else None,
        epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
        weight_decay=weight_decay, dropout=dropout, parts=parse_names(parts) if parts else None,
    )
    values = {k: v for k, v in values.items() if v is not None}
    cfg = RandomizationConfig.quick(**values) if quick else make_config(**values)

    console = Console(stderr=True)
    with EnsembleProgress(console) as bar:
        run, outcome = randomization_study(
            cfg, out, resume=resume, on_unit_start=bar.start_unit, progress=bar.update
        )
    if outcome.reused_units:
        console.print(f"reused {len(outcome.reused_units)} finished units, trained {len(outcome.trained_units)}")
    for row in run.meta.get("summary", {}).items():
        console.print(f"  {row[0]}: {row[1]:.3f}")
    typer.echo(f"report: {run.path / 'report.html'}")
