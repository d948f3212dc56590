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
from fitscope.train.sklearn_oof import AUTO_ALL_FAMILIES_ENTRIES, AUTO_ALL_FAMILIES_FEATURES, OOF_FAMILIES

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
    """The most influential (train, test) pairs as tiles: train example | test example, captioned with infl.

    With the columns ``infl_lo``/``infl_hi`` and ``fdr`` (q-value) the caption adds the 95%
    interval and the pair's FDR; tables without them (older runs) show infl alone.
    """
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
                 f"({_class_name(data.classes, data.y_test[j])})", _pair_text(pair)]
        tiles.append({"uri": figure_to_data_uri(fig), "lines": lines, "flag": False})
    return tiles


def _pair_text(pair) -> str:
    """``infl 0.52 [0.31, 0.70], FDR 2%`` (the interval and FDR only where the table has them)."""
    text = f"infl {pair.infl:.2f}"
    lo, hi = getattr(pair, "infl_lo", None), getattr(pair, "infl_hi", None)
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.2f}, {hi:.2f}]"
    fdr = getattr(pair, "fdr", None)
    if fdr is not None and np.isfinite(fdr):
        text += f", FDR {format_percent(fdr)}"
    return text


MEM_BARS = 30  # most memorized examples drawn with their intervals


def memorization_interval_figure(examples: pd.DataFrame) -> list[str] | None:
    """Memorization with its 95% intervals: every example in rank order (a band), and the most memorized (bars).

    Needs ``mem_lo`` and ``mem_hi`` (None for an older table without them). Flipped labels
    (``corrupted``) are drawn in red in the second panel.
    """
    if not {"mem", "mem_lo", "mem_hi"} <= set(examples.columns):
        return None
    mem = examples["mem"].to_numpy(float)
    ok = np.flatnonzero(np.isfinite(mem))
    if not ok.size:
        return None
    lo, hi = examples["mem_lo"].to_numpy(float), examples["mem_hi"].to_numpy(float)
    order = ok[np.argsort(-mem[ok], kind="stable")]
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    rank = np.arange(1, order.size + 1)
    ax.fill_between(rank, lo[order], hi[order], step="mid", alpha=0.35, lw=0, label="95% interval")
    ax.plot(rank, mem[order], drawstyle="steps-mid", lw=1.2, label="mem")
    ax.axhline(0, color="gray", lw=0.8, ls="--")
    ax.set(title="Every example, by memorization", xlabel="rank", ylabel="memorization", ylim=(-1.02, 1.02))
    ax.legend(fontsize=SMALL_FONT, loc="upper right")
    ax.grid(alpha=0.3)
    panels = [figure_to_data_uri(fig)]

    top = order[:MEM_BARS]
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    x = np.arange(top.size)
    flipped = (examples["corrupted"].to_numpy(bool)[top] if "corrupted" in examples.columns
               else np.zeros(top.size, bool))
    for mask, color, name in ((~flipped, "C0", "clean label"), (flipped, "C3", "flipped label")):
        if mask.any():
            ax.errorbar(x[mask], mem[top][mask], yerr=[mem[top][mask] - lo[top][mask], hi[top][mask] - mem[top][mask]],
                        fmt="o", ms=3, color=color, elinewidth=1, capsize=2,
                        label=name if "corrupted" in examples.columns else None)
    ax.axhline(0, color="gray", lw=0.8, ls="--")
    ax.set(title=f"The {top.size} most memorized", xlabel="rank", ylabel="memorization", ylim=(-1.02, 1.02))
    if "corrupted" in examples.columns:
        ax.legend(fontsize=SMALL_FONT, loc="lower left")
    ax.grid(alpha=0.3)
    panels.append(figure_to_data_uri(fig))
    return panels


def _interval_text(lo: np.ndarray, hi: np.ndarray) -> list[str]:
    """``[0.63, 0.97]`` per row (a dash where an end is missing)."""
    return [f"[{a:.2f}, {b:.2f}]" if np.isfinite(a) and np.isfinite(b) else "\u2014" for a, b in zip(lo, hi)]


