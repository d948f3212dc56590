"""Kernel machines on the infinite-width kernels: scikit-learn estimators.

- :class:`NTKRegressor`: kernel ridge regression with the NTK/NNGP.
- :class:`NTKClassifier`: kernel ridge regression on one-hot targets, argmax.
- :class:`NTKSVC`: :class:`sklearn.svm.SVC` on the precomputed kernel.

Notation: ``X`` is ``(N, D)``; with ``arch="conv"`` each row is an image or
signal flattened in C order and ``input_shape`` (``(C, H, W)`` or ``(C, L)``)
says how to unflatten it. ``y`` is ``(N,)`` (or ``(N, T)`` for the regressor).

The estimators follow the scikit-learn contract: ``__init__`` stores its
arguments verbatim; ``fit`` validates them from the class's
``_parameter_constraints`` table (errors are
:class:`~fitscope.errors.ConfigError` with scikit-learn's verdict in
fitscope's one message form, e.g. "C: expected a float in the range (0.0,
inf) (a parameter of NTKSVC), got -1"); fitted attributes end in ``_``; using an unfitted estimator
raises ``NotFittedError``.

All-zero rows: :func:`fitscope.kernels.ntk` rejects them (the FC kernel is
built from angles), but a kernel machine must accept whatever rows a
cross-validation split hands it, so here an all-zero row gets the limit of
the kernel as ``|x| -> 0``: a zero kernel row (the kernel is homogeneous,
``k(x, x') = |x| |x'| F(angle)``). A zero test row then predicts 0 (the
regressor), the first class (the classifier; all scores tie at 0) or the
SVC's intercept decision.

Targets: the CNTK paper's 0.9 / -0.1 targets are one-hot targets minus 0.1;
with kernel ridge (no intercept) that shifts every class score of a test
point by the same amount, so the argmax, and thus every prediction, is the
same as with one-hot targets. We keep one-hot.
"""

from __future__ import annotations

import re
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.svm import SVC
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fitscope.errors import ConfigError, DataError
from fitscope.kernels.api import kernel_of_checked
from fitscope.kernels.validation import check_depth_fixed, check_device
from fitscope.validation import message, shorten

_KERNEL_CONSTRAINTS = {
    "arch": [StrOptions({"fc", "conv"})],
    "depth": [Interval(Integral, 1, None, closed="left")],
    "fixed": [Interval(Integral, 0, None, closed="left")],
    "kind": [StrOptions({"ntk", "nngp"})],
    "filter_size": [Interval(Integral, 1, None, closed="left")],
    "pool": [StrOptions({"none", "gap", "lap"})],
    "lap_window": [Interval(Integral, 1, None, closed="left"), None],
    "input_shape": [tuple, list, None],
    "dtype": [StrOptions({"float64", "float32"})],
    "device": [str, None],
    "max_memory_mb": [Interval(Real, 0, None, closed="neither")],
}

_FLOATS = [np.float64, np.float32]
_SKLEARN_MESSAGE = re.compile(r"^The '(?P<name>\w+)' parameter of (?P<owner>\w+) must be (?P<what>.+)\. "
                              r"Got (?P<got>.+) instead\.$", re.S)


def _config_error(exc: InvalidParameterError) -> ConfigError:
    """scikit-learn's parameter error in the one message form (its own text when it cannot be parsed)."""
    found = _SKLEARN_MESSAGE.match(str(exc))
    if found is None:
        return ConfigError(str(exc))
    return ConfigError(message(found["name"], f"{found['what']} (a parameter of {found['owner']})", found["got"]))


