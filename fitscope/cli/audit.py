"""``fitscope audit``: memorization, influence, C-scores and label issues of a data set."""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, RegularizersOpt, ResumeOpt, ThreadsOpt, run_command,
)


@app.command("audit")
def audit(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default digits)."),
    model: Optional[str] = typer.Option(None, help="Model spec (see `fitscope models list`; default mlp:512x2)."),
    noise: Optional[float] = typer.Option(
        None, help="Exact fraction of training labels flipped to another class: round(noise x n) labels change "
                   "(ground truth kept). Not randomization's --corrupt-prob, a per-label redraw probability."),
    noise_mode: Optional[str] = typer.Option(None, help="uniform (any other class) or pair (class c -> c+1)."),
    models: Optional[int] = typer.Option(None, help="Memorization subset models (default 200)."),
    ratio: Optional[float] = typer.Option(None, help="Subset ratio of the memorization models (default 0.7)."),
    cscore_ratios: Optional[str] = typer.Option(None, help="C-score subset ratios, e.g. 0.1,0.3,0.5,0.7,0.9."),
    cscore_models: Optional[int] = typer.Option(
        None, help="Models per C-score ratio other than --ratio (default 50; the --ratio models are reused)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per model (default 20)."),
    regularizers: RegularizersOpt = None,
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
    batch_size: Optional[int] = typer.Option(None, help="Minibatch size."),
    seed: Optional[int] = typer.Option(None, help="Seed of the label flips, subsets and models."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    chunk: Optional[int] = typer.Option(None, help="Models per batched ensemble, stored as it finishes (default 50)."),
    oof_families: Optional[str] = typer.Option(
        None, help="scikit-learn families whose 5-fold out-of-fold probabilities join the networks' in the "
                   "label-issue score: comma-separated among logistic,boosting,mlp, 'none' for the networks "
                   "alone, or 'auto' (default: all three up to 256 input features and 500,000 input entries, else logistic)."),
    oof_folds: Optional[int] = typer.Option(None, help="Cross-validation folds of those families (default 5)."),
    fast: bool = typer.Option(False, "--fast",
                              help="The fast audit: 16 memorization models, no C-score models (learning speed, "
                                   "out-of-fold probabilities and the scikit-learn families score the labels; "
                                   "about half the cost, see the README's label-issue section)."),
    quick: bool = typer.Option(False, "--quick",
                               help="A small setting for a demo: 48 memorization models, C-score ratios "
                                    "0.3,0.5,0.7 with 16 models each, 12 epochs (about 20 s on digits on 2 idle cores)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Train subset models and score every training example: memorization, influence, C-score, label issues.

    Example: fitscope audit --data digits --noise 0.1 --models 200 --out runs/audit

    A quick demo: fitscope audit --data digits --noise 0.1 --quick --out runs/demo-audit

    On a Ray cluster: fitscope audit --data digits --models 400 --executor ray --address 10.0.0.1:6379
    (a run started with one executor can be resumed with --resume on the other).
    """
    from fitscope.experiments import get_study
    from fitscope.experiments.audit import fast_values

    values = dict(
        data=data, model=model, noise=noise, noise_mode=noise_mode, models=models, ratio=ratio,
        cscore_ratios=parse_floats(cscore_ratios, "--cscore-ratios", "0.1,0.5,0.9") if cscore_ratios else None,
        cscore_models=cscore_models, epochs=epochs, lr=lr, regularizers=regularizers, optimizer=optimizer, batch_size=batch_size,
        seed=seed, data_seed=data_seed, label_column=label_column, chunk=chunk,
        oof_families=_families(oof_families), oof_folds=oof_folds,
    )
    if fast:  # its settings beat --quick's, given flags beat both
        given = {k: v for k, v in values.items() if v is not None}
        values = {**fast_values(ratio), **given, "fast": True}
    run_command(get_study("audit"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads, device=device,
                gpus_per_task=gpus_per_task)


def _families(text: str | None):
    """``--oof-families``: None (not given), ``"auto"``, ``[]`` for ``none``, else the names."""
    if text is None or text.strip() == "auto":
        return None if text is None else "auto"
    return [] if text.strip() == "none" else parse_names(text)