def memorization_table(examples: pd.DataFrame, indices, classes) -> pd.DataFrame | None:
    """The examples ``indices`` with memorization, its 95% interval and the label-issue score, for the report."""
    indices = [int(i) for i in indices]
    if not indices or "mem_lo" not in examples.columns:
        return None
    rows = examples.iloc[indices]
    table = pd.DataFrame({"example": [f"#{i}" for i in rows["index"]],
                          "given": [_class_name(classes, v) for v in rows["label"]]})
    if "true_label" in rows.columns:
        table["true"] = [_class_name(classes, v) for v in rows["true_label"]]
    table["mem"] = [f"{v:.2f}" for v in rows["mem"].to_numpy(float)]
    table["95% interval"] = _interval_text(rows["mem_lo"].to_numpy(float), rows["mem_hi"].to_numpy(float))
    if "label_issue" in rows.columns:
        table["label issue"] = [f"{v:.2f}" for v in rows["label_issue"].to_numpy(float)]
    return table


def pairs_table(pairs: pd.DataFrame, count: int = 20) -> pd.DataFrame:
    """The top ``count`` pairs for the report: indices, influence with its interval, memorization and FDR (in %)."""
    top = pairs.head(count)
    table = pd.DataFrame({"train": [f"#{i}" for i in top["train_index"]], "test": [f"#{j}" for j in top["test_index"]],
                          "infl": [f"{v:.2f}" for v in top["infl"].to_numpy(float)]})
    if {"infl_lo", "infl_hi"} <= set(top.columns):
        table["95% interval"] = _interval_text(top["infl_lo"].to_numpy(float), top["infl_hi"].to_numpy(float))
    if "mem" in top.columns:
        table["mem of train"] = [f"{v:.2f}" for v in top["mem"].to_numpy(float)]
    if "fdr" in top.columns:
        table["FDR"] = top["fdr"].to_numpy(float)
        return percent_columns(table, "FDR")
    return table


def influence_text(fdr: dict | None, n_models: int) -> list[str]:
    """Sentences on the influence pairs' false-discovery rate (from ``influence.parquet``'s metadata), or []."""
    if not fdr or fdr.get("fdr_target") is None:
        return []
    target = format_percent(fdr["fdr_target"])
    candidates, kept = int(fdr.get("n_candidates") or 0), int(fdr.get("n_kept") or 0)
    null = fdr.get("null_candidates")
    perms = fdr.get("permutations")
    lines = []
    if candidates:
        chance = f"about {format_number(round(null))}" if null is not None else "an unknown number"
        lines.append(f"The fixed thresholds pass {candidates:,} pairs; {chance} of them would pass by chance "
                     f"(the same {n_models} models with their memberships shuffled, {perms} times), an estimated "
                     f"false-discovery rate of {format_percent(fdr.get('candidates_fdr'))}.")
    else:
        lines.append("No pair passes the fixed thresholds.")
    if kept:
        chance = kept * (fdr.get("fdr") or 0.0)
        chance_text = ("fewer than one of them is expected to be chance" if chance < 1
                       else f"about {format_number(round(chance))} of them may still be chance")
        lines.append(f"{kept:,} pair{'s are' if kept > 1 else ' is'} kept at FDR ≤ {target}: those whose 95% "
                     f"lower bound of influence is at least {fdr.get('fdr_threshold'):.2f} (estimated FDR of the "
                     f"kept list {format_percent(fdr.get('fdr'))}: {chance_text}).")
    elif candidates:
        lines.append(f"None of them is kept: with {n_models} models no pair stands out from chance at FDR "
                     f"≤ {target}.")
    needed = fdr.get("models_for_target")
    if needed is not None and candidates:
        if needed <= n_models:
            lines.append(f"The fixed-threshold list is already within {target} FDR with these {n_models} models.")
        else:
            lines.append(f"For the fixed-threshold list itself to reach {target} FDR, about {needed:,} models would "
                         f"be needed (a projection: it assumes the real pairs keep their influence while the chance "
                         f"influences shrink like 1/√K).")
    elif candidates:
        lines.append("No number of models can be projected for the fixed-threshold list: these pairs show no "
                     "excess over chance to build on.")
    return lines


