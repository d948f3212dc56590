"""``fitscope kernels``: the infinite-width kernel studies (UCI tables, small data, complexity measure).

Each subcommand runs its study on the one study runner
(:func:`fitscope.cli.study_command.run_command`): ``--out``, ``--resume``,
``--executor``, ``--address``, ``--threads``, ``--device`` and ``--gpus-per-task`` mean the same as in every
study command, and a flag left out on ``--resume`` comes from the run.
A flag whose name differs from its config field (``--trees``, ``--C``,
``--corrupt-prob``) also answers to the field's name (``--rf-trees``, ``--svm-C``,
``--noise-levels``). ``complexity --noise`` is a hidden, deprecated alias of
``--corrupt-prob``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import deprecated_alias, parse_floats, parse_ints, parse_names
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt,
    run_command,
)
from fitscope.errors import ConfigError

kernels_app = typer.Typer(
    help="Infinite-width kernel studies: NTK-SVM on UCI tables, CNTK on few samples, the complexity measure.\n\n"
         "Example: fitscope kernels uci --quick --out runs/kernels-uci",
    no_args_is_help=True,
)
app.add_typer(kernels_app, name="kernels")


def _names_or_none(text: str | None) -> list[str] | None:
    """None (the default) for no flag, [] for 'none', else the comma-separated names."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else parse_names(text)


