"""Curvature of a training loss: the Hessian's top eigenvalues (Lanczos), its trace and Frobenius norm (Hutchinson).

Notation: a model with trainable parameters ``theta`` (P numbers), a batch of n
rows ``(x_i, y_i)``, the full-batch loss ``L(theta) = (1/n) sum_i l(f(x_i;
theta), y_i)`` and its Hessian ``H = d^2 L / d theta^2``, a symmetric P x P
matrix that is never formed: every function here touches it only through
Hessian-vector products ``Hv``.

- **Hessian-vector products** (:func:`hessian_vector_product`): double backward
  (``torch.autograd.grad`` of ``grad(L) . v``, as PyHessian does) or
  forward-over-reverse (``torch.func.jvp(torch.func.grad(L))``), summed over
  chunks of ``chunk`` rows so that memory stays bounded by one chunk's
  activations. Both give the same ``Hv``; ``method="auto"`` takes double
  backward (half the CPU time of ``torch.func``'s on the sharpness study's
  ``mlp:64x3`` and 500 rows, ``bench/dynamics.py``) and falls back to
  forward-over-reverse for a model with a layer that has no double-backward
  formula.
- **Top eigenvalues** (:func:`hessian_top_eigenvalues`): the Lanczos method
  with full reorthogonalisation, in float64, on the torch device of the
  computation. At each step the Ritz values of the tridiagonal matrix are the
  estimates; the run stops when every one of the top ``k`` has a residual
  ``||H u - theta u|| <= tol |theta|`` (then an eigenvalue of H lies within
  ``tol |theta|`` of it, and in practice far closer, Parlett 1998 sec. 3.9), or
  after ``max_iter`` products. Cohen et al. 2021 ("Gradient descent on neural
  networks typically occurs at the edge of stability") track the sharpness
  (the top eigenvalue) the same way. The eigenvalues are the largest
  *algebraic* ones (a non-convex loss may have a negative eigenvalue of
  larger magnitude; it is not what sharpness means).
- **Trace and Frobenius norm** (:func:`hessian_trace`): Hutchinson's estimator
  with Rademacher probes ``v`` (entries +-1): ``E[v^T H v] = tr H`` and
  ``E[||H v||^2] = tr H^2 = ||H||_F^2``, each with its standard error over the
  probes (the Frobenius norm's by the delta method).
- **Memory** (:func:`hessian_memory_bytes`, :func:`check_hessian_memory`): an
  estimate from the parameter count alone (the Lanczos basis in float64 plus a
  few copies of the parameters), so a request that would not fit is refused
  in one line before anything is computed. Activations of one chunk come on
  top; lower ``chunk`` to bound them.

The loss is evaluated with the model in eval mode (dropout off, batch norm on
its running statistics), so that it is one deterministic function of the
parameters and a sum over rows; the model's mode is restored afterwards and
its parameters are never modified. Any ``torch.nn.Module`` works, not only
fitscope's: ``model(x)`` must return one output row per input row.

Losses: ``"ce"`` (cross-entropy of logits ``(n, C)`` against integer labels),
``"mse"`` (half the squared error summed over outputs, averaged over rows, as
in Cohen et al. 2021; integer labels are one-hot encoded against ``(n, C)``
outputs, float targets must have the outputs' shape) or a callable
``loss(outputs, targets) -> (B,)`` per-row losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fitscope.errors import ConfigError, DataError
from fitscope.train.device import placement_device
from fitscope.train.modes import eval_mode
from fitscope.validation import check_choice, check_int, check_number, check_seed, check_type, message

LOSSES = ("ce", "mse")
#: how ``Hv`` is computed; ``"auto"``: double backward, or forward-over-reverse where a layer lacks a
#: double-backward formula
METHODS = ("auto", "double-backward", "forward-over-reverse")
#: rows per chunk of the full-batch sums when ``chunk`` is not given
DEFAULT_CHUNK = 1024
#: copies of the parameters a Hessian-vector product holds (the parameters, gradient, tangent, product, sum, spare)
HVP_COPIES = 6
#: float64 vectors of length P the trace estimate holds besides the product's copies (probe, product, spare)
TRACE_VECTORS = 3

LossArg = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TopEigenvalues:
    """The top eigenvalues of a loss Hessian (:func:`hessian_top_eigenvalues`).

    Attributes:
        eigenvalues: ``(k,)`` the largest eigenvalues, in decreasing order.
        eigenvectors: ``(k, P)`` float32 unit eigenvectors (rows; parameters in
            ``model.named_parameters()`` order, trainable ones only). Pass
            ``eigenvectors[0]`` as ``start`` of the next call to track the top
            eigenvalue during training cheaply.
        residuals: ``(k,)`` ``||H u - lambda u||`` of each pair (0 for an exact one).
        iterations: Hessian-vector products used (the Lanczos steps).
        converged: every residual is within ``tol * |lambda|``.
        tol: the tolerance asked for.
        parameters: P.
        method: ``"forward-over-reverse"`` or ``"double-backward"`` (how ``Hv`` was computed).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    iterations: int
    converged: bool
    tol: float
    parameters: int
    method: str

    @property
    def top(self) -> float:
        """The largest eigenvalue (the sharpness)."""
        return float(self.eigenvalues[0])


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson estimates of a loss Hessian's trace and Frobenius norm (:func:`hessian_trace`).

    Attributes:
        trace: mean of ``v^T H v`` over the probes; ``trace_se`` its standard error.
        frobenius: ``sqrt(mean ||H v||^2)``; ``frobenius_se`` its standard error (delta method).
        frobenius_sq: ``mean ||H v||^2`` (an unbiased estimate of ``||H||_F^2``); ``frobenius_sq_se`` its error.
        samples: the number of Rademacher probes.
        parameters: P.
        method: how ``Hv`` was computed (see :class:`TopEigenvalues`).
    """

    trace: float
    trace_se: float
    frobenius: float
    frobenius_se: float
    frobenius_sq: float
    frobenius_sq_se: float
    samples: int
    parameters: int
    method: str


# --------------------------------------------------------------------------- memory


def parameter_count(model: torch.nn.Module) -> int:
    """P: the number of trainable numbers (parameters with ``requires_grad``) of ``model``."""
    check_type(model, "model", torch.nn.Module, "a torch.nn.Module")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def hessian_memory_bytes(parameters: int, *, k: int = 1, max_iter: int = 100, itemsize: int = 4,
                         what: str = "eigenvalues") -> int:
    """Bytes the Hessian computation holds beyond the model, estimated from the parameter count P alone.

    ``what="eigenvalues"``: the Lanczos basis (``min(max_iter, P) + 2``
    vectors of P float64) and :data:`HVP_COPIES` copies of the parameters
    (``itemsize`` bytes each) for the products. ``what="trace"``:
    :data:`TRACE_VECTORS` float64 vectors and the products' copies. The
    activations of one chunk of rows come on top (lower ``chunk`` to bound them).
    """
    parameters = check_int(parameters, "parameters")
    check_int(k, "k")
    check_int(max_iter, "max_iter")
    check_choice(what, "what", ("eigenvalues", "trace"))
    vectors = (min(max_iter, parameters) + 2) if what == "eigenvalues" else TRACE_VECTORS
    return parameters * (8 * vectors + HVP_COPIES * int(itemsize))


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_hessian_memory(parameters: int, *, limit_gb: float, k: int = 1, max_iter: int = 100, itemsize: int = 4,
                         what: str = "eigenvalues", name: str = "model", hint: str = "memory_limit_gb") -> int:
    """The estimate of :func:`hessian_memory_bytes` if it is within ``limit_gb`` GiB, else a one-line ConfigError.

    Args:
        parameters: P, the model's trainable parameter count (:func:`parameter_count`).
        limit_gb: the memory limit in GiB (``2**30`` bytes).
        k, max_iter, itemsize, what: as in :func:`hessian_memory_bytes`.
        name: what the message names (a flag such as ``--model`` on the command line).
        hint: the option that raises the limit, named in the message.

    Raises:
        ConfigError: ``model: expected a Hessian computation within the memory limit of 4 GiB, got 117,776,394
            parameters needing about 88.6 GiB (...); raise memory_limit_gb, lower max_iter or use a smaller model``.
    """
    limit = check_number(limit_gb, "limit_gb", low=0, open_low=True, open_high=True)
    need = hessian_memory_bytes(parameters, k=k, max_iter=max_iter, itemsize=itemsize, what=what)
    if need > limit * 2**30:
        vectors = (f"a Lanczos basis of {min(max_iter, parameters) + 2} float64 vectors" if what == "eigenvalues"
                   else f"{TRACE_VECTORS} float64 vectors")
        lower = ", lower max_iter" if what == "eigenvalues" else ""
        raise ConfigError(message(
            name, f"a Hessian computation within the memory limit of {limit:g} GiB",
            f"{parameters:,} parameters needing about {_gib(need)} ({vectors} + {HVP_COPIES} copies of the "
            f"parameters); raise {hint}{lower} or use a smaller model"))
    return need


# --------------------------------------------------------------------------- the loss and its products


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise DataError(message(name, "an array or tensor", type(value).__name__)) from err
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(message(name, "a numeric array or tensor", f"dtype {arr.dtype}"))
    return torch.from_numpy(np.ascontiguousarray(arr))


def per_example_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: LossArg) -> torch.Tensor:
    """``(B,)`` the loss of each row: ``"ce"``, ``"mse"`` (half the squared error summed over outputs) or a callable."""
    if callable(loss):
        return loss(outputs, targets)
    if loss == "ce":
        return F.cross_entropy(outputs, targets, reduction="none")
    if targets.dtype in (torch.int64, torch.int32):
        targets = F.one_hot(targets.long(), outputs.shape[-1]).to(outputs.dtype)
    return 0.5 * (outputs - targets).pow(2).reshape(len(outputs), -1).sum(1)


class LossHessian:
    """The full-batch loss of ``model`` on ``(x, y)`` as a function of its trainable parameters, and ``Hv``.

    Checks the inputs once (rows, finite inputs, labels against the model's
    outputs) and holds a detached copy of the parameters on ``device``; the
    model itself is not changed. ``hvp(v)`` takes and returns flat float64
    vectors of length P (parameters in ``named_parameters()`` order).
    """

    def __init__(self, model: torch.nn.Module, x, y, *, loss: LossArg = "ce", chunk: int | None = None,
                 device=None, method: str = "auto") -> None:
        check_type(model, "model", torch.nn.Module, "a torch.nn.Module")
        if not callable(loss):
            check_choice(loss, "loss", LOSSES)
        check_choice(method, "method", METHODS)
        self.model, self.loss = model, loss
        self.device = placement_device(device)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError(message("model", "a model with trainable parameters", "none with requires_grad"))
        self.names = [n for n, _ in named]
        self.params = {n: p.detach().to(self.device) for n, p in named}
        self.dtype = named[0][1].dtype
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.parameters = int(sum(self.sizes))
        self.frozen = {n: t.detach().to(self.device) for n, t in model.named_parameters() if not t.requires_grad}
        self.buffers = {n: b.to(self.device) for n, b in model.named_buffers()}

        x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
        if x.ndim < 1 or len(x) == 0:
            raise DataError(message("x", "at least one row", f"shape {tuple(x.shape)}"))
        if y.ndim < 1 or len(y) != len(x):
            raise DataError(message("y", f"{len(x)} rows, one per row of x", f"shape {tuple(y.shape)}"))
        if x.is_floating_point():
            if not torch.isfinite(x).all():
                raise DataError(message("x", "finite values", "NaN or inf"))
            x = x.to(self.dtype)
        self.n = len(x)
        self.chunk = min(check_int(chunk, "chunk", allow_none=True) or DEFAULT_CHUNK, self.n)
        self.x, self.y = x, y
        self.y = self._check_targets(y)
        self.method: str | None = None if method == "auto" else method

    def _forward(self, params: dict, xb: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.model, (params, self.frozen, self.buffers), (xb,))

    def _check_targets(self, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(self.model):
            out = self._forward(self.params, self.x[:1].to(self.device))
        if out.ndim < 1 or len(out) != 1:
            raise DataError(message("model", "one output row per input row", f"output shape {tuple(out.shape)} "
                                    "for 1 row"))
        if callable(self.loss):
            return y
        integer = not y.is_floating_point()
        if self.loss == "ce" or (integer and y.ndim == 1):
            if out.ndim != 2:
                raise DataError(message("model", f"outputs (n, C) for loss {self.loss!r} with integer labels",
                                        f"output shape {tuple(out.shape)}"))
            if y.ndim != 1 or not integer:
                raise DataError(message("y", f"integer class labels (n,) for loss {self.loss!r}",
                                        f"{y.dtype} of shape {tuple(y.shape)}"))
            c = out.shape[1]
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= c):
                bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
                raise DataError(message("y", f"class labels in [0, {c}) (the model has {c} outputs)", str(bad)))
            return y.long()
        if tuple(y.shape[1:]) != tuple(out.shape[1:]):
            raise DataError(message("y", f"targets of the outputs' shape (n, {', '.join(map(str, out.shape[1:]))})",
                                    f"shape {tuple(y.shape)}"))
        if not torch.isfinite(y).all():
            raise DataError(message("y", "finite targets", "NaN or inf"))
        return y.to(self.dtype)

    def chunks(self):
        """``(x, y)`` of each chunk of rows, on the device."""
        for start in range(0, self.n, self.chunk):
            yield (self.x[start:start + self.chunk].to(self.device), self.y[start:start + self.chunk].to(self.device))

    def _chunk_loss(self, params: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        losses = per_example_loss(self._forward(params, xb), yb, self.loss)
        if losses.ndim != 1 or len(losses) != len(xb):
            raise DataError(message("loss", "one loss per row, shape (B,)", f"shape {tuple(losses.shape)}"))
        return losses.sum() / self.n

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat vector of length P as a dict of tensors shaped like the parameters (in their dtype)."""
        parts = torch.split(flat.to(self.dtype), self.sizes)
        return {n: part.view(shape) for n, part, shape in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The dict of per-parameter tensors as one flat float64 vector of length P."""
        return torch.cat([tensors[n].reshape(-1).to(torch.float64) for n in self.names])

    def value(self) -> float:
        """The full-batch loss L(theta)."""
        with torch.no_grad(), eval_mode(self.model):
            return float(sum(self._chunk_loss(self.params, xb, yb) for xb, yb in self.chunks()))

    def _hvp_forward(self, tangent: dict) -> dict:
        grad = torch.func.grad(self._chunk_loss)
        total = None
        for xb, yb in self.chunks():
            part = torch.func.jvp(lambda p: grad(p, xb, yb), (self.params,), (tangent,))[1]
            total = part if total is None else {n: total[n] + part[n] for n in self.names}
        return total

    def _hvp_backward(self, tangent: dict) -> dict:
        total = None
        for xb, yb in self.chunks():
            leaves = {n: p.detach().requires_grad_(True) for n, p in self.params.items()}
            with torch.enable_grad():
                loss = self._chunk_loss(leaves, xb, yb)
                grads = torch.autograd.grad(loss, [leaves[n] for n in self.names], create_graph=True,
                                            allow_unused=True)
                dot = sum((g * tangent[n]).sum() for n, g in zip(self.names, grads) if g is not None)
                if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                    part = {n: torch.zeros_like(self.params[n]) for n in self.names}
                else:
                    hv = torch.autograd.grad(dot, [leaves[n] for n in self.names], allow_unused=True)
                    part = {n: (h if h is not None else torch.zeros_like(self.params[n]))
                            for n, h in zip(self.names, hv)}
            total = part if total is None else {n: total[n] + part[n].detach() for n in self.names}
        return {n: t.detach() for n, t in total.items()}

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of length P (float64 out, on the device)."""
        tangent = self.unflatten(v.to(self.device))
        with eval_mode(self.model):
            if self.method is None:  # "auto": the first method that works on this model is kept
                try:
                    out = self._hvp_backward(tangent)
                    self.method = "double-backward"
                except (RuntimeError, NotImplementedError):  # a layer without a double-backward formula
                    out = self._hvp_forward(tangent)
                    self.method = "forward-over-reverse"
            elif self.method == "forward-over-reverse":
                out = self._hvp_forward(tangent)
            else:
                out = self._hvp_backward(tangent)
        return self.flatten(out)


def hessian_vector_product(model: torch.nn.Module, x, y, v, *, loss: LossArg = "ce", chunk: int | None = None,
                           device=None, method: str = "auto") -> np.ndarray:
    """``H v`` of the full-batch loss of ``model`` on ``(x, y)`` for a flat vector ``v`` of length P (float64 out)."""
    problem = LossHessian(model, x, y, loss=loss, chunk=chunk, device=device, method=method)
    v = _as_tensor(v, "v").to(torch.float64).reshape(-1)
    if len(v) != problem.parameters:
        raise DataError(message("v", f"a vector of length P = {problem.parameters}", f"length {len(v)}"))
    return problem.hvp(v).cpu().numpy()


# --------------------------------------------------------------------------- top eigenvalues (Lanczos)


def _tridiagonal_eigh(alpha: list[float], beta: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix (diagonal ``alpha``)."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return np.asarray(alpha, float), np.ones((1, 1))
    return eigh_tridiagonal(np.asarray(alpha, float), np.asarray(beta[: len(alpha) - 1], float))


def hessian_top_eigenvalues(model: torch.nn.Module, x, y, *, k: int = 1, loss: LossArg = "ce", tol: float = 1e-3,
                            max_iter: int = 100, seed: int = 0, start=None, chunk: int | None = None,
                            device=None, method: str = "auto",
                            memory_limit_gb: float | None = None) -> TopEigenvalues:
    """The ``k`` largest eigenvalues of the Hessian of ``model``'s full-batch loss on ``(x, y)``, by Lanczos.

    Args:
        model: any ``torch.nn.Module`` (evaluated in eval mode; not modified).
        x: ``(n, ...)`` inputs (array or tensor); ``y``: ``(n,)`` integer
            labels or float targets of the outputs' shape (``"mse"``).
        k: how many eigenvalues (at most P).
        loss: ``"ce"``, ``"mse"`` or a callable ``(outputs, targets) -> (B,)`` (see the module docstring).
        tol: relative tolerance: stop when each of the top ``k`` Ritz pairs
            has ``||H u - theta u|| <= tol |theta|``.
        max_iter: at most this many Hessian-vector products (Lanczos steps; the
            basis keeps them all, see :func:`hessian_memory_bytes`).
        seed: seed of the random start vector (ignored with ``start``).
        start: ``(P,)`` start vector, e.g. the previous call's top eigenvector
            when tracking the sharpness during training.
        chunk: rows per chunk of the full-batch sums (default :data:`DEFAULT_CHUNK`).
        device: the torch device (default: the placement's, see :mod:`fitscope.train.device`).
        method: how ``Hv`` is computed: ``"auto"``, ``"double-backward"`` or ``"forward-over-reverse"``.
        memory_limit_gb: refuse (one-line ConfigError) a model whose estimate
            (:func:`hessian_memory_bytes`) exceeds this many GiB; None: no check.

    Returns:
        A :class:`TopEigenvalues`.

    Raises:
        ConfigError: a bad option, ``k`` above P, or a model over the memory limit.
        DataError: inputs and labels that do not fit each other or the model.
    """
    k = check_int(k, "k")
    tol = check_number(tol, "tol", low=0, high=1, open_low=True, open_high=True)
    max_iter = check_int(max_iter, "max_iter")
    seed = check_seed(seed)
    p = parameter_count(model)
    if p and k > p:
        raise ConfigError(message("k", f"an integer in [1, {p}] (the model's trainable parameters)", str(k)))
    if max_iter < k:
        raise ConfigError(message("max_iter", f"at least k = {k} Lanczos steps", str(max_iter)))
    if memory_limit_gb is not None:
        check_hessian_memory(p, limit_gb=memory_limit_gb, k=k, max_iter=max_iter, itemsize=_itemsize(model))
    problem = LossHessian(model, x, y, loss=loss, chunk=chunk, device=device, method=method)
    dev = problem.device
    gen = torch.Generator().manual_seed(seed)
    if start is None:
        q = torch.randn(p, generator=gen, dtype=torch.float64)
    else:
        q = _as_tensor(start, "start").to(torch.float64).reshape(-1).clone()
        if len(q) != p or not torch.isfinite(q).all() or float(q.norm()) == 0:
            raise DataError(message("start", f"a finite non-zero vector of length P = {p}", f"length {len(q)}"))
    q = (q / q.norm()).to(dev)

    steps = min(max_iter, p)
    basis = torch.empty(steps + 1, p, dtype=torch.float64, device=dev)  # rows past the current step unread
    basis[0] = q
    alpha: list[float] = []
    beta: list[float] = []
    converged = False
    theta = resid = s = None
    j = 0
    for j in range(steps):
        w = problem.hvp(basis[j])
        a = float(basis[j] @ w)
        alpha.append(a)
        w = w - a * basis[j] - (beta[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalisation, twice ("twice is enough")
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(w.norm())
        values, vectors = _tridiagonal_eigh(alpha, beta)
        order = np.argsort(values)[::-1][: min(k, j + 1)]
        theta, s = values[order], vectors[:, order]
        resid = np.abs(b * s[-1, :])
        scale = np.maximum(np.abs(theta), 1e-12 * max(np.abs(values).max(), 1e-300))
        if len(theta) == k and np.all(resid <= tol * scale):
            converged = True
            break
        if j + 1 == p:  # the basis spans the space: the Ritz values are the eigenvalues
            converged = True
            break
        if b <= 1e-12 * max(np.abs(values).max(), 1e-300):
            if len(theta) == k:  # an invariant subspace holding the top k: exact
                resid = np.zeros_like(resid)
                converged = True
                break
            # breakdown before k values: continue from a fresh random direction orthogonal to the basis
            w = torch.randn(p, generator=gen, dtype=torch.float64).to(dev)
            for _ in range(2):
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            b_new = float(w.norm())
            beta.append(0.0)
            basis[j + 1] = w / b_new
            continue
        beta.append(b)
        if j + 1 < len(basis):
            basis[j + 1] = w / b
    m = len(alpha)
    vectors = (torch.from_numpy(np.ascontiguousarray(s.T)).to(dev) @ basis[:m]).to(torch.float32).cpu().numpy()
    found = len(theta)
    eigenvalues = np.full(k, np.nan)
    eigenvalues[:found] = theta
    residuals = np.full(k, np.nan)
    residuals[:found] = resid
    if found < k:
        vectors = np.concatenate([vectors, np.full((k - found, p), np.nan, np.float32)])
    return TopEigenvalues(eigenvalues=eigenvalues, eigenvectors=vectors, residuals=residuals, iterations=m,
                          converged=bool(converged and found == k), tol=tol, parameters=p,
                          method=problem.method or "")


def _itemsize(model: torch.nn.Module) -> int:
    for p in model.parameters():
        return p.element_size()
    return 4


# --------------------------------------------------------------------------- trace and Frobenius norm (Hutchinson)


def hessian_trace(model: torch.nn.Module, x, y, *, samples: int = 100, loss: LossArg = "ce", seed: int = 0,
                  chunk: int | None = None, device=None, method: str = "auto",
                  memory_limit_gb: float | None = None) -> HessianTrace:
    """Hutchinson estimates of the trace and Frobenius norm of the Hessian of ``model``'s full-batch loss.

    Each of ``samples`` Rademacher probes ``v`` (entries +-1, drawn on the
    CPU from ``seed``, so the same on every device) costs one Hessian-vector
    product and gives ``v^T H v`` (mean: the trace) and ``||H v||^2`` (mean:
    ``||H||_F^2``). The standard errors are the probes' standard deviation
    over ``sqrt(samples)``; the Frobenius norm's follows by the delta method
    (``se(F^2) / (2 F)``).

    Args:
        model, x, y, loss, chunk, device, method: as in :func:`hessian_top_eigenvalues`.
        samples: probes (at least 2, for a standard error).
        seed: seed of the probes.
        memory_limit_gb: refuse a model whose estimate exceeds this many GiB (None: no check).

    Returns:
        A :class:`HessianTrace`.
    """
    samples = check_int(samples, "samples", low=2)
    seed = check_seed(seed)
    if memory_limit_gb is not None:
        check_hessian_memory(parameter_count(model), limit_gb=memory_limit_gb, itemsize=_itemsize(model),
                             what="trace")
    problem = LossHessian(model, x, y, loss=loss, chunk=chunk, device=device, method=method)
    gen = torch.Generator().manual_seed(seed)
    quad, sq = np.empty(samples), np.empty(samples)
    for i in range(samples):
        v = (torch.randint(0, 2, (problem.parameters,), generator=gen, dtype=torch.int8).to(torch.float64) * 2 - 1)
        hv = problem.hvp(v.to(problem.device))
        quad[i] = float(v.to(problem.device) @ hv)
        sq[i] = float(hv @ hv)
    root = math.sqrt(samples)
    fro_sq, fro_sq_se = float(sq.mean()), float(sq.std(ddof=1) / root)
    fro = math.sqrt(max(fro_sq, 0.0))
    return HessianTrace(trace=float(quad.mean()), trace_se=float(quad.std(ddof=1) / root), frobenius=fro,
                        frobenius_se=fro_sq_se / (2 * fro) if fro > 0 else 0.0, frobenius_sq=fro_sq,
                        frobenius_sq_se=fro_sq_se, samples=samples, parameters=problem.parameters,
                        method=problem.method or "")
