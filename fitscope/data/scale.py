"""Input scaling: standardization with train statistics, and 8-bit pixels to [0, 1].

Notation: ``x_train`` of shape ``(N_train, *input_shape)``; the mean and
standard deviation are per feature (per element of ``input_shape``), taken
over the train split only so that no test information leaks into training.
"""

from __future__ import annotations

import numpy as np


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the train mean and divide by the train standard deviation, per feature.

    Features that are constant on the train split (std 0) are only centred.
    Returns float32 ``(x_train, x_test)``.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def pixels_to_unit(x: np.ndarray) -> np.ndarray:
    """8-bit pixel values ``0..255`` as C-contiguous float32 in ``[0, 1]`` (divided by 255).

    One new array, written directly (no float32 copy of ``x`` before the division).
    """
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.float32)
    np.divide(x, np.float32(255.0), out=out, dtype=np.float32)
    return out
