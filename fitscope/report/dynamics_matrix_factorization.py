"""Figures and tables of the matrix-factorization study: depth against the nuclear norm in matrix completion.

Each function takes the study's tables (``curves``: the mean per count of
observed entries and method; ``completions``: one row per completion;
``history``: loss and effective rank during training; ``spectra``: leading
singular values) and returns a data URI or rows for
``dynamics_matrix_factorization.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import math

import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, plain_log_ticks
from fitscope.report.html import format_number, percent_columns

NUCLEAR = "nuclear norm"


def _styles(methods: list[str]) -> dict[str, dict]:
    """A colour and marker per method: the depths on viridis, the nuclear norm in black with a dashed line."""
    from matplotlib import colormaps

    deep = [m for m in methods if m != NUCLEAR]
    cmap = colormaps["viridis"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    out = {m: dict(color=cmap(0.05 + 0.8 * i / max(len(deep) - 1, 1)), marker=markers[i % len(markers)], ls="-")
           for i, m in enumerate(deep)}
    out[NUCLEAR] = dict(color="black", marker="x", ls="--")
    return out


def _methods(curves: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(curves.method))


def curve_figure(curves: pd.DataFrame, column: str, ylabel: str, title: str, *, log: bool = True,
                 true_rank: int | None = None) -> str | None:
    """``column`` (error or effective rank) against the number of observed entries, one line per method."""
    if curves.empty:
        return None
    methods = _methods(curves)
    styles = _styles(methods)
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    for method in methods:
        part = curves[curves.method == method].sort_values("observed")
        ax.plot(part.observed, part[column], lw=1.6, ms=4.5, label=method, **styles[method])
    if true_rank is not None:
        ax.axhline(true_rank, color="tab:red", lw=1, ls=":", label=f"true rank {true_rank}")
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set(xlabel="observed entries", ylabel=ylabel, title=title)
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def history_figure(history: pd.DataFrame, observed: int, true_rank: int) -> str | None:
    """Effective rank of the product against the gradient-descent step at one count, one line per depth (trial 0)."""
    part = history[(history.observed == observed) & (history.trial == 0)]
    if part.empty:
        return None
    methods = list(dict.fromkeys(part.method))
    styles = _styles(methods)
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    for method in methods:
        line = part[(part.method == method) & (part.step > 0)].sort_values("step")  # log x: step 0 has no place
        ax.plot(line.step, line.effective_rank, color=styles[method]["color"], lw=1.6, label=method)
    ax.axhline(true_rank, color="tab:red", lw=1, ls=":", label=f"true rank {true_rank}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set(xlabel="gradient-descent step", ylabel="effective rank",
           title=f"Effective rank during training, m = {observed}")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def spectrum_figure(spectra: pd.DataFrame, observed: int, true_rank: int) -> str | None:
    """The leading singular values of each method's completion at one count (trial 0), log scale."""
    part = spectra[(spectra.observed == observed) & (spectra.trial == 0)]
    if part.empty:
        return None
    methods = list(dict.fromkeys(part.method))
    styles = _styles(methods)
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    for method in methods:
        line = part[part.method == method].sort_values("index")
        ax.plot(line["index"], line.singular_value.clip(lower=1e-12), lw=1.4, ms=4, label=method, **styles[method])
    ax.axvline(true_rank + 0.5, color="tab:red", lw=1, ls=":", label=f"true rank {true_rank}")
    ax.set_yscale("log")
    ax.set(xlabel="index", ylabel="singular value", title=f"Singular values, m = {observed}")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def curves_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The per-(count, method) table as shown: errors, effective rank, steps and convergence."""
    table = curves[["observed", "method", "error", "error_unobserved", "effective_rank", "train_loss", "steps",
                    "converged"]].copy()
    deep = table.method != NUCLEAR
    table["steps"] = [s if d else None for s, d in zip(table.steps, deep)]
    table["converged"] = [c if d else None for c, d in zip(table.converged, deep)]
    for column in ("error", "error_unobserved"):  # errors span 1 to 1e-6: three significant digits, not decimals
        table[column] = [f"{v:.3g}" if math.isfinite(v) else None for v in table[column]]
    table = table.rename(columns={"observed": "observed entries", "error": "error (all entries)",
                                  "error_unobserved": "error (unobserved)", "effective_rank": "effective rank",
                                  "train_loss": "training loss"})
    return percent_columns(table, "converged")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows."""
    return [{"quantity": key, "value": format_number(value)} for key, value in summary.items()]


