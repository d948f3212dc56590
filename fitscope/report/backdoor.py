"""Figures and tables of the backdoor study: the trigger, the attack, Neural Cleanse's masks and anomaly
indices, and SmoothInv's single-image inversion.

Each function takes the study's tables (``models``: one row per model; ``classes``: per model and class;
``settings``: means over seeds) or the stored arrays and returns a data URI or rows for
``backdoor.html.j2``; nothing here trains or reads files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fitscope.report.figures import PANEL_WIDTH, SMALL_FONT, draw_input, figure_to_data_uri, new_figure
from fitscope.report.html import format_number, format_percent, percent_columns

#: summary keys shown as percentages
_PERCENT_WORDS = ("accuracy", "attack success")


def _name(fraction: float) -> str:
    return "clean model" if fraction == 0 else f"{fraction:.0%} poisoned"


def _draw_positions(ax, values: np.ndarray, kind: str, *, cmap: str = "gray_r", limits=None) -> None:
    """An ``(H, W)`` map as an image, or an ``(L,)`` map as a line (signals)."""
    values = np.asarray(values, float)
    if values.ndim == 2:
        lo, hi = limits if limits is not None else (None, None)
        ax.imshow(values, cmap=cmap, interpolation="nearest", aspect="equal", vmin=lo, vmax=hi)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.plot(values, lw=1.0)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_xticks([])
        ax.tick_params(labelsize=8)


def trigger_figure(examples: np.ndarray, stamped: np.ndarray, mask: np.ndarray, kind: str) -> str:
    """Clean training inputs (top) and the same inputs with the trigger (bottom), and the trigger's mask."""
    n = len(examples)
    fig = new_figure(PANEL_WIDTH * 1.3, 2.9)
    axes = fig.subplots(2, n + 1, squeeze=False)
    for i in range(n):
        draw_input(axes[0, i], examples[i], kind)
        draw_input(axes[1, i], stamped[i], kind)
    axes[0, 0].set_title("clean", fontsize=SMALL_FONT, loc="left")
    axes[1, 0].set_title("with the trigger", fontsize=SMALL_FONT, loc="left")
    _draw_positions(axes[0, n], mask, kind, cmap="Reds", limits=(0, 1))
    axes[0, n].set_title("patch", fontsize=SMALL_FONT)
    axes[1, n].axis("off")
    return figure_to_data_uri(fig)


