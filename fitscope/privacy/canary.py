"""Canary audit: an empirical lower bound on the label-DP epsilon of any training procedure.

Plant m canaries (training examples whose label is replaced by a uniformly
random *other* label), run the procedure, and let the attack guess each
canary's label as the model's argmax over the C - 1 labels a canary can have
(C classes: every class but the example's original label). With a accuracies over m
canaries, the bound is the one of the L-way guessing game, L = C - 1.

Why the bound holds (derived here because the C-ary game is not the binary
one of ``eps >= log(a / (1 - a))``): let the canary label c be uniform on L
values, the rest of the data fixed, and q_c = P[guess = c | label c]. An
eps-label-DP procedure gives P[guess = c | label c'] >= e^-eps q_c for every
c'. Since the guess is always one of the L values, for each c':
1 = sum_c P[guess = c | c'] >= q_c' + e^-eps sum_{c != c'} q_c. Averaging
over c' gives 1 >= a (1 + (L - 1) e^-eps) with a = mean_c q_c, so

    a <= e^eps / (e^eps + L - 1)   <=>   eps >= log((L - 1) a / (1 - a)).

(For L = 2 this is ``log(a / (1 - a))``; for L > 2 the METHODS formula is
valid but looser.) The same argument holds conditioned on any event of the
output and the other canaries' labels (replace each probability by the joint
probability with the event), so given the earlier canaries' outcomes each
guess is right with probability at most p* = e^eps / (e^eps + L - 1): the
number of right guesses is stochastically dominated by Binomial(m, p*), as in
Steinke, Nasr & Jagielski (2023) for the binary case. Hence the one-sided
Clopper-Pearson lower bound a_low at ``confidence`` (``beta.ppf(1 -
confidence, x, m - x + 1)`` for x right guesses) exceeds p* with probability at
most ``1 - confidence`` when the procedure is eps-label-DP, and

    eps_lower = max(0, log((L - 1) a_low / (1 - a_low)))

is a lower bound on the true eps at that confidence. The reported
``accuracy_ci`` is the two-sided Clopper-Pearson interval at the same level
(for display; the bound uses the one-sided one).

The bound is only as strong as the attack: a procedure that does not
memorize its noisy labels gives a bound near 0 whatever its real eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import beta

from fitscope.errors import DataError
from fitscope.validation import check_finite, check_fraction, check_int, check_labels, check_seed, message


@dataclass(frozen=True)
class Canaries:
    """Planted canaries.

    Attributes:
        indices: ``(m,)`` int64 training rows that became canaries (sorted).
        labels: ``(m,)`` int64 their new labels (never the original one).
        original: ``(m,)`` int64 their original labels.
        y: ``(n,)`` int64 all training labels with the canaries planted.
        n_classes: C.
    """

    indices: np.ndarray
    labels: np.ndarray
    original: np.ndarray
    y: np.ndarray
    n_classes: int


@dataclass(frozen=True)
class CanaryAudit:
    """The outcome of a canary audit.

    Attributes:
        m: canaries planted.
        correct: canaries whose label the attack guessed.
        accuracy: ``correct / m``.
        accuracy_ci: two-sided Clopper-Pearson interval of the accuracy at ``confidence``.
        accuracy_low: one-sided Clopper-Pearson lower bound of the accuracy at ``confidence``.
        eps_lower: empirical lower bound on eps at ``confidence`` (0 when the attack is at chance).
        eps_estimate: the bound's formula at the observed accuracy (no confidence margin; inf at a = 1).
        chance: 1 / L, the accuracy of guessing.
        choices: L = C - 1, the labels a canary can have.
        confidence: the confidence level.
        claimed_eps: the eps the procedure claims (None if not given; inf for a non-private one).
    """

    m: int
    correct: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    accuracy_low: float
    eps_lower: float
    eps_estimate: float
    chance: float
    choices: int
    confidence: float
    claimed_eps: float | None = None

    def row(self) -> dict:
        """The numbers as a flat dict (for tables and JSON)."""
        return {"canaries": self.m, "correct": self.correct, "attack_accuracy": self.accuracy,
                "accuracy_ci_low": self.accuracy_ci[0], "accuracy_ci_high": self.accuracy_ci[1],
                "eps_lower_bound": self.eps_lower, "confidence": self.confidence,
                "claimed_eps": self.claimed_eps}


def plant_canaries(y, m: int, n_classes: int, *, seed: int) -> Canaries:
    """Replace the labels of ``m`` random training rows by uniformly random other labels.

    Args:
        y: ``(n,)`` labels in ``[0, n_classes)``.
        m: number of canaries, ``1 <= m <= n``.
        n_classes: C >= 3 (with C = 2 a canary's label is determined: there is nothing to guess).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        :class:`Canaries`.

    Raises:
        ConfigError: ``n_classes < 3``, ``m`` outside ``[1, n]`` or a bad seed.
        DataError: ``y`` not ``(n,)`` labels in ``[0, n_classes)``.
    """
    n_classes = check_int(n_classes, "n_classes", low=3)
    y = check_labels(y, "y", n_classes=n_classes)
    n = len(y)
    m = check_int(m, "m", low=1, high=n)
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=int(m), replace=False))
    shift = rng.integers(1, n_classes, size=int(m))  # uniform over the C - 1 other labels
    labels = (y[idx] + shift) % n_classes
    planted = y.copy()
    planted[idx] = labels
    return Canaries(indices=idx, labels=labels, original=y[idx], y=planted, n_classes=int(n_classes))


def guess_canaries(probs, canaries: Canaries) -> np.ndarray:
    """The attack: each canary's label guessed as the argmax of ``probs`` over all classes but its original one.

    Args:
        probs: ``(n, C)`` model outputs (probabilities or logits) on every training row.
        canaries: from :func:`plant_canaries`.

    Returns:
        ``(m,)`` int64 guesses.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(canaries.y) or p.shape[1] != canaries.n_classes:
        raise DataError(message("probs", f"model outputs of shape (n, C) = ({len(canaries.y)}, {canaries.n_classes})",
                                f"shape {p.shape}"))
    check_finite(p, "probs")
    rows = p[canaries.indices].copy()
    rows[np.arange(len(rows)), canaries.original] = -np.inf
    return rows.argmax(axis=1).astype(np.int64)


def canary_bound(correct: int, m: int, n_classes: int, *, confidence: float = 0.95,
                 claimed_eps: float | None = None) -> CanaryAudit:
    """The eps lower bound from ``correct`` right guesses out of ``m`` canaries (see the module docstring).

    Args:
        correct: right guesses, ``0 <= correct <= m``.
        m: canaries.
        n_classes: C (a canary takes one of L = C - 1 labels).
        confidence: in (0, 1).
        claimed_eps: shown beside the bound.
    """
    confidence = check_fraction(confidence, "confidence", open_low=True, open_high=True)
    m = check_int(m, "m")
    correct = check_int(correct, "correct", low=0, high=m)
    n_classes = check_int(n_classes, "n_classes", low=3)
    choices = int(n_classes) - 1
    alpha = 1.0 - confidence
    x, m = int(correct), int(m)
    low = float(beta.ppf(alpha, x, m - x + 1)) if x > 0 else 0.0
    ci_low = float(beta.ppf(alpha / 2, x, m - x + 1)) if x > 0 else 0.0
    ci_high = float(beta.ppf(1 - alpha / 2, x + 1, m - x)) if x < m else 1.0

    def eps_of(a: float) -> float:
        if a <= 0:
            return 0.0
        if a >= 1:
            return math.inf
        return max(0.0, math.log((choices - 1) * a / (1 - a))) if choices > 1 else 0.0

    return CanaryAudit(m=m, correct=x, accuracy=x / m, accuracy_ci=(ci_low, ci_high), accuracy_low=low,
                       eps_lower=eps_of(low), eps_estimate=eps_of(x / m), chance=1.0 / choices, choices=choices,
                       confidence=float(confidence), claimed_eps=claimed_eps)


def canary_audit(
    train_and_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    m: int,
    n_classes: int,
    seed: int,
    confidence: float = 0.95,
    claimed_eps: float | None = None,
) -> CanaryAudit:
    """Audit a training procedure: plant ``m`` canaries, train, guess their labels, bound eps from below.

    Args:
        train_and_predict: the procedure, ``(x, y_planted) -> (n, C)`` predicted probabilities (or
            logits) of the trained model on the same ``x``.
        x: ``(n, *input_shape)`` training inputs.
        y: ``(n,)`` labels.
        m: canaries to plant.
        n_classes: C >= 3.
        seed: seed of the canary draw (the procedure seeds itself).
        confidence: level of the Clopper-Pearson bounds.
        claimed_eps: the eps the procedure claims, kept beside the bound.

    Returns:
        :class:`CanaryAudit`; ``eps_lower`` exceeds the procedure's true label-DP eps with probability
        at most ``1 - confidence``.
    """
    canaries = plant_canaries(y, m, n_classes, seed=seed)
    probs = train_and_predict(x, canaries.y)
    guesses = guess_canaries(probs, canaries)
    correct = int((guesses == canaries.labels).sum())
    return canary_bound(correct, int(m), n_classes, confidence=confidence, claimed_eps=claimed_eps)
