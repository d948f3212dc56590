"""Figures and tables of the data audit (memorization, influence, C-scores, label issues).

Each function takes the audit's per-example table (``examples``: one row per
training example), its high-influence pairs or the dataset, and returns a data
URI or a DataFrame for the template; nothing here trains or reads files.
Examples are drawn as images (``(C, H, W)`` inputs), line plots (``(C, L)``
signals) or feature bar plots (vectors).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import figure_to_data_uri, new_figure
from fitscope.report.html import format_number

SHOWN = 16  # examples per gallery
PAIRS_SHOWN = 8


def _draw(ax, x: np.ndarray, kind: str, limits: tuple[float, float] | None = None) -> None:
    """Draw one input on ``ax``: an image, a signal or a feature bar plot (``limits``: a shared y range)."""
    if kind == "image":
        if x.shape[0] == 3:
            img = np.transpose(x, (1, 2, 0))
            low, high = float(img.min()), float(img.max())
            ax.imshow((img - low) / (high - low) if high > low else np.zeros_like(img), aspect="equal")
        else:
            ax.imshow(x[0], cmap="gray_r", interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    elif kind == "signal":
        for channel in x:
            ax.plot(channel, lw=0.8)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
    else:
        ax.bar(np.arange(x.shape[0]), x, width=0.9, color="tab:blue")
        ax.axhline(0.0, color="gray", lw=0.5)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
    if limits is not None and kind != "image":
        ax.set_ylim(*limits)


def _limits(data) -> tuple[float, float]:
    """One y range for every drawn example, so that feature values compare across panels."""
    low, high = float(np.min(data.x_train)), float(np.max(data.x_train))
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


# Height of one line of a 7-point panel title, and the padding under a title, in inches.
_TITLE_LINE = 0.125
_TITLE_PAD = 0.1


def _panel_size(data, title_lines: int) -> tuple[float, float]:
    """``(width, height)`` in inches of one panel: the drawing at its own aspect plus its title lines.

    Images keep their height/width ratio (an 8x8 digit is drawn square), so the
    figure is as tall as the images and their titles, with no slack that would
    stretch the panels.
    """
    if data.kind == "image":
        height, width = data.input_shape[-2:]
        size = 1.35
        return size, size * height / width + title_lines * _TITLE_LINE + _TITLE_PAD
    return 1.8, 1.8 + title_lines * _TITLE_LINE + _TITLE_PAD


def _class_name(classes, label) -> str:
    return str(classes[int(label)]) if 0 <= int(label) < len(classes) else str(label)


def gallery_figure(data, examples: pd.DataFrame, indices, score: str, *, columns: int = 8) -> str | None:
    """The training examples ``indices`` in a grid, each titled with its given (and true) label and ``score``."""
    indices = [int(i) for i in indices]
    if not indices:
        return None
    rows = (len(indices) + columns - 1) // columns
    kind = data.kind
    has_truth = "true_label" in examples.columns
    width, height = _panel_size(data, 3 if has_truth else 2)
    fig = new_figure(columns * width, rows * height)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    limits = None if kind == "image" else _limits(data)
    for ax, i in zip(axes, indices):
        row = examples.iloc[i]
        _draw(ax, data.x_train[i], kind, limits)
        title = f"#{i} given {_class_name(data.classes, row['label'])}"
        if has_truth:
            wrong = bool(row["corrupted"])
            title += f"\ntrue {_class_name(data.classes, row['true_label'])}"
            if wrong:
                ax.set_title(title + f"\n{score} {row[score]:.2f}", fontsize=7, color="tab:red")
                continue
        ax.set_title(title + f"\n{score} {row[score]:.2f}", fontsize=7)
    for ax in axes[len(indices):]:
        ax.set_axis_off()
    return figure_to_data_uri(fig)


def pairs_figure(data, pairs: pd.DataFrame, labels: np.ndarray) -> str | None:
    """The most influential (train, test) pairs side by side: train example | test example, with infl."""
    top = pairs.head(PAIRS_SHOWN)
    if not len(top):
        return None
    per_row = 4  # pairs per figure row
    rows = (len(top) + per_row - 1) // per_row
    width, height = _panel_size(data, 2)
    fig = new_figure(per_row * 2 * width, rows * height)
    axes = np.atleast_2d(fig.subplots(rows, per_row * 2)).reshape(rows, per_row * 2)
    limits = None if data.kind == "image" else _limits(data)
    for p, pair in enumerate(top.itertuples(index=False)):
        r, c = divmod(p, per_row)
        ax_train, ax_test = axes[r, 2 * c], axes[r, 2 * c + 1]
        i, j = int(pair.train_index), int(pair.test_index)
        _draw(ax_train, data.x_train[i], data.kind, limits)
        _draw(ax_test, data.x_test[j], data.kind, limits)
        ax_train.set_title(f"train #{i} ({_class_name(data.classes, labels[i])})\ninfl {pair.infl:.2f}", fontsize=7)
        ax_test.set_title(f"test #{j} ({_class_name(data.classes, data.y_test[j])})", fontsize=7)
    for ax in axes.ravel()[2 * len(top):]:
        ax.set_axis_off()
    return figure_to_data_uri(fig)


def histograms_figure(examples: pd.DataFrame) -> str:
    """Histograms of memorization and of the holdout C-score (clean and flipped labels apart when known)."""
    fig = new_figure(10, 3.6)
    axes = fig.subplots(1, 2)
    groups = [("all examples", np.ones(len(examples), bool))]
    if "corrupted" in examples.columns:
        flipped = examples["corrupted"].to_numpy(bool)
        groups = [("clean labels", ~flipped), ("flipped labels", flipped)]
    for ax, column, title in ((axes[0], "mem", "Memorization"), (axes[1], "cscore", "Holdout C-score")):
        values = examples[column].to_numpy(float)
        finite = values[np.isfinite(values)]
        low = 0.0 if column == "cscore" else min(-0.5, float(finite.min()) if finite.size else 0.0)
        bins = np.linspace(low, 1.0, 31)
        for name, keep in groups:
            v = values[keep & np.isfinite(values)]
            if v.size:
                ax.hist(v, bins=bins, alpha=0.6, label=f"{name} ({v.size})")
        ax.set(title=title, xlabel=column, ylabel="examples")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def roc_figure(roc: dict) -> str | None:
    """ROC curves of label-issue detection, one per score: the whole curve and its low false-positive end."""
    if not roc:
        return None
    fig = new_figure(9, 4)
    axes = fig.subplots(1, 2)
    for ax, fpr_max, title in ((axes[0], 1.0, "Label-issue detection"), (axes[1], 0.05, "False positive rate <= 5%")):
        for name, (fpr, tpr) in roc.items():
            ax.plot(fpr, tpr, label=name, drawstyle="steps-post")
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, fpr_max),
               ylim=(0, 1.01))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    return figure_to_data_uri(fig)


def comparison_table(detection: pd.DataFrame | None, cleanlab: dict | None) -> pd.DataFrame | None:
    """Detectors side by side: AUROC and precision/recall at k for each ranking, then cleanlab's mask.

    ``find_label_issues`` gives a set, not a ranking: its row has the mask's precision, recall and
    number flagged, and its ranked form (flagged first, by cleanlab's label quality) gives AUROC and
    precision/recall at k.
    """
    if detection is None:
        return None
    rows = [{"detector": r["score"], "AUROC": r["auroc"], "precision at k": r["precision_at_k"],
             "recall at k": r["recall_at_k"], "flagged": r["k"]} for r in detection.to_dict("records")]
    if cleanlab is not None:
        rows.append({"detector": "cleanlab find_label_issues (mask)", "AUROC": float("nan"),
                     "precision at k": cleanlab["precision"], "recall at k": cleanlab["recall"],
                     "flagged": cleanlab["flagged"]})
    return pd.DataFrame(rows)


def _top(examples: pd.DataFrame, column: str, *, ascending: bool, count: int = SHOWN) -> list[int]:
    values = examples[column].to_numpy(float)
    keep = np.flatnonzero(np.isfinite(values))
    order = np.argsort(values[keep] if ascending else -values[keep], kind="stable")
    return keep[order[:count]].tolist()


def report_context(cfg, data, outcome) -> dict:
    """The template variables of ``audit.html.j2`` for a finished audit."""
    examples = outcome.examples
    labels = examples["label"].to_numpy()
    has_truth = "corrupted" in examples.columns
    summary = dict(outcome.summary)
    detection = outcome.detection
    return dict(
        title=f"Data audit: {cfg.model} on {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind),
        has_truth=has_truth,
        n_flipped=int(examples["corrupted"].sum()) if has_truth else 0,
        summary=summary,
        # formatted one by one: counts, accuracies and seconds share the column
        summary_table=[{"quantity": k, "value": format_number(v)} for k, v in summary.items()],
        other_ratios=[r for r in cfg.cscore_ratios if r != cfg.ratio],
        mem_in_label_score=outcome.mem_in_label_score,
        hidden_in_label_score="hidden_density" in getattr(outcome, "label_issue_signals", ()),
        memorized_png=gallery_figure(data, examples, _top(examples, "mem", ascending=False), "mem"),
        atypical_png=gallery_figure(data, examples, _top(examples, "cscore", ascending=True), "cscore"),
        mislabeled_png=gallery_figure(data, examples, _top(examples, "label_issue", ascending=False), "label_issue"),
        pairs_png=pairs_figure(data, outcome.influence, labels),
        n_pairs=len(outcome.influence),
        pairs_table=outcome.influence.head(20),
        hist_png=histograms_figure(examples),
        spearman_table=outcome.spearman,
        detection_table=detection,
        comparison_table=comparison_table(detection, getattr(outcome, "cleanlab", None)),
        cleanlab=getattr(outcome, "cleanlab", None),
        n_cleanlab_flagged=int(examples["cleanlab_issue"].sum()) if "cleanlab_issue" in examples.columns else None,
        roc_png=roc_figure(outcome.roc),
        trained_units=outcome.trained_units,
        reused_units=outcome.reused_units,
    )