def attack_figure(models: pd.DataFrame) -> str:
    """Attack success and clean accuracy against the poisoning fraction; the clean models' accuracy dashed."""
    fig = new_figure(PANEL_WIDTH, 3.3)
    ax = fig.subplots()
    poisoned = models[models.kind == "poisoned"].sort_values("fraction")
    clean = models[models.kind == "clean"]
    means = poisoned.groupby("fraction")[["asr", "clean_acc"]].mean()
    ax.scatter(poisoned.fraction, poisoned.asr, color="tab:red", s=14, alpha=0.6)
    ax.plot(means.index, means.asr, color="tab:red", marker="o", lw=1.6, label="attack success")
    ax.scatter(poisoned.fraction, poisoned.clean_acc, color="tab:blue", s=14, alpha=0.6)
    ax.plot(means.index, means.clean_acc, color="tab:blue", marker="s", lw=1.6, label="clean accuracy")
    if len(clean):
        ax.axhline(float(clean.clean_acc.mean()), color="tab:blue", ls="--", lw=1.0,
                   label="clean model's accuracy")
        ax.axhline(float(clean.asr.mean()), color="tab:red", ls=":", lw=1.0, label="trigger on the clean model")
    ax.set_xscale("log")
    ax.set_xticks(sorted(poisoned.fraction.unique()), labels=[f"{f:.0%}" for f in sorted(poisoned.fraction.unique())])
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.05)
    ax.yaxis.set_major_formatter(lambda v, _: format_percent(v, 0))
    ax.set(xlabel="poisoned training rows", ylabel="test rows", title="BadNets: attack success and accuracy")
    ax.legend(fontsize=SMALL_FONT, loc="center right")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def masks_figure(arrays: dict, units: list[str], labels: list[str], target: int, kind: str) -> str | None:
    """Neural Cleanse's reversed triggers (mask x pattern) per class for each model: two rows of five classes per
    model, so that the tiles stay legible on a phone.

    The tile of the target class is framed in red; a class flagged by the anomaly index has its title in red.
    """
    units = [u for u in units if "nc_masks" in arrays.get(u, {})]
    if not units:
        return None
    n_classes = arrays[units[0]]["nc_masks"].shape[0]
    per_row = min(5, n_classes)
    lines = int(np.ceil(n_classes / per_row))
    fig = new_figure(PANEL_WIDTH, 0.45 + 0.95 * lines * len(units))
    axes = fig.subplots(lines * len(units), per_row, squeeze=False)
    for r, unit in enumerate(units):
        a = arrays[unit]
        top = max(float(a["nc_patterns"].max()), 1e-6)
        for c in range(lines * per_row):
            ax = axes[r * lines + c // per_row, c % per_row]
            if c >= n_classes:
                ax.axis("off")
                continue
            mask = a["nc_masks"][c]
            if kind == "image":
                _draw_positions(ax, mask * a["nc_patterns"][c].mean(0), kind, limits=(0, top))
            else:
                _draw_positions(ax, mask, kind, limits=(0, 1))
            flagged = bool(a["flagged"][c])
            ax.set_title(f"{c}: {a['nc_norms'][c]:.1f}", fontsize=8, color="tab:red" if flagged else "black",
                         fontweight="bold" if flagged else "normal", pad=2)
            if c == target:
                for side in ax.spines.values():
                    side.set_edgecolor("tab:red")
                    side.set_linewidth(2)
            if c % per_row == 0:
                ax.set_ylabel(labels[r] if c == 0 else "", fontsize=8)
    fig.suptitle("Reversed trigger per class (class: mask L1 norm)", fontsize=SMALL_FONT)
    return figure_to_data_uri(fig)


def anomaly_figure(classes: pd.DataFrame, units: list[str], labels: list[str], target: int,
                   threshold: float) -> str | None:
    """Anomaly index per class, grouped bars for the models; signed (below zero: the small side, where a backdoor
    shows), with the threshold as a dashed line."""
    part = classes[classes.unit.isin(units) & classes.anomaly_index.notna()]
    if part.empty:
        return None
    units = [u for u in units if u in set(part.unit)]
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    fig = new_figure(PANEL_WIDTH, 3.4)
    ax = fig.subplots()
    width = 0.8 / len(units)
    lowest = highest = 0.0
    for i, (unit, label) in enumerate(zip(units, labels)):
        rows = part[part.unit == unit].sort_values("class")
        median = float(np.median(rows.mask_norm))
        signed = np.clip(np.where(rows.mask_norm < median, -rows.anomaly_index, rows.anomaly_index), -50, 50)
        lowest, highest = min(lowest, float(signed.min())), max(highest, float(signed.max()))
        ax.bar(rows["class"] - 0.4 + width * (i + 0.5), signed, width=width, label=label,
               color=cmap(0.1 + 0.75 * i / max(len(units) - 1, 1)))
    ax.axhline(-threshold, color="tab:red", ls="--", lw=1, label=f"-{threshold:g}: flagged below")
    ax.axhline(0, color="black", lw=0.6)
    ax.axvspan(target - 0.45, target + 0.45, color="tab:red", alpha=0.08)
    ax.set_xticks(sorted(part["class"].unique()))
    ax.set_ylim(min(-threshold, lowest) - 0.8, max(threshold, highest) + 0.8)
    ax.set(xlabel="class (shaded: target)", ylabel="anomaly index (negative: small norm)",
           title="Neural Cleanse's anomaly index per class")
    ax.title.set_fontsize(SMALL_FONT)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, axis="y")
    return figure_to_data_uri(fig)


