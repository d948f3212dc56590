"""Figures and tables of the kernel studies (METHODS section 5): UCI, small data, complexity.

Each function takes a study's long table and returns a data URI or a
DataFrame for the template; nothing here computes kernels, trains or reads files.

- UCI (``results``: one row per data set and method, ``accuracy`` the mean over folds).
- Small data (``results``: one row per method, size and seed, ``test_acc``).
- Complexity (``results``: one row per noise level and seed: ``measure``,
  ``test_error``, ``epochs_to_fit``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, percent_columns

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# --------------------------------------------------------------------------- UCI


def uci_accuracy_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per data set (n, d, classes) and one accuracy column per method, plus a mean row."""
    methods = list(dict.fromkeys(results.method))
    wide = results.pivot(index="dataset", columns="method", values="accuracy")[methods]
    info = results.drop_duplicates("dataset").set_index("dataset")[["n", "d", "classes"]]
    order = list(dict.fromkeys(results.dataset))
    table = info.join(wide).loc[order].reset_index()
    mean = {"dataset": "mean", "n": pd.NA, "d": pd.NA, "classes": pd.NA, **wide.mean().to_dict()}
    return percent_columns(pd.concat([table, pd.DataFrame([mean])], ignore_index=True), *methods)


def uci_params_table(results: pd.DataFrame) -> pd.DataFrame:
    """The chosen hyperparameters per data set and method, with the validation and fold accuracies."""
    rows = []
    for r in results.itertuples():
        params = json.loads(r.params)
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        rows.append(dict(dataset=r.dataset, method=r.method, chosen=text, val_accuracy=r.val_accuracy,
                         accuracy=r.accuracy, accuracy_std=r.accuracy_std,
                         folds=", ".join(format_percent(a) for a in json.loads(r.fold_accuracies))))
    return percent_columns(pd.DataFrame(rows), "val_accuracy", "accuracy", "accuracy_std")


def uci_accuracy_figure(results: pd.DataFrame) -> str:
    """A dot plot: one line per data set, one marker per method at its mean accuracy (std over folds)."""
    methods = list(dict.fromkeys(results.method))
    datasets = list(dict.fromkeys(results.dataset))
    fig = new_figure(7, 1.2 + 0.45 * (len(datasets) + 1))
    ax = fig.subplots()
    offsets = np.linspace(-0.2, 0.2, len(methods)) if len(methods) > 1 else [0.0]
    ypos = {d: len(datasets) - i for i, d in enumerate(datasets)}
    for j, method in enumerate(methods):
        part = results[results.method == method]
        ys = [ypos[d] + offsets[j] for d in part.dataset]
        ax.errorbar(part.accuracy, ys, xerr=part.accuracy_std, fmt=_MARKERS[j % len(_MARKERS)], capsize=2,
                    label=method)
        mean = part.accuracy.mean()
        ax.plot([mean], [offsets[j]], _MARKERS[j % len(_MARKERS)], color=f"C{j}")
    ax.set_yticks([0] + [ypos[d] for d in datasets], ["mean"] + datasets)
    if float((results.accuracy + results.accuracy_std).max()) > 1.0:
        ax.set_xlim(right=1.003)  # accuracy stops at 1; bars past it carry no information
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set(xlabel="test accuracy (mean over folds, bars: std over folds)",
           title="Accuracy per data set and method")
    percent_axis(ax.xaxis)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    return figure_to_data_uri(fig)


# --------------------------------------------------------------------------- small data


def _mean_std(results: pd.DataFrame, value: str) -> pd.DataFrame:
    return results.groupby(["method", "size"], sort=False)[value].agg(["mean", "std", "count"]).reset_index()


