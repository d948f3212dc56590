"""Figures and tables of the privacy trade-off study.

Each function takes the study's tables (``results``: one row per defense,
``roc``: the LiRA ROC curve of each defense) and returns a data URI or a
DataFrame for the template; nothing here trains or reads files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fitscope.report.figures import figure_to_data_uri, new_figure

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
    return table


def tradeoff_figure(results: pd.DataFrame) -> str:
    """Test accuracy against LiRA TPR at 1% FPR, one labelled point per defense (up-left is better)."""
    fig = new_figure(6.5, 4.5)
    ax = fig.subplots()
    ax.errorbar(results.lira_tpr_at_1pct, results.test_acc, yerr=results.test_acc_std, fmt="o", capsize=3)
    for r in results.itertuples():
        ax.annotate(r.label, (r.lira_tpr_at_1pct, r.test_acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(0.01, color="grey", lw=0.8, ls="--", label="chance (TPR = FPR = 1%)")
    ax.set(xlabel="LiRA true positive rate at 1% false positive rate", ylabel="test accuracy",
           title="Utility vs leakage")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def roc_figure(roc: pd.DataFrame) -> str:
    """LiRA (online) ROC curves of every defense on log-log axes, as in Carlini et al. (2022)."""
    fig = new_figure(6.5, 5)
    ax = fig.subplots()
    for label, group in roc.groupby("label", sort=False):
        ax.plot(np.maximum(group.fpr, 1e-5), np.maximum(group.tpr, 1e-5), label=label)
    grid = np.logspace(-5, 0, 50)
    ax.plot(grid, grid, color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false positive rate",
           ylabel="true positive rate", title="Membership inference (LiRA online)")
    ax.legend(fontsize=8, loc="lower right")
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
    ax.set_xticks(pos, results.label, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="epsilon", title="Canary audit")
    ax.legend(fontsize=8)
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


def attack_table(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """One defense-specific study's table with readable columns (those the study produced)."""
    columns = {k: v for k, v in _ATTACK_COLUMNS[name].items() if k in table}
    return table[list(columns)].rename(columns=columns)