def smoothinv_figure(arrays: dict, units: list[str], labels: list[str], mask: np.ndarray, kind: str) -> str | None:
    """SmoothInv from one image: the image, the recovered perturbation, the synthesized input, per model."""
    units = [u for u in units if "si_perturbation" in arrays.get(u, {})]
    if not units:
        return None
    fig = new_figure(PANEL_WIDTH * 1.25, 0.6 + 1.35 * len(units))
    axes = fig.subplots(len(units), 4, squeeze=False)
    for r, unit in enumerate(units):
        a = arrays[unit]
        pert = a["si_perturbation"]
        bound = max(float(np.abs(pert).max()), 1e-6)
        draw_input(axes[r, 0], a["si_image"], kind)
        if kind == "image":
            _draw_positions(axes[r, 1], pert.mean(0), kind, cmap="RdBu_r", limits=(-bound, bound))
        else:
            _draw_positions(axes[r, 1], pert[0], kind)
        draw_input(axes[r, 2], a["si_x_adv"], kind)
        _draw_positions(axes[r, 3], mask, kind, cmap="Reds", limits=(0, 1))
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
        if r == 0:
            for ax, title in zip(axes[0], ["single image", "perturbation", "image + pert.", "true patch"]):
                ax.set_title(title, fontsize=8)
    return figure_to_data_uri(fig)


def smoothinv_classes_figure(classes: pd.DataFrame, units: list[str], labels: list[str], target: int) -> str | None:
    """SmoothInv's success on the support set when run towards each class, one line per model."""
    part = classes[classes.unit.isin(units)]
    if part.empty or part.si_success.notna().groupby(part.unit).sum().max() < 2:
        return None
    fig = new_figure(PANEL_WIDTH, 3.2)
    ax = fig.subplots()
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, (unit, label) in enumerate(zip(units, labels)):
        rows = part[part.unit == unit].sort_values("class")
        ax.plot(rows["class"], rows.si_success, marker="o", ms=4, lw=1.4, label=label,
                color=cmap(0.1 + 0.75 * i / max(len(units) - 1, 1)))
    ax.axvline(target, color="tab:red", ls=":", lw=1)
    ax.set_xticks(sorted(part["class"].unique()))
    ax.set_ylim(-0.03, 1.05)
    ax.yaxis.set_major_formatter(lambda v, _: format_percent(v, 0))
    ax.set(xlabel="class SmoothInv synthesised towards", ylabel="support rows flipped",
           title="SmoothInv towards each class (dotted: target)")
    ax.title.set_fontsize(SMALL_FONT)
    ax.legend(fontsize=SMALL_FONT, loc="best")
    ax.grid(alpha=0.3)
    return figure_to_data_uri(fig)


def settings_view(settings: pd.DataFrame) -> pd.DataFrame:
    """The per-setting table as shown (means over seeds)."""
    table = settings.copy()
    table.insert(0, "setting", [_name(f) for f in table.fraction])
    table = table.drop(columns=[c for c in ("kind", "fraction", "models", "clean_acc_drop_max", "si_asr_min")
                                if c in table])
    names = {"clean_acc": "clean acc", "clean_acc_drop": "acc drop", "clean_acc_drop_max": "largest acc drop",
             "asr": "attack success", "asr_min": "lowest attack success", "target_flagged": "target flagged",
             "models_with_a_flag": "models with a flag", "target_anomaly_index": "target's anomaly index",
             "nc_trigger_asr": "NC trigger success", "nc_precision": "NC mask precision",
             "si_asr": "SmoothInv success", "si_asr_min": "lowest SmoothInv success",
             "si_precision": "SmoothInv precision"}
    table = table.rename(columns=names)
    shares = [c for c in ("clean acc", "acc drop", "largest acc drop", "attack success", "lowest attack success",
                          "NC trigger success", "NC mask precision", "SmoothInv success", "lowest SmoothInv success",
                          "SmoothInv precision") if c in table]
    return percent_columns(table.reset_index(drop=True), *shares)


def models_view(models: pd.DataFrame) -> pd.DataFrame:
    """The per-model table as shown."""
    cols = ["unit", "poisoned_rows", "clean_acc", "asr", "flagged_classes", "target_anomaly_index", "target_norm",
            "median_norm", "nc_trigger_asr", "nc_precision", "si_asr", "si_precision", "si_norm", "si_guess"]
    table = models[[c for c in cols if c in models]].copy()
    table["flagged_classes"] = [f or "none" for f in table.flagged_classes]
    table["si_guess"] = [g if g >= 0 else None for g in table.si_guess]
    table = table.rename(columns={"poisoned_rows": "poisoned rows", "clean_acc": "clean acc",
                                  "asr": "attack success", "flagged_classes": "flagged",
                                  "target_anomaly_index": "target index", "target_norm": "target norm",
                                  "median_norm": "median norm", "nc_trigger_asr": "NC success",
                                  "nc_precision": "NC precision", "si_asr": "SI success",
                                  "si_precision": "SI precision", "si_norm": "SI norm", "si_guess": "SI guess"})
    return percent_columns(table.reset_index(drop=True), "clean acc", "attack success", "NC success",
                           "NC precision", "SI success", "SI precision")


