"""Out-of-fold predicted probabilities of scikit-learn models: the non-network families of label-issue detection.

Notation: n examples, C classes, F folds. An example's out-of-fold
probabilities come from the model of the one fold that held it out, so no
model ever predicts an example it trained on (confident learning's input).

Families (:data:`OOF_FAMILIES`), each scikit-learn's defaults except where said:

============ ====================================================================
family       estimator
============ ====================================================================
``logistic`` ``StandardScaler`` + ``LogisticRegression(max_iter=1000)``
``boosting`` ``HistGradientBoostingClassifier(early_stopping=True)`` (at most 100 rounds)
``mlp``      ``StandardScaler`` + ``MLPClassifier(max_iter=500)`` (one layer of 100)
============ ====================================================================

Inputs of any shape are flattened to ``(n, D)``. The folds are
``StratifiedKFold(F, shuffle=True)`` (a plain ``KFold`` when a class has
fewer than F rows), seeded with ``derive_seed(seed, "folds")``, and each
family's own randomness with ``derive_seed(seed, family)``, so the same
``(x, labels, seed)`` gives the same probabilities. A class missing from a
fold's training rows gets probability 0 in that fold's predictions (what
``cross_val_predict`` does).

Example::

    from fitscope.train import sklearn_oof_probs
    oof = sklearn_oof_probs(x, labels, seed=0)
    oof.probs["logistic"].shape      # (n, C)
    oof.seconds                      # {"logistic": 0.4, "boosting": 9.1, "mlp": 6.0}
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fitscope.errors import ConfigError, DataError
from fitscope.seeding import derive_seed
from fitscope.validation import check_choice, check_features, check_int, check_labels, check_seed, message

#: The scikit-learn families, in the order they are fitted.
OOF_FAMILIES = ("logistic", "boosting", "mlp")
#: :func:`auto_families` fits every family up to this many input features and this many input entries
#: (rows x features), the linear model alone beyond either. Gradient boosting's cost grows with the
#: features (a histogram per feature, a tree per class per round): on 2 cores it took 16 s on digits
#: (1,437 x 64), 138 s on mnist1d (4,000 x 40) and 274 s on 1,000 rows of 28x28 digits (784 features)
#: while the audit's networks there took under a minute (``bench/audit_scale.py``, loaded machine).
AUTO_ALL_FAMILIES_FEATURES = 256
AUTO_ALL_FAMILIES_ENTRIES = 500_000


@dataclass(frozen=True)
class OutOfFoldProbs:
    """Out-of-fold probabilities of several model families on the same folds.

    Attributes:
        probs: ``{family: (n, C) float64}``, rows summing to 1.
        seconds: ``{family: wall seconds}`` of its F fits and predictions.
        fold: ``(n,)`` int64, the fold that held each example out.
        folds: F.
        seed: the seed everything was derived from.
        settings: ``{family: the estimator's repr}``, what was fitted.
    """

    probs: dict[str, np.ndarray]
    seconds: dict[str, float]
    fold: np.ndarray
    folds: int
    seed: int
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def families(self) -> tuple[str, ...]:
        """The families fitted, in order."""
        return tuple(self.probs)


def auto_families(n: int, features: int) -> tuple[str, ...]:
    """The families ``"auto"`` fits for ``n`` rows of ``features`` inputs: all of :data:`OOF_FAMILIES` up to
    :data:`AUTO_ALL_FAMILIES_FEATURES` features and :data:`AUTO_ALL_FAMILIES_ENTRIES` entries, else ``("logistic",)``."""
    n = check_int(n, "n")
    features = check_int(features, "features")
    small = features <= AUTO_ALL_FAMILIES_FEATURES and n * features <= AUTO_ALL_FAMILIES_ENTRIES
    return OOF_FAMILIES if small else ("logistic",)


def family_estimator(family: str, *, seed: int):
    """A fresh, unfitted scikit-learn classifier of ``family`` (see the module docstring), seeded with ``seed``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    family = check_choice(family, "family", OOF_FAMILIES)
    seed = check_seed(seed)
    if family == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if family == "boosting":
        return HistGradientBoostingClassifier(early_stopping=True, random_state=seed)
    return make_pipeline(StandardScaler(), MLPClassifier(max_iter=500, random_state=seed))


def fold_assignment(labels: np.ndarray, folds: int, *, seed: int) -> np.ndarray:
    """``(n,)`` int64 fold of each example: stratified by label when every class has ``folds`` rows, else plain."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(labels, return_counts=True)
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts.min() >= folds
                else KFold(folds, shuffle=True, random_state=seed))
    fold = np.empty(len(labels), np.int64)
    for f, (_, held) in enumerate(splitter.split(np.zeros((len(labels), 1)), labels)):
        fold[held] = f
    return fold


def sklearn_oof_probs(x, labels, *, families: Sequence[str] = OOF_FAMILIES, folds: int = 5,
                      n_classes: int | None = None, seed: int,
                      progress: Callable[[int], None] | None = None) -> OutOfFoldProbs:
    """Out-of-fold predicted probabilities of each scikit-learn family, on one set of folds.

    Args:
        x: ``(n, D)`` or ``(n, *shape)`` real inputs (flattened).
        labels: ``(n,)`` given labels, integers in [0, C).
        families: which of :data:`OOF_FAMILIES`, in order.
        folds: F >= 2, at most n.
        n_classes: C (default: the largest label + 1); columns of classes that no
            training fold holds are 0.
        seed: seed of the folds and of each family's randomness.
        progress: called with the number of fits done (families x folds) after each fit.

    Returns:
        :class:`OutOfFoldProbs`.

    Raises:
        DataError: bad ``x`` or ``labels``, or fewer than 2 classes among the labels.
        ConfigError: an unknown family, a repeated family, no family, ``folds`` out of
            range, a bad ``n_classes`` or ``seed``.
    """
    from sklearn.exceptions import ConvergenceWarning

    seed = check_seed(seed)
    labels = check_labels(labels, "labels")
    n = labels.shape[0]
    x = check_features(x, "x", n, like="labels").astype(np.float64)
    families = tuple(check_choice(f, f"families[{i}]", OOF_FAMILIES) for i, f in enumerate(families))
    if not families or len(set(families)) != len(families):
        raise ConfigError(message("families", f"distinct names among {', '.join(OOF_FAMILIES)}", repr(families)))
    folds = check_int(folds, "folds", low=2, high=n)
    high = int(labels.max()) + 1
    c = high if n_classes is None else check_int(n_classes, "n_classes", low=2)
    if high > c:
        raise DataError(message("labels", f"class labels in [0, {c}) for n_classes={c}", f"label {high - 1}"))
    if len(np.unique(labels)) < 2:
        raise DataError(message("labels", "at least 2 classes", "1 class"))
    fold = fold_assignment(labels, folds, seed=derive_seed(seed, "folds"))
    probs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    settings: dict[str, str] = {}
    fits = 0
    for family in families:
        t0 = time.perf_counter()
        family_seed = derive_seed(seed, family)
        out = np.zeros((n, c))
        for f in range(folds):
            held = fold == f
            est = family_estimator(family, seed=family_seed)  # a fresh clone per fold, like cross_val_predict
            train_labels = labels[~held]
            if len(np.unique(train_labels)) < 2:  # one class only: it gets probability 1
                out[np.ix_(held, [int(train_labels[0])])] = 1.0
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    est.fit(x[~held], train_labels)
                columns = np.asarray(est.classes_, np.int64)
                out[np.ix_(held, columns)] = est.predict_proba(x[held])
            fits += 1
            if progress is not None:
                progress(fits)
        out /= out.sum(axis=1, keepdims=True)
        probs[family] = out
        seconds[family] = time.perf_counter() - t0
        settings[family] = repr(family_estimator(family, seed=0)).replace("random_state=0", "random_state=<seed>")
    return OutOfFoldProbs(probs=probs, seconds=seconds, fold=fold, folds=folds, seed=seed, settings=settings)
