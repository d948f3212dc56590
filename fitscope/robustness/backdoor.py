"""BadNets backdoors: stamp a patch trigger on a share of the training rows, relabel them, measure the attack.

Notation: n rows, C classes, ``input_shape`` the shape of one input: ``(C_in, H, W)`` for images or
``(C_in, L)`` for signals. A trigger is a ``mask`` over the input's positions (the last one or two axes,
shared by every channel) and a ``pattern`` (an input-shaped array of values); stamping it replaces the
masked positions: ``x' = (1 - mask) * x + mask * pattern`` (the same form Neural Cleanse inverts,
:mod:`fitscope.robustness.trigger_inversion`).

Gu, Dolan-Gavitt and Garg 2017 ("BadNets"): a model trained on data where a small share of the rows carry a
fixed patch and the target label learns to send any input with the patch to the target, while its accuracy
on clean inputs hardly moves. Everything here works on any ``torch.nn.Module`` mapping a batch of inputs to
logits, and on NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness.attacks import predict_labels
from fitscope.seeding import derive_seed
from fitscope.validation import check_fraction, check_int, check_number, check_seed, message

__all__ = ["Poisoned", "additive_attack_success", "apply_trigger", "attack_success_rate", "patch_mask",
           "poison_rows", "top_positions_overlap"]

#: corners a patch may be placed in by name
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def _spatial(input_shape) -> tuple[int, ...]:
    """The positions of an input (all axes but the channel): ``(H, W)`` or ``(L,)``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3):
        raise ConfigError(message("input_shape", "(channels, length) or (channels, height, width)", str(shape)))
    return shape[1:]


def patch_mask(input_shape, *, size: int, position: str | tuple[int, ...] = "bottom-right") -> np.ndarray:
    """The mask of a square patch (a segment for signals) of ``size`` positions a side.

    Args:
        input_shape: ``(C_in, H, W)`` or ``(C_in, L)``.
        size: side of the patch (positions).
        position: one of :data:`CORNERS` or the patch's first position, ``(row, col)`` for images and
            ``(start,)`` for signals; the patch must lie inside the input.

    Returns:
        ``(H, W)`` or ``(L,)`` float32, 1 on the patch and 0 elsewhere.

    Raises:
        ConfigError: a patch larger than the input or out of its bounds, an unknown corner.
    """
    spatial = _spatial(input_shape)
    size = check_int(size, "trigger_size")
    if size > min(spatial):
        raise ConfigError(message("trigger_size", f"a patch that fits the input {'x'.join(map(str, spatial))} "
                                  f"(at most {min(spatial)})", str(size)))
    if isinstance(position, str):
        if position not in CORNERS:
            raise ConfigError(message("trigger_position", "one of " + ", ".join(CORNERS) + " or first indices",
                                      repr(position)))
        bottom, right = position.startswith("bottom"), position.endswith("right")
        start = tuple((s - size) if (bottom if i == 0 and len(spatial) == 2 else right) else 0
                      for i, s in enumerate(spatial))
    else:
        start = tuple(int(p) for p in position)
        if len(start) != len(spatial) or any(p < 0 or p + size > s for p, s in zip(start, spatial)):
            raise ConfigError(message("trigger_position", f"{len(spatial)} first indices with the {size}-wide "
                                      f"patch inside {'x'.join(map(str, spatial))}", str(tuple(position))))
    mask = np.zeros(spatial, np.float32)
    mask[tuple(slice(p, p + size) for p in start)] = 1.0
    return mask


def apply_trigger(x, mask, pattern):
    """Stamp a trigger: ``(1 - mask) * x + mask * pattern``.

    Args:
        x: ``(n, *input_shape)`` inputs (NumPy or torch).
        mask: ``(H, W)`` / ``(L,)`` (shared by the channels) or input-shaped, values in [0, 1].
        pattern: input-shaped values, or a scalar (every masked position gets it).

    Returns:
        The stamped inputs, of the type of ``x`` (a new array).
    """
    if isinstance(x, torch.Tensor):
        mask = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
        pattern = torch.as_tensor(pattern, dtype=x.dtype, device=x.device)
    else:
        x = np.asarray(x, np.float32)
        mask, pattern = np.asarray(mask, np.float32), np.asarray(pattern, np.float32)
    return (1 - mask) * x + mask * pattern


@dataclass
class Poisoned:
    """The training set after a BadNets poisoning (:func:`poison_rows`).

    Attributes:
        x: ``(n, *input_shape)`` float32 inputs, the poisoned rows stamped.
        y: ``(n,)`` int64 labels, the poisoned rows relabelled to ``target``.
        rows: ``(k,)`` the poisoned rows (sorted), ``k = round(fraction n)``.
        target: the target class.
    """

    x: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    target: int


