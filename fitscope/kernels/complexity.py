"""The fine-grained generalization measure of Arora, Du, Hu, Li, Wang (2019).

Notation: ``N`` examples ``x_i`` (rows of ``X``, normalized to unit norm),
``C`` classes. The Gram matrix of a two-layer ReLU net's first layer is

    H_ij = u_ij (pi - arccos(u_ij)) / (2 pi),   u_ij = x_i . x_j,

and the measure is ``sqrt(2 y^T H^{-1} y / N)``. For two classes ``y`` is the
paper's +-1 vector (``+1`` for the larger label); for ``C > 2`` classes
``y`` is the one-hot matrix and ``y^T H^{-1} y`` is summed over the ``C``
columns (the trace of ``Y^T H^{-1} Y``). A larger value means labels that are
harder to fit with a small-norm solution; it is larger for random labels than
for true ones.

Label noise (as in the paper's random-label experiments): at level ``p``,
``round(p N)`` examples drawn at random get a label drawn uniformly over all
``C`` classes (it may equal the true one, so about ``p (1 - 1/C) N`` labels
change); ``p = 1`` gives fully random labels. Flipping every label instead
would, for two classes, only change the sign of ``y`` and leave the measure
unchanged. Each level draws from ``derive_seed(seed, "complexity", j)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from fitscope.errors import DataError
from fitscope.kernels.validation import check_array, check_nonzero_rows
from fitscope.seeding import derive_seed
from fitscope.validation import check_fraction, check_number, check_seed, message


@dataclass(frozen=True)
class ComplexityResult:
    """The measure for the true labels and for each label-noise level.

    Attributes:
        true_measure: ``sqrt(2 y^T H^{-1} y / N)`` for the labels as given.
        noise_levels: ``(P,)`` fractions of labels made random (empty without noise levels).
        noisy_measures: ``(P,)`` the measure at each noise level.
        n_examples: ``N``.
        n_classes: ``C``.
        targets: ``"+-1"`` (two classes) or ``"one-hot"``.
        jitter: the ridge added to ``H`` (relative to its mean diagonal).
        seed: the seed of the random labels.
    """

    true_measure: float
    noise_levels: np.ndarray
    noisy_measures: np.ndarray
    n_examples: int
    n_classes: int
    targets: str
    jitter: float
    seed: int


def complexity_gram(X: np.ndarray) -> np.ndarray:
    """``H (N, N)`` of METHODS for the rows of ``X (N, D)`` (normalized here to unit norm)."""
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    dots = np.clip(u @ u.T, -1.0, 1.0)
    np.fill_diagonal(dots, 1.0)
    return dots * (np.pi - np.arccos(dots)) / (2 * np.pi)


def _targets(index: np.ndarray, n_classes: int) -> np.ndarray:
    """``(N, 1)`` +-1 targets for two classes, ``(N, C)`` one-hot otherwise."""
    if n_classes == 2:
        return (2.0 * index - 1.0)[:, None]
    onehot = np.zeros((len(index), n_classes))
    onehot[np.arange(len(index)), index] = 1.0
    return onehot


def complexity_measure(X, y, *, noise_levels=None, seed: int = 0, jitter: float = 0.0) -> ComplexityResult:
    """The measure ``sqrt(2 y^T H^{-1} y / N)`` for the true labels and for noisy labels.

    Args:
        X: ``(N, D)`` inputs, finite, no all-zero row (rows are normalized).
        y: ``(N,)`` labels, any sortable values, at least 2 classes.
        noise_levels: fractions ``p in [0, 1]`` of labels replaced by random ones, e.g.
            ``[0.2, 0.5, 1.0]``; None for none.
        seed: seed of the random labels (level ``j`` uses ``derive_seed(seed, "complexity", j)``).
        jitter: ridge ``jitter * mean(diag H)`` added to ``H``; 0 (default) uses
            ``H`` as is and raises if it is numerically singular (duplicate or
            parallel rows); a small value (1e-8) makes duplicates usable.

    Returns:
        A :class:`ComplexityResult`.

    Raises:
        DataError: bad ``X`` / ``y``, fewer than 2 classes, or ``H`` singular.
        ConfigError: a noise level outside ``[0, 1]``, a seed outside ``[0, 2**32)``, a negative jitter.
    """
    X = check_array("X", X, arch="fc").astype(np.float64, copy=False)
    check_nonzero_rows("X", X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(message("y", f"a 1-D array of {len(X)} labels (one per row of X)", f"shape {y.shape}"))
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(message("y", "at least 2 classes", str(len(classes))))
    seed = check_seed(seed)
    jitter = check_number(jitter, "jitter", low=0.0, high=math.inf, open_high=True)
    levels = np.asarray([check_fraction(p, f"noise_levels[{j}]")
                         for j, p in enumerate(np.ravel([] if noise_levels is None else noise_levels).tolist())],
                        dtype=np.float64)

    H = complexity_gram(X)
    if jitter:
        H[np.diag_indices_from(H)] += jitter * float(np.mean(np.diag(H)))
    try:
        factor = scipy.linalg.cho_factor(H, lower=True)
    except np.linalg.LinAlgError:
        factor = None
    # a Cholesky pivot ratio below ~1e-12 leaves y^T H^-1 y mostly rounding noise
    if factor is None or np.min(np.diag(factor[0])) ** 2 < 1e-12 * np.max(np.diag(factor[0])) ** 2:
        raise DataError(message("X", "rows whose H matrix is positive definite", "a numerically singular H "
                                "(duplicate or parallel rows?); remove duplicates or pass jitter=1e-8"))

    label_sets = [index]
    for j, p in enumerate(levels):
        rng = np.random.default_rng(derive_seed(seed, "complexity", j))
        noisy = index.copy()
        chosen = rng.choice(len(index), size=int(round(p * len(index))), replace=False)
        noisy[chosen] = rng.integers(0, len(classes), size=len(chosen))
        label_sets.append(noisy)
    measures = []
    for labels in label_sets:
        Y = _targets(labels, len(classes))
        quad = float(np.sum(Y * scipy.linalg.cho_solve(factor, Y)))
        measures.append(math.sqrt(2.0 * quad / len(X)))
    return ComplexityResult(true_measure=measures[0], noise_levels=levels, noisy_measures=np.asarray(measures[1:]),
                            n_examples=len(X), n_classes=len(classes),
                            targets="+-1" if len(classes) == 2 else "one-hot", jitter=float(jitter), seed=int(seed))
