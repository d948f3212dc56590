"""``fitscope models``: the model spec grammar, examples and their cost, and which study uses which norm.

The logic lives in :func:`spec_examples_table` (tests call it directly); the
typer command only prints it.
"""

from __future__ import annotations

import torch
import typer
from rich.console import Console
from rich.table import Table

from fitscope.cli import app
from fitscope.errors import ConfigError
from fitscope.models import NORM_BY_STUDY, SPEC_HELP, build, build_plain, check_input_shape, flops_per_example, parse_spec

models_app = typer.Typer(
    name="models",
    help="Model specs: the grammar, examples and FLOPs per example.\n\nExample: fitscope models list",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(models_app, name="models")

EXAMPLE_SPECS = (
    "mlp:512x2",
    "mlp:256-128",
    "mlp:512x2,dropout=0.5",
    "cnn:32-64",
    "cnn:32-64,dropout=0.25",
    "resnet:16x3",
    "resnet:16x3,blocks=2",
    "cnn1d:32x3",
)

# cnn1d takes signals; it is shown on an mnist1d-sized signal instead of the image.
_SIGNAL_SHAPE = (1, 40)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        raise ConfigError(f"--shape: expected D, CxL or CxHxW with positive sizes (e.g. 1x8x8); got {text!r}")
    return shape


def spec_examples_table(input_shape: tuple[int, ...] = (1, 8, 8), n_classes: int = 10) -> list[dict]:
    """One row per example spec: spec, input shape used, parameters and FLOPs per example of one model.

    Specs whose family does not take ``input_shape`` are shown on a 1x40
    signal (cnn1d, for image inputs) or marked as not applicable.
    """
    rows = []
    for spec in EXAMPLE_SPECS:
        parsed = parse_spec(spec)
        shape = input_shape
        try:
            check_input_shape(parsed, shape)
        except ConfigError:
            if parsed.family != "cnn1d":
                rows.append(dict(spec=spec, input="-", params=None, flops=None, train_flops=None))
                continue
            shape = _SIGNAL_SHAPE
        flops = flops_per_example(parsed, shape, n_classes)
        with torch.device("meta"):  # shapes only, no memory or init cost
            params = sum(p.numel() for p in build(parsed, shape, n_classes, seeds=[0]).parameters())
        rows.append(dict(spec=spec, input="x".join(map(str, shape)), params=params, flops=flops,
                         train_flops=3 * flops))
    return rows


def norm_table(spec: str = "cnn:32-64", input_shape: tuple[int, ...] = (1, 8, 8), n_classes: int = 10) -> list[dict]:
    """One row per normalisation: its name, which builder and studies use it, and ``spec``'s parameters with it.

    The parameters are those of one model, counted on a plain model
    (:func:`~fitscope.models.build_plain` with that norm): the ensembles' model
    ``k`` has the same layers (one layer plan), so the same count.
    """
    rows = []
    for norm, used_by in NORM_BY_STUDY.items():
        with torch.device("meta"):
            model = build_plain(spec, input_shape, n_classes, seed=0, norm=norm)
        rows.append(dict(norm=norm, used_by=used_by, spec=spec,
                         params=sum(p.numel() for p in model.parameters())))
    return rows


@models_app.command("list")
def list_models(
    shape: str = typer.Option("1x8x8", "--shape", help="input shape for the FLOPs column: D, CxL or CxHxW"),
    n_classes: int = typer.Option(10, "--classes", min=1, help="number of classes"),
) -> None:
    """Print the model spec grammar and the cost of example specs.

    FLOPs are for one model on one example (2 x multiply-adds of the linear
    and conv layers); a training step costs about 3x the forward.

    Example: fitscope models list --shape 3x32x32
    """
    input_shape = _parse_shape(shape)
    console = Console()
    console.print(SPEC_HELP, markup=False, highlight=False)
    table = Table(
        title=f"Example specs on {'x'.join(map(str, input_shape))} inputs, {n_classes} classes",
        caption="per example, one model: forward = 2 x MACs, train step = 3 x forward",
    )
    table.add_column("spec", style="bold", no_wrap=True)
    table.add_column("input")
    table.add_column("parameters", justify="right")
    table.add_column("forward MFLOP", justify="right")
    table.add_column("train MFLOP", justify="right")
    for row in spec_examples_table(input_shape, n_classes):
        if row["flops"] is None:
            table.add_row(row["spec"], "n/a", "-", "-", "-")
            continue
        table.add_row(row["spec"], row["input"], f"{row['params']:,}", f"{row['flops'] / 1e6:.3f}",
                      f"{row['train_flops'] / 1e6:.3f}")
    console.print(table)
    norms = Table(title="Normalisation of cnn and cnn1d: which studies use which",
                  caption="the same spec and norm are the same network in every study")
    norms.add_column("norm", style="bold", no_wrap=True)
    norms.add_column("used by", overflow="fold")
    norms.add_column("cnn:32-64 parameters on 1x8x8, 10 classes", justify="right")
    for row in norm_table():
        norms.add_row(row["norm"], row["used_by"], f"{row['params']:,}")
    console.print(norms)