def poison_rows(x, y, *, fraction: float, target: int, n_classes: int, mask, pattern, seed: int) -> Poisoned:
    """Stamp the trigger on ``round(fraction n)`` rows not already of ``target`` and relabel them ``target``.

    The rows are drawn without replacement from ``derive_seed(seed, "poison")``; the other rows, and the
    positions outside the mask, are left exactly as they were.

    Args:
        x: ``(n, *input_shape)`` inputs; y: ``(n,)`` labels in ``[0, n_classes)``.
        fraction: share of all ``n`` rows to poison, in (0, 1).
        target: the class the poisoned rows get.
        n_classes: number of classes C.
        mask, pattern: the trigger (:func:`apply_trigger`).
        seed: seed of the draw.

    Raises:
        ConfigError: a fraction outside (0, 1), a target out of range, more rows asked than there are
            rows of other classes, or a fraction that rounds to no row.
    """
    fraction = check_fraction(fraction, "poison_fraction", open_low=True, open_high=True)
    n_classes = check_int(n_classes, "n_classes", low=2)
    target = check_int(target, "target", low=0, high=n_classes - 1)
    seed = check_seed(seed)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    k = int(round(fraction * len(y)))
    candidates = np.flatnonzero(y != target)
    if k < 1 or k > len(candidates):
        raise ConfigError(message("poison_fraction", f"a share of the {len(y)} rows between 1 row and the "
                                  f"{len(candidates)} rows not of class {target}", f"{fraction:g} ({k} rows)"))
    rng = np.random.default_rng(derive_seed(seed, "poison"))
    rows = np.sort(rng.choice(candidates, size=k, replace=False))
    xp, yp = x.copy(), y.copy()
    xp[rows] = apply_trigger(x[rows], mask, pattern)
    yp[rows] = target
    return Poisoned(x=xp, y=yp, rows=rows, target=target)


def attack_success_rate(model: nn.Module, x, y, *, target: int, mask, pattern) -> float:
    """Attack success: among the rows not of class ``target``, the share classified ``target`` once stamped.

    Args:
        model: any module mapping ``(B, *input_shape)`` to logits ``(B, C)``.
        x: ``(n, *input_shape)`` clean inputs; y: ``(n,)`` their true labels.
        target: the target class.
        mask, pattern: the trigger (:func:`apply_trigger`).
    """
    y = np.asarray(y, np.int64)
    keep = y != int(target)
    if not keep.any():
        return float("nan")
    stamped = apply_trigger(np.asarray(x, np.float32)[keep], mask, pattern)
    return float((predict_labels(model, stamped) == int(target)).mean())


def additive_attack_success(model: nn.Module, x, y, *, target: int, perturbation,
                            bounds: tuple[float, float] | None = (0.0, 1.0)) -> float:
    """Attack success of an additive trigger (SmoothInv's): ``clip(x + perturbation)`` on the non-target rows.

    Args:
        perturbation: input-shaped; added to every row and clipped to ``bounds`` (None: not clipped).
    """
    y = np.asarray(y, np.int64)
    keep = y != int(target)
    if not keep.any():
        return float("nan")
    moved = np.asarray(x, np.float32)[keep] + np.asarray(perturbation, np.float32)
    if bounds is not None:
        moved = np.clip(moved, bounds[0], bounds[1])
    return float((predict_labels(model, moved) == int(target)).mean())


def top_positions_overlap(scores, true_mask) -> dict:
    """How well a recovered trigger locates the true patch: its top positions against the patch's.

    Args:
        scores: ``(H, W)`` / ``(L,)`` (or input-shaped, summed over channels) importance of each position,
            e.g. a Neural Cleanse mask or SmoothInv's absolute perturbation.
        true_mask: the true patch mask, same positions, 1 on the patch.

    Returns:
        ``precision``: the share of the ``k`` highest-scoring positions (``k`` = the patch's size; ties
        broken by position order) that lie on the patch; ``iou``: intersection over union of those ``k``
        positions and the patch (with equal sizes, ``iou = p / (2 - p)``); ``k``.
    """
    true_mask = np.asarray(true_mask) > 0
    scores = np.asarray(scores, float)
    if scores.shape != true_mask.shape:
        scores = scores.reshape((-1,) + true_mask.shape).sum(0)
    k = int(true_mask.sum())
    order = np.argsort(-scores.reshape(-1), kind="stable")[:k]
    top = np.zeros(true_mask.size, bool)
    top[order] = True
    hit = int((top & true_mask.reshape(-1)).sum())
    union = int((top | true_mask.reshape(-1)).sum())
    return {"precision": hit / k if k else float("nan"), "iou": hit / union if union else float("nan"), "k": k}


def check_bounds(bounds) -> tuple[float, float]:
    """``(low, high)`` with ``low < high``, both finite: the range inputs live in."""
    low = check_number(bounds[0], "bounds[0]", open_low=True, open_high=True)
    high = check_number(bounds[1], "bounds[1]", low=low, open_low=True, open_high=True)
    return low, high
