"""Figures and tables of the exp-lr study: weight decay and its exponential learning rate compute the same function.

Each function takes the study's tables (``trajectory``: one row per unit and
measurement; ``runs``: one row per unit) and returns a data URI or rows for
``dynamics_exp_lr.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, plain_log_ticks
from fitscope.report.html import format_number, format_percent, percent_columns

#: the threshold of the tiny test's "same function" drawn on the difference figure (the study's SAME_FUNCTION)
SAME_FUNCTION = 1e-8
#: within float error: at most this many times the control's difference (the study's WITHIN)
WITHIN = 10
_STYLES = {"float64": "-", "float32": "--"}


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.6 * i / max(n - 1, 1)) for i in range(n)]


def _milestones(ax, trajectory: pd.DataFrame) -> None:
    """Thin vertical lines where the weight-decay run's learning rate drops."""
    part = trajectory[trajectory.unit == trajectory.unit.iloc[0]].sort_values("step")
    lr = part.lr_wd.to_numpy(float)
    for i in np.flatnonzero(np.isfinite(lr[1:]) & (lr[1:] < lr[:-1] * 0.999)) + 1:
        ax.axvline(float(part.step.iloc[i]), color="0.6", lw=0.8, ls=":")


def difference_figure(trajectory: pd.DataFrame) -> str:
    """The largest difference of the two runs' softmax outputs (training and test rows) per step, log scale.

    One colour per model, solid float64, dashed float32; the thin light line
    of the same colour and style is the control (the weight-decay run against
    its copy rescaled by 3, the same function in exact arithmetic); the thin grey lines
    are the same difference with batch norm's running averages instead of
    statistics recomputed at the current weights.
    """
    models = list(dict.fromkeys(trajectory.model))
    fig = new_figure(6.6, 4.8)
    ax = fig.subplots()
    floor = 1e-17
    for color, model in zip(_colors(len(models)), models):
        for precision, style in _STYLES.items():
            part = trajectory[(trajectory.model == model) & (trajectory.precision == precision)].sort_values("step")
            if part.empty:
                continue
            diff = np.maximum(np.maximum(part.diff_train, part.diff_test).to_numpy(float), floor)
            ax.plot(part.step, diff, color=color, ls=style, lw=1.8, label=f"{model}, {precision}")
            ax.plot(part.step, np.maximum(part.diff_control.to_numpy(float), floor), color=color, ls=style, lw=0.9,
                    alpha=0.45, label=f"control ({precision})" if model == models[0] else None)
    first = True
    for (model, precision), part in trajectory.groupby(["model", "precision"], sort=False):
        if precision == "float64":
            part = part.sort_values("step")
            ax.plot(part.step, np.maximum(part.diff_running.to_numpy(float), floor), color="0.55", lw=1.0,
                    label="running-average BN statistics (float64)" if first else None)
            first = False
    ax.axhline(SAME_FUNCTION, color="tab:red", lw=1, ls=":", label="1e-8")
    _milestones(ax, trajectory)
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="largest |p_wd - p_exp|",
           title="Largest difference of the two runs' predictions")
    fig.legend(fontsize=SMALL_FONT, loc="outside lower center", ncol=3)
    ax.grid(alpha=0.3, which="major")
    return figure_to_data_uri(fig)


def curves_figures(trajectory: pd.DataFrame, model: str, precision: str = "float64") -> tuple[str, str] | None:
    """Training loss, and accuracies, of both runs against step: weight decay thick, exp-lr dashed on top.

    Returns the two panels' data URIs (loss, accuracy), None without such a unit.
    """
    part = trajectory[(trajectory.model == model) & (trajectory.precision == precision)].sort_values("step")
    if part.empty:
        return None
    uris = []
    for what in ("loss", "accuracy"):
        fig = new_figure(PANEL_WIDTH, 3.3)
        ax = fig.subplots()
        if what == "loss":
            ax.plot(part.step, part.loss_wd, color="tab:blue", lw=2.5, alpha=0.6, label="weight decay + step lr")
            ax.plot(part.step, part.loss_exp, color="black", lw=1.0, ls="--", label="no weight decay, exp lr")
            ax.set(xlabel="step", ylabel="training loss (cross-entropy)", title=f"{model}: training loss")
        else:
            for column, color, rows in (("train_acc", "tab:blue", "train"), ("test_acc", "tab:orange", "test")):
                ax.plot(part.step, part[f"{column}_wd"], color=color, lw=2.5, alpha=0.6,
                        label=f"{rows}, weight decay")
                ax.plot(part.step, part[f"{column}_exp"], color="black", lw=1.0, ls="--",
                        label="exp lr" if rows == "test" else None)
            ax.yaxis.set_major_formatter(lambda v, _: format_percent(v, 0))
            ax.set(xlabel="step", ylabel="accuracy", title=f"{model}: accuracy")
        _milestones(ax, part)
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=SMALL_FONT, loc="best")
        uris.append(figure_to_data_uri(fig))
    return uris[0], uris[1]