def _join(values: list) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def verdict(context: dict) -> str | None:
    """The finding in two or three sentences: at which counts did each depth >= 2 beat the nuclear norm on both error
    and effective rank, and from how many entries did each method recover W* to 1%?"""
    curves: pd.DataFrame = context["curves"]
    if curves.empty:
        return None
    nuclear = curves[curves.method == NUCLEAR].set_index("observed")
    deep = [m for m in dict.fromkeys(curves.method) if m != NUCLEAR
            and int(curves[curves.method == m].depth.iloc[0]) >= 2]
    parts = []
    if len(nuclear) and deep:
        for method in deep:
            rows = curves[curves.method == method].set_index("observed")
            counts = [int(m) for m in rows.index if m in nuclear.index]
            wins = [m for m in counts if rows.loc[m].error < nuclear.loc[m].error
                    and rows.loc[m].effective_rank < nuclear.loc[m].effective_rank]
            at = wins[0] if wins else counts[0]
            numbers = (f"at {at}: error {float(rows.loc[at].error):.3g} against {float(nuclear.loc[at].error):.3g}, "
                       f"effective rank {float(rows.loc[at].effective_rank):.3g} against "
                       f"{float(nuclear.loc[at].effective_rank):.3g}")
            if wins:
                parts.append(f"{_sentence(method)} found completions of lower reconstruction error and lower effective "
                             f"rank than the nuclear norm at {len(wins)} of {len(counts)} counts of observed entries "
                             f"({_join(wins)}; {numbers})")
            else:
                parts.append(f"{_sentence(method)} did not beat the nuclear norm on both error and effective rank at "
                             f"any of the {len(counts)} counts ({numbers})")
    text = ". ".join(parts) + "." if parts else ""
    recovered = curves[(curves.error < 0.01)]
    firsts = recovered.groupby("method", sort=False)["observed"].min()
    if len(firsts):
        text += (" " if text else "") + "The fewest observed entries that gave an error below 1%: " + "; ".join(
            f"{m}: {int(v)}" for m, v in firsts.items()) + "."
    return text or None


def report_context(cfg: dict, completions: pd.DataFrame, curves: pd.DataFrame, history: pd.DataFrame,
                   spectra: pd.DataFrame, summary: dict) -> dict:
    """The template variables of ``dynamics_matrix_factorization.html.j2`` for a finished study."""
    smallest = int(curves.observed.min()) if len(curves) else 0
    one = completions[completions.depth == 1]
    context = dict(
        title=f"Implicit low-rank bias of deep matrix factorization: {cfg['size']} x {cfg['size']}, rank {cfg['rank']}",
        cfg=cfg,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        curves=curves,
        curves_table=curves_table(curves),
        smallest=smallest,
        error_png=curve_figure(curves, "error", "relative error (Frobenius)",
                               "Reconstruction error (all entries)"),
        rank_png=curve_figure(curves, "effective_rank", "effective rank", "Effective rank of the completion",
                              true_rank=int(cfg["rank"])),
        history_png=history_figure(history, smallest, int(cfg["rank"])),
        spectrum_png=spectrum_figure(spectra, smallest, int(cfg["rank"])),
        has_nuclear=bool((curves.method == NUCLEAR).any()),
        depth_one_distance=float(one.distance_to_min_norm.max()) if len(one) else math.nan,
        seconds=completions.groupby("method", sort=False).seconds.sum().to_dict() if "seconds" in completions else {},
    )
    context["verdict"] = verdict(context)
    return context