class _KernelParams:
    """The kernel options and kernel evaluation shared by the three estimators."""

    def _validate_all_params(self) -> None:
        """Check every hyperparameter (the constraints table, then fixed <= depth and the device)."""
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise _config_error(exc) from None
        check_depth_fixed(self.depth, self.fixed)
        check_device(self.device)
        if self.arch == "conv":
            shape = self.input_shape
            if shape is None or len(shape) not in (2, 3) or not all(
                    isinstance(s, Integral) and s >= 1 for s in shape):
                raise ConfigError(message("input_shape", "(C, H, W) or (C, L) positive ints for arch='conv'",
                                          shorten(shape)))

    def _shaped(self, X: np.ndarray) -> np.ndarray:
        """Rows of ``X`` unflattened to ``input_shape`` for conv; ``X`` itself for fc."""
        if self.arch != "conv":
            return X
        shape = tuple(int(s) for s in self.input_shape)
        if int(np.prod(shape)) != X.shape[1]:
            raise DataError(f"X: expected {int(np.prod(shape))} features (input_shape = {shape}), "
                            f"got {X.shape[1]}")
        return X.reshape((len(X),) + shape)

    def _kernel(self, A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
        """Kernel matrix between checked rows ``A (N1, D)`` and ``B (N2, D)`` (None: Gram of A)."""
        return kernel_of_checked(self._shaped(A), None if B is None else self._shaped(B), arch=self.arch,
                                 depth=self.depth, fixed=self.fixed, kind=self.kind,
                                 filter_size=self.filter_size, pool=self.pool, lap_window=self.lap_window,
                                 dtype=self.dtype, device=self.device, max_memory_mb=self.max_memory_mb)


def _ridge_solve(gram: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Solve ``(G + alpha I) W = Y`` for the Gram matrix ``G`` by Cholesky; least squares (with a warning) if
    it is singular."""
    A = gram + alpha * np.eye(len(gram))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), Y)
    except np.linalg.LinAlgError:
        warnings.warn("NTK kernel ridge: the Gram matrix plus alpha I is singular; using the least-squares "
                      "solution. Use alpha > 0 to avoid this.", RuntimeWarning, stacklevel=3)
        return scipy.linalg.lstsq(A, Y)[0]


class NTKRegressor(_KernelParams, RegressorMixin, BaseEstimator):
    """Kernel ridge regression with the infinite-width kernel (no intercept).

    Fits dual coefficients ``(G + alpha I)^{-1} y`` on the training Gram
    matrix ``G = ntk(X, X)`` and predicts ``ntk(X_test, X) @ dual_coef_``.

    Args:
        alpha: ridge, >= 0, in kernel units (``ntk(x, x) = (depth + 1) |x|^2`` for the NTK).
        arch, depth, fixed, kind, filter_size, pool, lap_window, dtype, device,
        max_memory_mb: as in :func:`fitscope.kernels.ntk`.
        input_shape: ``(C, H, W)`` or ``(C, L)`` for ``arch="conv"`` (rows of X are flattened inputs).

    Attributes:
        X_fit_: ``(N, D)`` training inputs.
        dual_coef_: ``(N,)`` or ``(N, T)`` dual coefficients.
        n_features_in_: ``D``.
    """

    _parameter_constraints = {"alpha": [Interval(Real, 0, None, closed="left")], **_KERNEL_CONSTRAINTS}

    def __init__(self, alpha=1e-3, *, arch="fc", depth=3, fixed=0, kind="ntk", filter_size=3, pool="gap",
                 lap_window=None, input_shape=None, dtype="float64", device=None, max_memory_mb=1024):
        self.alpha = alpha
        self.arch = arch
        self.depth = depth
        self.fixed = fixed
        self.kind = kind
        self.filter_size = filter_size
        self.pool = pool
        self.lap_window = lap_window
        self.input_shape = input_shape
        self.dtype = dtype
        self.device = device
        self.max_memory_mb = max_memory_mb

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Fit on ``X (N, D)`` and targets ``y (N,)`` or ``(N, T)``; returns self."""
        self._validate_all_params()
        X, y = validate_data(self, X, y, dtype=_FLOATS, y_numeric=True, multi_output=True)
        self.X_fit_ = X
        self.dual_coef_ = _ridge_solve(self._kernel(X), np.asarray(y, dtype=np.float64), float(self.alpha))
        return self

    def predict(self, X):
        """Predictions ``(M,)`` or ``(M, T)`` for ``X (M, D)``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._kernel(X, self.X_fit_) @ self.dual_coef_


class NTKClassifier(_KernelParams, ClassifierMixin, BaseEstimator):
    """Kernel ridge regression on one-hot targets, predicting the argmax (Arora et al. 2019).

    Args:
        alpha: ridge, >= 0, in kernel units.
        arch, depth, fixed, kind, filter_size, pool, lap_window, input_shape,
        dtype, device, max_memory_mb: as in :class:`NTKRegressor`.

    Attributes:
        classes_: ``(C,)`` the sorted labels, C classes (any hashable dtype numpy can sort).
        X_fit_: ``(N, D)`` training inputs.
        dual_coef_: ``(N, C)`` dual coefficients of the one-hot targets.
        n_features_in_: ``D``.
    """

    _parameter_constraints = {"alpha": [Interval(Real, 0, None, closed="left")], **_KERNEL_CONSTRAINTS}

    def __init__(self, alpha=1e-3, *, arch="fc", depth=3, fixed=0, kind="ntk", filter_size=3, pool="gap",
                 lap_window=None, input_shape=None, dtype="float64", device=None, max_memory_mb=1024):
        self.alpha = alpha
        self.arch = arch
        self.depth = depth
        self.fixed = fixed
        self.kind = kind
        self.filter_size = filter_size
        self.pool = pool
        self.lap_window = lap_window
        self.input_shape = input_shape
        self.dtype = dtype
        self.device = device
        self.max_memory_mb = max_memory_mb

    def fit(self, X, y):
        """Fit on ``X (N, D)`` and labels ``y (N,)``; returns self."""
        self._validate_all_params()
        X, y = validate_data(self, X, y, dtype=_FLOATS)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        onehot = np.zeros((len(y), len(self.classes_)))
        onehot[np.arange(len(y)), index] = 1.0
        self.X_fit_ = X
        self.dual_coef_ = _ridge_solve(self._kernel(X), onehot, float(self.alpha))
        return self

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._kernel(X, self.X_fit_) @ self.dual_coef_

    def decision_function(self, X):
        """Class scores: ``(M, C)``; for two classes ``(M,)`` = score of ``classes_[1]`` minus ``classes_[0]``."""
        scores = self._scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X):
        """Labels ``(M,)`` from ``classes_``: the argmax of the kernel ridge scores."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]


class NTKSVC(_KernelParams, ClassifierMixin, BaseEstimator):
    """A support vector classifier on the precomputed infinite-width kernel (Arora et al. 2020).

    Args:
        C: SVC regularization, > 0 (the UCI study grids 10^-2 .. 10^4).
        arch, depth, fixed, kind, filter_size, pool, lap_window, input_shape,
        dtype, device, max_memory_mb: as in :class:`NTKRegressor`.

    Attributes:
        classes_: ``(n_classes,)`` the sorted labels.
        svc_: the fitted :class:`sklearn.svm.SVC` (``kernel="precomputed"``).
        X_fit_: ``(N, D)`` training inputs.
        n_features_in_: ``D``.
    """

    _parameter_constraints = {"C": [Interval(Real, 0, None, closed="neither")], **_KERNEL_CONSTRAINTS}

    def __init__(self, C=1.0, *, arch="fc", depth=3, fixed=0, kind="ntk", filter_size=3, pool="gap",
                 lap_window=None, input_shape=None, dtype="float64", device=None, max_memory_mb=1024):
        self.C = C
        self.arch = arch
        self.depth = depth
        self.fixed = fixed
        self.kind = kind
        self.filter_size = filter_size
        self.pool = pool
        self.lap_window = lap_window
        self.input_shape = input_shape
        self.dtype = dtype
        self.device = device
        self.max_memory_mb = max_memory_mb

    def fit(self, X, y):
        """Fit on ``X (N, D)`` and labels ``y (N,)``; returns self."""
        self._validate_all_params()
        X, y = validate_data(self, X, y, dtype=_FLOATS)
        check_classification_targets(y)
        self.X_fit_ = X
        self.svc_ = SVC(C=float(self.C), kernel="precomputed").fit(self._kernel(X), y)
        self.classes_ = self.svc_.classes_
        return self

    def _test_kernel(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._kernel(X, self.X_fit_)

    def decision_function(self, X):
        """SVC decision values: ``(M,)`` for two classes, ``(M, n_classes)`` (one-vs-rest shape) otherwise."""
        gram = self._test_kernel(X)  # checks fitted first
        return self.svc_.decision_function(gram)

    def predict(self, X):
        """Labels ``(M,)`` from ``classes_``."""
        gram = self._test_kernel(X)
        return self.svc_.predict(gram)
