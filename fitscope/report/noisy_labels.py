"""Figures and tables of the noisy-labels study: clean the labels or regularize?

Each function takes the study's tables (``results``: one row per method, noise
level, mode and seed; ``curves``: one row per epoch of those; ``reliability``:
one row per confidence bin, seeds pooled; ``selection``: one row per
hyperparameter setting tried) and returns a data URI or rows for
``noisy_labels.html.j2``; nothing here trains or reads files.

Noise 0 is stored once with mode ``none`` (uniform and pair coincide there);
every per-mode figure starts from that point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, format_seconds, percent_columns
from fitscope.train.regularizers import PLAIN

NO_NOISE = "none"

MODES = ("uniform", "pair")

#: Quoted from Liu et al. 2020 ("Early-learning regularization prevents memorization of noisy labels",
#: Table 1): ELR's test accuracy on CIFAR-10 with symmetric label noise (ResNet-34), by noise level.
ELR_CIFAR10 = {0.2: 0.912, 0.4: 0.892, 0.6: 0.861, 0.8: 0.739}
#: Quoted from Kim et al. 2021 ("Self-knowledge distillation with progressive refinement of targets"):
#: CIFAR-100, PreAct ResNet-18, top-1 error and ECE of the baseline (cross-entropy) -> PS-KD.
PSKD_CIFAR100 = {"error": (0.242, 0.208), "ece": (0.118, 0.018)}

_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "#1f3b73", "#7a4b00", "#3d7a3d"]


def method_colors(methods: list[str]) -> dict[str, str]:
    """One color per method; plain cross-entropy is black."""
    out, i = {}, 0
    for m in methods:
        if m == PLAIN:
            out[m] = "black"
        else:
            out[m] = _COLORS[i % len(_COLORS)]
            i += 1
    return out


def modes_of(results: pd.DataFrame) -> list[str]:
    """The noise modes of the run (``uniform``, ``pair``), in that order; ``none`` alone if only noise 0."""
    present = set(results["noise_mode"])
    modes = [m for m in MODES if m in present]
    return modes or [NO_NOISE]


def _with_zero(frame: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The rows of ``mode`` plus the noise-0 rows (mode ``none``), which every mode shares."""
    return frame[(frame["noise_mode"] == mode) | (frame["noise_mode"] == NO_NOISE)]


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def accuracy_figure(results: pd.DataFrame, mode: str, methods: list[str], column: str = "test_acc",
                    label: str = "test accuracy") -> str:
    """Test accuracy against the noise level for one mode: mean over seeds per method, band = mean +- std."""
    colors = method_colors(methods)
    frame = _with_zero(results, mode)
    fig = new_figure(PANEL_WIDTH, 3.6)
    ax = fig.subplots()
    for m in methods:
        rows = frame[frame["method"] == m]
        if rows.empty:
            continue
        stats = rows.groupby("noise")[column].agg(["mean", "std"]).sort_index()
        x = stats.index.to_numpy(float)
        mean = stats["mean"].to_numpy(float)
        std = np.nan_to_num(stats["std"].to_numpy(float))
        ls = "--" if m == PLAIN else "-"
        ax.plot(x, mean, ls, marker="o", ms=3.5, lw=1.4, color=colors[m], label=m)
        ax.fill_between(x, mean - std, mean + std, color=colors[m], alpha=0.15, lw=0)
    ax.set(xlabel="labels flipped", ylabel=label, title=f"{mode} noise" if mode != NO_NOISE else "no noise")
    percent_axis(ax.xaxis, 0)
    percent_axis(ax.yaxis, 0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_FONT, ncol=2, loc="lower left")
    return figure_to_data_uri(fig)


