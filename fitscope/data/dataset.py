"""The dataset every layer above ``data`` works on (its inputs in memory or memory-mapped)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays of one classification problem.

    Attributes:
        name: short name (``digits``, a file name, ...).
        x_train: float32 inputs, shape ``(n_train, D)`` for vectors,
            ``(n_train, C, L)`` for 1-D signals or ``(n_train, C, H, W)`` for images.
        y_train: int64 labels in ``[0, n_classes)``, shape ``(n_train,)``.
        x_test: float32 inputs, shape ``(n_test, *input_shape)``.
        y_test: int64 labels, shape ``(n_test,)``.
        classes: class names, index ``c`` names label ``c``.
        source: where the data came from (path, package, split seed).
        meta: free-form extra facts (split seed, original file keys, ...).

    The inputs are either arrays in memory or read-only views of memory maps
    (``.npy`` files, large ``.npz`` members and their cached splits or
    conversions: :mod:`fitscope.data.mapped`, ``meta["storage"]``). Code that
    uses a Dataset must not write into its arrays; copy what it changes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the example axis."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def kind(self) -> str:
        """``"vector"``, ``"signal"`` (C x L) or ``"image"`` (C x H x W)."""
        return {1: "vector", 2: "signal", 3: "image"}[len(self.input_shape)]

    def replace(self, **changes) -> "Dataset":
        """A copy with some fields replaced (the dataset itself is immutable)."""
        from dataclasses import replace

        return replace(self, **changes)
