"""Figures and tables of the saliency study: map grids per method and randomization depth, similarity curves.

Each function takes the study's tables (``similarity``: mean and spread per
data set, test, depth, method and metric; ``models``; ``depths``) or its maps
(``{method: (depths, rows, *input_shape)}``) and returns a data URI or rows for
``saliency.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import MAX_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure
from fitscope.report.html import format_number, percent_columns

#: how tables and figures name the methods
METHOD_NAMES = {"gradient": "gradient", "gradient_x_input": "gradient x input",
                "integrated_gradients": "integrated gradients", "smoothgrad": "SmoothGrad", "cgi": "CGI"}
#: how tables and figures name the metrics
METRIC_NAMES = {"spearman_abs": "Spearman (|map|)", "spearman": "Spearman (signed)", "ssim": "SSIM",
                "top_k": "top-k overlap"}
#: rows of the explained set drawn in the map grids
GRID_ROWS = 2
_COLORS = {"gradient": "tab:blue", "gradient_x_input": "tab:orange", "integrated_gradients": "tab:green",
           "smoothgrad": "tab:purple", "cgi": "tab:red"}


def _depth_label(depth: int, layers: list[str]) -> str:
    return "trained" if depth == 0 else layers[depth - 1]


def map_grid(x: np.ndarray, stacks: dict[str, np.ndarray], layers: list[str], row: int, *,
             random_labels: dict[str, np.ndarray] | None = None) -> str:
    """One row's maps: one line per method, one column per cascade depth (and the random-label model).

    Images are drawn with nearest interpolation (8 x 8 pixels stay pixels);
    a signal's map is a heat strip of its positions, beside the signal. Each
    map is shown as its absolute value scaled by its own largest value (white
    0, dark 1), as Adebayo et al. show them; the column title names the layer
    re-drawn last (every layer above it is re-drawn too). Every cell is drawn
    on one axes (one image per cell at its place), which keeps the figure fast
    to make.
    """
    from matplotlib.patches import Rectangle

    methods = list(stacks)
    depths = len(next(iter(stacks.values())))
    titles = ["input"] + [_depth_label(d, layers) for d in range(depths)] + (["random\nlabels"] if random_labels
                                                                             else [])
    image = x.ndim == 4  # (rows, channels, height, width); a signal is (rows, channels, length)
    width, height, gap = 1.0, (1.0 if image else 0.4), 0.15
    columns = len(titles)
    fig = new_figure(min(MAX_WIDTH, 1.7 + 0.8 * columns), 0.7 + (0.8 if image else 0.42) * len(methods))
    ax = fig.subplots()
    for i, method in enumerate(methods):
        top = i * (height + gap)
        shown = [stacks[method][d, row] for d in range(depths)]
        if random_labels:
            shown.append(random_labels[method][0, row])
        for j in range(columns):
            left = j * (width + gap)
            extent = (left, left + width, top + height, top)
            if j == 0 and image:
                ax.imshow(x[row][0], cmap="gray_r", interpolation="nearest", extent=extent)
            elif j == 0:
                signal = x[row][0].astype(float)
                low, high = float(signal.min()), float(signal.max())
                scaled = (signal - low) / (high - low) if high > low else np.full_like(signal, 0.5)
                ax.plot(np.linspace(left, left + width, len(signal)), top + height * (0.95 - 0.9 * scaled),
                        color="black", lw=0.7)
            else:
                magnitude = np.abs(shown[j - 1])
                largest = float(magnitude.max())
                scaled = magnitude / largest if largest > 0 else magnitude
                ax.imshow(scaled[0] if image else scaled.reshape(1, -1), cmap="Reds", vmin=0, vmax=1,
                          interpolation="nearest", extent=extent)
            ax.add_patch(Rectangle((left, top), width, height, fill=False, lw=0.6, edgecolor="black"))
    ax.set_xlim(-gap / 2, columns * (width + gap) - gap / 2)
    ax.set_ylim(len(methods) * (height + gap) - gap / 2, -gap / 2)
    ax.set_aspect("equal" if image else "auto")
    ax.xaxis.tick_top()
    ax.set_xticks([j * (width + gap) + width / 2 for j in range(columns)], titles, fontsize=SMALL_FONT)
    ax.set_yticks([i * (height + gap) + height / 2 for i in range(len(methods))],
                  [METHOD_NAMES[m] for m in methods], fontsize=SMALL_FONT)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return figure_to_data_uri(fig)


def similarity_curves(similarity: pd.DataFrame, data: str) -> str:
    """Similarity against cascade depth, one panel per metric, one line per method (mean; band: quartiles).

    The x axis names the layer re-drawn last (from the output layer down); the
    random-label model's mean is a marker at the right.
    """
    part = similarity[similarity.data == data]
    metrics = list(METRIC_NAMES)
    fig = new_figure(MAX_WIDTH, 6.4)
    axes = fig.subplots(2, 2, sharex=True)
    cascade = part[part.test == "cascade"]
    depth_labels = (cascade[["depth", "layer"]].drop_duplicates().sort_values("depth"))
    last = int(depth_labels.depth.max())
    for ax, metric in zip(axes.flat, metrics):
        for method in dict.fromkeys(cascade.method):
            line = cascade[(cascade.method == method) & (cascade.metric == metric)].sort_values("depth")
            color = _COLORS.get(method)
            ax.plot(line.depth, line["mean"], marker="o", ms=3, lw=1.6, color=color, label=METHOD_NAMES[method])
            ax.fill_between(line.depth, line.q25, line.q75, color=color, alpha=0.12, lw=0)
            rl = part[(part.test == "random labels") & (part.method == method) & (part.metric == metric)]
            if len(rl):
                ax.plot([last + 1], rl["mean"], marker="s", ms=5, color=color, ls="none")
        ax.axhline(0.0, color="gray", lw=0.6)
        ax.set_title(METRIC_NAMES[metric], fontsize=SMALL_FONT + 1)
        ax.grid(alpha=0.3)
        ax.set_ylim(min(-0.25, ax.get_ylim()[0]), 1.05)
    ticks = list(depth_labels.depth)
    names = ["trained" if d == 0 else lay for d, lay in zip(depth_labels.depth, depth_labels.layer)]
    if (part.test == "random labels").any():
        ticks.append(last + 1)
        names.append("rand. labels")
    for ax in axes[1]:
        ax.set_xticks(ticks, names, rotation=45, ha="right")
        ax.set_xlabel("layers re-drawn down to (cascade from the top)")
    for ax in axes[:, 0]:
        ax.set_ylabel("similarity to the trained map")
    handles, entries = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, entries, loc="outside lower center", ncol=len(entries), fontsize=SMALL_FONT)
    fig.suptitle(f"{data}: similarity of each method's maps to the trained model's", fontsize=SMALL_FONT + 2)
    return figure_to_data_uri(fig)


def finding_table(similarity: pd.DataFrame) -> pd.DataFrame:
    """Every method's mean (and std) similarity after full randomization and after random labels, per data set."""
    rows = []
    for (data, method), part in similarity.groupby(["data", "method"], sort=False):
        cascade = part[part.test == "cascade"]
        last = cascade[cascade.depth == cascade.depth.max()]
        row = {"data": data, "method": METHOD_NAMES[method]}
        for metric in METRIC_NAMES:
            hit = last[last.metric == metric]
            row[f"{METRIC_NAMES[metric]}, all layers re-drawn"] = (
                f"{hit['mean'].iloc[0]:.2f} ± {hit['std'].iloc[0]:.2f}" if len(hit) else "")
        rl = part[(part.test == "random labels") & (part.metric == "spearman_abs")]
        if len(rl):
            row["Spearman (|map|), random labels"] = f"{rl['mean'].iloc[0]:.2f} ± {rl['std'].iloc[0]:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def depth_table(similarity: pd.DataFrame, data: str, metric: str = "spearman_abs") -> pd.DataFrame:
    """Mean ``metric`` per cascade depth (rows) and method (columns) for one data set."""
    part = similarity[(similarity.data == data) & (similarity.metric == metric)]
    part = part.assign(step=[("trained" if d == 0 else f"down to {lay}") if t == "cascade" else "random labels"
                             for t, d, lay in zip(part.test, part.depth, part.layer)],
                       order=[d if t == "cascade" else 10_000 for t, d in zip(part.test, part.depth)])
    table = part.pivot_table(index=["order", "step"], columns="method", values="mean", sort=False)
    table = table.sort_index(level=0).reset_index(level=0, drop=True).reset_index()
    table.columns.name = None
    methods = [m for m in METHOD_NAMES if m in table.columns]
    return table[["step", *methods]].rename(columns={"step": "layers re-drawn", **METHOD_NAMES}).round(3)


