"""Figures and tables of the federated study (McMahan et al. 2017, figure 2 and table 2).

Each function takes the study's tables (``results``: one row per setting and
round; ``settings``: one row per setting) and returns a data URI or a
DataFrame for the template; nothing here trains or reads files.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import MaxNLocator

from fitscope.report.figures import MIN_FONT_PT, PANEL_WIDTH, figure_to_data_uri, new_figure, percent_axis
from fitscope.report.html import format_percent, percent_columns

_PARTITION_NAMES = {"iid": "IID", "noniid": "non-IID"}
_STYLE = {"fedavg": dict(color="tab:blue", lw=1.6), "fedsgd": dict(color="tab:red", lw=1.2, ls="--")}


def accuracy_figure(results: pd.DataFrame, settings: pd.DataFrame, target: float | None) -> list[str]:
    """Test accuracy of the global model vs communication rounds, one panel per partition, one line per algorithm.

    The target accuracy is a dotted line; a marker shows where each setting first reached it.
    Each partition is its own image, so the panels stack on a narrow screen.
    """
    partitions = list(dict.fromkeys(results["partition"]))
    panels = []
    for partition in partitions:
        fig = new_figure(PANEL_WIDTH, 3.6)
        ax = fig.subplots()
        part = results[results.partition == partition]
        for algorithm, group in part.groupby("algorithm", sort=False):
            row = settings[(settings.algorithm == algorithm) & (settings.partition == partition)].iloc[0]
            label = f"{'FedAvg' if algorithm == 'fedavg' else 'FedSGD'} (E={row['E']}, B={row['B']}, lr={row['lr']:g})"
            ax.plot(group["round"], group["accuracy"], label=label, **_STYLE.get(algorithm, {}))
            if not pd.isna(row["rounds_to_target"]):
                hit = int(row["rounds_to_target"])
                ax.plot([hit], group.loc[group["round"] == hit, "accuracy"], "o", ms=5,
                        color=_STYLE.get(algorithm, {}).get("color", "black"))
        if target is not None:
            ax.axhline(target, color="gray", lw=0.8, ls=":", label=f"target {format_percent(target)}")
        ax.set(title="non-IID (label shards)" if partition == "noniid" else _PARTITION_NAMES.get(partition, partition),
               xlabel="communication rounds", ylabel="test accuracy", ylim=(0, 1.0))
        percent_axis(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=MIN_FONT_PT)
        panels.append(figure_to_data_uri(fig))
    return panels


def rounds_table(settings: pd.DataFrame) -> pd.DataFrame:
    """The table of rounds to target per setting, as McMahan et al.'s table 2 (not reached: a dash)."""
    table = settings[["algorithm", "partition", "E", "B", "lr", "rounds_to_target", "rounds run", "final accuracy",
                      "seconds per round (median)", "start-up seconds"]].copy()
    table["rounds_to_target"] = table["rounds_to_target"].astype("Int64")  # whole rounds; NA: not reached
    table["algorithm"] = table["algorithm"].map({"fedavg": "FedAvg", "fedsgd": "FedSGD"}).fillna(table["algorithm"])
    table["partition"] = table["partition"].map(_PARTITION_NAMES).fillna(table["partition"])
    table = table.rename(columns={"rounds_to_target": "rounds to target", "seconds per round (median)": "s / round",
                                  "start-up seconds": "start-up s"})
    return percent_columns(table, "final accuracy")


def speedup_table(speedups: pd.DataFrame) -> pd.DataFrame:
    """Per partition: rounds FedAvg and FedSGD needed, and FedSGD's rounds over FedAvg's."""
    table = speedups.copy()
    for column in ("fedavg rounds", "fedsgd rounds"):
        table[column] = table[column].astype("Int64")
    table["partition"] = table["partition"].map(_PARTITION_NAMES).fillna(table["partition"])
    return table.rename(columns={"speedup": "FedSGD rounds / FedAvg rounds"})


_NAMES = {"iid": "IID", "noniid": "non-IID"}


def _rounds(value) -> str | None:
    return None if value is None or pd.isna(value) else f"{int(value)}"


def verdict(context: dict) -> str | None:
    """The study in one sentence: rounds to the target accuracy with FedAvg against FedSGD, per partition.

    Reads ``speedups`` (records with ``partition``, ``fedavg rounds``,
    ``fedsgd rounds``, ``speedup``), ``cfg.target`` and ``cfg.rounds`` of the
    federated report context.
    """
    cfg = context.get("cfg") or {}
    target, budget = cfg.get("target"), cfg.get("rounds")
    within = f" within {budget} rounds" if budget else ""
    parts = []
    for s in context.get("speedups") or ():
        avg, sgd = _rounds(s.get("fedavg rounds")), _rounds(s.get("fedsgd rounds"))
        name = _NAMES.get(s.get("partition"), s.get("partition"))
        if not avg and not sgd:
            parts.append(f"on {name} clients neither FedAvg nor FedSGD got there{within}")
            continue
        avg_text = f"FedAvg took {avg} rounds" if avg else f"FedAvg did not get there{within}"
        if sgd:
            speedup = s.get("speedup")
            times = f" ({float(speedup):.1f}x as many)" if avg and speedup is not None and not pd.isna(speedup) else ""
            sgd_text = f"FedSGD {sgd}{times}"
        else:
            sgd_text = f"FedSGD did not get there{within}"
        parts.append(f"on {name} clients {avg_text} and {sgd_text}")
    if not parts:
        return None
    goal = f"{format_percent(target)} test accuracy" if target is not None else "the target accuracy"
    return f"To reach {goal}, " + "; ".join(parts) + "."


def report_context(cfg, data, outcome) -> dict:
    """The template variables of ``federated.html.j2`` for a finished study."""
    settings = outcome.settings
    context = dict(
        title=f"Federated training: {cfg.model} on {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, n_train=len(data.y_train), n_test=len(data.y_test), n_classes=data.n_classes,
                  input_shape="x".join(map(str, data.input_shape))),
        per_client=len(data.y_train) / cfg.clients,
        m=int(settings["clients per round"].iloc[0]),
        n_shards=cfg.clients * cfg.shards_per_client,
        shard_size=len(data.y_train) / (cfg.clients * cfg.shards_per_client),
        accuracy_png=accuracy_figure(outcome.results, settings, cfg.target),
        rounds_table=rounds_table(settings),
        speedup_table=speedup_table(outcome.speedups),
        speedups=outcome.speedups.to_dict("records"),
        reused_units=outcome.reused_units,
        trained_units=outcome.trained_units,
    )
    context["verdict"] = verdict(context)
    return context
