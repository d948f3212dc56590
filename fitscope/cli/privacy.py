"""``fitscope privacy-study``: test accuracy against measured leakage for each defense."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fitscope.cli import app
from fitscope.cli.lists import parse_names


class _DefenseProgress:
    """One bar per defense, advanced per model trained (the ensemble defenses finish in one step)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
        self._task = None
        self._started = False

    def __enter__(self) -> "_DefenseProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._progress.__exit__(*exc)

    def start(self, label: str, models: int) -> None:
        if not self._started:
            self._progress.__enter__()
            self._started = True
        self._task = self._progress.add_task(label, total=models)

    def update(self, done: int, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total)


@app.command("privacy-study")
def privacy_study(
    data: str = typer.Option("digits", help="Built-in name (see `fitscope data list`) or a data file/folder."),
    model: Optional[str] = typer.Option(None, help="Model spec (default mlp:64x1)."),
    out: Path = typer.Option(Path("runs/privacy"), help="Run directory to create."),
    defenses: Optional[str] = typer.Option(
        None, help="Comma-separated: none, label-dp:EPS, dp-sgd:EPS, instahide:K, pruning:FRACTION, mid:BETA "
                   "(default none,label-dp:1,label-dp:4,dp-sgd:1,dp-sgd:4,instahide:2,pruning:0.9,mid:0.01)."),
    shadow_models: Optional[int] = typer.Option(None, help="Models per defense, >= 4 (default 16)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the non-DP trainers (default 40)."),
    dp_epochs: Optional[int] = typer.Option(None, help="DP-SGD epochs (default 30)."),
    delta: Optional[float] = typer.Option(None, help="DP-SGD delta, in (0, 1) (default 1e-5)."),
    max_grad_norm: Optional[float] = typer.Option(None, help="DP-SGD clipping norm (default 1.0)."),
    canaries: Optional[int] = typer.Option(None, help="Canaries planted per defense, 0 for none (default 100)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the subsets, models, canaries and mechanisms."),
    quick: bool = typer.Option(False, "--quick", help="8 models per defense and fewer defenses (a few minutes)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed study in --out, reusing finished defenses."),
) -> None:
    """Test accuracy vs measured leakage (LiRA, canary epsilon bound) for label DP, DP-SGD, InstaHide, pruning, MID.

    Example: fitscope privacy-study --data digits --quick --out runs/privacy
    """
    from fitscope.experiments.privacy_study import PrivacyStudyConfig, make_config
    from fitscope.experiments.privacy_study import privacy_study as run_study

    values = dict(data=data, model=model, shadow_models=shadow_models, epochs=epochs, dp_epochs=dp_epochs,
                  delta=delta, max_grad_norm=max_grad_norm, canaries=canaries, seed=seed,
                  defenses=parse_names(defenses) if defenses else None)
    given = {k: v for k, v in values.items() if v is not None}
    cfg = PrivacyStudyConfig.quick(**given) if quick else make_config(**given)
    console = Console(stderr=True)
    with _DefenseProgress(console) as bar:
        run, outcome = run_study(cfg, out, resume=resume, on_defense_start=bar.start, progress=bar.update)
    for r in outcome.results.itertuples():
        console.print(f"  {r.label:<24} test acc {r.test_acc:.3f}  LiRA AUC {r.lira_auc:.3f}  "
                      f"TPR@1%FPR {r.lira_tpr_at_1pct:.3f}  eps lower bound {r.eps_lower_bound:.2f}")
    typer.echo(f"report: {run.path / 'report.html'}")
