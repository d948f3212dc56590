"""Figures and tables of the privacy trade-off study.

Each function takes the study's tables (``results``: one row per defense,
``roc``: the LiRA ROC curve of each defense) and returns a data URI or a
DataFrame for the template; nothing here trains or reads files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fitscope.report.figures import MIN_FONT_PT, PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, percent_columns

_COLUMNS = {
    "label": "defense", "test_acc": "test acc", "lira_auc": "LiRA AUC", "lira_tpr_at_0_1pct": "LiRA TPR@0.1%",
    "lira_tpr_at_1pct": "LiRA TPR@1%", "loss_auc": "loss-threshold AUC", "loss_tpr_at_1pct": "loss TPR@1%",
    "canary_accuracy": "canary guess acc", "eps_lower_bound": "eps lower bound (95%)", "claimed_eps": "claimed eps",
    "spent_eps": "accountant eps", "seconds": "seconds",
}


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """The per-defense table with readable column names (inf claimed eps shown as "none")."""
    table = results[[c for c in _COLUMNS if c in results]].rename(columns=_COLUMNS).copy()
    for col in ("claimed eps", "accountant eps"):
        if col in table:
            table[col] = [("none" if not math.isfinite(v) else round(float(v), 3)) for v in table[col]]
    return percent_columns(table, *[c for c in _PERCENT if c in table])


_PERCENT = ("test acc", "LiRA TPR@0.1%", "LiRA TPR@1%", "loss TPR@1%", "canary guess acc")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def tradeoff_figure(results: pd.DataFrame) -> str:
    """Test accuracy against LiRA TPR at 1% FPR, one point per defense named in the legend (up-left is better).

    Each defense has the colour it has in :func:`roc_figure`.
    """
    fig = new_figure(PANEL_WIDTH, 4.8)
    ax = fig.subplots()
    # one colour and marker per defense, named in the legend (labels written beside the points collide)
    for i, r in enumerate(results.itertuples()):
        ax.errorbar([r.lira_tpr_at_1pct], [r.test_acc], yerr=[r.test_acc_std], fmt=_MARKERS[i % len(_MARKERS)],
                    color=f"C{i % 10}", capsize=3, ms=6, label=r.label)
    ax.axvline(0.01, color="grey", lw=0.8, ls="--", label="chance (TPR = FPR = 1%)")
    ax.set(xlabel="LiRA TPR at 1% FPR", ylabel="test accuracy", title="Utility vs leakage")
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=MIN_FONT_PT)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def roc_figure(roc: pd.DataFrame) -> str:
    """LiRA (online) ROC curves of every defense on log-log axes, as in Carlini et al. (2022)."""
    fig = new_figure(PANEL_WIDTH, 4.0)
    ax = fig.subplots()
    for label, group in roc.groupby("label", sort=False):
        ax.plot(np.maximum(group.fpr, 1e-5), np.maximum(group.tpr, 1e-5), label=label)
    grid = np.logspace(-5, 0, 50)
    ax.plot(grid, grid, color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false positive rate",
           ylabel="true positive rate", title="LiRA online ROC")
    ax.legend(fontsize=MIN_FONT_PT, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def canary_figure(results: pd.DataFrame) -> str:
    """The canary audit's empirical lower bound on epsilon per defense, with the claimed epsilon beside it."""
    fig = new_figure(6.5, 4)
    ax = fig.subplots()
    pos = np.arange(len(results))
    ax.bar(pos, results.eps_lower_bound.fillna(0.0), color="tab:red", label="empirical lower bound (95%)")
    claimed = results.claimed_eps.where(np.isfinite(results.claimed_eps))
    ax.scatter(pos[claimed.notna()], claimed.dropna(), marker="_", s=600, color="black", label="claimed eps")
    ax.set_xticks(pos, results.label, rotation=30, ha="right", fontsize=SMALL_FONT)
    ax.set(ylabel="epsilon", title="Canary audit")
    ax.legend(fontsize=SMALL_FONT)
    ax.grid(alpha=0.3, axis="y")
    return figure_to_data_uri(fig)


