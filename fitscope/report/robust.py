"""Figures and tables of the robustness study: PGD training, the width sweep, L0 attacks and the Fourier defense.

Each function takes the study's tables (``models``, ``curves``, ``widths``,
``l0``: see :class:`fitscope.experiments.robust.RobustOutcome`) and returns a
data URI or rows for ``robust.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, draw_input, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_number, format_percent, percent_columns

_TRAINING_STYLE = {"standard": ("tab:gray", "-", "standard training"), "pgd-inf": ("tab:red", "-", "PGD L-inf"),
                   "pgd-2": ("tab:blue", "--", "PGD L2")}


def curve_figure(curves: pd.DataFrame, spec: str, eps: float) -> str | None:
    """Robust test accuracy against the L-inf radius for one spec, one line per training; eps marked."""
    part = curves[curves.spec == spec]
    if part.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for training, rows in part.groupby("training", sort=False):
        color, style, label = _TRAINING_STYLE.get(training, ("black", ":", training))
        rows = rows.sort_values("eps")
        ax.plot(rows.eps, rows.robust_acc, color=color, ls=style, marker="o", ms=3.5, lw=1.8, label=label)
    ax.axvline(eps, color="black", ls=":", lw=1)
    ax.set_ylim(-0.02, 1.02)
    percent_axis(ax.yaxis, 0)
    ax.set(xlabel="L-inf radius eps", ylabel="robust test accuracy", title=f"{spec}: accuracy under L-inf PGD")
    ax.legend(fontsize=SMALL_FONT, loc="upper right")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def width_figure(widths: pd.DataFrame, column: str, label: str, *, percent: bool = False) -> str | None:
    """``column`` of the width sweep against width (log scale), one line per family (MLP, CNN)."""
    if widths.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for (family, rows), color in zip(widths.groupby("family", sort=False), ("tab:purple", "tab:green")):
        rows = rows.sort_values("width")
        ax.plot(rows.width, rows[column], color=color, marker="o", ms=4, lw=1.8,
                label=f"{family.upper()} ({'w x2' if family == 'mlp' else 'w-2w'})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    if percent:
        ax.set_ylim(-0.02, 1.02)
        percent_axis(ax.yaxis, 0)
    else:
        ax.set_ylim(bottom=0)
    ax.set(xlabel="width w", ylabel=label, title=f"PGD training: {label} vs width")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def l0_figure(l0: pd.DataFrame, attack: str) -> str | None:
    """Accuracy under one L0 attack against its budget (pixels changed), with and without the Fourier defense."""
    part = l0[l0.attack == attack]
    if part.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for defense, color, label in (("none", "tab:gray", "no defense"), ("fourier", "tab:orange", "IHT Fourier defense")):
        rows = part[part.defense == defense].sort_values("budget")
        if len(rows):
            ax.plot(rows.budget, rows.accuracy, color=color, marker="o", ms=4, lw=1.8, label=label)
    ax.set_ylim(-0.02, 1.02)
    percent_axis(ax.yaxis, 0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    what = "pixels (PGD_0)" if attack == "pixels" else "a square patch"
    ax.set(xlabel="budget: pixels changed (0 = clean)", ylabel="test accuracy", title=f"L0 attack on {what}")
    ax.legend(fontsize=SMALL_FONT, loc="upper right")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def examples_figure(examples: dict, kind: str, titles: dict[str, str]) -> str | None:
    """Test inputs (top row) and their L-inf PGD versions against each main network (one row per network)."""
    if not examples or kind != "image":
        return None
    keys = list(examples)
    clean = examples[keys[0]][0]
    n = min(6, len(clean))
    fig = new_figure(min(8.5, 1.0 * n + 1.2), 1.05 * (len(keys) + 1))
    axes = np.atleast_2d(fig.subplots(len(keys) + 1, n))
    for j in range(n):
        draw_input(axes[0, j], clean[j], kind)
    axes[0, 0].set_ylabel("clean", fontsize=SMALL_FONT, rotation=0, ha="right", va="center")
    for i, key in enumerate(keys, 1):
        _, adv, pred = examples[key]
        for j in range(n):
            draw_input(axes[i, j], adv[j], kind)
            axes[i, j].set_title(f"-> {int(pred[j])}", fontsize=SMALL_FONT, pad=1)
        axes[i, 0].set_ylabel(titles.get(key, key), fontsize=SMALL_FONT, rotation=0, ha="right", va="center")
    return figure_to_data_uri(fig)


def models_table(models: pd.DataFrame) -> pd.DataFrame:
    """The per-network table as shown (accuracies in %)."""
    table = models.rename(columns={"clean_acc": "clean acc", "linf_acc": "L-inf robust acc",
                                   "l2_acc": "L2 robust acc", "robust_train_loss": "robust train loss",
                                   "robust_train_acc": "robust train acc", "train_acc": "train acc"})
    return percent_columns(table.reset_index(drop=True), "clean acc", "L-inf robust acc", "L2 robust acc",
                           "robust train acc", "train acc")


def widths_table(widths: pd.DataFrame) -> pd.DataFrame:
    """The width sweep as shown."""
    table = widths.drop(columns=["family"]).rename(columns={
        "robust_train_loss": "robust train loss", "robust_train_acc": "robust train acc",
        "robust_test_acc": "robust test acc", "clean_test_acc": "clean test acc", "train_acc": "train acc"})
    return percent_columns(table.reset_index(drop=True), "robust train acc", "robust test acc", "clean test acc",
                           "train acc")


def l0_table(l0: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (attack, budget), the two defenses side by side."""
    if l0.empty:
        return l0
    wide = l0.pivot_table(index=["attack", "budget"], columns="defense", values="accuracy").reset_index()
    wide.columns.name = None
    wide = wide.rename(columns={"none": "no defense", "fourier": "Fourier defense", "budget": "pixels changed"})
    return percent_columns(wide, *[c for c in ("no defense", "Fourier defense") if c in wide.columns])


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; accuracies in %."""
    rows = []
    for key, value in summary.items():
        percent = "accuracy" in key and isinstance(value, float)
        rows.append({"quantity": key, "value": format_percent(value, 1) if percent else format_number(value)})
    return rows


def verdict(context: dict) -> str:
    """The study in a sentence or two: how much PGD training bought at eps; the width trend; the L0 defense."""
    models: pd.DataFrame = context["models"]
    eps = context["cfg"]["eps"]
    parts = []
    for spec in models.spec.unique():
        rows = models[models.spec == spec].set_index("training")
        if "pgd-inf" in rows.index:
            std, pgd = float(rows.loc["standard", "linf_acc"]), float(rows.loc["pgd-inf", "linf_acc"])
            parts.append(f"{spec}: {format_percent(std, 1)} -> {format_percent(pgd, 1)}")
    text = ""
    if parts:
        text = (f"PGD training raised the accuracy under L-inf PGD at eps {eps:g} ({'; '.join(parts)}, standard -> "
                "PGD-trained).")
    widths: pd.DataFrame = context["widths"]
    trends = []
    for family in widths.family.unique():
        rows = widths[widths.family == family].sort_values("width")
        if len(rows) >= 2:
            loss = rows.robust_train_loss.to_numpy()
            trends.append(f"{family.upper()} {loss[0]:.3g} at width {int(rows.width.iloc[0])} to {loss[-1]:.3g} "
                          f"at {int(rows.width.iloc[-1])}")
    if trends:
        text += " The robust training loss went from " + "; ".join(trends) + "."
    l0: pd.DataFrame = context["l0"]
    bits = []
    for attack, rows in l0[l0.budget > 0].groupby("attack", sort=False):
        acc = rows.set_index(["budget", "defense"]).accuracy
        # the budget at which the defense gained most over no defense (if 5 points or more), and the largest tried
        gains = {b: acc.get((b, "fourier"), np.nan) - acc.get((b, "none"), np.nan) for b in rows.budget.unique()}
        helped = [b for b, g in sorted(gains.items(), key=lambda item: item[1]) if g >= 0.05]
        top = int(rows.budget.max())
        bit = (f"{attack} attack at {top} pixels: {format_percent(acc.get((top, 'none'), np.nan), 0)} without, "
               f"{format_percent(acc.get((top, 'fourier'), np.nan), 0)} with the defense")
        if helped and helped[-1] != top:
            b = helped[-1]
            bit += (f" (at {b} pixels {format_percent(acc.get((b, 'none'), np.nan), 0)} without, "
                    f"{format_percent(acc.get((b, 'fourier'), np.nan), 0)} with)")
        bits.append(bit)
    if bits:
        text += " Under L0 attacks, accuracy with the " + "; ".join(bits) + "."
    return text.strip()


def report_context(cfg: dict, data: dict, detail) -> dict:
    """The template variables of ``robust.html.j2`` for a finished study."""
    titles = {}
    for _, row in detail.models.iterrows():
        key = f"main-{row.spec.replace(':', '_').replace('-', '_')}-{row.training.replace('-', '')}"
        titles[key] = f"{row.spec}\n{_TRAINING_STYLE.get(row.training, (0, 0, row.training))[2]}"
    context = dict(
        title=f"Adversarial robustness on {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(detail.summary),
        summary_table=summary_rows(detail.summary),
        models=detail.models,
        widths=detail.widths,
        l0=detail.l0,
        models_table=models_table(detail.models),
        widths_table=widths_table(detail.widths),
        l0_table=l0_table(detail.l0),
        curve_pngs=[u for u in (curve_figure(detail.curves, s, cfg["eps"]) for s in detail.models.spec.unique()) if u],
        width_loss_png=width_figure(detail.widths, "robust_train_loss", "robust training loss"),
        width_acc_png=width_figure(detail.widths, "robust_test_acc", "robust test accuracy", percent=True),
        l0_pngs=[u for u in (l0_figure(detail.l0, a) for a in detail.l0.attack.unique()) if u],
        examples_png=examples_figure(detail.examples, data["kind"], titles),
    )
    context["verdict"] = verdict(context)
    return context