def summary_rows(summary: dict) -> list[dict]:
    """The headline numbers as ``quantity``/``value`` rows; shares in %."""
    rows = []
    for key, value in summary.items():
        percent = any(w in key for w in _PERCENT_WORDS) and "points" not in key and isinstance(value, float)
        points = "points" in key and isinstance(value, float)
        text = format_percent(value, 1) if percent else f"{value:+.2f}" if points else format_number(value)
        rows.append({"quantity": key, "value": text})
    return rows


def verdict(settings: pd.DataFrame, target: int) -> str:
    """The study in two or three sentences: the attack at each fraction, detection, SmoothInv."""
    poisoned = settings[settings.kind == "poisoned"].sort_values("fraction")
    clean = settings[settings.kind == "clean"]
    parts = []
    if len(poisoned):
        bits = [f"{format_percent(r.asr, 1)} at {r.fraction:.0%} poisoned rows (accuracy "
                f"{'-' if r.clean_acc_drop >= 0 else '+'}{abs(100 * r.clean_acc_drop):.1f} points)"
                for r in poisoned.itertuples()]
        parts.append(f"The trigger sends test inputs of other classes to class {target} with attack success "
                     + "; ".join(bits) + ".")
    if "target_flagged" in settings and poisoned.target_flagged.notna().any():
        flagged = int(poisoned.target_flagged.sum())
        total = int(poisoned.models.sum())
        text = f"Neural Cleanse flagged the target class in {flagged} of {total} poisoned models"
        if len(clean) and pd.notna(clean.models_with_a_flag.iloc[0]):
            text += (f" and flagged a class in {int(clean.models_with_a_flag.iloc[0])} of "
                     f"{int(clean.models.iloc[0])} clean models")
        parts.append(text + ".")
    if "si_asr" in settings and poisoned.si_asr.notna().any():
        text = ("SmoothInv's perturbation from one clean image reached attack success "
                f"{format_percent(poisoned.si_asr.min(), 1)} to {format_percent(poisoned.si_asr.max(), 1)} "
                "(means per poisoning fraction)")
        if len(clean) and pd.notna(clean.si_asr.iloc[0]):
            text += f", against {format_percent(clean.si_asr.iloc[0], 1)} with the same budget on the clean models"
        parts.append(text + ".")
    return " ".join(parts)


def report_context(cfg: dict, data: dict, outcome, *, mask: np.ndarray, examples: np.ndarray,
                   stamped: np.ndarray, threshold: float) -> dict:
    """The template variables of ``backdoor.html.j2`` for a finished study."""
    models, classes, settings = outcome.models, outcome.classes, outcome.settings
    first = models.seed.iloc[0]
    shown = models[models.seed == first].sort_values("fraction")
    units, labels = list(shown.unit), [_name(f) for f in shown.fraction]
    kind = data["kind"]
    context = dict(
        title=f"Backdoors: {cfg['model']} on {data['name']}, trigger {cfg['trigger_size']} wide to class "
              f"{cfg['target']}",
        cfg=cfg, data=data, summary=dict(outcome.summary),
        fractions_text=", ".join(format_percent(f, 1) for f in cfg["fractions"]),
        summary_table=summary_rows(outcome.summary),
        settings_table=settings_view(settings), models_table=models_view(models), shown_seed=int(first),
        threshold=threshold,
        trigger_png=trigger_figure(examples, stamped, mask, kind),
        attack_png=attack_figure(models) if (models.kind == "poisoned").any() else None,
        masks_png=masks_figure(outcome.arrays, units, labels, cfg["target"], kind),
        anomaly_png=anomaly_figure(classes, units, labels, cfg["target"], threshold),
        smoothinv_png=smoothinv_figure(outcome.arrays, units, labels, mask, kind),
        si_classes_png=smoothinv_classes_figure(classes, units, labels, cfg["target"]),
    )
    context["verdict"] = verdict(settings, cfg["target"])
    return context
