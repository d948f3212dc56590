"""What every study command shares: the runner's flags and one way to run a study and show it.

A study command parses its own flags into a dict of the values the user gave
(None for flags left out: on ``--resume`` those come from the run itself) and
calls :func:`run_command` with the runner's flags, declared once here::

    @app.command("seed-agreement")
    def seed_agreement(data: Optional[str] = typer.Option(None, help=...), ...,
                       out: OutOpt = None, resume: ResumeOpt = False, rebuild_meta: RebuildOpt = False,
                       executor: ExecutorOpt = "local", address: AddressOpt = None, threads: ThreadsOpt = None,
                       device: DeviceOpt = None, gpus_per_task: GpusPerTaskOpt = None):
        run_command(get_study("seed-agreement"), dict(data=data, ...), out=out, resume=resume, ...,
                    device=device, gpus_per_task=gpus_per_task)

The placement flags (``--executor``, ``--address``, ``--threads``,
``--device``, ``--gpus-per-task``) say where units run, not what they
compute: they are not part of the run's config, so ``--resume`` may change them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from fitscope.cli.progress import StudyBar

OutOpt = Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<study>).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the run in --out: finished units are reused; flags left out come from the run.")]
RebuildOpt = Annotated[bool, typer.Option(
    "--rebuild-meta", help="With --resume: rebuild a damaged run.json from the intact units.")]
ExecutorOpt = Annotated[str, typer.Option(
    help="Where units run: local (this process) or ray (Ray tasks; a local Ray unless --address).")]
AddressOpt = Annotated[Optional[str], typer.Option(
    help="HOST:PORT of a running Ray cluster (with --executor ray), e.g. 10.0.0.1:6379.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    help="Torch threads per unit (default: FITSCOPE_NUM_THREADS, else all cores locally, 1 per Ray task); "
         "results are bitwise identical for the same value whichever executor ran them.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    help="Torch device of every unit: cpu, cuda, cuda:N or auto (a GPU when one is found, here or in the Ray "
         "cluster; else the CPU). Default: FITSCOPE_DEVICE, else cpu. A run may resume on another device.")]
GpusPerTaskOpt = Annotated[Optional[float], typer.Option(
    help="With --executor ray on a GPU: GPUs each unit reserves, in (0, 1] (default 1; 0.25 lets four units "
         "share a GPU).")]

RegularizersOpt = Annotated[Optional[str], typer.Option(
    help="Parts of the training objective, joined by +, each NAME[:PARAM=VALUE,...], e.g. "
         "'elr:lambda=3,beta=0.7+mixup:alpha=0.2' (see `fitscope regularizers list`; default: plain cross-entropy).")]


def format_value(value: Any) -> str:
    """A summary value as a person reads it: floats to 4 significant digits, everything else as is."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_command(study, values: dict, *, out: Path | None, resume: bool = False, rebuild_meta: bool = False,
                quick: bool = False, executor: str = "local", address: str | None = None,
                threads: int | None = None, device: str | None = None, gpus_per_task: float | None = None):
    """Run ``study`` with the user's ``values`` and show it: progress, the summary, the report's path.

    Ctrl-C prints how many units are saved and the command that resumes, then exits 130; every
    :class:`~fitscope.errors.FitscopeError` reaches ``fitscope.cli.main`` (one line, exit 2).
    """
    from fitscope.experiments.study import PrintProgress, StudyInterrupted, run_study

    console = Console(stderr=True)
    values = {k: v for k, v in values.items() if v is not None}
    placement = dict(executor=executor, address=address, threads=threads, device=device, gpus_per_task=gpus_per_task)
    try:
        if console.is_terminal:
            with StudyBar(console) as bar:
                result = run_study(study, values, out, resume=resume, rebuild_meta=rebuild_meta, quick=quick,
                                   progress=bar, **placement)
        else:
            result = run_study(study, values, out, resume=resume, rebuild_meta=rebuild_meta, quick=quick,
                               progress=PrintProgress(), **placement)
    except StudyInterrupted as err:
        console.print(str(err), soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        console.print("interrupted before the run started; nothing was written", soft_wrap=True)
        raise typer.Exit(130) from None
    for name, value in (result.run.meta.get("summary") or {}).items():
        console.print(f"  {name}: {format_value(value)}", soft_wrap=True, markup=False, highlight=False)
    if result.report is not None:
        typer.echo(f"report: {result.report}")
    else:
        typer.echo(f"run: {result.run.path}")
    return result