#: One sentence per score, for a practitioner (the template's "What the scores mean").
SCORE_SENTENCES = [
    ("memorization (mem)", "How much more often the models get a training example right when they trained on it "
     "than when they did not: near 1, the example is learned only by seeing it (a rare case or a wrong label); "
     "near 0, the rest of the data teaches it."),
    ("influence (infl)", "How much more often the models get a test example right when a given training example "
     "was in their training set: a large value means that one training example is what makes the test "
     "example come out right (often a near duplicate)."),
    ("95% interval (lo, hi)", "The range that holds the true value for 95 of 100 such estimates; it is wide when "
     "few models held (or left out) the example, and it never shrinks to a point just because every model "
     "agreed (Wilson intervals per rate, Newcombe's for their difference). mem_se and infl_se are half its "
     "width divided by 1.96."),
    ("FDR (q-value)", "Of the pairs at least as strong as this one, the share expected to be chance, estimated by "
     "recomputing every pair with the models' memberships shuffled (which removes any real influence)."),
    ("holdout C-score", "How often models that never saw an example still predict its given label, averaged over "
     "training-set sizes: low means atypical or mislabeled."),
    ("learning speed", "How early in training the models get the example right (mean correctness over epochs): "
     "slow examples are atypical or mislabeled."),
    ("kernel density and relative distance", "How crowded an example's neighbourhood is with examples of its "
     "own given label (in pixel space and in a trained model's hidden space), against other labels: low means "
     "it sits among other classes."),
    ("out-of-fold confidence", "The probability that models which did not train on an example give its "
     "given label (the networks' and, where fitted, scikit-learn models' cross-validated probabilities, mixed "
     "with the weights that predict the given labels best; oof_confidence_<family> holds each alone)."),
    ("label-issue score", "A weighted rank average of the signals above, from 0 to 1: the higher, the more "
     "likely the given label is wrong."),
]


#: How the report names the label-issue score's signals (:data:`fitscope.estimators.DEFAULT_WEIGHTS`' keys).
SIGNAL_NAMES = {"self_confidence": "out-of-fold self-confidence", "normalized_margin": "out-of-fold normalized margin",
                "learning_speed": "learning speed", "cscore": "holdout C-score", "mem": "memorization",
                "margin": "mean training margin", "hidden_density": "hidden-space kernel density"}
_FAMILY_NAMES = {"network": "the audit's networks", "logistic": "logistic regression",
                 "boosting": "gradient boosting", "mlp": "scikit-learn's MLP"}


def label_score_text(weights: dict, family_weights: dict, folds: int | None) -> str:
    """What the label-issue score is made of, in two sentences: its signals with their weights, then the families."""
    parts = [f"{SIGNAL_NAMES.get(k, k)} (weight {w:g})"
             for k, w in sorted(weights.items(), key=lambda kw: -kw[1])]
    text = ("The label-issue score is a weighted average of each example's rank in "
            + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)) + ".")
    if family_weights:
        mixed = ", ".join(f"{_FAMILY_NAMES.get(f, f)} {w:.2f}" for f, w in family_weights.items())
        text += (f" Its out-of-fold probabilities mix the networks' (models whose subset left the example out) "
                 f"with {folds}-fold cross-validated scikit-learn models, weighted by how well each predicts the "
                 f"given labels: {mixed}.")
    else:
        text += " Its out-of-fold probabilities are the networks' alone (models whose subset left the example out)."
    return text