def small_data_table(results: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy as ``mean +- std`` over seeds: one row per method, one column per training-set size."""
    stats = _mean_std(results, "test_acc")
    stats["text"] = [f"{100 * m:.1f} \u00b1 {0.0 if pd.isna(s) else 100 * s:.1f}%"
                     for m, s in zip(stats["mean"], stats["std"])]
    methods = list(dict.fromkeys(results.method))
    wide = stats.pivot(index="method", columns="size", values="text").loc[methods]
    wide.columns = [f"n = {c}" for c in wide.columns]
    return wide.reset_index()


def small_data_figure(results: pd.DataFrame) -> str:
    """Test accuracy against training-set size (log x), mean and std over seeds, one line per method."""
    stats = _mean_std(results, "test_acc").fillna({"std": 0.0})
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for j, (method, part) in enumerate(stats.groupby("method", sort=False)):
        kernel = method.startswith("CNTK")
        ax.errorbar(part["size"], part["mean"], yerr=part["std"], marker=_MARKERS[j % len(_MARKERS)], capsize=3,
                    ls="-" if kernel else "--", label=method)
    ax.set_xscale("log")
    sizes = sorted(results["size"].unique())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set(xlabel="training examples (class-balanced subset)", ylabel="test accuracy",
           title="Kernels (solid) vs trained networks (dashed)")
    percent_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_FONT)
    return figure_to_data_uri(fig)


# --------------------------------------------------------------------------- complexity


def complexity_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per noise level: mean (std) of the measure, the test error and the epochs to fit over seeds."""
    def fit_text(s: pd.Series) -> str:
        fitted = s[s > 0]
        if not len(fitted):
            return "not fit"
        text = f"{fitted.mean():.1f}"
        return text + (f" ({len(s) - len(fitted)} of {len(s)} not fit)" if len(fitted) < len(s) else "")

    g = results.groupby("noise")
    table = pd.DataFrame({
        "noise": list(g.groups),
        "labels changed": g["labels_changed"].mean().to_numpy(),
        "complexity measure": g["measure"].mean().to_numpy(),
        "measure std": g["measure"].std().fillna(0.0).to_numpy(),
        "test error": g["test_error"].mean().to_numpy(),
        "test error std": g["test_error"].std().fillna(0.0).to_numpy(),
        "train accuracy": g["train_acc"].mean().to_numpy(),
        "epochs to fit": [fit_text(part.epochs_to_fit) for _, part in g],
        "models": g.size().to_numpy(),
    })
    return percent_columns(table, "labels changed", "test error", "test error std", "train accuracy")


def complexity_figure(results: pd.DataFrame, epoch_budget: int) -> list[str]:
    """Two panels: the complexity measure and the test error against noise (two y-axes); the epochs to fit."""
    fig, fig_fit = new_figure(PANEL_WIDTH, 3.8), new_figure(PANEL_WIDTH, 3.8)
    ax, ax_fit = fig.subplots(), fig_fit.subplots()
    g = results.groupby("noise")
    noise = np.array(list(g.groups), dtype=float)
    m, ms = g["measure"].mean(), g["measure"].std().fillna(0.0)
    e, es = g["test_error"].mean(), g["test_error"].std().fillna(0.0)
    ax.errorbar(noise, m, yerr=ms, marker="o", capsize=3, color="C0", label="complexity measure")
    ax.set(xlabel="label noise level p", ylabel="sqrt(2 y^T H^-1 y / n)", title="Measure and test error")
    ax.tick_params(axis="y", labelcolor="C0")
    ax.yaxis.label.set_color("C0")
    twin = ax.twinx()
    twin.errorbar(noise, e, yerr=es, marker="s", capsize=3, color="C3", label="test error (network)")
    twin.set_ylabel("test error", color="C3")
    twin.tick_params(axis="y", labelcolor="C3")
    twin.set_ylim(0, max(0.6, float((e + es).max()) * 1.1))
    percent_axis(twin.yaxis)
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], fontsize=SMALL_FONT, loc="upper left")
    ax.grid(alpha=0.3)

    epochs = results.epochs_to_fit.where(results.epochs_to_fit > 0, epoch_budget)
    stats = epochs.groupby(results.noise).agg(["mean", "std"]).fillna(0.0)
    ax_fit.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label="epochs to fit")
    unfit = results.epochs_to_fit <= 0
    if unfit.any():
        ax_fit.scatter(results.noise[unfit], [epoch_budget] * int(unfit.sum()), marker="x", color="red",
                       label=f"not fit within {epoch_budget} epochs")
    ax_fit.set(xlabel="label noise level p", ylabel="epochs to 100% train accuracy",
               title="Training time against label noise")
    ax_fit.grid(alpha=0.3)
    ax_fit.legend(fontsize=SMALL_FONT)
    return [figure_to_data_uri(fig), figure_to_data_uri(fig_fit)]


