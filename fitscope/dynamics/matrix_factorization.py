"""Implicit low-rank bias of deep matrix factorization: matrix completion by gradient descent on a product.

Notation: a ground-truth matrix ``W*`` of shape ``(rows, cols)``; the
observed entries ``Omega`` (a bool ``mask`` of the same shape, ``m`` entries
True) and their values (``observed``, read only where ``mask`` is True). A
deep matrix factorization of depth ``N`` writes the estimate as a product
``W = W_N ... W_1`` (``W_1`` is ``(hidden, cols)``, ``W_N`` is ``(rows,
hidden)``, the others ``(hidden, hidden)``, ``hidden = min(rows, cols)``, so
every matrix is reachable; depth 1 is plain ``W``) and trains every factor by
gradient descent on the squared loss of the observed entries::

    L(W_1, ..., W_N) = 1/2 sum_{(i, j) in Omega} (W_ij - W*_ij)^2

from a small initialisation (entries ``N(0, init_scale^2)``). Arora, Cohen,
Hu and Luo 2019 ("Implicit regularization in deep matrix factorization")
found that depth 2 and, more so, depth 3 fit the observed entries with a
matrix of lower effective rank than the nuclear-norm minimiser, and so
recover a low-rank ``W*`` from fewer entries. Depth 1 from a small
initialisation never moves the unobserved entries: it converges to the
min-Frobenius-norm interpolant (observed values, zeros elsewhere, up to the
initial values).

- :func:`low_rank_matrix`, :func:`observation_mask`: a seeded rank-r ground
  truth of unit Frobenius norm (``U V^T``, entries of ``U``, ``V`` iid
  ``N(0, 1)``, divided by its norm as the paper does) and ``m`` entries drawn
  uniformly without replacement.
- :func:`deep_factorization_gradients`: the loss and the gradient of every
  factor, ``dL/dW_j = (W_N...W_{j+1})^T G (W_{j-1}...W_1)^T`` with ``G =
  mask * (W - W*)`` (the closed form; written by hand because no library
  trains a product of matrices, and checked against autograd and finite
  differences in the tests).
- :func:`complete_deep`: the gradient-descent run (float64, torch).
- :func:`complete_nuclear`: ``min ||X||_* s.t. X_ij = W*_ij on Omega`` with
  cvxpy (SCS by default; Clarabel is exact but takes minutes at 100 x 100).
- :func:`soft_impute`: Mazumder, Hastie and Tibshirani's 2010 iteration for
  ``min 1/2 ||P_Omega(X - W*)||_F^2 + penalty ||X||_*`` (the check of the cvxpy
  solution; written by hand: the Python package that has it, fancyimpute,
  pulls in TensorFlow).
- :func:`effective_rank`: Roy and Vetterli 2007, ``exp(-sum_i p_i log p_i)``
  with ``p_i = sigma_i / sum_k sigma_k`` the normalised singular values.
- :func:`relative_error`: ``||X - W*||_F / ||W*||_F`` (with ``||W*||_F = 1``,
  as here, the same number as the paper's Frobenius distance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fitscope.errors import DataError
from fitscope.validation import (
    check_choice, check_int, check_mask, check_number, check_real, check_seed, message,
)

#: most factors of a deep factorization
MAX_DEPTH = 10
#: a loss above this (or not finite) stops a run: it diverged
DIVERGED_LOSS = 1e6
#: solvers of :func:`complete_nuclear`
SOLVERS = ("scs", "clarabel")


# --------------------------------------------------------------------------- problems and measures


def low_rank_matrix(rows: int, cols: int, rank: int, *, seed: int) -> np.ndarray:
    """A random ``(rows, cols)`` matrix of rank ``rank`` and unit Frobenius norm: ``U V^T / ||U V^T||_F``.

    Entries of ``U`` ``(rows, rank)`` and ``V`` ``(cols, rank)`` are iid ``N(0, 1)`` from ``seed``.
    """
    rows, cols = check_int(rows, "rows"), check_int(cols, "cols")
    rank = check_int(rank, "rank", high=min(rows, cols))
    rng = np.random.default_rng(check_seed(seed))
    u, v = rng.standard_normal((rows, rank)), rng.standard_normal((cols, rank))
    w = u @ v.T
    return w / np.linalg.norm(w)


def observation_mask(rows: int, cols: int, observed: int, *, seed: int) -> np.ndarray:
    """A bool ``(rows, cols)`` mask with ``observed`` True entries drawn uniformly without replacement."""
    rows, cols = check_int(rows, "rows"), check_int(cols, "cols")
    observed = check_int(observed, "observed", high=rows * cols)
    rng = np.random.default_rng(check_seed(seed))
    mask = np.zeros(rows * cols, bool)
    mask[rng.choice(rows * cols, observed, replace=False)] = True
    return mask.reshape(rows, cols)


def singular_values(matrix) -> np.ndarray:
    """The singular values of a real 2-D ``matrix``, largest first (float64, torch's ``svdvals``)."""
    arr = check_real(matrix, "matrix", axes=("rows", "cols"))
    return torch.linalg.svdvals(torch.from_numpy(np.asarray(arr, np.float64))).numpy()


def effective_rank(matrix) -> float:
    """The effective rank of Roy and Vetterli 2007: ``exp(H(p))``, ``p`` the singular values over their sum.

    ``H(p) = -sum_i p_i log p_i`` (``0 log 0 = 0``). It is ``k`` for a matrix
    with ``k`` equal non-zero singular values and lies between 1 and the
    number of non-zero ones otherwise. A zero matrix has none: an error.
    """
    return effective_rank_of_spectrum(singular_values(matrix), name="matrix")


def effective_rank_of_spectrum(sigma, *, name: str = "sigma") -> float:
    """:func:`effective_rank` from the singular values ``sigma`` (non-negative, at least one positive)."""
    sigma = np.asarray(check_real(sigma, name, axes=("k",)), float)
    total = float(sigma.sum())
    if not total > 0 or (sigma < 0).any():
        raise DataError(message(name, "a matrix with a non-zero singular value", "the zero matrix"))
    p = sigma[sigma > 0] / total
    return float(math.exp(-float(np.sum(p * np.log(p)))))


def relative_error(estimate, truth) -> float:
    """``||estimate - truth||_F / ||truth||_F`` over all entries (observed and unobserved)."""
    truth = check_real(truth, "truth", axes=("rows", "cols"))
    estimate = check_real(estimate, "estimate", axes=("rows", "cols"), shape=truth.shape, like="truth")
    norm = float(np.linalg.norm(truth))
    if not norm > 0:
        raise DataError(message("truth", "a non-zero matrix", "the zero matrix"))
    return float(np.linalg.norm(np.asarray(estimate, float) - truth) / norm)


def _problem(observed, mask) -> tuple[np.ndarray, np.ndarray]:
    """``(observed values with zeros elsewhere, mask)``, both checked; at least one entry observed."""
    mask = check_mask(mask, "mask", axes=("rows", "cols"), meaning="observed entries")
    values = check_real(observed, "observed", axes=("rows", "cols"), shape=mask.shape, like="mask",
                        check_values=False)
    values = np.where(mask, values, 0.0).astype(np.float64)
    if not np.isfinite(values).all():
        check_real(np.where(mask, observed, 0.0), "observed", axes=("rows", "cols"))
    if not mask.any():
        raise DataError(message("mask", "at least one observed entry (True)", "none"))
    return values, mask


# --------------------------------------------------------------------------- deep factorization


def _early_record(step: int) -> bool:
    """Steps 1, 2, 5, 10, 20, 50, ...: the records before the first ``record_every``, for a log-scale plot."""
    if step < 1:
        return False
    mantissa = step / 10 ** math.floor(math.log10(step))
    return mantissa in (1.0, 2.0, 5.0)


def deep_factorization_gradients(factors: Sequence[torch.Tensor], observed: torch.Tensor, mask: torch.Tensor
                                 ) -> tuple[float, list[torch.Tensor], torch.Tensor]:
    """The loss, the gradient of every factor and the product, by the closed form.

    Args:
        factors: ``[W_1, ..., W_N]`` (``W_1`` applied first), torch tensors.
        observed: the target values, zero outside ``mask`` (a tensor of the product's shape).
        mask: 1.0 on observed entries, 0.0 elsewhere (same shape, same dtype).

    Returns:
        ``(loss, grads, W)``: ``1/2 sum (mask * (W - observed))^2``, ``grads[j] =
        (W_N...W_{j+2})^T G (W_j...W_1)^T`` for factor ``j`` (0-based; an empty
        product is the identity) with ``G = mask * (W - observed)``, and ``W``.
    """
    depth = len(factors)
    prefix = [factors[0]]  # prefix[j] = W_{j+1} ... W_1 (1-based names)
    for w in factors[1:]:
        prefix.append(w @ prefix[-1])
    product = prefix[-1]
    residual = mask * (product - observed)
    loss = 0.5 * float(torch.sum(residual * residual))
    grads: list[torch.Tensor] = [residual] * depth
    left = residual  # (W_N ... W_{j+2})^T G, built from the top factor down
    for j in range(depth - 1, -1, -1):
        grads[j] = left if j == 0 else left @ prefix[j - 1].T
        if j > 0:
            left = factors[j].T @ left
    return loss, grads, product


@dataclass
class DeepCompletion:
    """What :func:`complete_deep` returns.

    Attributes:
        matrix: the product ``W_N ... W_1`` at the end, ``(rows, cols)`` float64.
        loss: the training loss of ``matrix`` (observed entries).
        steps: gradient steps taken.
        converged: the loss fell below ``tol`` within ``max_steps``.
        diverged: the loss became non-finite or exceeded :data:`DIVERGED_LOSS`.
        history_step, history_loss: ``(R,)`` the step and loss at each record (every ``record_every``
            steps, at 1, 2, 5, 10, 20, 50, ... before that, and at the last).
        history_singular_values: ``(R, min(rows, cols))`` the product's singular values at each record.
    """

    matrix: np.ndarray
    loss: float
    steps: int
    converged: bool
    diverged: bool
    history_step: np.ndarray
    history_loss: np.ndarray
    history_singular_values: np.ndarray


def init_factors(rows: int, cols: int, depth: int, init_scale: float, *, seed: int) -> list[torch.Tensor]:
    """``[W_1, ..., W_N]`` in float64 with iid ``N(0, init_scale^2)`` entries from one generator seeded ``seed``."""
    hidden = min(rows, cols)
    shapes = [(rows if j == depth - 1 else hidden, cols if j == 0 else hidden) for j in range(depth)]
    gen = torch.Generator().manual_seed(check_seed(seed))
    return [init_scale * torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def complete_deep(observed, mask, *, depth: int, init_scale: float = 1e-3, lr: float = 0.5,
                  max_steps: int = 50_000, tol: float = 1e-8, record_every: int = 500, seed: int,
                  progress: Callable[[int], None] | None = None) -> DeepCompletion:
    """Complete a matrix by gradient descent on a depth-``depth`` factorization of it (float64, torch).

    Plain gradient descent, ``W_j <- W_j - lr * dL/dW_j`` for every factor at
    once (:func:`deep_factorization_gradients`), from iid ``N(0,
    init_scale^2)`` entries, until the loss ``1/2 sum_Omega (W - W*)^2`` is
    below ``tol`` or ``max_steps`` steps have run. Small steps emulate the
    gradient flow of the paper's analysis; ``lr`` must keep GD stable (the
    loss Hessian's top eigenvalue near the solution is about ``depth x
    ||W*||_2^(2 - 2/depth)``, at most ``depth`` for a truth of unit norm).

    Args:
        observed: ``(rows, cols)`` values, read where ``mask`` is True.
        mask: bool ``(rows, cols)``, True on the observed entries (at least one).
        depth: number of factors, 1 to :data:`MAX_DEPTH`.
        init_scale: standard deviation of the initial entries, in (0, 1].
        lr: the learning rate, in (0, 1].
        max_steps: the step budget.
        tol: stop once the training loss is below this (> 0).
        record_every: record the loss and singular values every this many steps (and at steps 1, 2, 5, 10,
            ... below it, and at the end).
        seed: seed of the initial factors.
        progress: called with the steps done, every 100 steps.
    """
    values, mask = _problem(observed, mask)
    depth = check_int(depth, "depth", high=MAX_DEPTH)
    init_scale = check_number(init_scale, "init_scale", low=0, high=1, open_low=True)
    lr = check_number(lr, "lr", low=0, high=1, open_low=True)
    max_steps = check_int(max_steps, "max_steps")
    tol = check_number(tol, "tol", low=0, open_low=True, open_high=True)
    record_every = check_int(record_every, "record_every")
    rows, cols = mask.shape
    factors = init_factors(rows, cols, depth, init_scale, seed=seed)
    target, weight = torch.from_numpy(values), torch.from_numpy(mask.astype(np.float64))
    steps, records, converged, diverged = 0, [], False, False
    while True:
        loss, grads, product = deep_factorization_gradients(factors, target, weight)
        if not math.isfinite(loss) or loss > DIVERGED_LOSS:
            diverged = True
        elif loss < tol:
            converged = True
        last = converged or diverged or steps == max_steps
        if steps % record_every == 0 or last or (steps < record_every and _early_record(steps)):
            sv = torch.linalg.svdvals(product) if not diverged else torch.full((min(rows, cols),), math.nan)
            records.append((steps, loss, sv.numpy()))
        if last:
            break
        for w, g in zip(factors, grads):
            w.sub_(lr * g)
        steps += 1
        if progress is not None and steps % 100 == 0:
            progress(steps)
    if progress is not None:
        progress(steps)
    return DeepCompletion(
        matrix=product.numpy().copy(), loss=loss, steps=steps, converged=converged, diverged=diverged,
        history_step=np.asarray([r[0] for r in records], np.int64),
        history_loss=np.asarray([r[1] for r in records], np.float64),
        history_singular_values=np.stack([r[2] for r in records]).astype(np.float64),
    )


# --------------------------------------------------------------------------- convex baselines


def complete_nuclear(observed, mask, *, solver: str = "scs", eps: float = 1e-6) -> np.ndarray:
    """``argmin ||X||_*`` subject to ``X_ij = observed_ij`` on the mask, solved with cvxpy.

    Args:
        observed: ``(rows, cols)`` values, read where ``mask`` is True.
        mask: bool ``(rows, cols)``, True on the observed entries (at least one).
        solver: ``"scs"`` (first-order, accuracy ``eps``; seconds at 100 x 100) or ``"clarabel"`` (interior
            point, accurate, minutes at 100 x 100).
        eps: SCS's tolerance (``eps_abs`` and ``eps_rel``); Clarabel keeps its defaults.

    Returns:
        The minimiser, ``(rows, cols)`` float64.
    """
    import cvxpy as cp

    values, mask = _problem(observed, mask)
    solver = check_choice(solver, "solver", SOLVERS)
    eps = check_number(eps, "eps", low=0, high=1, open_low=True)
    index = np.flatnonzero(mask.ravel())
    x = cp.Variable(mask.shape)
    problem = cp.Problem(cp.Minimize(cp.normNuc(x)), [cp.vec(x, order="C")[index] == values.ravel()[index]])
    options = dict(eps_abs=eps, eps_rel=eps, max_iters=200_000) if solver == "scs" else {}
    problem.solve(solver=solver.upper(), **options)
    if x.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
        raise DataError(message("observed", "a completion problem the solver can solve",
                                f"status {problem.status!r} from {solver}"))
    return np.asarray(x.value, np.float64)


def nuclear_penalized_objective(matrix, observed, mask, penalty: float) -> float:
    """``1/2 ||P_Omega(matrix - observed)||_F^2 + penalty ||matrix||_*``: what :func:`soft_impute` minimises."""
    values, mask = _problem(observed, mask)
    residual = np.where(mask, np.asarray(matrix, float) - values, 0.0)
    return float(0.5 * np.sum(residual ** 2) + penalty * singular_values(matrix).sum())


def soft_impute(observed, mask, *, penalty: float, max_iter: int = 10_000, tol: float = 1e-10,
                start=None) -> np.ndarray:
    """Soft-impute (Mazumder, Hastie, Tibshirani 2010) for ``min 1/2 ||P_Omega(X - W*)||_F^2 + penalty ||X||_*``.

    Iterates ``Z <- S_penalty(P_Omega(W*) + P_Omega_perp(Z))``, ``S`` the
    soft-thresholding of the singular values, from ``start`` (zeros by
    default) until the relative change ``||Z' - Z||_F / max(||Z||_F, 1e-12)``
    is below ``tol`` or ``max_iter`` iterations. As ``penalty`` goes to 0 the
    minimiser tends to the nuclear-norm interpolant (:func:`complete_nuclear`);
    warm-start a decreasing sequence of penalties to get there fast.
    """
    values, mask = _problem(observed, mask)
    penalty = check_number(penalty, "penalty", low=0, open_low=True, open_high=True)
    max_iter = check_int(max_iter, "max_iter")
    tol = check_number(tol, "tol", low=0, open_low=True, open_high=True)
    if start is None:
        z = np.zeros(mask.shape)
    else:
        z = np.asarray(check_real(start, "start", axes=("rows", "cols"), shape=mask.shape, like="mask"), float)
    target, keep = torch.from_numpy(values), torch.from_numpy(mask)
    z = torch.from_numpy(z.copy())
    for _ in range(max_iter):
        u, s, vh = torch.linalg.svd(torch.where(keep, target, z), full_matrices=False)
        new = (u * torch.clamp(s - penalty, min=0.0)) @ vh
        change = float(torch.linalg.norm(new - z)) / max(float(torch.linalg.norm(z)), 1e-12)
        z = new
        if change < tol:
            break
    return z.numpy()

