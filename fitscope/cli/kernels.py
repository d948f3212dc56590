"""``fitscope kernels``: the infinite-width kernel studies (UCI tables, small data, complexity measure)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints, parse_names
from fitscope.cli.progress import EnsembleProgress
from fitscope.errors import ConfigError

kernels_app = typer.Typer(
    help="Infinite-width kernel studies: NTK-SVM on UCI tables, CNTK on few samples, the complexity measure.",
    no_args_is_help=True,
)
app.add_typer(kernels_app, name="kernels")


class _StepLog:
    """Prints one line per finished step on stderr (``done: <step> (12.3 s)``), with the elapsed time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._current: str | None = None
        self._t0 = 0.0

    def __call__(self, description: str) -> None:
        self.close()
        self._current, self._t0 = description, time.perf_counter()
        self.console.print(f"[dim]{description} ...[/dim]")

    def close(self) -> None:
        if self._current is not None:
            self.console.print(f"  done in {time.perf_counter() - self._t0:.1f} s")
            self._current = None


class _DatasetProgress:
    """A bar over data sets whose text shows the current stage; started by the first data set."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._task = None

    def __enter__(self) -> "_DatasetProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            self._progress.__exit__(*exc)

    def dataset(self, name: str, index: int, count: int) -> None:
        """Move the bar to data set ``index`` of ``count``."""
        if self._task is None:
            self._progress.__enter__()
            self._task = self._progress.add_task(name, total=count)
        self._progress.update(self._task, completed=index, description=name)

    def step(self, description: str) -> None:
        """Show the current stage."""
        if self._task is not None:
            self._progress.update(self._task, description=description[:44])


def _names_or_none(text: str | None) -> list[str] | None:
    """None (the default) for no flag, [] for 'none', else the comma-separated names."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else parse_names(text)


def _print_summary(console: Console, run) -> None:
    for name, value in run.meta.get("summary", {}).items():
        console.print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")


