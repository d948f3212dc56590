"""Figures, tables and the verdict of the ``fitscope train`` report (one model, privately if asked).

Each function takes the run's tables (``models``: one row per model; ``curves``:
one row per model and epoch) or its ``result.json`` record and returns a data
URI, a DataFrame, a sentence or the template context; nothing here trains or
reads files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fitscope.report.html import format_percent
from fitscope.report.figures import figure_to_data_uri, new_figure

_MECHANISMS = {"none": "no privacy mechanism", "label-dp": "label DP (LP-MST)", "dp-sgd": "DP-SGD (Opacus)",
               "instahide": "InstaHide"}


def curve_figure(curves: pd.DataFrame) -> str:
    """Train and test accuracy after every epoch, one line per model (test solid, train dashed)."""
    fig = new_figure(6.5, 3.8)
    ax = fig.subplots()
    several = curves["model"].nunique() > 1
    for i, (model, group) in enumerate(curves.groupby("model", sort=True)):
        color = f"C{i % 10}"
        suffix = f" (model {model})" if several else ""
        ax.plot(group["epoch"], group["test_acc"], color=color, lw=1.6, label=f"test{suffix}")
        if group["train_acc"].notna().any():
            ax.plot(group["epoch"], group["train_acc"], color=color, lw=1.0, ls="--", label=f"train{suffix}")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Training curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, ncol=2 if several else 1)
    return figure_to_data_uri(fig)


def models_table(models: pd.DataFrame) -> pd.DataFrame:
    """One row per model with readable columns (an accountant epsilon of inf, i.e. none, shown as "none")."""
    columns = {"model": "model", "seed": "seed", "test_acc": "test acc", "spent_eps": "epsilon spent",
               "canary_correct": "canaries guessed", "canary_accuracy": "canary guess acc",
               "eps_lower_bound": "eps lower bound (95%)"}
    table = models[[c for c in columns if c in models]].rename(columns=columns).copy()
    table["seed"] = table["seed"].astype(str)  # an identifier: no thousands separators
    table["epsilon spent"] = ["none" if not math.isfinite(v) else round(float(v), 4) for v in table["epsilon spent"]]
    table.attrs["percent"] = [c for c in ("test acc", "canary guess acc") if c in table]
    return table


def privacy_rows(cfg, result: dict, claim: str) -> list[dict]:
    """The privacy claim as rows of (what, value): the guarantee, epsilon, delta, the accountant's numbers."""
    rows = [dict(what="mechanism", value=_MECHANISMS.get(cfg.mechanism, cfg.mechanism)),
            dict(what="guarantee claimed", value=claim)]
    if cfg.mechanism in ("label-dp", "dp-sgd"):
        rows.append(dict(what="epsilon claimed", value=f"{cfg.eps:g}"))
    if cfg.mechanism == "dp-sgd":
        p = result["privacy"]
        rows += [dict(what="delta", value=f"{cfg.delta:g}"),
                 dict(what="accountant", value=str(p["accountant"])),
                 dict(what="epsilon spent (accountant)", value=f"{p['epsilon']:.4g}"),
                 dict(what="noise multiplier", value=f"{p['noise_multiplier']:.4g}"),
                 dict(what="clipping norm", value=f"{p['max_grad_norm']:g}"),
                 dict(what="sampling rate", value=f"{p['sample_rate']:.4g}"),
                 dict(what="steps", value=str(p["steps"]))]
    if cfg.mechanism == "label-dp":
        rows.append(dict(what="stages", value=str(cfg.stages)))
        rows.append(dict(what="test accuracy after each stage (first model)",
                         value=", ".join(format_percent(a) for a in result.get("stage_test_acc", []))))
        if "keep_rate" in result:  # only with --reveal-private-stats: read from the true labels
            rows.append(dict(what="labels kept by randomized response, per stage (first model; from the true "
                                  "labels, outside the claim)",
                             value=", ".join(format_percent(a) for a in result["keep_rate"])))
    if cfg.mechanism == "instahide":
        rows.append(dict(what="images mixed per encoding (k)", value=str(cfg.k)))
        rows.append(dict(what="sign mask", value="yes" if cfg.sign_mask else "no"))
    return rows


def private_stats_note(cfg, result: dict) -> str | None:
    """One sentence on the statistics of the private labels (label DP, DP-SGD), or None for other mechanisms.

    They read the true training labels that the guarantee protects, so they are outside the claim and
    shown only with ``--reveal-private-stats`` (``result["private_stats_shown"]``).
    """
    if cfg.mechanism not in ("label-dp", "dp-sgd"):
        return None
    what = ("the share of labels randomized response kept" if cfg.mechanism == "label-dp"
            else "the training accuracy")
    if result.get("private_stats_shown"):
        return (f"Statistics of the private labels are shown ({what}, asked for with --reveal-private-stats): "
                "they read the true training labels, so they are not covered by the privacy claim.")
    return (f"Statistics of the private labels are not shown ({what} reads the true training labels, so it is "
            "not covered by the privacy claim); run with --reveal-private-stats to see them.")


def verdict(context: dict) -> str:
    """One sentence: the test accuracy reached under the claimed guarantee, and the canary bound if audited."""
    result, cfg = context["result"], context["cfg"]
    acc = result["test_acc"]
    models = result.get("models", 1)
    what = (f"a mean test accuracy of {format_percent(acc)} over {models} models" if models > 1
            else f"test accuracy {format_percent(acc)}")
    claim = context["claim"]
    text = (f"{context['model']} on {context['data']['name']} reached {what} "
            f"{'with no privacy guarantee' if claim.startswith('none') else 'under ' + claim}")
    audit = result.get("canary_audit")
    if audit:
        bound = audit["eps_lower_bound"]
        text += (f"; the canary audit ({audit['canaries']} canaries) bounds epsilon from below by "
                 f"{bound:.2f} at 95% confidence")
        if cfg["eps"] is not None and bound is not None and bound > cfg["eps"]:
            text += ", above the claim: the claim does not hold"
    return text + "."


def report_context(cfg, data, models: pd.DataFrame, curves: pd.DataFrame, result: dict, *, claim: str) -> dict:
    """The template variables of ``train.html.j2`` for a finished run."""
    context = dict(
        title=f"Training {cfg.model} on {data.name}: {_MECHANISMS.get(cfg.mechanism, cfg.mechanism)}",
        cfg=cfg.model_dump(),
        model=cfg.model,
        data=dict(name=data.name, n_train=len(data.y_train), n_test=len(data.y_test), n_classes=data.n_classes,
                  input_shape="x".join(map(str, data.input_shape))),
        claim=claim,
        result=result,
        privacy_rows=privacy_rows(cfg, result, claim),
        private_stats_note=private_stats_note(cfg, result),
        models_table=models_table(models),
        curve_png=curve_figure(curves),
        final_test_acc=float(np.mean(models["test_acc"])),
    )
    context["verdict"] = verdict(context)
    return context