@kernels_app.command("uci")
def uci(
    csv_dir: Optional[Path] = typer.Option(
        None, help="Folder of UCI-style .csv files (numeric features, label in the last column) to add."),
    datasets: Optional[str] = typer.Option(
        None, help="Built-in sets, comma-separated (default iris,wine,breast_cancer,digits); 'none' for CSVs only."),
    label_column: Optional[str] = typer.Option(None, help="Label column of the CSV files (name or index)."),
    depths: Optional[str] = typer.Option(None, help="NTK depths (hidden layers), e.g. 1,2,3,4,5."),
    C: Optional[str] = typer.Option(None, "--C", "--svm-C", help="SVM C grid, e.g. 0.01,0.1,1,10,100,1000,10000."),
    folds: Optional[int] = typer.Option(None, help="Folds of the accuracy estimate (default 4)."),
    trees: Optional[int] = typer.Option(None, "--trees", "--rf-trees", help="Random forest trees (default 500)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the validation split, folds and forests."),
    quick: bool = typer.Option(
        False, "--quick", help="Smaller grids: depths 1-3 with 0-1 fixed layers, C in 0.01,1,100,10000, "
                               "3 Gaussian widths, 100 trees with max_features sqrt or 0.5."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """NTK-SVM against random forest and Gaussian SVM on UCI tables (Arora et al. 2020); one unit per data set.

    Example: fitscope kernels uci --csv-dir ~/uci --out runs/kernels-uci
    """
    from fitscope.experiments import get_study

    names = None
    if datasets is not None:
        names = [] if datasets.strip().lower() == "none" else [n.lower() for n in parse_names(datasets)]
    values = dict(
        datasets=names, csv_dir=str(csv_dir) if csv_dir is not None else None, label_column=label_column,
        depths=parse_ints(depths, "--depths", "1,2,3") if depths else None,
        svm_C=parse_floats(C, "--C", "0.01,1,100") if C else None,
        folds=folds, rf_trees=trees, seed=seed,
    )
    run_command(get_study("kernels-uci"), values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)


@kernels_app.command("small-data")
def small_data(
    data: Optional[str] = typer.Option(
        None, help="Built-in image set or an image file/folder (see `fitscope data list`; default digits)."),
    sizes: Optional[str] = typer.Option(None, help="Training-set sizes, e.g. 10,20,40,80,160,320 (each >= classes)."),
    seeds: Optional[str] = typer.Option(None, help="Subset and model seeds, e.g. 0,1,2."),
    kernels: Optional[str] = typer.Option(
        None, help="Kernel variants: cntk-gap, cntk-lap, cntk (vanilla), cntk-lap+patches; 'none' for networks only."),
    depth: Optional[int] = typer.Option(None, help="CNTK conv layers (default 3)."),
    models: Optional[str] = typer.Option(
        None, help="Networks to train, e.g. cnn:32-64,resnet:16x2; 'none' for kernels only."),
    steps: Optional[int] = typer.Option(None, help="Training steps per network (default 500)."),
    ridge: Optional[float] = typer.Option(None, help="Kernel ridge, relative to the mean diagonal (default 1e-4)."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split."),
    quick: bool = typer.Option(
        False, "--quick", help="Sizes 10,20,40,80, seeds 0,1, CNTK-GAP and the CNN (cnn:32-64) only: "
                               "8 networks of 500 steps."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """CNTK (kernel regression) against a trained CNN and ResNet on few-sample subsets (Arora et al. 2020).

    Units: one per CNTK readout (the Gram matrices) and one per network (model, size, seed).

    Example: fitscope kernels small-data --data digits --sizes 10,20,40,80,160,320 --seeds 0,1,2
    """
    from fitscope.experiments import get_study

    size_list = parse_ints(sizes, "--sizes", "10,20,40") if sizes else None
    if size_list is not None and any(s <= 0 for s in size_list):
        raise ConfigError(f"--sizes: expected positive integers like 10,20,40; got {sizes!r}")
    values = dict(
        data=data, sizes=size_list, seeds=parse_ints(seeds, "--seeds") if seeds else None,
        kernels=_names_or_none(kernels), depth=depth, models=_names_or_none(models), steps=steps, ridge=ridge,
        data_seed=data_seed,
    )
    run_command(get_study("kernels-small-data"), values, out=out, quick=quick, resume=resume,
                rebuild_meta=rebuild_meta, executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)


@kernels_app.command("complexity")
def complexity(
    data: Optional[str] = typer.Option(
        None, help="Built-in name or a data file/folder (see `fitscope data list`; default digits)."),
    corrupt_prob: Optional[str] = typer.Option(
        None, "--corrupt-prob", "--noise-levels",
        help="Label corruption probabilities p in [0, 1], e.g. 0,0.2,0.4,0.6,0.8,1: each training label is redrawn "
             "uniformly with probability p (as in randomization --corrupt-prob; not audit's --noise, an exact "
             "fraction flipped)."),
    noise: Optional[str] = typer.Option(None, "--noise", hidden=True, help="Deprecated alias of --corrupt-prob."),
    classes: Optional[str] = typer.Option(None, help="Classes kept, e.g. 0,1 (default, binary as in the paper) or all."),
    max_examples: Optional[int] = typer.Option(None, help="Largest number of training rows (default 1000)."),
    seeds: Optional[str] = typer.Option(None, help="Label-noise and model seeds, e.g. 0,1,2."),
    model: Optional[str] = typer.Option(None, help="Network trained on the noisy labels (default mlp:512x1)."),
    epochs: Optional[int] = typer.Option(None, help="Epoch budget (training stops once every model fits)."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the subsample."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """The complexity measure sqrt(2 y^T H^-1 y / n) and a trained network's test error against label noise.

    Units: the measure, and one ensemble (one model per seed) per noise level.

    Example: fitscope kernels complexity --data digits --corrupt-prob 0,0.2,0.4,0.6,0.8,1.0
    """
    from fitscope.experiments import get_study

    class_list: list[int] | str | None = None
    if classes is not None:
        class_list = "all" if classes.strip().lower() == "all" else parse_ints(classes, "--classes", "0,1")
    levels = deprecated_alias("--corrupt-prob", corrupt_prob, "--noise", noise, "kernels complexity",
                              parse=parse_floats) or None
    values = dict(
        data=data, noise_levels=levels, classes=class_list,
        max_examples=max_examples, seeds=parse_ints(seeds, "--seeds") if seeds else None, model=model,
        epochs=epochs, data_seed=data_seed,
    )
    run_command(get_study("kernels-complexity"), values, out=out, resume=resume, rebuild_meta=rebuild_meta,
                executor=executor, address=address, threads=threads,
                device=device, gpus_per_task=gpus_per_task)
