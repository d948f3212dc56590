"""The public ntk(): bad input gives one-line errors naming argument, expected and got; conv dispatch."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.kernels import ntk

X = np.random.default_rng(0).standard_normal((5, 4))


@pytest.mark.parametrize("x1, x2, pattern", [
    (X, X[:, :3], r"x2: expected the same feature dimension D as x1, \(4,\), got \(3,\)"),
    (np.ones((3, 1, 2, 2)), None, r"x1: expected a 2-D array .* flatten it with x1.reshape\(len\(x1\), -1\) "
                                  r"or use arch='conv'"),
    (X, np.ones((3, 2, 2)), r"x2: .*x2.reshape\(len\(x2\), -1\) or use arch='conv'"),
    (np.vstack([X, np.zeros((1, 4))]), None, r"x1: expected rows with nonzero norm.*at index 5"),
    (X, np.zeros((2, 4)), r"x2: expected rows with nonzero norm.*at index 0, 1"),
    (np.where(np.eye(5, 4) > 0, np.nan, X), None, r"x1: expected finite values, got nan .*\[0, 0\]"),
    (X, np.full((1, 4), np.inf), r"x2: expected finite values, got inf"),
    (X[0], None, r"x1: expected a 2-D array \(N, D\) for arch='fc', got shape \(4,\); for one example"),
    (np.zeros((0, 4)), None, r"x1: expected at least one entry on every axis, got shape \(0, 4\)"),
    (np.array([["a", "b"]]), None, r"x1: expected a numeric .* got dtype <U1"),
    ([[1.0, 2.0], [3.0]], None, r"x1: expected a numeric array"),
])
def test_bad_arrays_are_data_errors(x1, x2, pattern):
    with pytest.raises(DataError, match=pattern):
        ntk(x1, x2)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"depth": 0}, r"^depth: expected an integer >= 1, got 0$"),
    ({"depth": 2.5}, r"^depth: expected an integer >= 1, got 2.5$"),
    ({"depth": 2, "fixed": 3},
     r"^fixed: expected at most depth = 2 \(fixed counts the first layers not trained\), got 3$"),
    ({"fixed": -1}, r"fixed: .*got -1"),
    ({"kind": "gp"}, r"kind: expected one of ntk, nngp, got 'gp'"),
    ({"dtype": "float16"}, r"dtype: expected one of float64, float32, got 'float16'"),
    ({"arch": "rnn"}, r"arch: expected one of fc, conv, got 'rnn'"),
    ({"device": "tpu"}, r"device: expected"),
    ({"max_memory_mb": 0}, r"^max_memory_mb: expected a number in \(0, inf\), got 0$"),
    ({"max_memory_mb": 1e-6}, r"max_memory_mb: expected at least 7.63e-05 MiB \(one block pair of 1 x 1 rows\), "
                              r"got 1e-06"),
])
def test_bad_options_are_config_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ntk(X, **kwargs)


@pytest.mark.parametrize("call, error, needle", [
    (lambda: ntk(X, X[:, :2]), DataError, "x2"),
    (lambda: ntk(X, depth=0), ConfigError, "depth"),
    (lambda: ntk(np.ones((2, 1, 3, 3))), DataError, "x1: expected a 2-D array"),
])
def test_errors_are_one_line(call, error, needle):
    with pytest.raises(error, match=needle) as info:
        call()
    assert "\n" not in str(info.value)


def test_integer_and_float32_inputs_are_accepted():
    ints = np.arange(1, 13).reshape(4, 3)
    np.testing.assert_allclose(ntk(ints), ntk(ints.astype(float)), rtol=1e-12)
    np.testing.assert_allclose(ntk(ints.astype(np.float32)), ntk(ints.astype(float)), rtol=1e-6)


def test_conv_dispatch_passes_the_contract(monkeypatch):
    calls = []

    def stand_in(x1, x2, *, depth, filter_size, pool, lap_window, fixed, kind, dtype, device, max_memory_mb):
        calls.append(dict(x1=x1, x2=x2, depth=depth, filter_size=filter_size, pool=pool, lap_window=lap_window,
                          fixed=fixed, kind=kind, dtype=dtype, device=device, max_memory_mb=max_memory_mb))
        return np.zeros((len(x1), len(x1 if x2 is None else x2)))

    if importlib.util.find_spec("fitscope.kernels.conv") is None:
        monkeypatch.setitem(sys.modules, "fitscope.kernels.conv", types.SimpleNamespace(cntk=stand_in))
    else:
        monkeypatch.setattr(importlib.import_module("fitscope.kernels.conv"), "cntk", stand_in)
    images = np.ones((3, 2, 4, 4), dtype=np.int64)
    out = ntk(images, arch="conv", depth=2, fixed=1, kind="nngp", filter_size=5, pool="lap", lap_window=2,
              dtype="float32", max_memory_mb=64)
    assert out.shape == (3, 3)
    (call,) = calls
    assert call["x1"].dtype == np.float64 and call["x1"].shape == (3, 2, 4, 4) and call["x2"] is None
    assert {k: call[k] for k in ("depth", "filter_size", "pool", "lap_window", "fixed", "kind", "dtype", "device",
                                 "max_memory_mb")} == dict(depth=2, filter_size=5, pool="lap", lap_window=2, fixed=1,
                                                           kind="nngp", dtype="float32", device="cpu",
                                                           max_memory_mb=64.0)


@pytest.mark.parametrize("x1, kwargs, pattern", [
    (np.ones((3, 12)), {}, r"x1: expected images \(N, C, H, W\) or signals \(N, C, L\) for arch='conv', got shape "
                           r"\(3, 12\); for 1-channel signals add a channel axis with x1\[:, None\], "
                           r"for flat vectors use arch='fc'"),
    (np.ones((3, 1, 8)), {"pool": "max"}, r"pool: expected one of none, gap, lap, got 'max'"),
    (np.ones((3, 1, 8)), {"filter_size": 0}, r"filter_size: expected an integer >= 1, got 0"),
    (np.ones((3, 1, 8)), {"pool": "lap", "lap_window": 0}, r"lap_window: expected an integer >= 1 or None, got 0"),
])
def test_conv_arguments_are_checked_before_dispatch(x1, kwargs, pattern):
    with pytest.raises((DataError, ConfigError), match=pattern):
        ntk(x1, arch="conv", **kwargs)


def test_conv_shapes_must_match():
    with pytest.raises(DataError, match=r"x2: expected the same trailing shape \(C, ...\) as x1"):
        ntk(np.ones((2, 1, 4, 4)), np.ones((2, 1, 4, 5)), arch="conv")


@pytest.mark.parametrize("arch", ["fc", "conv"])
@pytest.mark.parametrize("in_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_result_has_the_dtype_asked_for(arch, in_dtype, dtype, symmetric):
    rng = np.random.default_rng(1)
    shape = (6, 5) if arch == "fc" else (6, 2, 4, 4)
    x1 = rng.standard_normal(shape).astype(in_dtype)
    x2 = None if symmetric else rng.standard_normal((3,) + shape[1:]).astype(in_dtype)
    k = ntk(x1, x2, arch=arch, depth=2, dtype=dtype)
    assert k.dtype == np.dtype(dtype) and k.shape == (6, 6 if symmetric else 3)
    # the float64 kernel of the same (float32-rounded if so given) inputs is the reference
    ref = ntk(x1.astype(np.float64), None if x2 is None else x2.astype(np.float64), arch=arch, depth=2,
              dtype="float64")
    assert ref.dtype == np.float64
    np.testing.assert_allclose(k, ref, rtol=1e-4 if dtype == "float32" else 1e-12, atol=1e-5)