def left_out(context: dict) -> list[str]:
    """Sentences naming each signal the audit left out (or could not measure) and why."""
    lines = []
    summary = context.get("summary") or {}
    cfg = context.get("cfg") or {}
    families = [f for f in (context.get("family_weights") or {}) if f != "network"]
    missing = [f for f in OOF_FAMILIES if f not in families]
    if missing and cfg.get("oof_families") == "auto":
        names = " and ".join(_FAMILY_NAMES[f] for f in missing)
        lines.append(f"{names[0].upper() + names[1:]} {'was' if len(missing) == 1 else 'were'} not fitted: "
                     f"--oof-families auto fits every family only up to {AUTO_ALL_FAMILIES_FEATURES} input features "
                     f"and {AUTO_ALL_FAMILIES_ENTRIES:,} input entries (rows x features), and these inputs have "
                     f"{context.get('input_features', 0):,} features, {context.get('input_entries', 0):,} entries "
                     f"(gradient boosting takes minutes on wide inputs); pass --oof-families "
                     f"{','.join(OOF_FAMILIES)} to fit them anyway.")
    elif cfg.get("oof_families") == []:
        lines.append("No scikit-learn family was fitted (--oof-families none): the out-of-fold probabilities are "
                     "the networks' alone.")
    if cfg.get("fast"):
        lines.append("The C-score is not in the label-issue score: the fast audit (--fast) trains no C-score "
                     "models, so its C-score is the held-out accuracy at one subset ratio, another view of the "
                     "out-of-fold probabilities already in the score.")
    fit = summary.get("subset train accuracy")
    if not context.get("mem_in_label_score"):
        if fit is not None and fit < 0.99:
            lines.append(f"Memorization is not in the label-issue score: the subset models do not fit their own "
                         f"subsets (mean subset accuracy {format_percent(fit)}, below 99%), so a mislabeled example "
                         f"that no model fits gets memorization near 0 and would look clean. Its estimates, "
                         f"intervals and the pairs' memorization filter are still shown, but read them with that "
                         f"in mind.")
        else:
            lines.append("Memorization is shown but has weight 0 in the label-issue score: the rule fixed in advance "
                         "on data sets this project does not report (bench/label_issue_rule.py) gave it none; "
                         "learning speed carries the same evidence (a wrong label is learned late, if at all).")
    if not context.get("hidden_in_label_score"):
        lines.append("The hidden-space kernel density is computed and shown (Spearman table, examples.parquet) "
                     "but has weight 0 in the label-issue score: it did not improve detection in the benchmark.")
    fdr = context.get("influence_fdr") or {}
    if fdr.get("fdr_target") is not None and fdr.get("n_candidates") and not fdr.get("n_kept"):
        lines.append(f"No influence pair is reported: all {int(fdr['n_candidates']):,} pairs passing the fixed "
                     f"thresholds are within what chance gives with {context.get('n_models')} models.")
    undefined = context.get("n_mem_undefined") or 0
    if undefined:
        lines.append(f"{undefined:,} training examples have no memorization estimate: they were in every subset "
                     f"or in none.")
    return lines


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


_PERCENT_WORDS = ("accuracy", "precision", "recall", "TPR", "FDR")


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
    memorized = _top(examples, "mem", ascending=False)
    influence_fdr = getattr(outcome, "influence_fdr", None) or outcome.influence.attrs.get("influence") or {}
    n_models = int(influence_fdr.get("n_models") or cfg.models)
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
        family_weights=getattr(outcome, "family_weights", {}),
        input_entries=int(len(data.y_train) * np.prod(data.input_shape)),
        input_features=int(np.prod(data.input_shape)),
        label_score_text=label_score_text(getattr(outcome, "label_issue_weights", {}) or {},
                                          getattr(outcome, "family_weights", {}) or {},
                                          getattr(cfg, "oof_folds", None)),
        memorized_png=gallery_figure(data, examples, memorized, "mem"),
        atypical_png=gallery_figure(data, examples, _top(examples, "cscore", ascending=True), "cscore"),
        mislabeled_png=gallery_figure(data, examples, mislabeled, "label_issue"),
        mislabeled_indices=mislabeled,
        n_suspect=suspect_count(examples),
        pairs_png=pairs_figure(data, outcome.influence, labels),
        n_pairs=len(outcome.influence),
        pairs_table=pairs_table(outcome.influence),
        influence_fdr=influence_fdr,
        influence_lines=influence_text(influence_fdr, n_models),
        n_models=n_models,
        mem_interval_png=memorization_interval_figure(examples),
        memorized_table=memorization_table(examples, memorized[:10], data.classes),
        n_mem_undefined=int(examples["mem"].isna().sum()),
        score_sentences=SCORE_SENTENCES,
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
    context["left_out"] = left_out(context)
    return context
