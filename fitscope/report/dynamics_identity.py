"""Figures and tables of the identity-or-constant study: what nets trained on one example do to new inputs.

Each function takes the study's tables (``nets``: one row per network and
input set; ``losses``: one row per network and recorded step) or the outputs
kept for display, and returns a data URI or rows for
``dynamics_identity.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.dynamics import FORM_THRESHOLD
from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, figure_to_data_uri, new_figure
from fitscope.report.html import format_number, percent_columns

#: one colour per architecture
_COLORS = {"cnn": "tab:blue", "fc": "tab:orange"}
_NAMES = {"cnn": "CNN", "fc": "FC", "test": "test digits", "noise": "noise images"}


def _depth_axis(ax, depths) -> None:
    """A log depth axis with one labelled tick per depth used."""
    from matplotlib.ticker import FixedLocator, NullLocator

    depths = sorted(set(int(d) for d in depths))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(depths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    ax.set_xlim(min(depths) / 1.25, max(depths) * 1.25)


def correlation_figure(nets: pd.DataFrame, inputs: str = "test") -> str | None:
    """Mean correlation of the output with the new input (solid) and with the training example (dashed) against
    depth, one colour per architecture; dotted grey: the correlation of the inputs themselves with the example."""
    part = nets[nets.inputs == inputs]
    if part.empty:
        return None
    fig = new_figure(PANEL_WIDTH, 4.3)
    ax = fig.subplots()
    for arch in ("cnn", "fc"):
        rows = part[part.arch == arch].sort_values("depth")
        if rows.empty:
            continue
        color, name = _COLORS[arch], _NAMES[arch]
        ax.plot(rows.depth, rows.identity, color=color, lw=1.8, marker="o", ms=4, label=f"{name} vs input")
        ax.plot(rows.depth, rows.constant, color=color, lw=1.8, ls="--", marker="s", ms=4,
                label=f"{name} vs example")
    ax.axhline(float(part.baseline.mean()), color="gray", ls=":", lw=1.2, label="input vs example")
    _depth_axis(ax, part.depth)
    ax.set_ylim(min(-0.05, float(np.nanmin(part[["identity", "constant"]].to_numpy())) - 0.05), 1.05)
    ax.set(xlabel="depth (weight layers)", ylabel="correlation of the output",
           title=f"New inputs: {_NAMES[inputs]} (mean of {int(part.n_inputs.iloc[0])})")
    fig.legend(fontsize=SMALL_FONT, loc="outside lower center", ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def loss_figure(losses: pd.DataFrame) -> str | None:
    """Training loss (mean squared error on the one example) against step, per net (log scale)."""
    if losses.empty:
        return None
    from matplotlib import colormaps

    fig = new_figure(PANEL_WIDTH, 3.5)
    ax = fig.subplots()
    depths = sorted(losses.depth.unique())
    cmap = {"cnn": colormaps["Blues"], "fc": colormaps["Oranges"]}
    for arch in ("cnn", "fc"):
        for i, depth in enumerate(depths):
            part = losses[(losses.arch == arch) & (losses.depth == depth)].sort_values("step")
            if part.empty:
                continue
            shade = 0.35 + 0.6 * i / max(len(depths) - 1, 1)
            ax.plot(part.step, part.loss, color=cmap[arch](shade), lw=1.3,
                    label=f"{_NAMES[arch]} {int(depth)}")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss", title="Fitting the one example")
    ax.legend(fontsize=SMALL_FONT - 1, ncol=2, loc="upper right")
    ax.grid(alpha=0.3, which="both")
    return figure_to_data_uri(fig)


def output_grid(arch: str, shown: dict, shown_inputs: np.ndarray, labels: list[str], depths: list[int]) -> str | None:
    """A grid of images: one row per shown input (the training example first), its input in the first column, then
    the output of the ``arch`` net of each depth. Images only (2-D inputs); each panel on its own grey scale."""
    keys = [(d, f"{arch}-d{int(d):02d}") for d in depths if f"{arch}-d{int(d):02d}" in shown]
    if not keys or shown_inputs is None or shown_inputs.ndim != 4:
        return None
    rows, cols = len(shown_inputs), len(keys) + 1
    cell = 0.8
    fig = new_figure(max(3.0, 1.4 + cell * cols), 0.35 + cell * rows)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        panels = [shown_inputs[r]] + [shown[key][r] for _, key in keys]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img[0], cmap="gray_r", interpolation="nearest", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("input" if c == 0 else f"depth {int(keys[c - 1][0])}", fontsize=SMALL_FONT)
        axes[r, 0].set_ylabel(labels[r] if r < len(labels) else "", fontsize=SMALL_FONT, rotation=0, ha="right",
                              va="center")
    fig.suptitle(f"{_NAMES[arch]} nets: outputs on new inputs", fontsize=SMALL_FONT + 1)
    return figure_to_data_uri(fig)


def nets_table(nets: pd.DataFrame) -> pd.DataFrame:
    """The per-net table as shown: the two mean correlations, the share of inputs closer to the identity, the form."""
    table = nets[["arch", "depth", "inputs", "identity", "constant", "baseline", "identity_wins", "form", "steps",
                  "final_loss", "parameters"]].copy()
    table["arch"] = table.arch.map(_NAMES)
    table["inputs"] = table.inputs.map(_NAMES)
    table = table.rename(columns={"identity": "corr. with input", "constant": "corr. with training example",
                                  "baseline": "input with training example",
                                  "identity_wins": "inputs closer to identity", "final_loss": "final loss"})
    return percent_columns(table.reset_index(drop=True), "inputs closer to identity")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows."""
    return [{"quantity": key, "value": format_number(value) if isinstance(value, float) else str(value)}
            for key, value in summary.items()]