# --------------------------------------------------------------------------- verdicts


def uci_verdict(context: dict) -> str | None:
    """The UCI study in one sentence: which method has the best mean accuracy over the data sets, and the others'.

    Reads ``summary`` (``method``, ``mean_accuracy``, ``mean_rank``) and ``datasets`` of the report context.
    """
    summary = context.get("summary")
    if summary is None or not len(summary):
        return None
    ranked = summary.sort_values("mean_accuracy", ascending=False, kind="stable")
    best, others = ranked.iloc[0], ranked.iloc[1:]
    n = len(context.get("datasets") or ())
    sets = f"{n} data set{'s' if n != 1 else ''}"
    text = f"{best['method']} has the best mean accuracy over {sets} ({format_percent(float(best['mean_accuracy']))}"
    if len(others):
        text += ", against " + " and ".join(f"{r['method']} {format_percent(float(r['mean_accuracy']))}"
                                            for _, r in others.iterrows())
    text += ")"
    by_rank = summary.sort_values("mean_rank", kind="stable").iloc[0]
    if by_rank["method"] == best["method"]:
        return text + f" and the best mean rank ({float(best['mean_rank']):.2f}, 1 = best on every set)."
    return (text + f"; by mean rank {by_rank['method']} is first ({float(by_rank['mean_rank']):.2f} against "
            f"{float(best['mean_rank']):.2f}).")


_SMALL_CHECK = re.compile(r"n = (\d+): best kernel \((.+?)\) minus best network \((.+?)\)")


def small_data_verdict(context: dict) -> str | None:
    """The small-data study in one sentence: best kernel against best trained network at the smallest sizes.

    Reads ``findings`` (one check per size: best kernel minus best network,
    mean test accuracy) of the report context.
    """
    rows = []
    for f in context.get("findings") or ():
        match = _SMALL_CHECK.search(f["check"])
        if match and np.isfinite(f["value"]):
            size, kernel, network = match.groups()
            rows.append((size, kernel, network, 100 * float(f["value"])))
    if not rows:
        return None

    def gap(points: float) -> str:
        return f"{abs(points):.1f} points {'more' if points > 0 else 'less'}"

    if len({(k, n) for _, k, n, _ in rows}) == 1:  # the same two methods at every size: name them once
        _, kernel, network, _ = rows[0]
        sizes = " and ".join(f"{gap(points)} accurate at n = {size}" for size, _, _, points in rows)
        return (f"The best kernel ({kernel}) is {sizes} than the best trained network ({network}) "
                f"(test accuracy, mean over seeds).")
    parts = [f"at n = {size} the best kernel ({kernel}) is {gap(points)} accurate than the best network ({network})"
             for size, kernel, network, points in rows]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + " (test accuracy, mean over seeds)."


def complexity_verdict(context: dict) -> str | None:
    """The complexity study in one sentence: the measure and the test error at the lowest and the highest noise.

    Reads ``noise_table`` (see :func:`complexity_table`) of the report context.
    """
    table = context.get("noise_table")
    if table is None or len(table) < 2:
        return None
    lo, hi = table.iloc[0], table.iloc[-1]
    m0, m1 = float(lo["complexity measure"]), float(hi["complexity measure"])
    e0, e1 = float(lo["test error"]), float(hi["test error"])
    both = (m1 > m0) and (e1 > e0)
    finding = "both grow, as Arora et al. (2019) predict" if both else "they do not both grow, unlike Arora et al. (2019)"
    return (f"From label noise p = {lo['noise']:g} to p = {hi['noise']:g} the complexity measure goes from "
            f"{m0:.3g} to {m1:.3g} and the trained network's test error from {format_percent(e0)} to "
            f"{format_percent(e1)}: {finding}.")