def models_table(models: pd.DataFrame, depths: pd.DataFrame) -> pd.DataFrame:
    """One row per trained model: labels, epochs, training and test accuracy, accuracy after full randomization."""
    table = models.copy()
    last = depths.loc[depths.groupby("data").depth.idxmax()].set_index("data").accuracy
    table["rows' accuracy, all layers re-drawn"] = [last.get(d) if lab == "true" else None
                                                    for d, lab in zip(table.data, table.labels)]
    table = table.rename(columns={"train_acc": "train acc (on its labels)", "test_acc": "test acc"})
    return percent_columns(table, "train acc (on its labels)", "test acc", "rows' accuracy, all layers re-drawn")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows."""
    return [{"quantity": k, "value": ("yes" if v else "no") if isinstance(v, bool) else format_number(v)}
            for k, v in summary.items()]


def verdict(context: dict) -> str:
    """The finding in one sentence per data set: CGI's and gradient x input's similarity after full randomization."""
    parts = []
    full = context["full"]
    for data in dict.fromkeys(full.data):
        part = full[full.data == data].set_index("method")["mean"]
        if "cgi" not in part or "gradient_x_input" not in part:
            continue
        cgi, gxi = float(part["cgi"]), float(part["gradient_x_input"])
        holds = cgi <= context["bound"] and cgi < gxi
        kept = "stayed similar" if gxi >= 0.5 else ("stayed more similar" if gxi > cgi else "changed as much")
        parts.append(f"on {data}, CGI's maps {'changed strongly' if holds else 'did not change as much as expected'}"
                     f" when every layer was re-drawn (mean Spearman similarity of the absolute maps {cgi:.2f}"
                     f"{', at most' if cgi <= context['bound'] else ', above'} {context['bound']}) while gradient x "
                     f"input's {kept} ({gxi:.2f})")
    if not parts:
        return "The study ran without CGI or gradient x input, so the finding is not measured."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _full(similarity: pd.DataFrame) -> pd.DataFrame:
    """The headline metric's rows at each data set's last cascade depth (every layer re-drawn)."""
    cascade = similarity[(similarity.test == "cascade") & (similarity.metric == "spearman_abs")]
    return cascade[cascade.depth == cascade.groupby("data").depth.transform("max")]


def report_context(cfg: dict, data: list[dict], similarity: pd.DataFrame, models: pd.DataFrame,
                   depths: pd.DataFrame, maps: dict, summary: dict, *, bound: float) -> dict:
    """The template variables of ``saliency.html.j2`` for a finished study (``bound``: the finding's CGI bound)."""
    sets = []
    for info in data:
        name = info["name"]
        entry = maps[name]
        grids = [map_grid(entry["x"], entry["cascade"], entry["layers"], row,
                          random_labels=entry.get("random labels"))
                 for row in range(min(GRID_ROWS, len(entry["x"])))]
        sets.append(dict(info=info, model=entry["model"], layers=entry["layers"], grids=grids,
                         labels=[int(v) for v in entry["y"][:len(grids)]],
                         curves=similarity_curves(similarity, name), depth_table=depth_table(similarity, name)))
    context = dict(
        title="Saliency maps and their sanity checks: " + ", ".join(d["name"] for d in data),
        cfg=cfg,
        data=data,
        sets=sets,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        finding=finding_table(similarity),
        models_table=models_table(models, depths),
        full=_full(similarity),
        bound=bound,
        method_names=METHOD_NAMES,
    )
    context["verdict"] = verdict(context)
    context["passing"] = passing_methods(context["full"], bound)
    random = models[models.labels == "random"]
    context["random_fit"] = [dict(data=d, train_acc=float(a)) for d, a in zip(random.data, random.train_acc)]
    return context


def passing_methods(full: pd.DataFrame, bound: float) -> list[dict]:
    """Per data set, the methods whose mean Spearman similarity after full randomization is at most ``bound``
    (they pass the model-randomization check by that measure) and those above it."""
    out = []
    for data in dict.fromkeys(full.data):
        part = full[full.data == data]
        low = part[part["mean"] <= bound].method
        out.append(dict(data=data, low=[METHOD_NAMES[m] for m in low],
                        high=[METHOD_NAMES[m] for m in part.method if m not in set(low)]))
    return out
