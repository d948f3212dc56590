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
from fitscope.report.figures import figure_to_data_uri, new_figure
from fitscope.report.html import format_number

SHOWN = 16
_STYLES = {"LiRA online": ("tab:blue", "-"), "LiRA online (fixed variance)": ("tab:blue", "--"),
           "LiRA offline": ("tab:orange", "-"), "LiRA offline (fixed variance)": ("tab:orange", "--"),
           "loss threshold": ("tab:gray", "-")}


def roc_loglog_figure(roc: dict) -> str | None:
    """ROC curves of every attack on log-log axes (the low-FPR regime LiRA is judged in), and on linear axes."""
    if not roc:
        return None
    fig = new_figure(10, 4.2)
    axes = fig.subplots(1, 2)
    for name, (fpr, tpr) in roc.items():
        color, ls = _STYLES.get(name, (None, "-"))
        keep = (fpr > 0) & (tpr > 0)
        axes[0].plot(fpr[keep], tpr[keep], color=color, ls=ls, label=name, drawstyle="steps-post")
        axes[1].plot(fpr, tpr, color=color, ls=ls, label=name, drawstyle="steps-post")
    grid = np.logspace(-5, 0, 50)
    axes[0].plot(grid, grid, color="gray", ls=":", lw=0.8, label="chance")
    axes[0].set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false positive rate",
                ylabel="true positive rate", title="ROC, log-log")
    for fpr in (1e-3, 1e-2):
        axes[0].axvline(fpr, color="gray", lw=0.5, alpha=0.6)
    axes[1].plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
    axes[1].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, linear", xlim=(0, 1),
                ylim=(0, 1.01))
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="lower right")
    return figure_to_data_uri(fig)


def score_histograms_figure(score_in: list) -> str | None:
    """For the examples with the largest in/out gap: histograms of the shadow scores with and without them."""
    if not score_in:
        return None
    fig = new_figure(3 * len(score_in), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(score_in)))
    for ax, (i, s_in, s_out) in zip(axes, score_in):
        both = np.concatenate([s_in, s_out])
        both = both[np.isfinite(both)]
        bins = np.linspace(both.min(), both.max(), 20) if both.size and both.max() > both.min() else 10
        ax.hist(s_out[np.isfinite(s_out)], bins=bins, alpha=0.6, label=f"out ({len(s_out)})", color="tab:gray")
        ax.hist(s_in[np.isfinite(s_in)], bins=bins, alpha=0.6, label=f"in ({len(s_in)})", color="tab:red")
        ax.set_title(f"example #{i}", fontsize=9)
        ax.set_xlabel("log p_y - log sum others", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return figure_to_data_uri(fig)


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
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def top_leakers(examples: pd.DataFrame, count: int = SHOWN) -> list[int]:
    """Indices of the examples leaked most often (ties broken by the mean attack score when in)."""
    leak = np.nan_to_num(examples["leak_rate"].to_numpy(float), nan=-1.0)
    score = np.nan_to_num(examples["attack_in_mean"].to_numpy(float), nan=-np.inf)
    order = np.lexsort((-score, -leak))
    return order[:count].tolist()


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
    return dict(
        title=f"Membership leakage: {model} on {data.name}",
        data=dict(name=data.name, n_train=len(data.y_train), n_classes=data.n_classes, kind=data.kind,
                  input_shape="x".join(map(str, data.input_shape))),
        model=model,
        from_audit=from_audit,
        summary=summary,
        summary_table=[{"quantity": k, "value": format_number(v)} for k, v in summary.items()],
        metrics_table=metrics,
        leak_attack=outcome.leak_attack,
        roc_png=roc_loglog_figure(outcome.roc),
        hist_png=score_histograms_figure(outcome.score_in),
        gallery_png=gallery_figure(data, examples, top, "leak_rate") if data.kind in ("image", "signal") else None,
        top_table=examples.iloc[top][columns],
        scatter_png=scatter_figure(examples, summary.get("memorization source", "")),
        trained_units=outcome.trained_units,
        reused_units=outcome.reused_units,
    )
