"""Figures and tables of the connectivity study: loss and error along three paths, and dropout stability.

Each function takes the study's tables (``paths``: one row per path and
point; ``barriers``: one row per path; ``dropout_summary``: one row per
network, split and layer) and returns a data URI or rows for
``dynamics_connectivity.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_number, format_percent, percent_columns

#: path -> (colour, name shown)
PATH_STYLE = {"line": ("tab:red", "straight line"), "curve": ("tab:blue", "Bezier curve (trained)"),
              "dropout": ("tab:green", "dropout path")}


def path_figure(paths: pd.DataFrame, what: str = "loss") -> str | None:
    """``what`` (``loss`` or ``error``) against ``t`` for the three paths; solid: training rows, dashed: test rows.

    The loss is on a log scale, so that the curve's small rise shows beside the line's large one. The legend sits
    under the axes, so the panel reads on its own when the two panels stack on a narrow screen.
    """
    if paths.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 4.2)
    ax = fig.subplots()
    for name, (color, label) in PATH_STYLE.items():
        part = paths[paths.path == name].sort_values("t")
        if part.empty:
            continue
        ax.plot(part.t, part[f"train_{what}"], color=color, lw=1.8, label=f"{label}, train")
        ax.plot(part.t, part[f"test_{what}"], color=color, lw=1.2, ls="--", label=f"{label}, test")
    if what == "loss":
        ax.set_yscale("log")
        ax.set(ylabel="cross-entropy loss", title="Loss from A (t=0) to B (t=1)")
    else:
        percent_axis(ax.yaxis, 0)
        ax.set_ylim(bottom=0)
        ax.set(ylabel="error", title="Error from A (t=0) to B (t=1)")
    ax.set(xlabel="t (position along the path)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, which="both")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=SMALL_FONT - 1)
    return figure_to_data_uri(fig)


def dropout_figure(summary: pd.DataFrame) -> str | None:
    """Test error after dropping half of one layer's units (and of all at once), mean and spread over the draws.

    One group of bars per layer, one bar per network; the dashed lines are the
    networks' errors with nothing dropped.
    """
    test = summary[summary.split == "test"]
    dropped = test[test.layer != "none"]
    if dropped.empty:
        return None
    layers = list(dict.fromkeys(dropped.layer))
    networks = list(dict.fromkeys(dropped.network))
    colors = {"A": "tab:purple", "B": "tab:orange"}
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    width = 0.8 / max(len(networks), 1)
    x = np.arange(len(layers))
    for i, net in enumerate(networks):
        part = dropped[dropped.network == net].set_index("layer").reindex(layers)
        color = colors.get(net, "tab:gray")
        ax.bar(x + (i - (len(networks) - 1) / 2) * width, part.error_mean, width * 0.9,
               yerr=part.error_std.fillna(0.0), capsize=3, color=color, alpha=0.8, label=f"{net}, half dropped")
        base = test[(test.network == net) & (test.layer == "none")]
        if len(base):
            ax.axhline(float(base.error_mean.iloc[0]), color=color, ls="--", lw=1.1, label=f"{net}, nothing dropped")
    ax.set_xticks(x, [("all hidden" if name == "all" else name) for name in layers])
    percent_axis(ax.yaxis, 0)
    top = float(np.nanmax(dropped.error_mean + dropped.error_std.fillna(0.0)))
    ax.set_ylim(0, top * 1.45)  # room for the legend above the bars
    ax.set(xlabel="layer whose units are dropped", ylabel="test error", title="Half of a layer's units dropped")
    ax.legend(fontsize=SMALL_FONT - 1, loc="upper left", ncol=2, framealpha=0.9)
    ax.grid(alpha=0.3, axis="y")
    return figure_to_data_uri(fig)


def barriers_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """The per-path table as shown: barriers of the training and test loss, the largest errors along the path."""
    table = barriers[["path", "points", "train_barrier", "test_barrier", "train_error_max", "test_error_max",
                      "test_error_ends"]].copy()
    table["path"] = [PATH_STYLE.get(p, (None, p))[1] for p in table.path]
    table = table.rename(columns={"train_barrier": "barrier (train loss)", "test_barrier": "barrier (test loss)",
                                  "train_error_max": "largest train error", "test_error_max": "largest test error",
                                  "test_error_ends": "test error at the ends (larger)"})
    return percent_columns(table.reset_index(drop=True), "largest train error", "largest test error",
                           "test error at the ends (larger)")


def dropout_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The dropout-stability table as shown: per network, split and layer, the error's mean and spread."""
    table = summary[["network", "split", "layer", "units", "draws", "error_mean", "error_std", "loss_mean"]].copy()
    table["layer"] = ["nothing dropped" if v == "none" else ("every hidden layer" if v == "all" else v)
                      for v in table.layer]
    table = table.rename(columns={"error_mean": "error (mean)", "error_std": "error (sd)",
                                  "loss_mean": "loss (mean)", "units": "units in layer"})
    table["units in layer"] = pd.array([u if u else None for u in table["units in layer"]], dtype="Int64")
    table["draws"] = pd.array([d if d else None for d in table.draws], dtype="Int64")
    return percent_columns(table.reset_index(drop=True), "error (mean)", "error (sd)")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; errors and the ratio in %."""
    rows = []
    for key, value in summary.items():
        percent = isinstance(value, float) and ("error" in key or "/" in key)
        rows.append({"quantity": key, "value": format_percent(value, 1) if percent else format_number(value)})
    return rows


def verdict(summary: dict) -> str:
    """The study in two sentences: the curve's barrier against the line's, and how dropout-stable the networks are."""
    line, curve = summary["line barrier (train loss)"], summary["curve barrier (train loss)"]
    ratio = summary["curve barrier / line barrier"]
    if not line > 0:
        text = (f"The straight line between the two networks showed no barrier (training loss never above the chord "
                f"of its ends); the curve's barrier was {curve:.3g}.")
    else:
        tenth = summary["curve barrier at most a tenth of the line's"]
        held = "at most a tenth of" if tenth else "more than a tenth of"
        text = (f"The trained Bezier curve's barrier (training loss) was {curve:.3g}, {format_percent(ratio, 1)} of "
                f"the straight line's {line:.3g}: {held} it. The dropout path's barrier was "
                f"{summary['dropout-path barrier (train loss)']:.3g}.")
    low = summary.get("test error, half of one layer dropped: lowest mean")
    high = summary.get("test error, half of one layer dropped: highest mean")
    if low is not None:
        base = max(summary["test error of A"], summary["test error of B"])
        text += (f" With a random half of one hidden layer's units dropped (the rest doubled) the test error was "
                 f"{format_percent(low, 1)}-{format_percent(high, 1)} on average over the draws, against at most "
                 f"{format_percent(base, 1)} with nothing dropped.")
    return text


def report_context(cfg: dict, data: dict, detail) -> dict:
    """The template variables of ``dynamics_connectivity.html.j2`` for a finished study."""
    corners = detail.corners.copy()
    corners["segment"] = ["" if s == "start" else s for s in corners.segment]
    corners = corners.rename(columns={"segment": "segment ending here", "label": "network at the corner"})
    context = dict(
        title=f"Mode connectivity: two {cfg['model']} networks on {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(detail.summary),
        summary_table=summary_rows(detail.summary),
        barriers_table=barriers_table(detail.barriers),
        dropout_table=dropout_rows(detail.dropout_summary),
        corners_table=corners,
        loss_png=path_figure(detail.paths, "loss"),
        error_png=path_figure(detail.paths, "error"),
        dropout_png=dropout_figure(detail.dropout_summary),
        segments=int(len(corners) - 1),
        segment_points=int(round((int((detail.paths.path == "dropout").sum()) - 1) / max(len(corners) - 1, 1))),
        curve_final_loss=float(detail.curve_loss[-1]) if len(detail.curve_loss) else float("nan"),
    )
    context["verdict"] = verdict(detail.summary)
    return context
