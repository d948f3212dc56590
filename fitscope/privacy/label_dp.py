"""Label differential privacy: randomized response with a prior, and LP-MST training (Ghazi et al. 2021).

Notation: n examples, C classes; ``priors`` is ``(n, C)``, one probability
vector per example; K models (LP-MST's ``models`` per stage).

RR-with-prior (:func:`rr_with_prior`), for one example with prior ``p`` and
true label ``y``: pick the k that maximizes
``e^eps / (e^eps + k - 1) * (mass of the top-k classes of p)`` (ties: the
smallest k; classes ranked by ``p``, ties by class index); then if ``y`` is
among the top k, output ``y`` with probability ``e^eps / (e^eps + k - 1)``
and each other top-k class with probability ``1 / (e^eps + k - 1)``; if it is
not, output a uniformly random top-k class. For any two labels ``y, y'`` and
any output, the probabilities differ by at most a factor ``e^eps``: the
mechanism is eps-label-DP for any prior that does not depend on the
example's own label (:func:`rr_output_distribution` gives the exact output
distribution, used by the tests to check the ratio). With a uniform prior it
is classic C-ary randomized response (k = C).

LP-MST (:func:`lp_mst`): the training rows are split at random into T
stages. Stage 1's labels go through RR with a uniform prior; a model trained
on them gives the prior for stage 2's labels, and so on; the model of stage t
trains (from scratch) on the noisy labels of stages 1..t. Every true label is
used once, by one eps-DP mechanism whose prior depends only on other
examples' labels, so the whole procedure is eps-label-DP (the claimed eps is
the eps passed in). T = 1 is LP-1ST, T = 2 LP-2ST.

Notes (what voids the guarantee): a prior computed from the example's own
label; reusing the true labels anywhere else (early stopping, model selection
on the training labels); the test labels are not protected and only measure
accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.validation import (
    check_bool,
    check_int,
    check_labels,
    check_number,
    check_real,
    check_seed,
    first_index,
    message,
    shorten,
)

_PRIOR_ATOL = 1e-6


def _check_eps(eps) -> float:
    """The privacy budget: a finite number > 0."""
    return check_number(eps, "eps", low=0.0, high=math.inf, open_low=True, open_high=True)


def _check_priors(priors, n: int | None) -> np.ndarray:
    arr = check_real(priors, "priors", axes=("n", "C"), shape=(n, None), like="labels").astype(np.float64)
    if arr.shape[1] < 2:
        raise DataError(message("priors", "probabilities over C >= 2 classes", f"shape {arr.shape}"))
    if (arr < 0).any():
        raise DataError(message("priors", "non-negative probabilities",
                                f"{shorten(arr[arr < 0][0])} at {first_index(arr < 0)}"))
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > _PRIOR_ATOL
    if off.any():
        i = int(np.argmax(off))
        raise DataError(message("priors", f"every row to sum to 1 (within {_PRIOR_ATOL:g})",
                                f"{sums[i]:.6g} in row {i}"))
    return arr


def _keep_probability(k: np.ndarray, eps: float) -> np.ndarray:
    """``e^eps / (e^eps + k - 1)``, written as ``1 / (1 + (k - 1) e^-eps)`` so that large eps do not overflow."""
    return 1.0 / (1.0 + (k - 1) * math.exp(-eps))


def _top_k(priors: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(order (n, C): classes by decreasing prior, ties by index; k* (n,): the chosen top-k size)``."""
    n, c = priors.shape
    order = np.argsort(-priors, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(priors, order, axis=1), axis=1)
    ks = np.arange(1, c + 1)
    value = _keep_probability(ks, eps)[None, :] * mass
    k_star = np.argmax(value >= value.max(axis=1, keepdims=True) - 1e-12, axis=1) + 1  # first (smallest) best k
    return order, k_star