def mean_std_table(results: pd.DataFrame, column: str, methods: list[str], *, decimals: int = 1) -> pd.DataFrame:
    """One row per method, one column per (mode, noise level): ``mean +- std`` over seeds, in percent."""
    cols: list[tuple[str, float]] = []
    if (results["noise"] == 0).any():
        cols.append((NO_NOISE, 0.0))
    for mode in MODES:
        for p in sorted(results.loc[results["noise_mode"] == mode, "noise"].unique()):
            cols.append((mode, float(p)))
    rows = []
    for m in methods:
        row = {"method": m}
        for mode, p in cols:
            name = "0%" if mode == NO_NOISE else f"{mode} {100 * p:g}%"
            sel = results[(results["method"] == m) & (results["noise_mode"] == mode) & (results["noise"] == p)]
            if sel.empty:
                row[name] = "\u2014"
                continue
            mean, std = _mean_std(sel[column])
            row[name] = f"{100 * mean:.{decimals}f} \u00b1 {100 * std:.{decimals}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def reliability_panels(reliability: pd.DataFrame, results: pd.DataFrame, noise: float, mode: str,
                       methods: list[str]) -> list[str]:
    """Reliability diagrams at one setting, one small panel per method (they wrap on a narrow page):
    accuracy per confidence bin (seeds pooled, blue) against the diagonal of perfect calibration, the gap to
    the bin's mean confidence hatched in red, and the mean ECE over seeds in the title."""
    frame = reliability[(reliability["noise"] == noise) & (reliability["noise_mode"] == mode)]
    panels = []
    for m in methods:
        bins = frame[frame["method"] == m].sort_values("bin")
        if bins.empty:
            continue
        low, high = bins["low"].to_numpy(float), bins["high"].to_numpy(float)
        acc, conf = bins["accuracy"].to_numpy(float), bins["confidence"].to_numpy(float)
        used = bins["count"].to_numpy() > 0
        centers, width = ((low + high) / 2)[used], (high - low)[used] * 0.92
        fig = new_figure(1.5, 1.55)  # 165 px: two side by side on a 390 px phone
        ax = fig.subplots()
        ax.bar(centers, acc[used], width=width, color="tab:blue", alpha=0.8)
        ax.bar(centers, np.abs(conf[used] - acc[used]), bottom=np.minimum(conf[used], acc[used]), width=width,
               facecolor="none", edgecolor="tab:red", hatch="///", lw=0.6)
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
        ece = results[(results["method"] == m) & (results["noise"] == noise) & (results["noise_mode"] == mode)]
        ax.set_title(f"{m}: ECE {format_percent(ece['ece'].mean(), 1)}", fontsize=SMALL_FONT)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.set_xlabel("confidence", fontsize=SMALL_FONT)
        ax.set_ylabel("accuracy", fontsize=SMALL_FONT)
        ax.tick_params(labelsize=SMALL_FONT)
        panels.append(figure_to_data_uri(fig))
    return panels


def focus_level(results: pd.DataFrame, mode: str, near: float = 0.4) -> float | None:
    """The nonzero noise level of ``mode`` closest to ``near`` (the curves' setting), or None."""
    levels = sorted(p for p in results.loc[results["noise_mode"] == mode, "noise"].unique() if p > 0)
    return min(levels, key=lambda p: (abs(p - near), p)) if levels else None


def curves_figure(curves: pd.DataFrame, noise: float, mode: str, methods: list[str], column: str,
                  label: str) -> str | None:
    """One quantity over epochs at one setting, mean over seeds per method (``memorized`` or ``test_acc``)."""
    frame = curves[(curves["noise"] == noise) & (curves["noise_mode"] == mode)]
    if frame.empty or frame[column].isna().all():
        return None
    colors = method_colors(methods)
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    for m in methods:
        rows = frame[frame["method"] == m]
        if rows.empty:
            continue
        mean = rows.groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.to_numpy(float), "--" if m == PLAIN else "-", lw=1.4, color=colors[m], label=m)
    ax.set(xlabel="epoch", ylabel=label, title=f"{label}, {100 * noise:g}% {mode} noise")
    low, high = ax.get_ylim()
    percent_axis(ax.yaxis, 0 if high - low > 0.1 else 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_FONT, ncol=2, loc="best")
    return figure_to_data_uri(fig)


def _cell(results: pd.DataFrame, method: str, noise: float, mode: str, column: str) -> str:
    sel = results[(results["method"] == method) & (results["noise"] == noise) & (results["noise_mode"] == mode)]
    if sel.empty:
        return "\u2014"
    mean, std = _mean_std(sel[column])
    return f"{100 * mean:.1f}" + (f" \u00b1 {100 * std:.1f}" if len(sel) > 1 else "") + "%"


