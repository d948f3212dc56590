"""Figures and tables of the data audit (memorization, influence, C-scores, label issues).

Each function takes the audit's per-example table (``examples``: one row per
training example), its high-influence pairs or the dataset, and returns a data
URI or a DataFrame for the template; nothing here trains or reads files.
Examples are drawn as images (``(C, H, W)`` inputs), line plots (``(C, L)``
signals) or feature bar plots (vectors), one small PNG per example, with the
labels and scores as HTML text under it (a gallery that wraps to any width).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import MIN_FONT_PT, PANEL_WIDTH, SMALL_FONT, draw_input, figure_to_data_uri, new_figure
from fitscope.report.html import format_number, format_percent, percent_columns

SHOWN = 16  # examples per gallery
PAIRS_SHOWN = 8


def _limits(data) -> tuple[float, float]:
    """One y range for every drawn example, so that feature values compare across panels."""
    low, high = float(np.min(data.x_train)), float(np.max(data.x_train))
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


TILE_WIDTH = 1.0  # inches of one image tile (110 px): 8 tiles to a line of the page, 3 on a phone


def _tile_size(data) -> tuple[float, float]:
    """``(width, height)`` in inches of one drawn example: images keep their height/width ratio."""
    if data.kind == "image":
        height, width = data.input_shape[-2:]
        return TILE_WIDTH, TILE_WIDTH * height / width
    return 2.2, 1.5


def _class_name(classes, label) -> str:
    return str(classes[int(label)]) if 0 <= int(label) < len(classes) else str(label)


def _score_text(score: str, value: float, percent: bool) -> str:
    name = score.replace("_", " ")
    if not np.isfinite(value):
        return f"{name} \u2014"
    return f"{name} {format_percent(value)}" if percent else f"{name} {value:.2f}"


def gallery_figure(data, examples: pd.DataFrame, indices, score: str, *, columns: int | None = None,
                   percent: bool = False) -> list[dict] | None:
    """The training examples ``indices`` as gallery tiles: each drawn alone, captioned with its labels and ``score``.

    Returns a list of tiles for ``figure()`` in a template (``uri``: the
    example as a PNG data URI; ``lines``: "#index given label", "true label"
    when the truth is known, the score; ``flag``: a flipped label), or None
    when ``indices`` is empty. The tiles wrap to the page width (8 to a line
    on a desktop, 3 on a phone); ``columns`` is accepted for older callers and
    ignored. ``percent`` writes the score as a percentage.
    """
    del columns
    indices = [int(i) for i in indices]
    if not indices:
        return None
    kind = data.kind
    has_truth = "true_label" in examples.columns
    width, height = _tile_size(data)
    limits = None if kind == "image" else _limits(data)
    tiles = []
    for i in indices:
        row = examples.iloc[i]
        fig = new_figure(width, height)
        draw_input(fig.subplots(), data.x_train[i], kind, limits)
        lines = [f"#{i} given {_class_name(data.classes, row['label'])}"]
        flag = False
        if has_truth:
            flag = bool(row["corrupted"])
            lines.append(f"true {_class_name(data.classes, row['true_label'])}")
        lines.append(_score_text(score, float(row[score]), percent))
        tiles.append({"uri": figure_to_data_uri(fig), "lines": lines, "flag": flag})
    return tiles


def pairs_figure(data, pairs: pd.DataFrame, labels: np.ndarray) -> list[dict] | None:
    """The most influential (train, test) pairs as tiles: train example | test example, captioned with infl."""
    top = pairs.head(PAIRS_SHOWN)
    if not len(top):
        return None
    width, height = _tile_size(data)
    limits = None if data.kind == "image" else _limits(data)
    tiles = []
    for pair in top.itertuples(index=False):
        i, j = int(pair.train_index), int(pair.test_index)
        fig = new_figure(2 * width + 0.1, height)
        ax_train, ax_test = fig.subplots(1, 2)
        draw_input(ax_train, data.x_train[i], data.kind, limits)
        draw_input(ax_test, data.x_test[j], data.kind, limits)
        lines = [f"train #{i} ({_class_name(data.classes, labels[i])}) | test #{j} "
                 f"({_class_name(data.classes, data.y_test[j])})", f"infl {pair.infl:.2f}"]
        tiles.append({"uri": figure_to_data_uri(fig), "lines": lines, "flag": False})
    return tiles


def histograms_figure(examples: pd.DataFrame) -> list[str]:
    """Histograms of memorization and of the holdout C-score, one panel each (clean and flipped labels apart)."""
    groups = [("all examples", np.ones(len(examples), bool))]
    if "corrupted" in examples.columns:
        flipped = examples["corrupted"].to_numpy(bool)
        groups = [("clean labels", ~flipped), ("flipped labels", flipped)]
    panels = []
    for column, title in (("mem", "Memorization"), ("cscore", "Holdout C-score")):
        fig = new_figure(PANEL_WIDTH, 3.3)
        ax = fig.subplots()
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
        ax.legend(fontsize=SMALL_FONT)
        ax.grid(alpha=0.3)
        panels.append(figure_to_data_uri(fig))
    return panels


def roc_figure(roc: dict) -> list[str] | None:
    """ROC curves of label-issue detection, one per score: the whole curve and its low false-positive end."""
    if not roc:
        return None
    panels = []
    for fpr_max, title in ((1.0, "Label-issue detection"), (0.05, "False positive rate <= 5%")):
        fig = new_figure(PANEL_WIDTH, 3.8)
        ax = fig.subplots()
        for name, (fpr, tpr) in roc.items():
            ax.plot(fpr, tpr, label=name, drawstyle="steps-post")
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, fpr_max),
               ylim=(0, 1.01))
        ax.grid(alpha=0.3)
        if fpr_max == 1.0:
            ax.legend(fontsize=MIN_FONT_PT, loc="lower right")
        panels.append(figure_to_data_uri(fig))
    return panels


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
    return percent_columns(pd.DataFrame(rows), "precision at k", "recall at k")


_PERCENT_WORDS = ("accuracy", "precision", "recall", "TPR")


def summary_rows(summary: dict) -> list[dict]:
    """Headline numbers as ``quantity``/``value`` rows: accuracies, precisions, recalls and TPRs in %.

    Each value is formatted on its own (counts, fractions and seconds share
    the column); a correlation (``rho``) or an AUC stays a number.
    """
    rows = []
    for key, value in summary.items():
        percent = (any(word in key for word in _PERCENT_WORDS) and "rho" not in key and "AUC" not in key
                   and isinstance(value, (float, np.floating)))
        rows.append({"quantity": key, "value": format_percent(value, trim=False) if percent else format_number(value)})
    return rows


def _rows_text(indices: list[int]) -> str:
    """``[12, 80, 7]`` -> ``"12, 80 and 7"``."""
    words = [str(i) for i in indices]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def suspect_count(examples: pd.DataFrame) -> int | None:
    """How many training labels look wrong: cleanlab's flagged set, else the out-of-fold confidence below 50%."""
    if "cleanlab_issue" in examples.columns:
        return int(examples["cleanlab_issue"].sum())
    if "oof_confidence" in examples.columns:
        return int((examples["oof_confidence"].to_numpy(float) < 0.5).sum())
    return None