def _depths(values) -> str:
    values = [str(int(v)) for v in values]
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def verdict(context: dict) -> str:
    """The study in one or two sentences: which depths of each architecture compute the identity, which the constant.

    Read from the test-digit rows of the ``nets`` table.
    """
    nets: pd.DataFrame = context["nets"]
    test = nets[nets.inputs == "test"]
    parts = []
    for arch in ("cnn", "fc"):
        rows = test[test.arch == arch].sort_values("depth")
        if rows.empty:
            continue
        ident, const = rows[rows.form == "identity"], rows[rows.form == "constant"]
        neither = rows[rows.form == "neither"]
        bits = []
        if len(ident):
            bits.append(f"the identity at depth {_depths(ident.depth)}")
        if len(const):
            bits.append(f"the constant (their training example) at depth {_depths(const.depth)}")
        if len(neither):
            bits.append(f"neither at depth {_depths(neither.depth)}")
        parts.append(f"{_NAMES[arch]} nets computed " + "; ".join(bits) + " on new digits")
    if not parts:
        return "No nets were measured on test digits."
    baseline = float(test.baseline.mean())
    return ("Trained to reproduce one example: " + ". ".join(parts) + f" (a net computes a function when its "
            f"outputs correlate at least {FORM_THRESHOLD:g} with that function's on average and more than with the other; the new "
            f"digits themselves correlate {baseline:.2f} with the training example).")


def report_context(cfg: dict, data: dict, nets: pd.DataFrame, losses: pd.DataFrame, shown: dict,
                   shown_inputs: np.ndarray, summary: dict) -> dict:
    """The template variables of ``dynamics_identity.html.j2`` for a finished study."""
    depths = sorted(int(d) for d in nets.depth.unique())
    context = dict(
        title=f"Identity or constant: nets trained on one example of {data['name']}",
        cfg=cfg,
        data=data,
        summary=dict(summary),
        summary_table=summary_rows(summary),
        nets=nets,
        nets_table=nets_table(nets),
        test_png=correlation_figure(nets, "test"),
        noise_png=correlation_figure(nets, "noise"),
        loss_png=loss_figure(losses),
        grids=[(arch, _NAMES[arch], output_grid(arch, shown, shown_inputs, data["shown_labels"], depths))
               for arch in cfg["architectures"]],
    )
    context["verdict"] = verdict(context)
    return context
