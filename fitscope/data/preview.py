"""A PNG grid of samples per class, to eyeball a data set (images, or signals as line plots).

The grid has one row per class (the first ``max_classes`` classes present in
the split) and up to ``per_class`` examples per row, drawn with ``seed``; each
row is labelled with its class index and name. Drawn with matplotlib's
``Figure`` object API and the Agg canvas (no pyplot global state) and written
atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.errors import DataError
from fitscope.validation import check_choice, check_int, check_seed, message


def _pick(y: np.ndarray, *, per_class: int, max_classes: int, seed: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(y)[:max_classes]:
        members = np.flatnonzero(y == c)
        take = min(per_class, len(members))
        rows.append((int(c), np.sort(rng.choice(members, size=take, replace=False))))
    return rows


def write_sample_grid(
    dataset: Dataset,
    path: str | os.PathLike,
    *,
    split: str = "train",
    per_class: int = 8,
    max_classes: int = 10,
    seed: int = 0,
) -> Path:
    """Draw up to ``per_class`` examples of each of up to ``max_classes`` classes into a PNG.

    Args:
        dataset: image (``(C, H, W)``) or signal (``(C, L)``) data.
        path: the PNG to write (parent folders are created).
        split: ``"train"`` or ``"test"``.
        per_class: examples per row (>= 1).
        max_classes: rows at most (>= 1).
        seed: which examples are drawn.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: ``dataset`` holds vectors (nothing to draw).
        ConfigError: a bad ``split``, ``per_class``, ``max_classes`` or ``seed``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fitscope.runs.atomic import atomic_write_bytes

    if dataset.kind == "vector":
        raise DataError(message("dataset", f"images or signals to draw ({dataset.name})",
                                f"vectors of shape {dataset.input_shape}"))
    split = check_choice(split, "split", ("train", "test"))
    per_class = check_int(per_class, "per_class")
    max_classes = check_int(max_classes, "max_classes")
    seed = check_seed(seed)
    x = dataset.x_train if split == "train" else dataset.x_test
    y = dataset.y_train if split == "train" else dataset.y_test
    rows = _pick(y, per_class=per_class, max_classes=max_classes, seed=seed)
    shown = np.concatenate([idx for _, idx in rows])
    lo, hi = float(x[shown].min()), float(x[shown].max())
    span = hi - lo if hi > lo else 1.0

    image = dataset.kind == "image"
    cell_w, cell_h = (1.0, 1.0) if image else (1.5, 0.9)
    fig = Figure(figsize=(1.6 + cell_w * per_class, 0.4 + cell_h * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), per_class, squeeze=False)
    for r, (c, idx) in enumerate(rows):
        for k in range(per_class):
            ax = axes[r, k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(idx):
                ax.set_axis_off()
                continue
            sample = x[idx[k]]
            if image and sample.shape[0] == 3:
                ax.imshow(np.clip((sample.transpose(1, 2, 0) - lo) / span, 0, 1), interpolation="nearest")
            elif image:
                ax.imshow(sample[0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            else:
                for channel in sample:
                    ax.plot(channel, linewidth=0.8)
                ax.set_ylim(lo - 0.05 * span, hi + 0.05 * span)
        label = dataset.classes[c] if dataset.classes[c] == str(c) else f"{c}: {dataset.classes[c]}"
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        axes[r, 0].set_axis_on()
    fig.suptitle(f"{dataset.name} ({split}): {per_class} samples per class", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())
