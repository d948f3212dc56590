"""Figures and tables of the leakage study (membership inference against subset models).

Each function takes what :func:`fitscope.experiments.leak.estimate` computed
(ROC curves, the per-example table) and returns a data URI or a DataFrame;
nothing here trains or reads files. Examples are drawn with the audit
report's gallery (images, signals); tabular examples are listed in a table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.audit import gallery_figure
from fitscope.report.audit import summary_rows
from fitscope.report.figures import MIN_FONT_PT, PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, percent_columns

SHOWN = 16
_STYLES = {"LiRA online": ("tab:blue", "-"), "LiRA online (fixed variance)": ("tab:blue", "--"),
           "LiRA offline": ("tab:orange", "-"), "LiRA offline (fixed variance)": ("tab:orange", "--"),
           "loss threshold": ("tab:gray", "-")}


def roc_loglog_figure(roc: dict) -> list[str] | None:
    """ROC curves of every attack on log-log axes (the low-FPR regime LiRA is judged in), and on linear axes."""
    if not roc:
        return None
    fig_log, fig_lin = new_figure(PANEL_WIDTH, 4.0), new_figure(PANEL_WIDTH, 4.0)
    ax_log, ax_lin = fig_log.subplots(), fig_lin.subplots()
    for name, (fpr, tpr) in roc.items():
        color, ls = _STYLES.get(name, (None, "-"))
        keep = (fpr > 0) & (tpr > 0)
        ax_log.plot(fpr[keep], tpr[keep], color=color, ls=ls, label=name, drawstyle="steps-post")
        ax_lin.plot(fpr, tpr, color=color, ls=ls, label=name, drawstyle="steps-post")
    grid = np.logspace(-5, 0, 50)
    ax_log.plot(grid, grid, color="gray", ls=":", lw=0.8, label="chance")
    ax_log.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false positive rate",
               ylabel="true positive rate", title="ROC, log-log")
    for fpr in (1e-3, 1e-2):
        ax_log.axvline(fpr, color="gray", lw=0.5, alpha=0.6)
    ax_lin.plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
    ax_lin.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, linear", xlim=(0, 1),
               ylim=(0, 1.01))
    for ax in (ax_log, ax_lin):
        ax.grid(alpha=0.3, which="both")
    ax_log.legend(fontsize=MIN_FONT_PT, loc="lower right")
    return [figure_to_data_uri(fig_log), figure_to_data_uri(fig_lin)]


def score_histograms_figure(score_in: list) -> list[str] | None:
    """For the examples with the largest in/out gap: histograms of the shadow scores with and without them.

    One small panel per example, so that the panels wrap to the page width.
    """
    if not score_in:
        return None
    panels = []
    for i, s_in, s_out in score_in:
        fig = new_figure(2.0, 2.3)  # four to a line of the page
        ax = fig.subplots()
        both = np.concatenate([s_in, s_out])
        both = both[np.isfinite(both)]
        bins = np.linspace(both.min(), both.max(), 20) if both.size and both.max() > both.min() else 10
        ax.hist(s_out[np.isfinite(s_out)], bins=bins, alpha=0.6, label=f"out ({len(s_out)})", color="tab:gray")
        ax.hist(s_in[np.isfinite(s_in)], bins=bins, alpha=0.6, label=f"in ({len(s_in)})", color="tab:red")
        ax.set_title(f"example #{i}", fontsize=SMALL_FONT)
        ax.set_xlabel("log p_y - log sum others", fontsize=MIN_FONT_PT)
        ax.tick_params(labelsize=MIN_FONT_PT)
        ax.legend(fontsize=MIN_FONT_PT)
        panels.append(figure_to_data_uri(fig))
    return panels


def scatter_figure(examples: pd.DataFrame, mem_source: str) -> str | None:
    """Leak rate (how often the attack flags an example as a member at 1% FPR) against memorization."""
    if "mem" not in examples.columns:
        return None
    mem = examples["mem"].to_numpy(float)
    leak = examples["leak_rate"].to_numpy(float)
    ok = np.isfinite(mem) & np.isfinite(leak)
    if ok.sum() < 3:
        return None
    fig = new_figure(5.5, 4.2)
    ax = fig.subplots()
    colors = np.where(examples["corrupted"].to_numpy(bool), "tab:red", "tab:blue") \
        if "corrupted" in examples.columns else "tab:blue"
    ax.scatter(mem[ok], leak[ok], s=6, alpha=0.5, c=colors[ok] if isinstance(colors, np.ndarray) else colors)
    ax.set(xlabel=f"memorization ({mem_source})", ylabel="leak rate at 1% FPR",
           title="Leakage vs memorization")
    percent_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def top_leakers(examples: pd.DataFrame, count: int = SHOWN) -> list[int]:
    """Indices of the examples leaked most often (ties broken by the mean attack score when in)."""
    leak = np.nan_to_num(examples["leak_rate"].to_numpy(float), nan=-1.0)
    score = np.nan_to_num(examples["attack_in_mean"].to_numpy(float), nan=-np.inf)
    order = np.lexsort((-score, -leak))
    return order[:count].tolist()


_PERCENT_COLUMNS = ("TPR at 0.1% FPR", "TPR at 1% FPR", "leak_rate", "false_alarm_rate")


def verdict(context: dict) -> str | None:
    """The study in one sentence: the strongest attack's AUC and TPR at 1% FPR, against chance (0.5 and 1%).

    Reads ``metrics_table`` (columns ``attack``, ``AUC``, ``TPR at 1% FPR``) and
    ``leak_attack`` (the attack with the highest TPR at 1% FPR) of the leak
    report context.
    """
    metrics = context.get("metrics_table")
    if metrics is None or not len(metrics) or "TPR at 1% FPR" not in metrics:
        return None
    name = context.get("leak_attack")
    rows = metrics[metrics["attack"] == name] if name is not None and "attack" in metrics else metrics.iloc[:0]
    row = rows.iloc[0] if len(rows) else metrics.loc[metrics["TPR at 1% FPR"].astype(float).idxmax()]
    auc, tpr = float(row["AUC"]), float(row["TPR at 1% FPR"])
    times = tpr / 0.01
    if tpr <= 0.015 and auc <= 0.52:
        judgement = "no better than chance"
    elif times >= 2:
        judgement = f"{times:.0f}x chance at that threshold" if times >= 3 else f"{times:.1f}x chance"
    else:
        judgement = "close to chance"
    return (f"{row.get('attack', 'The attack')} tells training members from non-members with AUC {auc:.3f} "
            f"(chance 0.5) and catches {format_percent(tpr)} of members at 1% false positives "
            f"(chance 1%): {judgement}.")


def report_context(data, outcome, *, model: str, from_audit: str | None) -> dict:
    """The template variables of ``leak.html.j2``."""
    examples = outcome.examples
    top = top_leakers(examples)
    columns = [c for c in ("index", "label", "true_label", "leak_rate", "false_alarm_rate", "lira_gap",
                           "lira_score_in_mean", "lira_score_out_mean", "n_in", "n_out", "mem")
               if c in examples.columns]
    summary = dict(outcome.summary)
    metrics = outcome.metrics.rename(columns={"auc": "AUC", "tpr_at_0.1%_fpr": "TPR at 0.1% FPR",
                                              "tpr_at_1%_fpr": "TPR at 1% FPR"})
    # a plain 0..n-1 index: the table shows the example's own "index" column, not the row labels iloc kept
    top_table = examples.iloc[top][columns].reset_index(drop=True)
    context = dict(
        title=f"Membership leakage: {model} on {data.name}",
        data=dict(name=data.name, n_train=len(data.y_train), n_classes=data.n_classes, kind=data.kind,
                  input_shape="x".join(map(str, data.input_shape))),
        model=model,
        from_audit=from_audit,
        summary=summary,
        summary_table=summary_rows(summary),
        metrics_table=percent_columns(metrics, *[c for c in _PERCENT_COLUMNS if c in metrics]),
        leak_attack=outcome.leak_attack,
        roc_png=roc_loglog_figure(outcome.roc),
        hist_png=score_histograms_figure(outcome.score_in),
        gallery_png=gallery_figure(data, examples, top, "leak_rate", percent=True)
        if data.kind in ("image", "signal") else None,
        top_table=percent_columns(top_table, *[c for c in _PERCENT_COLUMNS if c in top_table]),
        scatter_png=scatter_figure(examples, summary.get("memorization source", "")),
        trained_units=outcome.trained_units,
        reused_units=outcome.reused_units,
    )
    context["verdict"] = verdict(context)
    return context
