"""Out-of-fold probabilities of the scikit-learn families, against scikit-learn's own cross_val_predict."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from fitscope.errors import ConfigError, DataError
from fitscope.seeding import derive_seed
from fitscope.train import OOF_FAMILIES, auto_families, sklearn_oof_probs
from fitscope.train.sklearn_oof import family_estimator


def _blobs(seed: int = 0, n: int = 150, c: int = 3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, (c, 4))
    y = np.arange(n) % c
    return (centers[y] + rng.normal(0.0, 1.0, (n, 4))).astype(np.float32), y


@pytest.mark.parametrize("family", OOF_FAMILIES)
def test_each_family_equals_cross_val_predict_on_the_same_folds(family):
    x, y = _blobs()
    oof = sklearn_oof_probs(x, y, families=(family,), folds=4, seed=7)
    assert oof.families == (family,) and oof.folds == 4 and oof.seed == 7 and oof.seconds[family] > 0
    est = family_estimator(family, seed=derive_seed(7, family))
    ref = cross_val_predict(est, x.astype(np.float64), y, cv=PredefinedSplit(oof.fold), method="predict_proba")
    np.testing.assert_allclose(oof.probs[family], ref, rtol=1e-10, atol=1e-12)


def test_no_example_is_predicted_by_a_model_that_trained_on_it():
    x, y = _blobs(1, n=120)
    oof = sklearn_oof_probs(x, y, families=("logistic",), folds=5, seed=0)
    fold = oof.fold
    assert sorted(np.bincount(fold).tolist()) == [24] * 5  # stratified: 40 per class -> 8 per class per fold
    for f in range(5):
        held = fold == f
        assert np.bincount(y[held], minlength=3).tolist() == [8, 8, 8]
        # refit by hand on the other folds: the held rows' probabilities are that model's
        model = family_estimator("logistic", seed=0).fit(x[~held].astype(np.float64), y[~held])
        np.testing.assert_allclose(oof.probs["logistic"][held], model.predict_proba(x[held].astype(np.float64)),
                                   rtol=1e-10)


def test_a_class_missing_from_a_training_fold_gets_probability_zero():
    x, y = _blobs(2, n=60)
    y = y.copy()
    y[y == 2] = 0
    y[5] = 2  # class 2 has a single row: plain KFold, and the fold holding it has no class 2 to learn
    oof = sklearn_oof_probs(x, y, families=("logistic",), folds=3, n_classes=4, seed=1)
    probs = oof.probs["logistic"]
    assert probs.shape == (60, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    same_fold = oof.fold == oof.fold[5]
    assert (probs[same_fold, 2] == 0.0).all()  # the model of row 5's fold never saw class 2
    assert (probs[~same_fold, 2] > 0).all()  # the other folds' models did
    assert (probs[:, 3] == 0.0).all()  # class 3 is never seen


def test_same_seed_same_probabilities_images_flattened():
    x, y = _blobs(3, n=90)
    images = x.reshape(90, 1, 2, 2)
    a = sklearn_oof_probs(images, y, families=("logistic", "mlp"), folds=3, seed=5)
    b = sklearn_oof_probs(x, y, families=("logistic", "mlp"), folds=3, seed=5)
    for f in ("logistic", "mlp"):
        np.testing.assert_array_equal(a.probs[f], b.probs[f])
    c = sklearn_oof_probs(x, y, families=("logistic",), folds=3, seed=6)
    assert not np.array_equal(a.fold, c.fold)


@pytest.mark.parametrize("kwargs, error, msg", [
    (dict(families=("svm",)), ConfigError, "families[0]: expected one of logistic, boosting, mlp, got 'svm'"),
    (dict(families=()), ConfigError, "families: expected distinct names among logistic, boosting, mlp, got ()"),
    (dict(families=("mlp", "mlp")), ConfigError,
     "families: expected distinct names among logistic, boosting, mlp, got ('mlp', 'mlp')"),
    (dict(folds=1), ConfigError, "folds: expected an integer in [2, 6], got 1"),
    (dict(n_classes=2), DataError, "labels: expected class labels in [0, 2) for n_classes=2, got label 2"),
    (dict(seed=-1), ConfigError, "seed: expected an integer in [0, 2**32), got -1"),
    (dict(x=np.zeros(6)), DataError, "x: expected an array (n, D) or (n, *shape), got shape (6,)"),
    (dict(labels=np.zeros(6, np.int64)), DataError, "labels: expected at least 2 classes, got 1 class"),
])
def test_bad_arguments(kwargs, error, msg):
    args = dict(x=np.arange(12.0).reshape(6, 2), labels=np.array([0, 1, 2, 0, 1, 2]), seed=0)
    args.update(kwargs)
    x, labels = args.pop("x"), args.pop("labels")
    with pytest.raises(error, match=f"^{re.escape(msg)}$"):
        sklearn_oof_probs(x, labels, **args)


def test_seed_is_keyword_only():
    x, y = _blobs()
    with pytest.raises(TypeError):
        sklearn_oof_probs(x, y, OOF_FAMILIES, 5, None, 0)  # noqa: the seed cannot be passed by position


@pytest.mark.parametrize("n, features, expected", [
    (1437, 64, OOF_FAMILIES),  # digits
    (12_500, 40, OOF_FAMILIES),  # exactly 500,000 entries
    (12_501, 40, ("logistic",)),
    (100, 256, OOF_FAMILIES),
    (100, 257, ("logistic",)),  # wide inputs: boosting alone would take minutes
    (60_000, 784, ("logistic",)),
])
def test_auto_families_fits_everything_only_on_narrow_small_inputs(n, features, expected):
    assert auto_families(n, features) == expected