def rr_with_prior(labels, priors, eps: float, *, seed: int) -> np.ndarray:
    """Randomized response with a prior, every example at once (vectorized).

    Args:
        labels: ``(n,)`` true labels in ``[0, C)``.
        priors: ``(n, C)`` prior probabilities per example, rows summing to 1; must not depend on the
            example's own label.
        eps: privacy parameter (> 0, finite).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``(n,)`` int64 noisy labels.

    Raises:
        ConfigError: ``eps`` not a finite number > 0, or a bad ``seed``.
        DataError: labels or priors of the wrong shape or range; a prior row not summing to 1.
    """
    eps = _check_eps(eps)
    seed = check_seed(seed)
    y = check_labels(labels, "labels")
    p = _check_priors(priors, len(y))
    n, c = p.shape
    if len(y) and int(y.max()) >= c:
        raise DataError(message("labels", f"class indices below C = {c} (the columns of priors)", str(int(y.max()))))
    order, k = _top_k(p, eps)
    rank = np.argsort(order, axis=1)[np.arange(n), y]  # position of the true label in the ranking
    in_top = rank < k
    rng = np.random.default_rng(seed)
    u, v = rng.random(n), rng.random(n)
    keep = in_top & (u < _keep_probability(k, eps))
    # in the top k but not kept: uniform over the k - 1 other top-k positions, skipping the label's own rank
    r = np.minimum((v * np.maximum(k - 1, 1)).astype(np.int64), np.maximum(k - 2, 0))
    other = r + (r >= rank)
    # not in the top k: uniform over the k top positions
    anywhere = np.minimum((v * k).astype(np.int64), k - 1)
    pos = np.where(keep, rank, np.where(in_top, other, anywhere))
    return order[np.arange(n), pos].astype(np.int64)


def rr_output_distribution(priors, eps: float) -> np.ndarray:
    """The exact output distribution of :func:`rr_with_prior`: ``P[output = o | true label = y]`` per example.

    Args:
        priors: ``(n, C)`` prior rows summing to 1.
        eps: privacy parameter (> 0).

    Returns:
        ``(n, C, C)`` float64; ``out[i, y, o]`` for example i, true label y, output o (rows sum to 1).
    """
    eps = _check_eps(eps)
    p = _check_priors(priors, None)
    n, c = p.shape
    order, k = _top_k(p, eps)
    rank = np.argsort(order, axis=1)  # rank[i, class]
    top = rank < k[:, None]  # (n, C): class is in the top k
    keep = _keep_probability(k, eps)[:, None, None]
    other = keep * math.exp(-eps)  # 1 / (e^eps + k - 1)
    eye = np.eye(c, dtype=bool)[None]
    top_out = top[:, None, :]  # over outputs o
    in_top_y = top[:, :, None]  # over true labels y
    inside = np.where(eye, keep, other) * top_out  # y in the top k
    outside = top_out / k[:, None, None]  # y outside: uniform over the top k
    return np.where(in_top_y, inside, outside).astype(np.float64)


# --------------------------------------------------------------------------- LP-MST


@dataclass
class LabelDPResult:
    """What :func:`lp_mst` trained and how private it is.

    Attributes:
        eps: the label-DP epsilon the procedure claims (pure eps, delta = 0).
        stages: T.
        noisy_labels: ``(n,)`` int64 labels after RR-with-prior (what the models trained on).
        stage: ``(n,)`` int64 stage (0-based) of each training example.
        test_acc: test accuracy of the final model (NaN without a test set).
        stage_test_acc: ``(T,)`` test accuracy after each stage.
        keep_rate: fraction of noisy labels equal to the true label, per stage ``(T,)``, or None (the
            default). It is a statistic of the true (private) labels, not covered by the eps claim, so
            :func:`lp_mst` computes it only when asked (``reveal_private_stats=True``).
        mean_k: mean top-k size chosen per stage ``(T,)``.
        train_probs: ``(n, C)`` float32 final model probabilities on every training example.
        test_probs: ``(n_test, C)`` float32 final model probabilities on the test set.
        seed: the seed the result follows from.
    """

    eps: float
    stages: int
    noisy_labels: np.ndarray
    stage: np.ndarray
    test_acc: float
    stage_test_acc: np.ndarray
    keep_rate: np.ndarray | None
    mean_k: np.ndarray
    train_probs: np.ndarray
    test_probs: np.ndarray
    seed: int


def _softmax_mean(logits: np.ndarray) -> np.ndarray:
    """Mean over the K models of the softmax of ``(K, n, C)`` logits -> ``(n, C)`` float64 rows summing to 1."""
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    p = (z / z.sum(axis=-1, keepdims=True)).mean(axis=0)
    return p / p.sum(axis=1, keepdims=True)


