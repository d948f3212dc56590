"""Figures and tables of the sharpness study: the edge of stability of GD, and the flatness SGD settles in.

Each function takes the study's tables (``trajectory``: one row per run and
measurement; ``runs``: one row per run) and returns a data URI or rows for
``dynamics_sharpness.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, plain_log_ticks
from fitscope.report.html import format_number, format_percent, percent_columns

# Summary keys shown as percentages.
_PERCENT_WORDS = ("/ (2/lr)",)


def _lr_axis(ax, lrs) -> None:
    """A log learning-rate x axis with one labelled tick per learning rate used."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(float(v) for v in lrs))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    lo, hi = min(lrs), max(lrs)
    ax.set_xlim(lo / 1.4, hi * 1.4)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.75 * i / max(n - 1, 1)) for i in range(n)]


def sharpness_figure(trajectory: pd.DataFrame, optimizer: str = "gd") -> str | None:
    """Sharpness (top Hessian eigenvalue) against step, one colour per learning rate, each with its 2/lr line.

    GD (``optimizer="gd"``): the edge of stability shows as a line that rises
    to its dashed 2/lr and stays there. SGD: one line style per batch size.
    A log scale keeps the thresholds of every learning rate in view.
    """
    runs = trajectory[trajectory.optimizer == optimizer]
    if runs.empty:
        return None
    lrs = sorted(runs.lr.unique())
    sizes = sorted(runs.batch_size.unique())
    styles = ["-", "-.", ":", (0, (5, 1, 1, 1))]
    fig = new_figure(6.6, 4.0)  # the headline figure: wide, but still legible shrunk to a phone
    ax = fig.subplots()
    colors = _colors(len(lrs))
    for color, lr in zip(colors, lrs):
        for i, b in enumerate(sizes):
            part = runs[(runs.lr == lr) & (runs.batch_size == b)].sort_values("step")
            if part.empty:
                continue
            label = f"lr {lr:g}" if optimizer == "gd" else f"lr {lr:g}, batch {b}"
            x = part.step if optimizer == "gd" else part.step * lr
            ax.plot(x, part.sharpness, color=color, lw=1.8, ls=styles[i % len(styles)], marker="o", ms=2.5,
                    label=label)
        ax.axhline(2.0 / lr, color=color, ls="--", lw=1.1)
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 1.15)
    plain_log_ticks(ax.yaxis)
    # each 2/lr is labelled on the right-hand axis, in its run's colour
    from matplotlib.ticker import NullLocator

    right = ax.secondary_yaxis("right")
    right.set_yticks([2.0 / lr for lr in lrs], labels=[f"{2.0 / lr:.3g}" for lr in lrs])
    right.yaxis.set_minor_locator(NullLocator())
    for tick, color in zip(right.get_yticklabels(), colors):
        tick.set_color(color)
    right.set_ylabel("2/lr")
    what = "full-batch gradient descent" if optimizer == "gd" else "SGD"
    xlabel = "step (full-batch gradient descent)" if optimizer == "gd" else "training time lr x step (SGD)"
    ax.set(xlabel=xlabel, ylabel="sharpness (top eigenvalue)",
           title=f"Sharpness during {what}; dashed: 2/lr of the same colour")
    ax.legend(fontsize=SMALL_FONT, loc="upper left", ncol=1 if len(lrs) * len(sizes) <= 5 else 2)
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def loss_figure(trajectory: pd.DataFrame) -> str | None:
    """Full-batch training loss against step of every GD run (log scale)."""
    runs = trajectory[trajectory.optimizer == "gd"]
    if runs.empty:
        return None
    lrs = sorted(runs.lr.unique())
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for color, lr in zip(_colors(len(lrs)), lrs):
        part = runs[runs.lr == lr].sort_values("step")
        ax.plot(part.step, part.loss, color=color, lw=1.5, label=f"lr {lr:g}")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set(xlabel="step", ylabel="training loss", title="GD training loss")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def ratio_figure(runs: pd.DataFrame) -> str | None:
    """Final sharpness as a share of 2/lr for every GD run, against the learning rate (1 = at the edge)."""
    gd = runs[(runs.optimizer == "gd") & (runs.diverged_at < 0)].sort_values("lr")
    if gd.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    colors = ["tab:red" if r else "tab:gray" for r in gd.reached_threshold]
    ax.scatter(gd.lr, gd.final_over_threshold, c=colors, s=40, zorder=3)
    ax.plot(gd.lr, gd.final_over_threshold, color="tab:gray", lw=0.8)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="2/lr")
    _lr_axis(ax, gd.lr)
    ax.set_ylim(0, max(1.25, float(np.nanmax(gd.final_over_threshold)) * 1.1))
    ax.yaxis.set_major_formatter(lambda v, _: format_percent(v, 0))
    ax.set(xlabel="learning rate", ylabel="final sharpness / (2/lr)", title="Final sharpness against 2/lr")
    ax.legend(fontsize=SMALL_FONT, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def sgd_figure(runs: pd.DataFrame, column: str, se: str, label: str) -> str | None:
    """Final ``column`` (trace or Frobenius norm) of the SGD runs against lr, one line per batch size.

    Error bars: one standard error of the Hutchinson estimate at the last
    measurement.
    """
    sgd = runs[(runs.optimizer == "sgd") & (runs.diverged_at < 0)]
    if sgd.empty:
        return None
    sizes = sorted(sgd.batch_size.unique())
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for color, b in zip(_colors(len(sizes)), sizes):
        part = sgd[sgd.batch_size == b].sort_values("lr")
        ax.errorbar(part.lr, part[column], yerr=part[se], color=color, marker="o", ms=4, lw=1.5, capsize=2,
                    label=f"SGD, batch {b}")
    _lr_axis(ax, sgd.lr)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set(xlabel="learning rate", ylabel=label, title=f"{label[0].upper()}{label[1:]} at the end of SGD")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-run table as shown: the sharpness against 2/lr, the trace, Frobenius norm and accuracies.

    Every run starts from the same weights, so the initial sharpness is in the
    summary, not here; the step at which a run diverged shows only if one did.
    """
    table = runs[["optimizer", "lr", "batch_size", "threshold", "peak_sharpness", "final_sharpness",
                  "final_over_threshold", "step_reached", "final_trace", "final_frobenius", "final_loss",
                  "final_train_acc", "test_acc", "lanczos_steps", "diverged_at"]].copy()
    table["optimizer"] = table.optimizer.str.upper()
    table["step_reached"] = [s if s >= 0 else None for s in table.step_reached]
    if (table.diverged_at < 0).all():
        table = table.drop(columns="diverged_at")
    else:
        table["diverged_at"] = [s if s >= 0 else None for s in table.diverged_at]
    table = table.rename(columns={"threshold": "2/lr", "peak_sharpness": "peak", "final_sharpness": "final",
                                  "final_over_threshold": "final / (2/lr)", "step_reached": "reached at step",
                                  "final_trace": "trace", "final_frobenius": "Frobenius", "final_loss": "loss",
                                  "final_train_acc": "train acc", "test_acc": "test acc",
                                  "lanczos_steps": "Lanczos steps", "batch_size": "batch",
                                  "diverged_at": "diverged at step"})
    return percent_columns(table.reset_index(drop=True), "final / (2/lr)", "train acc", "test acc")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; shares of 2/lr in %."""
    rows = []
    for key, value in summary.items():
        percent = any(word in key for word in _PERCENT_WORDS) and isinstance(value, float)
        rows.append({"quantity": key, "value": format_percent(value, 1) if percent else format_number(value)})
    return rows


def _lrs(values) -> str:
    values = [f"{v:g}" for v in values]
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def verdict(context: dict) -> str:
    """The study in one or two sentences: did GD's sharpness reach 2/lr and stay there; where SGD ended flattest."""
    runs: pd.DataFrame = context["runs"]
    gd = runs[runs.optimizer == "gd"]
    ok = gd[gd.diverged_at < 0]
    edge = ok[ok.reached_threshold]
    below = ok[~ok.reached_threshold]
    parts = []
    if len(edge):
        lo, hi = float(edge.final_over_threshold.min()), float(edge.final_over_threshold.max())
        span = format_percent(lo, 0) if abs(hi - lo) < 0.005 else f"{format_percent(lo, 0)} to {format_percent(hi, 0)}"
        parts.append(f"Under full-batch gradient descent the sharpness rose until it reached 2/lr and then stayed "
                     f"near it in {len(edge)} of {len(gd)} runs (it ended at {span} of 2/lr, at lr "
                     f"{_lrs(edge.lr)})")
    else:
        parts.append(f"Under full-batch gradient descent the sharpness did not reach 2/lr in any of the {len(gd)} "
                     "runs (raise the learning rate or the steps to see the edge of stability)")
    if len(below):
        row = below.sort_values("lr").iloc[0]
        parts[-1] += (f"; at lr {row.lr:g} it only rose to {float(row.peak_sharpness):.3g}, "
                      f"{format_percent(float(row.peak_sharpness / row.threshold), 0)} of 2/lr = "
                      f"{float(row.threshold):.3g}")
    diverged = gd[gd.diverged_at >= 0]
    if len(diverged):
        parts[-1] += f"; {len(diverged)} run(s) diverged (lr {_lrs(diverged.lr)})"
    text = parts[0] + "."
    sgd = runs[(runs.optimizer == "sgd") & (runs.diverged_at < 0) & runs.final_trace.notna()]
    if len(sgd) >= 2:
        flat, sharp = sgd.loc[sgd.final_trace.idxmin()], sgd.loc[sgd.final_trace.idxmax()]
        text += (f" Under SGD the Hessian's trace at the end was lowest at lr {flat.lr:g} with batch "
                 f"{int(flat.batch_size)} ({float(flat.final_trace):.3g}) and highest at lr "
                 f"{sharp.lr:g} with batch {int(sharp.batch_size)} ({float(sharp.final_trace):.3g}).")
    return text


def report_context(cfg: dict, data: dict, trajectory: pd.DataFrame, runs: pd.DataFrame, summary: dict) -> dict:
    """The template variables of ``dynamics_sharpness.html.j2`` for a finished study."""
    sgd = runs[runs.optimizer == "sgd"]
    context = dict(
        title=f"Sharpness and the edge of stability: {cfg['model']} on {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        runs=runs,
        runs_table=runs_table(runs),
        gd_png=sharpness_figure(trajectory, "gd"),
        loss_png=loss_figure(trajectory),
        ratio_png=ratio_figure(runs),
        sgd_sharpness_png=sharpness_figure(trajectory, "sgd") if len(sgd) else None,
        trace_png=sgd_figure(runs, "final_trace", "trace_se", "Hessian trace"),
        frobenius_png=sgd_figure(runs, "final_frobenius", "frobenius_se", "Hessian Frobenius norm"),
        n_sgd=int(len(sgd)),
    )
    context["verdict"] = verdict(context)
    return context