@kernels_app.command("uci")
def uci(
    csv_dir: Optional[Path] = typer.Option(
        None, help="Folder of UCI-style .csv files (numeric features, label in the last column) to add."),
    datasets: Optional[str] = typer.Option(
        None, help="Built-in sets, comma-separated (default iris,wine,breast_cancer,digits); 'none' for CSVs only."),
    label_column: Optional[str] = typer.Option(None, help="Label column of the CSV files (name or index)."),
    depths: Optional[str] = typer.Option(None, help="NTK depths (hidden layers), e.g. 1,2,3,4,5."),
    C: Optional[str] = typer.Option(None, "--C", help="SVM C grid, e.g. 0.01,0.1,1,10,100,1000,10000."),
    folds: Optional[int] = typer.Option(None, help="Folds of the accuracy estimate (default 4)."),
    trees: Optional[int] = typer.Option(None, help="Random forest trees (default 500)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the validation split, folds and forests."),
    out: Path = typer.Option(Path("runs/kernels-uci"), help="Run directory to create."),
    quick: bool = typer.Option(False, "--quick", help="Smaller grids: depths 1-3, fixed 0-1, 4 values of C, 100 trees."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run in --out, skipping finished data sets."),
) -> None:
    """NTK-SVM against random forest and Gaussian SVM on UCI tables (Arora et al. 2020).

    Example: fitscope kernels uci --csv-dir ~/uci --out runs/kernels-uci
    """
    from fitscope.experiments.kernels_uci import UCIConfig, make_config, uci_study

    names = None
    if datasets is not None:
        names = [] if datasets.strip().lower() == "none" else [n.lower() for n in parse_names(datasets)]
    values = dict(
        datasets=names, csv_dir=str(csv_dir) if csv_dir is not None else None, label_column=label_column,
        depths=parse_ints(depths, "--depths", "1,2,3") if depths else None,
        svm_C=parse_floats(C, "--C", "0.01,1,100") if C else None,
        folds=folds, rf_trees=trees, seed=seed,
    )
    values = {k: v for k, v in values.items() if v is not None}
    cfg = UCIConfig.quick(**values) if quick else make_config(**values)
    console = Console(stderr=True)
    with _DatasetProgress(console) as bar:
        run, outcome = uci_study(cfg, out, resume=resume, on_dataset=bar.dataset, on_step=bar.step)
    if outcome.reused:
        console.print(f"reused {len(outcome.reused)} finished data sets, evaluated {len(outcome.computed)}")
    _print_summary(console, run)
    typer.echo(f"report: {run.path / 'report.html'}")


def _run_with_progress(study, cfg, out: Path, resume: bool, console: Console):
    """Run a study that trains networks: its steps as log lines, one progress bar per trained unit.

    Returns what ``study`` returns, ``(run, outcome)``.
    """
    log = _StepLog(console)
    with EnsembleProgress(console) as bar:
        def start_unit(key: str, n_models: int, epochs: int) -> None:
            log.close()
            bar.start_unit(key, n_models, epochs)

        result = study(cfg, out, resume=resume, on_step=log, on_unit_start=start_unit, progress=bar.update)
    log.close()
    return result


@kernels_app.command("small-data")
def small_data(
    data: str = typer.Option("digits", help="Built-in image set or an image file/folder (see `fitscope data list`)."),
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
    out: Path = typer.Option(Path("runs/kernels-small-data"), help="Run directory to create."),
    quick: bool = typer.Option(False, "--quick", help="Sizes 10-80, two seeds, CNTK-GAP and the CNN only."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run in --out, reusing finished kernels and networks."),
) -> None:
    """CNTK (kernel regression) against a trained CNN and ResNet on few-sample subsets (Arora et al. 2020).

    Example: fitscope kernels small-data --data digits --sizes 10,20,40,80,160,320 --seeds 0,1,2
    """
    from fitscope.experiments.kernels_small_data import SmallDataConfig, make_config, small_data_study

    size_list = parse_ints(sizes, "--sizes", "10,20,40") if sizes else None
    if size_list is not None and any(s <= 0 for s in size_list):
        raise ConfigError(f"--sizes: expected positive integers like 10,20,40; got {sizes!r}")
    values = dict(
        data=data, sizes=size_list, seeds=parse_ints(seeds, "--seeds") if seeds else None,
        kernels=_names_or_none(kernels), depth=depth, models=_names_or_none(models), steps=steps, ridge=ridge, data_seed=data_seed,
    )
    values = {k: v for k, v in values.items() if v is not None}
    cfg = SmallDataConfig.quick(**values) if quick else make_config(**values)
    console = Console(stderr=True)
    run, outcome = _run_with_progress(small_data_study, cfg, out, resume, console)
    if outcome.reused:
        console.print(f"reused {len(outcome.reused)} finished units, computed {len(outcome.computed)}")
    _print_summary(console, run)
    typer.echo(f"report: {run.path / 'report.html'}")


@kernels_app.command("complexity")
def complexity(
    data: str = typer.Option("digits", help="Built-in name or a data file/folder (see `fitscope data list`)."),
    noise: Optional[str] = typer.Option(None, help="Label-noise levels p in [0, 1], e.g. 0,0.2,0.4,0.6,0.8,1."),
    classes: Optional[str] = typer.Option(None, help="Classes kept, e.g. 0,1 (default, binary as in the paper) or all."),
    max_examples: Optional[int] = typer.Option(None, help="Largest number of training rows (default 1000)."),
    seeds: Optional[str] = typer.Option(None, help="Label-noise and model seeds, e.g. 0,1,2."),
    model: Optional[str] = typer.Option(None, help="Network trained on the noisy labels (default mlp:512x1)."),
    epochs: Optional[int] = typer.Option(None, help="Epoch budget (training stops once every model fits)."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the subsample."),
    out: Path = typer.Option(Path("runs/kernels-complexity"), help="Run directory to create."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run in --out, reusing the measure or the network."),
) -> None:
    """The complexity measure sqrt(2 y^T H^-1 y / n) and a trained network's test error against label noise.

    Example: fitscope kernels complexity --data digits --noise 0,0.2,0.4,0.6,0.8,1.0
    """
    from fitscope.experiments.kernels_complexity import complexity_study, make_config

    class_list: list[int] | None | str = "default"
    if classes is not None:
        class_list = None if classes.strip().lower() == "all" else parse_ints(classes, "--classes", "0,1")
    values = dict(
        data=data, noise_levels=parse_floats(noise, "--noise", "0,0.5,1") if noise else None,
        max_examples=max_examples, seeds=parse_ints(seeds, "--seeds") if seeds else None, model=model,
        epochs=epochs, data_seed=data_seed,
    )
    values = {k: v for k, v in values.items() if v is not None}
    if class_list != "default":
        values["classes"] = class_list
    cfg = make_config(**values)
    console = Console(stderr=True)
    run, outcome = _run_with_progress(complexity_study, cfg, out, resume, console)
    if outcome.reused:
        console.print(f"reused {', '.join(outcome.reused)}; computed {', '.join(outcome.computed) or 'nothing'}")
    _print_summary(console, run)
    typer.echo(f"report: {run.path / 'report.html'}")
