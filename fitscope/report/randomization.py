"""Figures and tables of the randomization study (Zhang et al. 2017, figure 1 and table 1).

Each function takes the study's long tables (``results``: one row per model,
``curves``: one row per model and epoch) and returns a data URI or a
DataFrame for the template; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import figure_to_data_uri, new_figure

_LABELS = {
    "none": "true labels",
    "random_labels": "random labels",
    "shuffled_pixels": "shuffled pixels",
    "random_pixels": "random pixels",
    "gaussian": "gaussian",
}


def learning_curves_figure(curves: pd.DataFrame) -> str:
    """Training loss and accuracy per epoch for each corruption (mean over seeds)."""
    fig = new_figure(11, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    part = curves[curves.part == "curves"]
    for kind, group in part.groupby("corruption", sort=False):
        mean = group.groupby("epoch")[["train_loss", "train_acc"]].mean()
        label = _LABELS.get(kind, kind)
        ax_loss.plot(mean.index, np.maximum(mean.train_loss, 1e-6), label=label)
        ax_acc.plot(mean.index, mean.train_acc, label=label)
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy", title="Training accuracy", ylim=(0, 1.02))
    ax_acc.legend(loc="lower right", fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def _by_noise(results: pd.DataFrame, column: str) -> pd.DataFrame:
    noise = results[results.part == "noise"]
    return noise.groupby("noise")[column].agg(["mean", "std", "count"]).fillna(0.0)


def fit_time_figure(results: pd.DataFrame, epoch_budget: int) -> str:
    """Epochs until 100% (and 90%) training accuracy against the label-noise level.

    Models that never got there are drawn at the budget, marked with a red x.
    """
    noise = results[results.part == "noise"]
    fig = new_figure(5.5, 4)
    ax = fig.subplots()
    for column, label in (("epochs_to_fit", "100% train accuracy"), ("epochs_to_90pct", "90% train accuracy")):
        epochs = noise[column].where(noise[column] > 0, epoch_budget)
        stats = epochs.groupby(noise.noise).agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label)
    unfit = noise.epochs_to_fit <= 0
    if unfit.any():
        ax.scatter(noise.noise[unfit], [epoch_budget] * int(unfit.sum()), marker="x", color="red",
                   label=f"did not fit within {epoch_budget} epochs")
    ax.legend(fontsize=8)
    ax.set(xlabel="label noise level p", ylabel="epochs", title="Time to fit against label noise")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def test_error_figure(results: pd.DataFrame, n_classes: int) -> str:
    """Test error against the label-noise level, with the chance line."""
    stats = _by_noise(results, "test_acc")
    fig = new_figure(5.5, 4)
    ax = fig.subplots()
    ax.errorbar(stats.index, 1 - stats["mean"], yerr=stats["std"], marker="o", capsize=3, label="test error")
    ax.axhline(1 - 1 / n_classes, color="gray", ls="--", label=f"chance ({1 - 1 / n_classes:.2f})")
    ax.set(xlabel="label noise level p", ylabel="test error", ylim=(0, 1), title="Test error vs label noise")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def corruption_table(results: pd.DataFrame) -> pd.DataFrame:
    """Final train/test accuracy and epochs to fit per corruption (mean over seeds)."""
    part = results[results.part == "curves"]
    table = part.groupby("corruption", sort=False).agg(
        train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"),
        epochs_to_fit=("epochs_to_fit", lambda s: _fit_summary(s)), seeds=("seed", "count"),
    )
    table.index = [_LABELS.get(k, k) for k in table.index]
    return table.rename_axis("corruption").reset_index()


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
    return pd.DataFrame(rows)


def _fit_summary(epochs: pd.Series) -> str:
    fitted = epochs[epochs > 0]
    if len(fitted) == 0:
        return "not fit"
    text = f"{fitted.mean():.0f}"
    if len(fitted) < len(epochs):
        text += f" ({len(epochs) - len(fitted)} of {len(epochs)} not fit)"
    return text
