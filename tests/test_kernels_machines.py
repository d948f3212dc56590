"""The kernel machines: scikit-learn's conformance suite, model selection, and known answers."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from fitscope.errors import ConfigError, DataError
from fitscope.kernels import NTKClassifier, NTKRegressor, NTKSVC, ntk


@pytest.mark.slow  # ~170 checks; depth 1 keeps each one cheap
@parametrize_with_checks([NTKRegressor(depth=1), NTKClassifier(depth=1), NTKSVC(depth=1)])
def test_sklearn_conformance(estimator, check):
    check(estimator)


def _blobs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0.0, 1.0], [-3.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    y = rng.integers(0, 3, size=n)
    X = centers[y] + 0.5 * rng.standard_normal((n, 3))
    return X, y


def test_regressor_is_kernel_ridge_with_ntk():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((20, 4)), rng.standard_normal(20)
    Xt = rng.standard_normal((5, 4))
    model = NTKRegressor(0.1, depth=2).fit(X, y)
    K, Kt = ntk(X, depth=2), ntk(Xt, X, depth=2)
    expected = Kt @ np.linalg.solve(K + 0.1 * np.eye(20), y)
    np.testing.assert_allclose(model.predict(Xt), expected, rtol=1e-8)


def test_classifier_is_argmax_of_one_hot_ridge_and_handles_string_labels():
    X, y = _blobs()
    labels = np.array(["cat", "dog", "emu"])[y]
    model = NTKClassifier(1e-2, depth=2).fit(X, labels)
    assert list(model.classes_) == ["cat", "dog", "emu"]
    K = ntk(X, depth=2)
    scores = ntk(X[:7], X, depth=2) @ np.linalg.solve(K + 1e-2 * np.eye(len(X)), np.eye(3)[y])
    np.testing.assert_array_equal(model.predict(X[:7]), np.array(["cat", "dog", "emu"])[np.argmax(scores, 1)])
    assert model.score(X, labels) == 1.0


def test_svc_matches_sklearn_svc_on_precomputed_kernel():
    from sklearn.svm import SVC

    X, y = _blobs(2)
    model = NTKSVC(10.0, depth=1, fixed=1).fit(X[:40], y[:40])
    ref = SVC(C=10.0, kernel="precomputed").fit(ntk(X[:40], depth=1, kind="nngp"), y[:40])
    np.testing.assert_allclose(model.decision_function(X[40:]),
                               ref.decision_function(ntk(X[40:], X[:40], depth=1, kind="nngp")), rtol=1e-8)


def test_grid_search_and_cross_val_score():
    X, y = _blobs(3, n=48)
    grid = GridSearchCV(NTKSVC(), {"depth": [1, 2], "fixed": [0, 1], "C": [0.1, 10.0]}, cv=3).fit(X, y)
    assert grid.best_score_ > 0.9
    assert set(grid.best_params_) == {"depth", "fixed", "C"}
    scores = cross_val_score(NTKClassifier(depth=3), X, y, cv=4)
    assert scores.shape == (4,) and scores.mean() > 0.9


def test_zero_rows_get_zero_kernel_rows():
    X, y = _blobs(4, n=30)
    X[0] = 0.0
    model = NTKRegressor(0.5).fit(X, y.astype(float))
    assert model.predict(np.zeros((1, 3)))[0] == 0.0
    with pytest.raises(DataError, match="nonzero norm"):
        ntk(X)


def test_bad_parameters_are_config_errors_raised_in_fit():
    X, y = _blobs(5, n=12)
    with pytest.raises(ConfigError,
                       match=r"^C: expected a float in the range \(0.0, inf\) \(a parameter of NTKSVC\), got -1$"):
        NTKSVC(C=-1).fit(X, y)
    with pytest.raises(ConfigError, match="fixed"):
        NTKClassifier(depth=2, fixed=3).fit(X, y)
    with pytest.raises(ConfigError, match="input_shape"):
        NTKClassifier(arch="conv").fit(X, y)
    with pytest.raises(NotFittedError):
        NTKRegressor().predict(X)


def test_conv_arch_unflattens_rows_with_input_shape():
    rng = np.random.default_rng(6)
    images = rng.standard_normal((8, 1, 4, 4))
    y = np.arange(8) % 2
    model = NTKRegressor(0.1, arch="conv", depth=1, input_shape=(1, 4, 4), pool="gap").fit(
        images.reshape(8, -1), y.astype(float))
    K = ntk(images, arch="conv", depth=1, pool="gap")
    np.testing.assert_allclose(model.dual_coef_, np.linalg.solve(K + 0.1 * np.eye(8), y), rtol=1e-8)
    with pytest.raises(DataError, match=r"X: expected 16 features \(input_shape = \(1, 4, 4\)\), got 15"):
        NTKRegressor(arch="conv", input_shape=(1, 4, 4)).fit(images.reshape(8, -1)[:, :15], y)