def norms_figure(trajectory: pd.DataFrame, precision: str = "float64") -> str | None:
    """Norm of the trained weights of both runs against step (log scale), with ``c_t`` times the weight-decay norm."""
    data = trajectory[trajectory.precision == precision]
    if data.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    for color, (model, part) in zip(_colors(data.model.nunique()), data.groupby("model", sort=False)):
        part = part.sort_values("step")
        ax.plot(part.step, part.norm_exp, color=color, lw=2.5, alpha=0.6, label=f"{model}, exp lr")
        ax.plot(part.step, part.scale * part.norm_wd, color="black", lw=0.9, ls=":")
        ax.plot(part.step, part.norm_wd, color=color, lw=1.5, ls="--", label=f"{model}, weight decay")
    ax.plot([], [], color="black", lw=0.9, ls=":", label="c_t x weight-decay norm")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set(xlabel="step", ylabel="norm of the trained weights", title="Weight norms")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def lr_figure(trajectory: pd.DataFrame) -> str:
    """The two learning-rate schedules against step (log scale)."""
    part = trajectory[trajectory.unit == trajectory.unit.iloc[0]].sort_values("step")
    part = part[np.isfinite(part.lr_wd)]
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    ax.plot(part.step, part.lr_wd, color="tab:blue", lw=1.8, label="weight decay: step schedule")
    ax.plot(part.step, part.lr_exp, color="tab:red", lw=1.8, label="no weight decay: equivalent")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set(xlabel="step", ylabel="learning rate", title="Learning-rate schedules")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per unit as shown: the difference against the control, the growth of the weights, the accuracies."""
    table = pd.DataFrame({
        "model": runs.model, "precision": runs.precision,
        "max diff": [f"{max(a, b):.2g}" for a, b in zip(runs.max_diff_train, runs.max_diff_test)],
        "control": [f"{v:.2g}" for v in runs.max_diff_control],
        f"within {WITHIN}x control": runs.within_float_error,
        "test rows classified differently": runs.max_disagree_test,
        "max diff, running BN stats": [f"{v:.2g}" for v in runs.max_diff_running],
        "c_T": runs.final_scale,
        "norm ratio vs c_t: max error": [f"{v:.2g}" for v in runs.max_scale_error],
        "test acc (wd)": runs.test_acc_wd, "test acc (exp)": runs.test_acc_exp,
    })
    return percent_columns(table.reset_index(drop=True), "test rows classified differently", "test acc (wd)",
                           "test acc (exp)")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; differences in scientific notation, shares in %."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, float) and ("difference" in key or "error" in key):
            text = f"{value:.2g}"
        elif isinstance(value, float) and "share" in key:
            text = format_percent(value, 1)
        else:
            text = format_number(value)
        rows.append({"quantity": key, "value": text})
    return rows


def verdict(context: dict) -> str:
    """The finding in one or two sentences, from the per-unit table: each precision against its control."""
    runs: pd.DataFrame = context["runs"]
    parts, all_within = [], True
    for precision in ("float64", "float32"):
        part = runs[runs.precision == precision]
        if not len(part):
            continue
        worst = float(max(part.max_diff_train.max(), part.max_diff_test.max()))
        control = float(part.max_diff_control.max())
        within = int(part.within_float_error.sum())
        if within == len(part):
            text = f"in {precision} by at most {worst:.2g} (control {control:.2g})"
        else:
            all_within = False
            text = (f"in {precision} by up to {worst:.2g}, more than {WITHIN} times the control ({control:.2g}) in "
                    f"{len(part) - within} of {len(part)} units")
        disagree = float(part.max_disagree_test.max())
        if disagree > 0:
            text += f", classifying up to {format_percent(disagree, 1)} of test rows differently"
        parts.append(text)
    lead = ("The weight-decay run and its exponential-learning-rate twin computed the same function up to float "
            "error: their softmax outputs on the training and test rows differed " if all_within else
            "The softmax outputs of the weight-decay run and its exponential-learning-rate twin differed ")
    return (lead + "; ".join(parts) + ". The control is the weight-decay run against its copy rescaled by 3, the "
            f"same function in exact arithmetic. The exp-lr run's weights grew {float(runs.final_scale.max()):.4g}-fold.")


def report_context(cfg: dict, data: dict, trajectory: pd.DataFrame, runs: pd.DataFrame, summary: dict,
                   invariance: dict) -> dict:
    """The template variables of ``dynamics_exp_lr.html.j2`` for a finished study."""
    models = list(dict.fromkeys(runs.model))
    precision = "float64" if (runs.precision == "float64").any() else "float32"
    context = dict(
        title=f"Weight decay or an exponential learning rate: {', '.join(models)} on {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        runs=runs,
        runs_table=runs_table(runs),
        invariance=[{"model": m, "largest relative change of the outputs when the weights are scaled": f"{v:.2g}"}
                    for m, v in invariance.items()],
        difference_png=difference_figure(trajectory),
        curves=[(m, curves_figures(trajectory, m, precision)) for m in models],
        norms_png=norms_figure(trajectory, precision),
        lr_png=lr_figure(trajectory),
        precision=precision,
    )
    context["verdict"] = verdict(context)
    return context
