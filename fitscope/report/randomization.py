"""Figures and tables of the randomization study (Zhang et al. 2017, figure 1 and table 1).

Each function takes the study's long tables (``results``: one row per model,
``curves``: one row per model and epoch) and returns a data URI or a
DataFrame for the template; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, percent_columns

_LABELS = {
    "none": "true labels",
    "random_labels": "random labels",
    "shuffled_pixels": "shuffled pixels",
    "random_pixels": "random pixels",
    "gaussian": "gaussian",
}


def learning_curves_figure(curves: pd.DataFrame) -> list[str]:
    """Training loss and training accuracy per epoch for each corruption (mean over seeds): two panels."""
    fig_loss, fig_acc = new_figure(PANEL_WIDTH, 3.4), new_figure(PANEL_WIDTH, 3.4)
    ax_loss, ax_acc = fig_loss.subplots(), fig_acc.subplots()
    part = curves[curves.part == "curves"]
    for kind, group in part.groupby("corruption", sort=False):
        mean = group.groupby("epoch")[["train_loss", "train_acc"]].mean()
        label = _LABELS.get(kind, kind)
        ax_loss.plot(mean.index, np.maximum(mean.train_loss, 1e-6), label=label)
        ax_acc.plot(mean.index, mean.train_acc, label=label)
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy", title="Training accuracy", ylim=(0, 1.02))
    percent_axis(ax_acc.yaxis)
    for ax in (ax_loss, ax_acc):
        ax.legend(loc="best", fontsize=SMALL_FONT)
        ax.grid(alpha=0.3)
    return [figure_to_data_uri(fig_loss), figure_to_data_uri(fig_acc)]


def _by_noise(results: pd.DataFrame, column: str) -> pd.DataFrame:
    noise = results[results.part == "noise"]
    return noise.groupby("noise")[column].agg(["mean", "std", "count"]).fillna(0.0)


def fit_time_figure(results: pd.DataFrame, epoch_budget: int) -> str:
    """Epochs until 90% and until 100% training accuracy against the label corruption probability p.

    The two curves tell different stories: the time to 90% grows with p, the
    time to the last example jumps at any p > 0. Models that never got there
    are drawn at the budget, marked with a red x.
    """
    noise = results[results.part == "noise"]
    fig = new_figure(PANEL_WIDTH, 3.6)
    ax = fig.subplots()
    for column, label in (("epochs_to_90pct", "90% train accuracy"),
                          ("epochs_to_fit", "100% train accuracy (every example)")):
        epochs = noise[column].where(noise[column] > 0, epoch_budget)
        stats = epochs.groupby(noise.noise).agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label)
    unfit = noise.epochs_to_fit <= 0
    if unfit.any():
        ax.scatter(noise.noise[unfit], [epoch_budget] * int(unfit.sum()), marker="x", color="red",
                   label=f"did not fit within {epoch_budget} epochs")
    ax.legend(fontsize=SMALL_FONT)
    ax.set(xlabel="label corruption probability p", ylabel="epochs", title="Time to fit against label corruption")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def test_error_figure(results: pd.DataFrame, n_classes: int) -> str:
    """Test error against the label-noise level, with the chance line."""
    stats = _by_noise(results, "test_acc")
    fig = new_figure(PANEL_WIDTH, 3.6)
    ax = fig.subplots()
    ax.errorbar(stats.index, 1 - stats["mean"], yerr=stats["std"], marker="o", capsize=3, label="test error")
    ax.axhline(1 - 1 / n_classes, color="gray", ls="--", label=f"chance ({format_percent(1 - 1 / n_classes)})")
    ax.set(xlabel="label corruption probability p", ylabel="test error", ylim=(0, 1),
           title="Test error vs label corruption")
    percent_axis(ax.yaxis)
    ax.legend(fontsize=SMALL_FONT)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def late_example_table(late: pd.DataFrame) -> pd.DataFrame:
    """The late examples per p and their nearest training neighbour, next to all examples, for the template.

    ``late`` is the study's ``late_examples`` table (one row per label
    corruption probability p, models of one p pooled).
    """
    table = pd.DataFrame({
        "p": late.noise,
        "models": late.models,
        "late examples": late.late_examples,
        "late: neighbour has another label": late.late_conflict,
        "all: neighbour has another label": late.all_conflict,
        "late: median neighbour distance": late.late_nn_distance_median.round(3),
        "all: median neighbour distance": late.all_nn_distance_median.round(3),
    })
    return percent_columns(table, "late: neighbour has another label", "all: neighbour has another label")


def corruption_table(results: pd.DataFrame) -> pd.DataFrame:
    """Final train/test accuracy and epochs to fit per corruption (mean over seeds)."""
    part = results[results.part == "curves"]
    table = part.groupby("corruption", sort=False).agg(
        train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"),
        epochs_to_fit=("epochs_to_fit", lambda s: _fit_summary(s)), seeds=("seed", "count"),
    )
    table.index = [_LABELS.get(k, k) for k in table.index]
    return percent_columns(table.rename_axis("corruption").reset_index(), "train_acc", "test_acc")


def regularizer_table(results: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of Zhang et al.: explicit regularizers on/off, true-label test accuracy and random-label fit."""
    part = results[results.part == "regularizers"]
    rows = []
    for reg, group in part.groupby("regularizers", sort=False):
        true = group[group.corruption == "none"]
        rand = group[group.corruption == "random_labels"]
        rows.append(
            {
                "regularizers": reg,
                "true: train acc": true.train_acc.mean(),
                "true: test acc": true.test_acc.mean(),
                "random: train acc": rand.train_acc.mean(),
                "random: test acc": rand.test_acc.mean(),
                "random: epochs to fit": _fit_summary(rand.epochs_to_fit),
            }
        )
    return percent_columns(pd.DataFrame(rows), "true: train acc", "true: test acc", "random: train acc",
                           "random: test acc")


