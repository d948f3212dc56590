"""Randomization-test corruptions of a training set, with ground truth (Zhang et al. 2017).

Notation: ``N`` train examples, ``n_classes`` classes, labels ``y`` of shape ``(N,)``.
A *position* is one feature of a vector ``(D,)``, one time step of a signal
``(C, L)`` or one pixel of an image ``(C, H, W)``; pixel permutations move
positions and keep all channels of a position together. ``noise`` is a
probability ``p`` in ``[0, 1]``.

Kinds (:data:`CORRUPTION_KINDS`); only the train split changes, except where said:

- ``none``: the data as given.
- ``labels``: each train label, with probability ``p``, is replaced by a
  uniform draw over all ``n_classes`` classes (it may land on the true class), so a
  fraction of about ``p * (1 - 1/n_classes)`` of the labels changes.
- ``random_labels``: ``labels`` with ``p = 1``.
- ``shuffled_pixels``: one fixed permutation of positions applied to every
  train and every test input.
- ``random_pixels``: each train input, with probability ``p`` (default 1: all),
  gets its own independent permutation of positions.
- ``gaussian``: each train input, with probability ``p`` (default 1: all), is
  replaced by Gaussian noise with the train inputs' per-feature mean and
  standard deviation (a diagonal covariance).

``noise`` is used by ``labels``, ``random_pixels`` and ``gaussian``; ``none``,
``random_labels`` and ``shuffled_pixels`` record their fixed level (0, 1, 1).

:func:`flip_labels` is the other label-noise model (for label-issue
detection): exactly ``round(rate * N)`` labels moved to a *different* class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.validation import check_choice, check_fraction, check_int, check_labels, check_seed

CORRUPTION_KINDS = ("none", "labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
FLIP_MODES = ("uniform", "pair")
_ROWS_PER_CHUNK = 4096


@dataclass(frozen=True)
class Corruption:
    """A corrupted dataset and the ground truth of what changed.

    Attributes:
        dataset: the corrupted :class:`Dataset` (its ``meta`` records the corruption).
        kind: one of :data:`CORRUPTION_KINDS`.
        noise: the corruption level actually used (see the module docstring).
        seed: the seed of the draw.
        changed: int64 indices (sorted) of the train rows whose label or input
            differs from the original.
        original_labels: int64 labels of the ``changed`` rows before corruption.
        permutation: for ``shuffled_pixels``, the int64 permutation of positions
            (new position ``j`` holds old position ``permutation[j]``); else None.
    """

    dataset: Dataset
    kind: str
    noise: float
    seed: int
    changed: np.ndarray
    original_labels: np.ndarray
    permutation: np.ndarray | None = None


def _positions(x: np.ndarray) -> np.ndarray:
    """``x`` of shape ``(N, *input_shape)`` viewed as ``(N, channels, positions)``."""
    if x.ndim == 2:
        return x.reshape(len(x), 1, -1)
    return x.reshape(len(x), x.shape[1], -1)


def _changed_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    diff = (before != after).reshape(len(before), -1).any(axis=1)
    return np.flatnonzero(diff).astype(np.int64)


def corrupt(dataset: Dataset, kind: str, *, noise: float = 1.0, seed: int) -> Corruption:
    """Corrupt the train split of ``dataset`` (and the test inputs for ``shuffled_pixels``).

    Args:
        dataset: the clean data.
        kind: one of :data:`CORRUPTION_KINDS` (see the module docstring).
        noise: probability ``p`` in ``[0, 1]`` that a train row is corrupted
            (``labels``, ``random_pixels``, ``gaussian``).
        seed: seed of the draw; the same ``(dataset, kind, noise, seed)`` gives the same result.

    Returns:
        A :class:`Corruption` with the corrupted dataset and the ground truth.

    Raises:
        ConfigError: unknown ``kind``, ``noise`` outside ``[0, 1]``, or a ``seed`` outside ``[0, 2**32)``.
    """
    kind = check_choice(kind, "kind", CORRUPTION_KINDS)
    noise = check_fraction(noise, "noise")
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = dataset.x_train, dataset.y_train
    n = len(y)
    permutation = None
    changes: dict = {}

    if kind == "none":
        level = 0.0
    elif kind in ("labels", "random_labels"):
        level = 1.0 if kind == "random_labels" else noise
        redraw = rng.random(n) < level
        drawn = rng.integers(0, dataset.n_classes, size=n)
        new_y = np.where(redraw, drawn, y).astype(np.int64)
        changes["y_train"] = new_y
    elif kind == "shuffled_pixels":
        level = 1.0
        grid = _positions(x)
        permutation = rng.permutation(grid.shape[2]).astype(np.int64)
        changes["x_train"] = np.ascontiguousarray(grid[:, :, permutation].reshape(x.shape))
        changes["x_test"] = np.ascontiguousarray(
            _positions(dataset.x_test)[:, :, permutation].reshape(dataset.x_test.shape)
        )
    elif kind == "random_pixels":
        level = noise
        rows = np.flatnonzero(rng.random(n) < level)
        grid = _positions(x).copy()
        width = grid.shape[2]
        for start in range(0, len(rows), _ROWS_PER_CHUNK):
            chunk = rows[start:start + _ROWS_PER_CHUNK]
            perms = rng.permuted(np.tile(np.arange(width), (len(chunk), 1)), axis=1)
            grid[chunk] = np.take_along_axis(grid[chunk], perms[:, None, :], axis=2)
        changes["x_train"] = grid.reshape(x.shape)
    else:  # gaussian
        level = noise
        rows = np.flatnonzero(rng.random(n) < level)
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        new_x = x.copy()
        new_x[rows] = (mean + std * rng.standard_normal((len(rows), *x.shape[1:]))).astype(np.float32)
        changes["x_train"] = new_x

    if "y_train" in changes:
        changed = np.flatnonzero(changes["y_train"] != y).astype(np.int64)
    elif "x_train" in changes:
        changed = _changed_rows(x, changes["x_train"])
    else:
        changed = np.zeros(0, dtype=np.int64)
    meta = dict(dataset.meta, corruption=dict(kind=kind, noise=level, seed=seed, n_changed=int(len(changed))))
    corrupted = dataset.replace(meta=meta, **changes)
    return Corruption(
        dataset=corrupted,
        kind=kind,
        noise=level,
        seed=seed,
        changed=changed,
        original_labels=y[changed].astype(np.int64),
        permutation=permutation,
    )


def flip_labels(
    y, rate: float, n_classes: int, *, mode: str = "uniform", seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move exactly ``round(rate * N)`` labels to a different class.

    Args:
        y: int labels in ``[0, n_classes)``, shape ``(N,)``.
        rate: fraction of labels to flip, in ``[0, 1]``.
        n_classes: the number of classes, >= 2.
        mode: ``"uniform"`` (the new class is uniform over the ``n_classes - 1`` others)
            or ``"pair"`` (class ``c`` becomes ``(c + 1) mod n_classes``).
        seed: seed of the draw.

    Returns:
        ``(y_noisy, flipped)``: int64 labels of shape ``(N,)`` and the sorted
        int64 indices of the flipped rows (every one differs from ``y``).

    Raises:
        ConfigError: ``rate`` outside ``[0, 1]``, ``n_classes < 2``, an unknown
            ``mode`` or a ``seed`` outside ``[0, 2**32)``.
        DataError: ``y`` is not a non-empty 1-D array of integer labels in ``[0, n_classes)``.
    """
    rate = check_fraction(rate, "rate")
    seed = check_seed(seed)
    mode = check_choice(mode, "mode", FLIP_MODES)
    n_classes = check_int(n_classes, "n_classes", low=2)
    y = check_labels(y, "y", n_classes=n_classes)
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(y)))
    flipped = np.sort(rng.choice(len(y), size=n_flip, replace=False)).astype(np.int64)
    noisy = y.copy()
    if mode == "uniform":
        shift = rng.integers(1, n_classes, size=n_flip)
    else:
        shift = np.ones(n_flip, dtype=np.int64)
    noisy[flipped] = (y[flipped] + shift) % n_classes
    return noisy, flipped