def lp_mst(
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    stages: int,
    spec: str,
    train_config,
    seed: int,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    n_classes: int | None = None,
    stage_fractions: list[float] | None = None,
    models: int = 1,
    device: str | None = None,
    progress: Callable[[dict], None] | None = None,
    reveal_private_stats: bool = False,
) -> LabelDPResult:
    """LP-MST: label-DP training in T stages, each stage's labels randomized with the previous model as prior.

    Args:
        x: ``(n, *input_shape)`` training inputs.
        y: ``(n,)`` true training labels (each is used once, through RR-with-prior).
        eps: label-DP epsilon (> 0).
        stages: T >= 1 (1: LP-1ST, 2: LP-2ST).
        spec: model spec (see :data:`fitscope.models.SPEC_HELP`).
        train_config: a :class:`fitscope.train.TrainConfig` for every stage's model.
        seed: seed of the stage split, the randomized responses and the models.
        x_test: optional test inputs; y_test: their labels (accuracy only).
        n_classes: C; default ``max(label) + 1`` over ``y`` and ``y_test``.
        stage_fractions: share of the rows per stage (default equal shares); sums to 1.
        models: models per stage, trained at once on the same noisy labels; the prior and the
            predictions are their mean probabilities (post-processing: no privacy cost).
        device: torch device; None: the placement's (see :func:`fitscope.train.train_ensemble`).
        progress: passed to :func:`fitscope.train.train_ensemble`, with ``stage`` added.
        reveal_private_stats: also compute ``keep_rate`` (the share of noisy labels equal to the true
            ones, per stage). It reads the true training labels, so it is not part of the eps-label-DP
            output; off by default, and the result's ``keep_rate`` is then None.

    Returns:
        A :class:`LabelDPResult`.

    Raises:
        ConfigError: eps <= 0, stages < 1, bad fractions, more stages than rows, a bad seed.
        DataError: bad arrays.
    """
    from fitscope.seeding import derive_seed
    from fitscope.train import train_ensemble

    eps = _check_eps(eps)
    stages = check_int(stages, "stages")
    models = check_int(models, "models")
    seed = check_seed(seed)
    reveal_private_stats = check_bool(reveal_private_stats, "reveal_private_stats")
    y = check_labels(y, "y")
    n = len(y)
    if stages > n:
        raise ConfigError(message("stages", f"at most one stage per training row ({n})", str(stages)))
    fractions = [1.0 / stages] * stages
    if stage_fractions is not None:
        fractions = [check_number(f, f"stage_fractions[{i}]", low=0.0, high=1.0, open_low=True)
                     for i, f in enumerate(stage_fractions)]
        if len(fractions) != stages or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(message("stage_fractions", f"{stages} positive shares summing to 1",
                                      shorten(stage_fractions)))
    if n_classes is None:
        n_classes = max(int(y.max()), int(np.max(y_test)) if y_test is not None and len(y_test) else 0) + 1
    k_classes = max(check_int(n_classes, "n_classes"), 2)

    rng = np.random.default_rng(derive_seed(seed, "stages"))
    perm = rng.permutation(n)
    bounds = np.round(np.cumsum([0.0] + fractions) * n).astype(int)
    stage = np.empty(n, np.int64)
    for t in range(stages):
        stage[perm[bounds[t]:bounds[t + 1]]] = t

    noisy = np.zeros(n, np.int64)
    prior = np.full((n, k_classes), 1.0 / k_classes)
    stage_acc, keep_rate, mean_k = [], [], []
    result = None
    model_seeds = [derive_seed(seed, "model", m) for m in range(models)]
    for t in range(stages):
        rows = stage == t
        noisy[rows] = rr_with_prior(y[rows], prior[rows], eps, seed=derive_seed(seed, "rr", t))
        _, k = _top_k(prior[rows], eps)
        if reveal_private_stats:  # a statistic of the true labels: outside the eps claim, only when asked
            keep_rate.append(float((noisy[rows] == y[rows]).mean()) if rows.any() else float("nan"))
        mean_k.append(float(k.mean()) if rows.any() else float("nan"))
        seen = stage <= t
        masks = np.repeat(seen[None], models, axis=0)
        stage_progress = None if progress is None else (lambda info, t=t: progress({**info, "stage": t + 1}))
        # rows of later stages carry label 0 here: masked out of training, their true labels never enter
        result = train_ensemble(spec, x, np.where(seen, noisy, 0), config=train_config, seeds=model_seeds,
                                masks=masks, x_test=x_test, y_test=y_test, device=device,
                                progress=stage_progress, n_classes=k_classes)
        prior = _softmax_mean(result.train_logits)
        stage_acc.append(float(np.mean(result.test_acc[:, -1])) if x_test is not None else float("nan"))
    test_probs = _softmax_mean(result.test_logits) if x_test is not None else np.zeros((0, k_classes))
    test_acc = float((test_probs.argmax(1) == np.asarray(y_test)).mean()) if x_test is not None else float("nan")
    return LabelDPResult(eps=eps, stages=int(stages), noisy_labels=noisy, stage=stage, test_acc=test_acc,
                         stage_test_acc=np.asarray(stage_acc),
                         keep_rate=np.asarray(keep_rate) if reveal_private_stats else None,
                         mean_k=np.asarray(mean_k), train_probs=prior.astype(np.float32),
                         test_probs=test_probs.astype(np.float32), seed=int(seed))
