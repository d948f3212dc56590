"""``fitscope dynamics``: the training-dynamics and loss-landscape studies, one subcommand each.

Each subcommand runs its study on the one study runner
(:func:`fitscope.cli.study_command.run_command`): ``--out``, ``--resume``,
``--executor``, ``--address``, ``--threads``, ``--device`` and
``--gpus-per-task`` mean the same as in every study command, and a flag left
out on ``--resume`` comes from the run. A study ``NAME`` of the group is
registered as ``dynamics-NAME`` in :data:`fitscope.experiments.STUDIES`
(module ``fitscope/experiments/dynamics_NAME.py``); a new one is one more
``@dynamics_app.command("NAME")`` function here that declares its flags and
calls :func:`_run` (sharpness now; connectivity, layers, exp-lr, identity and
matrix-factorization to come).
"""

from __future__ import annotations

from typing import Optional

import typer

from fitscope.cli import app
from fitscope.cli.lists import parse_floats, parse_ints
from fitscope.cli.study_command import (
    AddressOpt, DeviceOpt, ExecutorOpt, GpusPerTaskOpt, OutOpt, RebuildOpt, ResumeOpt, ThreadsOpt, run_command,
)

dynamics_app = typer.Typer(
    help="Training dynamics and the loss landscape: sharpness and the edge of stability.\n\n"
         "Example: fitscope dynamics sharpness --quick --out runs/sharpness",
    no_args_is_help=True,
)
app.add_typer(dynamics_app, name="dynamics")


def _run(name: str, values: dict, **runner) -> None:
    """Run the study ``dynamics-<name>`` with the user's ``values`` and the runner's flags."""
    from fitscope.experiments import get_study

    run_command(get_study(f"dynamics-{name}"), values, **runner)


def _floats_or_none(text: str | None, flag: str, example: str) -> list[float] | None:
    """None for no flag, [] for 'none', else the comma-separated numbers."""
    if text is None:
        return None
    return [] if text.strip().lower() == "none" else parse_floats(text, flag, example)


@dynamics_app.command("sharpness")
def sharpness(
    data: Optional[str] = typer.Option(
        None, help="Built-in name (see `fitscope data list`) or a data file/folder (default mnist1d)."),
    rows: Optional[int] = typer.Option(
        None, help="Training rows, a seeded subset; GD uses all of them (default 1000)."),
    model: Optional[str] = typer.Option(
        None, help="Model spec: mlp, cnn or cnn1d without dropout (default mlp:64x3)."),
    loss: Optional[str] = typer.Option(None, help="mse (the square loss of Cohen et al., default) or ce."),
    gd_lrs: Optional[str] = typer.Option(
        None, help="Learning rates of the full-batch GD runs, e.g. 0.05,0.2,0.3,0.4 (each finite and > 0)."),
    gd_steps: Optional[int] = typer.Option(None, help="Steps of each GD run (default 1000)."),
    every: Optional[int] = typer.Option(None, help="GD steps between two sharpness measurements (default 20)."),
    sgd_lrs: Optional[str] = typer.Option(
        None, help="Learning rates of the SGD runs, e.g. 0.05,0.1,0.2,0.4; 'none' for GD only."),
    batch_sizes: Optional[str] = typer.Option(None, help="SGD batch sizes, each in [1, --rows], e.g. 16,64."),
    sgd_time: Optional[float] = typer.Option(
        None, help="Training time lr x steps of every SGD run: each takes sgd_time / lr steps (default 400)."),
    sgd_measurements: Optional[int] = typer.Option(
        None, help="Hessian measurements per SGD run, evenly spaced (default 10)."),
    probes: Optional[int] = typer.Option(None, help="Rademacher probes per trace / Frobenius estimate (default 20)."),
    tol: Optional[float] = typer.Option(None, help="Relative tolerance of the Lanczos eigenvalue (default 0.001)."),
    max_iter: Optional[int] = typer.Option(None, help="Most Lanczos steps per estimate (default 100)."),
    memory_limit: Optional[float] = typer.Option(
        None, help="GiB a Hessian computation may take, estimated from the parameter count before anything runs "
                   "(default 4)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the initial weights, SGD batches and probes."),
    data_seed: Optional[int] = typer.Option(None, help="Seed of the train/test split and the row subset."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a CSV file."),
    quick: bool = typer.Option(
        False, "--quick", help="A small setting for a demo: 500 rows, GD at lr 0.05, 0.3, 0.4 for 400 steps, SGD at "
                               "lr 0.1, 0.4 with batches 16, 64 for a time lr x steps of 100, 10 probes (mlp:64x3)."),
    out: OutOpt = None,
    resume: ResumeOpt = False,
    rebuild_meta: RebuildOpt = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    gpus_per_task: GpusPerTaskOpt = None,
) -> None:
    """Track the sharpness (top Hessian eigenvalue) during full-batch GD and SGD against 2/lr: the edge of stability.

    Units: one per GD learning rate and one per SGD (learning rate, batch size).

    Example: fitscope dynamics sharpness --data mnist1d --gd-lrs 0.05,0.2,0.3,0.4 --sgd-lrs 0.1,0.4 --batch-sizes 16,64

    A quick demo: fitscope dynamics sharpness --quick --out runs/demo-sharpness
    """
    values = dict(
        data=data, rows=rows, model=model, loss=loss,
        gd_lrs=_floats_or_none(gd_lrs, "--gd-lrs", "0.03,0.1,0.2"), gd_steps=gd_steps, every=every,
        sgd_lrs=_floats_or_none(sgd_lrs, "--sgd-lrs", "0.05,0.1,0.2"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes", "16,64") if batch_sizes else None,
        sgd_time=sgd_time, sgd_measurements=sgd_measurements, probes=probes, tol=tol, max_iter=max_iter,
        memory_limit=memory_limit, seed=seed, data_seed=data_seed, label_column=label_column,
    )
    _run("sharpness", values, out=out, quick=quick, resume=resume, rebuild_meta=rebuild_meta, executor=executor,
         address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