_ATTACK_COLUMNS = {
    "instahide": {"k": "k", "sign_mask": "sign mask", "recovery_rate@0.9": "recovered (SSIM >= 0.9)",
                  "recovery_rate@0.5": "recovered (SSIM >= 0.5)", "mean_ssim": "mean SSIM",
                  "baseline_mean_ssim": "nearest public digit SSIM", "beats_baseline_rate": "beats public guess",
                  "member_accuracy": "mixing members found"},
    "pruning-vs-noise": {"fraction": "pruned fraction", "pruned_test_acc": "pruned test acc",
                         "pruned_auc": "pruned MIA AUC", "sigma_rel": "matched noise (x activation std)",
                         "noisy_test_acc": "noisy test acc", "noisy_auc": "noisy MIA AUC"},
    "mid-inversion": {"beta": "beta", "test_acc": "test acc", "ssim": "inversion SSIM",
                      "class_mean_ssim": "class-mean SSIM (label-only floor)",
                      "eval_acc": "reconstructions classified right", "mse": "inversion MSE"},
}


def private_stats_note(defenses: list[str]) -> str | None:
    """One sentence on the statistics of the private labels when a defense claims DP (label DP, DP-SGD), else None.

    The study shows none of them (no randomized-response keep rate, no training accuracy): they read the
    true training labels that the guarantee protects. The attacks and the canary audit read the true labels
    and memberships on purpose, as an auditor who knows them would.
    """
    if not any(str(d).split(":")[0] in ("label-dp", "dp-sgd") for d in defenses):
        return None
    return ("Statistics of the private labels are not shown (no randomized-response keep rate for label DP, no "
            "training accuracy for DP-SGD): they read the true training labels that the guarantee protects; the "
            "attacks and the canary audit read them on purpose, as an auditor who knows them would.")


def attack_table(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """One defense-specific study's table with readable columns (those the study produced)."""
    columns = {k: v for k, v in _ATTACK_COLUMNS[name].items() if k in table}
    out = table[list(columns)].rename(columns=columns)
    return percent_columns(out, *[c for c in _ATTACK_PERCENT if c in out])


# fractions among the attack tables' columns (shown as percentages)
_ATTACK_PERCENT = ("recovered (SSIM >= 0.9)", "recovered (SSIM >= 0.5)", "beats public guess", "mixing members found",
                   "pruned test acc", "noisy test acc", "test acc", "reconstructions classified right")


def verdict(context: dict) -> str | None:
    """The study in one sentence: which defense gave the best leakage/accuracy trade, against no defense.

    The best trade is the defense (other than the first row, the undefended
    baseline) with the largest drop in LiRA's TPR at 1% FPR minus its drop in
    test accuracy, both in points. Reads ``results_table`` (see
    :func:`results_table`) of the privacy report context.
    """
    table = context.get("results_table")
    if table is None or len(table) < 1 or not {"defense", "test acc", "LiRA TPR@1%"} <= set(table.columns):
        return None
    base = table.iloc[0]
    base_acc, base_tpr = float(base["test acc"]), float(base["LiRA TPR@1%"])
    base_text = (f"{base['defense']}: LiRA TPR at 1% FPR {format_percent(base_tpr)}, "
                 f"test accuracy {format_percent(base_acc)}")
    if len(table) < 2:
        return f"Only {base['defense']} was measured ({base_text.split(': ', 1)[1]}; chance TPR is 1%)."
    rest = table.iloc[1:]
    gain = (base_tpr - rest["LiRA TPR@1%"].astype(float)) - (base_acc - rest["test acc"].astype(float))
    best = rest.loc[gain.idxmax()]
    if float(gain.max()) <= 0:
        return (f"No defense lowered leakage by more than it cost in accuracy ({base_text}; chance TPR is 1%); "
                f"the closest was {best['defense']} (TPR {format_percent(float(best['LiRA TPR@1%']))}, "
                f"accuracy {format_percent(float(best['test acc']))}).")
    return (f"{best['defense']} gave the best leakage/accuracy trade: LiRA's TPR at 1% FPR "
            f"{format_percent(float(best['LiRA TPR@1%']))} (chance 1%) at {format_percent(float(best['test acc']))} "
            f"test accuracy, against {format_percent(base_tpr)} and {format_percent(base_acc)} with "
            f"{base['defense']}.")
