"""Calibration: how well a model's confidence matches its accuracy (reliability bins, expected calibration error).

Notation: n predictions, each with a confidence (the probability the model
gives its predicted class, ``max_c softmax(z)_c``) and whether it is correct.

The confidences are put in ``bins`` equal-width bins over ``[0, 1]``; bin
``b`` (0-based) holds the confidences in ``(b / bins, (b + 1) / bins]`` (the
first bin also holds 0). Per bin: how many predictions, their mean confidence
and their accuracy (a reliability diagram plots accuracy against confidence).
The expected calibration error (Naeini et al. 2015; Guo et al. 2017, "On
calibration of modern neural networks", with 15 bins) is the bins' gap
between accuracy and confidence weighted by their share of the predictions::

    ECE = sum_b (n_b / n) * | acc_b - conf_b |

Arrays in, numbers out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitscope.errors import DataError
from fitscope.validation import check_binary, check_int, check_real, message

#: Bins of the expected calibration error as Guo et al. (2017) and PS-KD (Kim et al. 2021) report it.
ECE_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Predictions grouped by confidence in equal-width bins.

    Attributes:
        edges: ``(bins + 1,)`` bin edges ``0, 1/bins, ..., 1``.
        count: ``(bins,)`` int64 predictions per bin.
        confidence: ``(bins,)`` mean confidence per bin (NaN for an empty bin).
        accuracy: ``(bins,)`` share correct per bin (NaN for an empty bin).
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """The expected calibration error of these bins, ``sum_b (n_b / n) |acc_b - conf_b|``."""
        n = int(self.count.sum())
        used = self.count > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] / n * gap).sum())


def reliability_bins(confidence, correct, *, bins: int = ECE_BINS) -> ReliabilityBins:
    """Group predictions by confidence in ``bins`` equal-width bins (see the module docstring).

    Args:
        confidence: ``(n,)`` confidences in ``[0, 1]`` (e.g. the largest softmax probability).
        correct: ``(n,)`` bool (or 0/1): the prediction is right.
        bins: number of equal-width bins (default 15).

    Returns:
        :class:`ReliabilityBins`.

    Raises:
        DataError: shapes, non-finite confidences or outside ``[0, 1]``, non-0/1 correctness.
        ConfigError: ``bins`` is not a positive integer.
    """
    bins = check_int(bins, "bins")
    conf = check_real(confidence, "confidence", axes=("n",)).astype(np.float64)
    right = check_binary(correct, "correct", axes=("n",), shape=conf.shape, like="confidence")
    outside = (conf < 0) | (conf > 1)
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(message("confidence", "values in [0, 1]", f"{conf[i]:g} at [{i}]"))
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    right_sum = np.bincount(index, weights=right.astype(np.float64), minlength=bins)
    mean_conf = np.full(bins, np.nan)
    mean_acc = np.full(bins, np.nan)
    np.divide(conf_sum, count, out=mean_conf, where=count > 0)
    np.divide(right_sum, count, out=mean_acc, where=count > 0)
    return ReliabilityBins(edges=np.linspace(0.0, 1.0, bins + 1), count=count, confidence=mean_conf,
                           accuracy=mean_acc)


def expected_calibration_error(confidence, correct, *, bins: int = ECE_BINS) -> float:
    """The expected calibration error, ``sum_b (n_b / n) |acc_b - conf_b|`` over ``bins`` equal-width bins.

    Args:
        confidence: ``(n,)`` confidences in ``[0, 1]``.
        correct: ``(n,)`` bool (or 0/1).
        bins: number of equal-width bins (default 15, as Guo et al. 2017).

    Returns:
        The ECE in ``[0, 1]``.
    """
    return reliability_bins(confidence, correct, bins=bins).ece
