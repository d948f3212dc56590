"""Built-in data sets: shapes, dtypes, scaling, stratified seeded splits, mnist1d cache."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from fitscope.data import builtin_names, describe_builtin, load
from fitscope.data import builtin as builtin_module

SKLEARN_SETS = {
    # name: (N, input shape, K)
    "digits": (1797, (1, 8, 8), 10),
    "iris": (150, (4,), 3),
    "wine": (178, (13,), 3),
    "breast_cancer": (569, (30,), 2),
}


def test_names_and_descriptions():
    assert builtin_names() == ["digits", "iris", "wine", "breast_cancer", "mnist1d"]
    described = describe_builtin()
    assert [name for name, _ in described] == builtin_names()
    assert all(isinstance(text, str) and text for _, text in described)


@pytest.mark.parametrize("name", list(SKLEARN_SETS))
def test_sklearn_sets(name):
    n, shape, k = SKLEARN_SETS[name]
    data = load(name, test_fraction=0.3, seed=5)
    assert data.name == name and data.input_shape == shape and data.n_classes == k
    assert len(data.y_test) == math.ceil(0.3 * n) and len(data.y_train) + len(data.y_test) == n
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert y.min() >= 0 and y.max() < k
    # stratified: class shares of train and test agree
    share_train = np.bincount(data.y_train, minlength=k) / len(data.y_train)
    share_test = np.bincount(data.y_test, minlength=k) / len(data.y_test)
    assert np.abs(share_train - share_test).max() < 0.03
    assert data.meta["split_seed"] == 5 and "seed=5" in data.source and "sklearn.datasets" in data.source
    again = load(name, test_fraction=0.3, seed=5)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    other = load(name, test_fraction=0.3, seed=6)
    assert not np.array_equal(data.y_train, other.y_train)


def test_digits_are_images_in_unit_range():
    data = load("Digits")
    assert data.kind == "image" and data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.classes == tuple(str(c) for c in range(10))


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_tables_standardized_with_train_statistics(name):
    data = load(name)
    assert data.kind == "vector"
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0), 1, atol=1e-4)
    assert np.abs(data.x_test.mean(0)).max() > 1e-4  # test standardized with train stats, not its own


def test_mnist1d_generates_caches_and_restores_global_rng(tmp_path, monkeypatch):
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)

    data = load("mnist1d", seed=7)
    assert data.kind == "signal" and data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.n_classes == 10
    assert set(np.unique(data.y_train)) == set(range(10))
    assert data.meta["generation_seed"] == 7 and "seed=7" in data.source
    assert np.random.random() == np_before and random.random() == py_before  # global state untouched
    assert len(list((tmp_path / "cache").glob("mnist1d-*-seed7.npz"))) == 1

    import mnist1d.data

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    cached = load("mnist1d", seed=7)
    np.testing.assert_array_equal(cached.x_train, data.x_train)
    np.testing.assert_array_equal(cached.y_test, data.y_test)


def _fake_make_dataset(args):
    rng = np.random.default_rng(args.seed)
    return {"x": rng.normal(size=(40, 40)), "y": np.arange(40) % 10,
            "x_test": rng.normal(size=(10, 40)), "y_test": np.arange(10)}


def test_mnist1d_bad_or_unwritable_cache_still_loads(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_make_dataset)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(cache))
    first = load("mnist1d", seed=1)
    entry = next(cache.glob("mnist1d-*-seed1.npz"))
    entry.write_bytes(b"garbage")
    again = load("mnist1d", seed=1)  # unreadable entry: regenerated and rewritten
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert np.load(entry)["x"].shape == (40, 40)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FITSCOPE_CACHE_DIR", str(blocker / "cache"))
    assert load("mnist1d", seed=2).x_train.shape == (40, 1, 40)


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("FITSCOPE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from fitscope.data.cache import cache_dir

    assert cache_dir() == tmp_path / "fitscope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir().parts[-2:] == (".cache", "fitscope")
    assert builtin_module.load_builtin("iris", test_fraction=0.2, seed=0).name == "iris"