def _fit_summary(epochs: pd.Series) -> str:
    fitted = epochs[epochs > 0]
    if len(fitted) == 0:
        return "not fit"
    text = f"{fitted.mean():.0f}"
    if len(fitted) < len(epochs):
        text += f" ({len(epochs) - len(fitted)} of {len(epochs)} not fit)"
    return text


def _row(table: pd.DataFrame | None, name: str, column: str) -> pd.Series | None:
    """The row of ``table`` whose ``column`` is ``name`` (None when the table or the row is missing)."""
    if table is None or column not in table or not (table[column] == name).any():
        return None
    return table[table[column] == name].iloc[0]


def _finding(context: dict, check: str) -> float | None:
    """The measured value of the finding named ``check`` (None when the study did not measure it)."""
    for f in context.get("findings") or ():
        if f.get("check") == check and f.get("value") is not None and np.isfinite(f["value"]):
            return float(f["value"])
    return None


def verdict(context: dict) -> str | None:
    """The study in one sentence: were random labels fit, and what test accuracy did that give (vs true labels).

    The numbers are those of the Findings table just under the verdict when it
    has them (random labels' training accuracy, their test accuracy minus
    chance, true labels' test accuracy), else the means of ``corruption_table``
    (or of ``regularizer_table``'s "none" row). Reads also ``data.n_classes``.
    """
    chance = 1.0 / int(context["data"]["n_classes"])
    rand = _row(context.get("corruption_table"), "random labels", "corruption")
    true = _row(context.get("corruption_table"), "true labels", "corruption")
    rand_train = rand_test = true_test = None
    if rand is not None:
        rand_train, rand_test = float(rand["train_acc"]), float(rand["test_acc"])
    else:
        regs = context.get("regularizer_table")
        reg = _row(regs, "none", "regularizers")
        if reg is None and regs is not None and len(regs):
            reg = regs.iloc[0]
        if reg is not None and np.isfinite(float(reg["random: train acc"])):
            rand_train, rand_test = float(reg["random: train acc"]), float(reg["random: test acc"])
            true_test = float(reg["true: test acc"])
    if true is not None:
        true_test = float(true["test_acc"])
    measured = _finding(context, "random labels: train accuracy (min over seeds)")
    rand_train = measured if measured is not None else rand_train
    measured = _finding(context, "random labels: test accuracy minus chance")
    rand_test = chance + measured if measured is not None else rand_test
    measured = _finding(context, "true labels: test accuracy")
    true_test = measured if measured is not None else true_test
    if rand_train is None or rand_test is None:
        return _noise_verdict(context)
    fit = rand_train >= 0.99
    text = (f"The network {'fit' if fit else 'did not fit'} random labels (training accuracy "
            f"{format_percent(rand_train)}), and their test accuracy is {format_percent(rand_test)}, "
            f"{'at' if abs(rand_test - chance) <= 0.05 else 'not at'} chance ({format_percent(chance)})")
    if true_test is not None and np.isfinite(true_test):
        text += f"; with the true labels it reaches {format_percent(true_test)} test accuracy"
    return text + "."


def _noise_verdict(context: dict) -> str | None:
    """The one sentence when only the label-corruption part ran: the 90% and the every-example findings."""
    parts = []
    for f in context.get("findings") or ():
        if f["check"].startswith("epochs to 90%") and np.isfinite(f["value"]):
            parts.append(f"time to 90% training accuracy {'grows' if f['holds'] else 'does not clearly grow'} "
                         f"with the label corruption p (Spearman rho {f['value']:.2f} over models)")
        elif f["check"].startswith("epochs to fit every example") and np.isfinite(f["value"]):
            parts.append(f"time to fit every example {'jumps' if f['holds'] else 'does not jump'} at p > 0 "
                         f"({f['value']:.1f}x the time at p = 0 for the fastest p > 0)")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