def verdict(context: dict) -> str | None:
    """The audit in one sentence: how many labels look wrong and which rows are the most likely.

    Reads ``n_suspect`` (see :func:`suspect_count`), ``mislabeled_indices``
    (highest label-issue score first), ``data.n_train`` and, with injected
    noise, ``n_flipped`` and the summary's label-issue AUROC.
    """
    top = list(context.get("mislabeled_indices") or [])[:5]
    n_train = int(context["data"]["n_train"])
    n_suspect = context.get("n_suspect")
    see = "(see \u201cMost likely mislabeled\u201d)"
    where = f"the {len(top)} most likely are rows {_rows_text(top)} {see}" if top else ""
    if n_suspect is None:
        text = f"The training labels most likely to be wrong are rows {_rows_text(top)}" if top else None
    elif n_suspect == 0:
        text = f"None of the {n_train:,} training labels looks clearly wrong"
        if top:
            text += f"; the most suspicious are rows {_rows_text(top)} {see}"
    else:
        text = (f"About {n_suspect:,} of {n_train:,} training labels ({format_percent(n_suspect / n_train)}) "
                f"look wrong" + (f"; {where}" if where else ""))
    if text is None:
        return None
    auroc = (context.get("summary") or {}).get("label-issue AUROC")
    if context.get("has_truth") and context.get("n_flipped"):
        text += f"; {context['n_flipped']:,} labels were flipped on purpose here"
        if auroc is not None and np.isfinite(auroc):
            text += f", and the label-issue score ranks them with AUROC {format_number(auroc)}"
    return text + "."


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
    mislabeled = _top(examples, "label_issue", ascending=False)
    context = dict(
        title=f"Data audit: {cfg.model} on {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind),
        has_truth=has_truth,
        n_flipped=int(examples["corrupted"].sum()) if has_truth else 0,
        summary=summary,
        # formatted one by one: counts, accuracies and seconds share the column
        summary_table=summary_rows(summary),
        other_ratios=[r for r in cfg.cscore_ratios if r != cfg.ratio],
        mem_in_label_score=outcome.mem_in_label_score,
        hidden_in_label_score="hidden_density" in getattr(outcome, "label_issue_signals", ()),
        memorized_png=gallery_figure(data, examples, _top(examples, "mem", ascending=False), "mem"),
        atypical_png=gallery_figure(data, examples, _top(examples, "cscore", ascending=True), "cscore"),
        mislabeled_png=gallery_figure(data, examples, mislabeled, "label_issue"),
        mislabeled_indices=mislabeled,
        n_suspect=suspect_count(examples),
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
    context["verdict"] = verdict(context)
    return context
