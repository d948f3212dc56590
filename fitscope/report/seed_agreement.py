"""Figures and tables of the seed-agreement study: how much models differing only in their seed disagree.

Each function takes the study's tables (``examples``: one row per test example,
``models``: one row per model, ``pairs``: one row per pair of models) or the
dataset and returns a data URI, tiles or rows for ``seed_agreement.html.j2``;
nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, draw_input, figure_to_data_uri, new_figure
from fitscope.report.html import format_number, format_percent, percent_columns

SHOWN = 16  # unstable examples in the gallery and the table
TILE_WIDTH = 1.0  # inches of one image tile (110 px), as in the audit's galleries

# Summary keys shown as percentages (shares of examples, of pairs, accuracies).
_PERCENT_WORDS = ("accuracy", "disagreement", "examples with")


def disagreement_histogram(examples: pd.DataFrame, n_models: int) -> str:
    """Histogram (log counts) of the per-example share of models that disagree with their majority.

    The share takes the values ``j / N``; every possible value gets its own bar.
    """
    values = examples["disagreement"].to_numpy(float)
    steps = np.rint(values * n_models).astype(int)
    top = max(int(steps.max()) if steps.size else 0, 1)
    counts = np.bincount(steps, minlength=top + 1)
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    ax.bar(np.arange(top + 1) / n_models, counts, width=0.8 / n_models, color="tab:blue")
    ax.set_yscale("log")
    ax.set(xlabel="share of models disagreeing with the majority", ylabel="test examples",
           title=f"Per-example disagreement ({n_models} models)")
    if top <= 10:  # few bars: one tick under each
        ax.set_xticks(np.arange(top + 1) / n_models)
    ax.xaxis.set_major_formatter(lambda v, _: format_percent(v, 0))
    ax.grid(alpha=0.3, axis="y")
    return figure_to_data_uri(fig)


def accuracy_figure(models: pd.DataFrame, majority_accuracy: float) -> str:
    """Test accuracy of every model (one dot per seed), their mean, and the majority vote's accuracy."""
    acc = models["test_acc"].to_numpy(float)
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    ax.plot(np.arange(len(acc)), acc, "o", color="tab:blue", label="one model")
    ax.axhline(acc.mean(), color="tab:blue", ls="--", lw=1, label=f"mean {format_percent(acc.mean())}")
    ax.axhline(majority_accuracy, color="tab:orange", lw=1.2,
               label=f"majority vote {format_percent(majority_accuracy)}")
    ax.set(xlabel="model (seed index)", ylabel="test accuracy", title="Test accuracy per model")
    ax.yaxis.set_major_formatter(lambda v, _: format_percent(v, 1))
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def most_unstable(examples: pd.DataFrame, count: int = SHOWN) -> list[int]:
    """Rows of the ``count`` test examples with the highest disagreement (ties: higher pairwise, then index)."""
    order = np.lexsort((examples["index"].to_numpy(), -examples["pairwise_disagreement"].to_numpy(float),
                        -examples["disagreement"].to_numpy(float)))
    keep = order[examples["disagreement"].to_numpy(float)[order] > 0]
    return keep[:count].tolist()


def _class_name(classes, label) -> str:
    return str(classes[int(label)]) if 0 <= int(label) < len(classes) else str(label)


def unstable_tiles(data, examples: pd.DataFrame, rows: list[int]) -> list[dict] | None:
    """The test examples ``rows`` as gallery tiles (image data only; None otherwise or when there are none).

    Each tile is the image with its label, the votes ("class:models") and the
    share of models disagreeing with the majority; a tile whose majority is
    wrong is flagged.
    """
    if data.kind != "image" or not rows:
        return None
    height, width = data.input_shape[-2:]
    tiles = []
    for i in rows:
        row = examples.iloc[i]
        x = data.x_test[int(row["index"])]
        fig = new_figure(TILE_WIDTH, TILE_WIDTH * height / width)
        draw_input(fig.subplots(), x, "image")
        lines = [f"#{int(row['index'])} label {_class_name(data.classes, row['label'])}",
                 f"votes {row['votes']}", f"disagree {format_percent(float(row['disagreement']))}"]
        tiles.append({"uri": figure_to_data_uri(fig), "lines": lines, "flag": not bool(row["majority_correct"])})
    return tiles


def unstable_table(data, examples: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """The test examples ``rows`` as a table: label, majority, votes, disagreement, share of models right."""
    table = examples.iloc[rows][["index", "label", "majority", "votes", "disagreement", "pairwise_disagreement",
                                 "correct_fraction"]].copy()
    table["label"] = [_class_name(data.classes, v) for v in table["label"]]
    table["majority"] = [_class_name(data.classes, v) for v in table["majority"]]
    table = table.rename(columns={"pairwise_disagreement": "pairwise", "correct_fraction": "models right"})
    return percent_columns(table.reset_index(drop=True), "disagreement", "pairwise", "models right")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; accuracies and shares in %."""
    rows = []
    for key, value in summary.items():
        percent = any(word in key for word in _PERCENT_WORDS) and not isinstance(value, (int, np.integer))
        rows.append({"quantity": key, "value": format_percent(value, 2, trim=False) if percent
                     else format_number(value)})
    return rows


def verdict(context: dict) -> str:
    """The study in one sentence: how often two seeds disagree, against how much their accuracy varies."""
    s = context["summary"]
    return (f"Two {context['cfg']['model']} models that differ only in their seed disagree on "
            f"{format_percent(s['mean pairwise disagreement'], 2)} of the test examples on average, while their "
            f"test accuracy varies by {format_percent(s['test accuracy std over seeds'], 2)} (standard deviation "
            f"over {s['models']} seeds); {format_percent(s['examples with any disagreement'], 1)} of the test "
            f"examples get more than one answer.")


def report_context(cfg, data, outcome) -> dict:
    """The template variables of ``seed_agreement.html.j2`` for a finished study."""
    examples, models, pairs = outcome.examples, outcome.models, outcome.pairs
    summary = dict(outcome.summary)
    rows = most_unstable(examples)
    top_pairs = pairs.sort_values(["disagreement", "model_a", "model_b"], ascending=[False, True, True]).head(10)
    context = dict(
        title=f"Seed agreement: {cfg.model} on {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape)), kind=data.kind),
        summary=summary,
        summary_table=summary_rows(summary),
        hist_png=disagreement_histogram(examples, len(models)),
        accuracy_png=accuracy_figure(models, summary["majority-vote test accuracy"]),
        unstable_png=unstable_tiles(data, examples, rows),
        unstable_table=unstable_table(data, examples, rows),
        n_unstable=int((examples["distinct"] > 1).sum()),
        models_table=percent_columns(models.astype({"seed": str}), "test_acc", "train_acc"),  # seeds: no 1,000s
        pairs_table=percent_columns(top_pairs.reset_index(drop=True), "disagreement", "accuracy_gap"),
    )
    context["verdict"] = verdict(context)
    return context