def published_tables(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The published CIFAR figures of METHODS.md section 7 (quoted from the papers) beside this run's.

    Returns ``(elr, pskd)``: ELR's CIFAR-10 test accuracy by symmetric noise level beside our ``ce`` and
    ``elr`` at the same uniform noise; PS-KD's CIFAR-100 error and ECE (baseline -> PS-KD) beside our ``ce``
    and ``pskd`` without noise. A dash: the setting or method is not in this run.
    """
    elr = pd.DataFrame([{"noise": f"{100 * p:g}%",
                         "ELR, quoted from the paper": f"{100 * value:.1f}%",
                         "ours: ce": _cell(results, PLAIN, p, "uniform", "test_acc"),
                         "ours: elr": _cell(results, "elr", p, "uniform", "test_acc")}
                        for p, value in ELR_CIFAR10.items()])
    ours = results.assign(error=1.0 - results["test_acc"])
    rows = []
    for name, key, column in (("top-1 test error", "error", "error"), ("expected calibration error", "ece", "ece")):
        before, after = PSKD_CIFAR100[key]
        rows.append({"figure": name,
                     "baseline → PS-KD, quoted from the paper": f"{100 * before:.1f}% → {100 * after:.1f}%",
                     "ours: ce": _cell(ours, PLAIN, 0.0, NO_NOISE, column),
                     "ours: pskd": _cell(ours, "pskd", 0.0, NO_NOISE, column)})
    return elr, pd.DataFrame(rows)


def cleaning_table(results: pd.DataFrame) -> pd.DataFrame | None:
    """What cleaning did per setting (means over seeds): the true and estimated noise, rows dropped, precision."""
    clean = results[results["method"].str.startswith("clean")]
    if clean.empty:
        return None
    keys = ["method", "noise_mode", "noise"]
    table = clean.groupby(keys, sort=False).agg(
        flipped=("flipped_rows", "mean"), estimated_noise=("estimated_noise", "mean"), dropped=("dropped", "mean"),
        dropped_precision=("dropped_precision", "mean"), trained_rows=("trained_rows", "mean"),
        test_acc=("test_acc", "mean")).reset_index()
    train = clean.groupby(keys, sort=False).apply(
        lambda g: (g["trained_rows"] + g["dropped"]).mean(), include_groups=False).to_numpy(float)
    table["flipped"] = table["flipped"] / train
    table = table.rename(columns={"noise_mode": "mode", "flipped": "flipped (true)", "estimated_noise": "estimated noise",
                                  "dropped_precision": "dropped that were flipped", "trained_rows": "rows trained on",
                                  "test_acc": "test accuracy"})
    table["noise"] = [f"{100 * p:g}%" for p in table["noise"]]
    table["dropped"] = table["dropped"].round(1)
    table["rows trained on"] = table["rows trained on"].round(1)
    return percent_columns(table, "flipped (true)", "estimated noise", "dropped that were flipped", "test accuracy")


def selection_table(selection: pd.DataFrame) -> pd.DataFrame | None:
    """The hyperparameter settings tried where there was a choice: mean final validation accuracy, the one kept."""
    counts = selection.groupby(["method", "noise", "noise_mode"])["setting"].transform("count")
    tried = selection[counts > 1]
    if tried.empty:
        return None
    table = tried.rename(columns={"noise_mode": "mode", "val_acc": "validation accuracy"}).copy()
    table["noise"] = [f"{100 * p:g}%" for p in table["noise"]]
    return percent_columns(table.reset_index(drop=True), "validation accuracy")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows."""
    return [{"quantity": k, "value": f"{v:,}" if isinstance(v, int) else str(v)} for k, v in summary.items()]


def verdict(context: dict) -> str | None:
    """The study in one sentence: at the highest noise level, the best method against plain cross-entropy."""
    results: pd.DataFrame = context["results_frame"]
    mode = context["modes"][0]
    if mode == NO_NOISE:
        means = results.groupby("method")["test_acc"].mean()
        best = str(means.idxmax())
        ece = results.groupby("method")["ece"].mean()
        calibrated = str(ece.idxmin())
        text = (f"Without label noise, {best} reaches the highest test accuracy ({format_percent(means[best], 1)}) "
                f"on {context['data']['name']}; {calibrated} has the lowest expected calibration error "
                f"({format_percent(ece[calibrated], 1)}")
        if PLAIN in ece.index and calibrated != PLAIN:
            text += f", cross-entropy {format_percent(ece[PLAIN], 1)}"
        return text + ", means over seeds)."
    top = float(results.loc[results["noise_mode"] == mode, "noise"].max())
    sel = results[(results["noise_mode"] == mode) & (results["noise"] == top)]
    means = sel.groupby("method")["test_acc"].mean()
    best = str(means.idxmax())
    text = (f"With {format_percent(top, 0)} of the training labels flipped ({mode}), {best} reaches "
            f"{format_percent(means[best], 1)} test accuracy on {context['data']['name']}")
    if best == PLAIN:
        text += ", the best of the methods here"
    elif PLAIN in means.index:
        gap = means[best] - means[PLAIN]
        text += f", {100 * gap:.1f} points above plain cross-entropy ({format_percent(means[PLAIN], 1)})"
    mem = sel.groupby("method")["memorized"].mean()
    if PLAIN in mem.index and np.isfinite(mem[PLAIN]):
        text += f"; cross-entropy ends up reproducing {format_percent(mem[PLAIN], 0)} of the wrong labels it trained on"
        if best != PLAIN and best in mem.index:
            text += f", {best} {format_percent(mem[best], 0)}"
    return text + " (means over seeds)."


def report_context(cfg, data, model: str, outcome) -> dict:
    """The template variables of ``noisy_labels.html.j2`` for a finished study."""
    results, curves = outcome.results, outcome.curves
    methods = list(dict.fromkeys(cfg.methods))
    modes = modes_of(results)
    accuracy_panels = [accuracy_figure(results, m, methods) for m in modes]
    memorized_panels, curve_levels = [], []
    for mode in modes:
        level = focus_level(results, mode)
        if level is None:
            continue
        curve_levels.append(f"{100 * level:g}% {mode}")
        memorized_panels.append(curves_figure(curves, level, mode, methods, "memorized", "memorized noise"))
        memorized_panels.append(curves_figure(curves, level, mode, methods, "test_acc", "test accuracy"))
    reliability_sets = []
    if (results["noise"] == 0).any():
        reliability_sets.append(("no noise", reliability_panels(outcome.reliability, results, 0.0, NO_NOISE, methods)))
    for mode in modes:
        level = focus_level(results, mode)
        if level is not None:
            reliability_sets.append((f"{100 * level:g}% {mode} noise",
                                     reliability_panels(outcome.reliability, results, level, mode, methods)))
    seconds = outcome.seconds or {}
    context = dict(
        title=f"Noisy labels: {model} on {data.name}",
        cfg=cfg.model_dump(),
        model=model,
        methods=methods,
        modes=modes,
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind),
        summary=dict(outcome.summary),
        summary_table=summary_rows(outcome.summary),
        results_frame=results,
        accuracy_png=accuracy_panels,
        accuracy_table=mean_std_table(results, "test_acc", methods),
        best_val_table=mean_std_table(results, "test_acc_at_best_val", methods),
        ece_table=mean_std_table(results, "ece", methods, decimals=2),
        memorized_table=mean_std_table(results[results["noise"] > 0], "memorized", methods)
        if (results["noise"] > 0).any() else None,
        memorized_png=[p for p in memorized_panels if p],
        curve_levels=curve_levels,
        reliability=[(name, uri) for name, uri in reliability_sets if uri],
        published_tables=published_tables(results),
        cleaning_table=cleaning_table(results),
        selection_table=selection_table(outcome.selection),
        seconds_total=format_seconds(sum(seconds.values())) if seconds else None,
        seconds_table=pd.DataFrame([{"unit": k, "seconds": format_seconds(v)} for k, v in seconds.items()]),
    )
    context["verdict"] = verdict(context)
    return context
