"""``fitscope audit``: memorization, influence, C-scores and label issues of a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fitscope.cli import app
from fitscope.cli.progress import EnsembleProgress
from fitscope.cli.lists import parse_floats


@app.command("audit")
def audit(
    data: str = typer.Option("digits", help="Built-in name (see `fitscope data list`) or a data file/folder."),
    model: str = typer.Option("mlp:512x2", help="Model spec (see `fitscope models list`)."),
    out: Path = typer.Option(Path("runs/audit"), help="Run directory to create."),
    noise: Optional[float] = typer.Option(None, help="Fraction of training labels to flip (ground truth kept)."),
    noise_mode: Optional[str] = typer.Option(None, help="uniform (any other class) or pair (class c -> c+1)."),
    models: Optional[int] = typer.Option(None, help="Memorization subset models (default 200)."),
    ratio: Optional[float] = typer.Option(None, help="Subset ratio of the memorization models (default 0.7)."),
    cscore_ratios: Optional[str] = typer.Option(None, help="C-score subset ratios, e.g. 0.1,0.3,0.5,0.7,0.9."),
    cscore_models: Optional[int] = typer.Option(
        None, help="Models per C-score ratio other than --ratio (default 50; the --ratio models are reused)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default 20)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size."),
    seed: Optional[int] = typer.Option(None, help="Seed of the label flips, subsets and models."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    chunk: Optional[int] = typer.Option(None, help="Models per batched ensemble, stored as it finishes (default 50)."),
    executor: Optional[str] = typer.Option(
        None, help="Where models train: local (this process) or ray (Ray tasks; a local Ray unless --address)."),
    address: Optional[str] = typer.Option(
        None, help="HOST:PORT of a running Ray cluster (with --executor ray), e.g. 10.0.0.1:6379."),
    threads: Optional[int] = typer.Option(
        None, help="Torch threads per unit (default: FITSCOPE_NUM_THREADS if set, else with --resume the run's "
                   "own value, else all cores with --executor local and 1 per Ray task). Part of the config: "
                   "results are bitwise identical only for the same value, whichever executor ran them."),
    quick: bool = typer.Option(False, "--quick",
                               help="A small setting for a demo: 48 memorization models, C-score ratios "
                                    "0.3,0.5,0.7 with 16 models each, 12 epochs (1-2 minutes on digits)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue a killed audit in --out, training only missing models."),
) -> None:
    """Train subset models and score every training example: memorization, influence, C-score, label issues.

    Example: fitscope audit --data digits --noise 0.1 --models 200 --out runs/audit

    A quick demo: fitscope audit --data digits --noise 0.1 --quick --out runs/demo-audit

    On a Ray cluster: fitscope audit --data digits --models 400 --executor ray --address 10.0.0.1:6379
    (a run started with one executor can be resumed with --resume on the other).
    """
    from fitscope.experiments.audit import AuditConfig, make_config
    from fitscope.experiments.audit import audit as run_audit

    values = dict(
        data=data, model=model, noise=noise, noise_mode=noise_mode, models=models, ratio=ratio,
        cscore_ratios=parse_floats(cscore_ratios, "--cscore-ratios", "0.1,0.5,0.9") if cscore_ratios else None,
        cscore_models=cscore_models, epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size,
        seed=seed, data_seed=data_seed, label_column=label_column, chunk=chunk, executor=executor,
        address=address, threads=threads,
    )
    values = {k: v for k, v in values.items() if v is not None}
    cfg = AuditConfig.quick(**values) if quick else make_config(**values)

    console = Console(stderr=True)
    with EnsembleProgress(console) as bar:
        run, outcome = run_audit(cfg, out, resume=resume, on_unit_start=bar.start_unit, progress=bar.update)
    if outcome.reused_units:
        console.print(f"reused {len(outcome.reused_units)} finished units, trained {len(outcome.trained_units)}")
    for name, value in run.meta.get("summary", {}).items():
        console.print(f"  {name}: {value:.4g}" if isinstance(value, float) else f"  {name}: {value}")
    typer.echo(f"report: {run.path / 'report.html'}")
