"""Built-in data sets: made or shipped offline, no download.

- ``digits``: scikit-learn's 1797 8x8 handwritten digits, ``x`` of shape
  ``(N, 1, 8, 8)`` scaled to ``[0, 1]`` (pixel counts 0..16 divided by 16).
- ``iris``, ``wine``, ``breast_cancer``: the UCI tables bundled with
  scikit-learn, ``x`` of shape ``(N, D)`` standardized with the train split's
  per-feature mean and standard deviation.
- ``mnist1d``: the ``mnist1d`` package's 1-D digits, generated locally with
  its default arguments and ``seed``; its own 4000/1000 train/test split,
  ``x`` of shape ``(N, 1, 40)`` (the package centres and scales the signals).

The scikit-learn sets are split with
``train_test_split(test_size=test_fraction, random_state=seed, stratify=y)``;
``Dataset.source`` and ``Dataset.meta`` record the origin, split seed and
fraction.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from fitscope.data.cache import read_cached, write_cached
from fitscope.data.dataset import Dataset
from fitscope.data.scale import standardize
from fitscope.data.split import split_train_test
from fitscope.data.validation import build_dataset

_DESCRIPTIONS = {
    "digits": "scikit-learn handwritten digits: 1797 8x8 grayscale images, 10 classes (image)",
    "iris": "UCI iris flowers: 150 examples, 4 features, 3 classes (vector, standardized)",
    "wine": "UCI wine cultivars: 178 examples, 13 features, 3 classes (vector, standardized)",
    "breast_cancer": "UCI Wisconsin breast cancer: 569 examples, 30 features, 2 classes (vector, standardized)",
    "mnist1d": "MNIST-1D, generated locally: 4000 train / 1000 test signals of length 40, 10 classes (signal)",
}


def builtin_names() -> list[str]:
    """The names :func:`fitscope.data.load` accepts as built-in data sets, in display order."""
    return list(_DESCRIPTIONS)


def describe_builtin() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every built-in data set, in display order."""
    return list(_DESCRIPTIONS.items())


def _sklearn(name: str, loader_name: str, *, test_fraction: float, seed: int, image: bool) -> Dataset:
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    if image:
        x = (x / 16.0).reshape(-1, 1, 8, 8)
    classes = tuple(str(c) for c in bunch.target_names)
    origin = f"sklearn.datasets.{loader_name}"
    x_train, y_train, x_test, y_test, stratified = split_train_test(
        x, y, test_fraction=test_fraction, seed=seed, where=name
    )
    if image:
        scaling = "pixel counts / 16"
    else:
        x_train, x_test = standardize(x_train, x_test)
        scaling = "standardized with train mean/std"
    return build_dataset(
        name, x_train, y_train, x_test, y_test,
        where=name,
        classes=classes,
        source=f"{origin} (stratified split, test_fraction={test_fraction}, seed={seed})",
        meta=dict(format="builtin", origin=origin, split_seed=seed, test_fraction=test_fraction,
                  stratified=stratified, scaling=scaling),
    )


def _mnist1d_arrays(seed: int) -> dict[str, np.ndarray]:
    """mnist1d's default data set generated with ``seed`` (cached; NumPy/Python global RNG state restored)."""
    from importlib import metadata

    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        version = "unknown"
    keys = ("x", "y", "x_test", "y_test")
    entry = f"mnist1d-{version}-seed{seed}.npz"
    cached = read_cached(entry, keys)
    if cached is not None:
        return cached

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)  # calls np.random.seed / random.seed: restore them below
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x": np.asarray(raw["x"], dtype=np.float32),
        "y": np.asarray(raw["y"], dtype=np.int64),
        "x_test": np.asarray(raw["x_test"], dtype=np.float32),
        "y_test": np.asarray(raw["y_test"], dtype=np.int64),
    }
    write_cached(entry, **arrays)
    return arrays


def _mnist1d(*, test_fraction: float, seed: int) -> Dataset:
    arrays = _mnist1d_arrays(seed)
    return build_dataset(
        "mnist1d",
        arrays["x"][:, None, :], arrays["y"], arrays["x_test"][:, None, :], arrays["y_test"],
        where="mnist1d",
        classes=tuple(str(c) for c in range(10)),
        source=f"mnist1d.data.make_dataset (generated locally, seed={seed}, its own 4000/1000 split)",
        meta=dict(format="builtin", origin="mnist1d.data.make_dataset", generation_seed=seed,
                  split="mnist1d's own 80/20 split (test_fraction not used)"),
    )


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": lambda **kw: _sklearn("digits", "load_digits", image=True, **kw),
    "iris": lambda **kw: _sklearn("iris", "load_iris", image=False, **kw),
    "wine": lambda **kw: _sklearn("wine", "load_wine", image=False, **kw),
    "breast_cancer": lambda **kw: _sklearn("breast_cancer", "load_breast_cancer", image=False, **kw),
    "mnist1d": _mnist1d,
}


def load_builtin(name: str, *, test_fraction: float, seed: int) -> Dataset:
    """Load the built-in data set ``name`` (one of :func:`builtin_names`), split with ``seed``."""
    return _LOADERS[name](test_fraction=test_fraction, seed=seed)
