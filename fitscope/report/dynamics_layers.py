"""Figures and tables of the layer-robustness study: which layers are critical and which robust.

Each function takes the study's tables (``cells``: one row per network,
model, layer and measurement; ``layers``: one row per network and layer, means
over the models; ``training``: accuracies per epoch) and returns a data URI or
rows for ``dynamics_layers.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_number, format_percent, percent_columns

#: summary keys whose values are errors, shown as percentages
_PERCENT_WORDS = ("error",)


def heatmap_figure(cells: pd.DataFrame, net: str, *, vmax: float) -> str | None:
    """Test error (mean over the models) of one network: layer x checkpoint epoch, plus a re-randomisation column.

    Rows: layers, input at the top. Columns: the checkpoint epoch each layer was
    re-initialised to (alone), then, apart, the re-randomised layer. Each cell
    shows its error in %; the trained network's error is in the title.
    """
    part = cells[cells.net == net]
    if part.empty:
        return None
    re_ = part[part.kind == "reinit"].groupby(["index", "layer", "epoch"]).error.mean().unstack("epoch")
    re_ = re_.sort_index(level="index")
    epochs = [int(e) for e in re_.columns]
    layers = [name for _, name in re_.index]
    grid = re_.to_numpy(float)
    rr = part[part.kind == "rerandom"].groupby("index").error.mean().reindex([i for i, _ in re_.index])
    has_rr = rr.notna().any()
    trained = float(part.trained.mean())
    from matplotlib import colormaps

    cmap = colormaps["magma_r"]
    n_cols = len(epochs) + (1 if has_rr else 0)
    width = min(8.5, max(5.6, 2.4 + 0.72 * n_cols))
    height = 1.5 + 0.45 * len(layers)
    fig = new_figure(width, height)
    ratios = [len(epochs), 1] if has_rr else [len(epochs)]
    axes = fig.subplots(1, len(ratios), gridspec_kw=dict(width_ratios=ratios), squeeze=False)[0]
    image = axes[0].imshow(grid, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    panels = [(axes[0], grid, [str(e) for e in epochs])]
    if has_rr:
        column = rr.to_numpy(float)[:, None]
        axes[1].imshow(column, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
        panels.append((axes[1], column, ["rand."]))
    for ax, values, labels in panels:
        ax.set_xticks(range(len(labels)), labels=labels)
        ax.set_yticks(range(len(layers)), labels=layers if ax is axes[0] else [""] * len(layers))
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=SMALL_FONT,
                        color="white" if v > 0.55 * vmax else "black")
        ax.tick_params(length=0)
    axes[0].set_xlabel("re-initialised to epoch")
    if has_rr:
        axes[1].tick_params(left=False)
    axes[0].set_title(f"{net}: test error (%), trained {format_percent(trained, 1)}", fontsize=SMALL_FONT + 1,
                      loc="left")
    bar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.02)
    percent_axis(bar.ax.yaxis, 0)
    return figure_to_data_uri(fig)


def distance_figure(layers: pd.DataFrame) -> str | None:
    """How far each layer moved in training (relative to its initial weights) against how much resetting it hurts.

    One point per network and layer: x the relative distance
    ``||theta(trained) - theta(0)|| / ||theta(0)||``, y the rise in test error
    when the layer is re-initialised to its initial weights.
    """
    if layers.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    markers = ["o", "s", "^", "D", "v"]
    for (net, part), marker in zip(layers.groupby("net", sort=False), markers * 4):
        ax.plot(part.distance, part.rise, marker=marker, ls="none", ms=6, alpha=0.85, label=net)
        first = part.sort_values("index").iloc[0]
        ax.annotate(str(first.layer), (first.distance, first.rise), xytext=(4, 3), textcoords="offset points",
                    fontsize=SMALL_FONT)
    ax.set_xlim(left=0)
    percent_axis(ax.yaxis, 0)
    ax.set(xlabel="relative distance from initial weights", ylabel="rise in test error when reset",
           title="Movement in training vs criticality")
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def training_figure(training: pd.DataFrame) -> str | None:
    """Test accuracy against epoch per network (mean over the models)."""
    if training.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    for net, part in training.groupby("net", sort=False):
        mean = part.groupby("epoch")[["train_acc", "test_acc"]].mean()
        line, = ax.plot(mean.index, mean.test_acc, lw=1.6, label=f"{net} test")
        ax.plot(mean.index, mean.train_acc, lw=1.0, ls="--", color=line.get_color(), label=f"{net} train")
    percent_axis(ax.yaxis, 0)
    ax.set(xlabel="epoch", ylabel="accuracy", title="Training (dashed: training rows)")
    ax.legend(fontsize=SMALL_FONT, loc="lower right")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def layers_table(layers: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table as shown: errors in %, the distance moved, critical or robust."""
    table = layers[["net", "layer", "parameters", "trained", "reinit_first", "rise", "rerandom", "distance",
                    "critical"]].copy()
    table["critical"] = np.where(table.critical, "critical", "robust")
    table = table.rename(columns={"trained": "trained error", "reinit_first": "reset to first checkpoint",
                                  "rise": "rise", "rerandom": "re-randomised", "distance": "distance moved",
                                  "critical": "verdict"})
    return percent_columns(table.reset_index(drop=True), "trained error", "reset to first checkpoint", "rise",
                           "re-randomised")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; errors in %."""
    rows = []
    for key, value in summary.items():
        percent = any(word in key for word in _PERCENT_WORDS) and isinstance(value, float)
        rows.append({"quantity": key, "value": format_percent(value, 1) if percent else format_number(value)})
    return rows


def verdict(context: dict) -> str:
    """The study in a sentence or two: which layers were critical and which robust, per network."""
    layers: pd.DataFrame = context["layers"]
    first_epoch = context["first_epoch"]
    reset = "its initial weights" if first_epoch == 0 else f"its weights at epoch {first_epoch}"
    parts = []
    for net, part in layers.groupby("net", sort=False):
        part = part.sort_values("index")
        first, later = part.iloc[0], part.iloc[1:]
        critical = part.layer[part.critical].tolist()
        text = (f"In {net} (trained test error {format_percent(float(first.trained), 1)}), resetting the first "
                f"layer ({first.layer}) to {reset} gave {format_percent(float(first.reinit_first), 1)}")
        if len(later):
            worst = later.loc[later.rise.idxmax()]
            text += (f", while the worst of the {len(later)} later layers ({worst.layer}) gave "
                     f"{format_percent(float(worst.reinit_first), 1)}")
        if not critical:
            text += f": all {len(part)} layers robust"
        elif len(critical) == len(part):
            text += f": all {len(part)} layers critical"
        else:
            text += f": {len(critical)} of {len(part)} layers critical ({', '.join(critical)}), the others robust"
        parts.append(text)
    out = ". ".join(parts) + "."
    both = layers[layers.rerandom.notna()]
    if len(both):
        worse = int((both.rerandom > both.reinit_first).sum())
        out += (f" Re-randomising a layer (a fresh draw instead of its own initial weights) gave a higher error "
                f"than re-initialising it for {worse} of {len(both)} layers.")
    return out


def report_context(cfg: dict, data: dict, cells: pd.DataFrame, layers: pd.DataFrame, training: pd.DataFrame,
                   summary: dict) -> dict:
    """The template variables of ``dynamics_layers.html.j2`` for a finished study."""
    vmax = float(np.nanmax([cells.error.max(), 0.1]))
    nets = list(dict.fromkeys(layers.net))
    context = dict(
        title=f"Are all layers created equal? {', '.join(nets)} on {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        layers=layers,
        layers_table=layers_table(layers),
        first_epoch=int(cfg["checkpoints"][0]),
        heatmaps=[dict(net=net, png=heatmap_figure(cells, net, vmax=vmax)) for net in nets],
        distance_png=distance_figure(layers),
        training_png=training_figure(training),
    )
    context["verdict"] = verdict(context)
    return context
