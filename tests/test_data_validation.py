"""Bad inputs at the data boundary: one-line DataError/ConfigError naming expected and got."""

from __future__ import annotations

import numpy as np
import pytest

from fitscope.data import builtin_names, load, validate_arrays
from fitscope.data.validation import build_dataset
from fitscope.errors import ConfigError, DataError


def _raises(exc, fn, *args, **kwargs) -> str:
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _csv(path, text):
    path.write_text(text)
    return path


X = np.arange(40, dtype=np.float64).reshape(20, 2)
Y = np.arange(20) % 2


def test_missing_path(tmp_path):
    message = _raises(DataError, load, tmp_path / "nope.npz")
    assert "nope.npz" in message and "no such file or folder" in message
    assert "no such file" in _raises(DataError, load, "data/missing.csv")


def test_unknown_name_lists_builtins_and_file_kinds():
    message = _raises(DataError, load, "cifar11")
    assert message.startswith("unknown data source 'cifar11'")
    for name in builtin_names():
        assert name in message
    assert ".npz" in message and ".csv" in message and "IDX" in message and "image folder" in message


def test_unsupported_file_kind_and_folder(tmp_path):
    (tmp_path / "data.txt").write_text("1,2\n")
    assert "got a .txt file" in _raises(DataError, load, tmp_path / "data.txt")
    (tmp_path / "empty").mkdir()
    assert "expected MNIST IDX files" in _raises(DataError, load, tmp_path / "empty")


def test_unreadable_files(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01" * 10)
    assert "cannot read bin.csv" in _raises(DataError, load, tmp_path / "bin.csv")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive")
    assert "cannot read" in _raises(DataError, load, tmp_path / "junk.npz")
    (tmp_path / "empty.csv").write_text("")
    assert "empty file" in _raises(DataError, load, tmp_path / "empty.csv")


def test_lengths_differ(tmp_path):
    message = _raises(DataError, load, _npz(tmp_path / "d.npz", x=X, y=Y[:-1]))
    assert message == "inputs and labels in d.npz: expected the same number of rows, got 20 inputs and 19 labels"
    message = _raises(DataError, load, _npz(tmp_path / "s.npz", x_train=X, y_train=Y, x_test=X[:3], y_test=Y[:2]))
    assert "(test split)" in message and "got 3 inputs and 2 labels" in message


def test_non_integer_and_negative_labels(tmp_path):
    y = Y.astype(float)
    y[4] = 0.5
    message = _raises(DataError, load, _npz(tmp_path / "f.npz", x=X, y=y))
    assert message == "labels in f.npz: expected non-negative integers, got 0.5 at index 4"
    y = Y.copy()
    y[7] = -2
    assert "expected non-negative integers, got -2 at index 7" in _raises(DataError, load, _npz(tmp_path / "n.npz", x=X, y=y))
    text = "a,b,label\n1,2,0\n3,4,1\n5,6,-1\n7,8,1\n"
    message = _raises(DataError, load, _csv(tmp_path / "data.csv", text))
    assert message == "labels in data.csv: expected non-negative integers, got -1 at line 4"
    text = "a,b,label\n1,2,0\n3,4,1.5\n5,6,1\n"
    assert "got 1.5 at line 3" in _raises(DataError, load, _csv(tmp_path / "half.csv", text))
    assert "dtype" in _raises(DataError, validate_arrays, X, np.array([None] * 20, dtype=object), where="arr")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(tmp_path, bad):
    x = X.copy()
    x[6, 1] = bad
    message = _raises(DataError, load, _npz(tmp_path / "nf.npz", x=x, y=Y))
    assert message == f"inputs in nf.npz: expected finite numbers, got {float(bad)!r} at index 6"


def test_non_numeric_and_non_finite_csv_cells(tmp_path):
    text = "a,b,label\n1,2,0\n3,abc,1\n5,6,1\n"
    message = _raises(DataError, load, _csv(tmp_path / "c.csv", text))
    assert message == "inputs in c.csv: expected numbers, got 'abc' at line 3, column 'b'"
    text = "a,b,label\n1,2,0\n3,,1\n5,6,1\n"
    assert "got an empty cell at line 3, column 'b'" in _raises(DataError, load, _csv(tmp_path / "e.csv", text))
    text = "a,b,label\n1,2,0\n3,nan,1\n5,inf,1\n"
    assert "expected finite numbers, got nan at line 3" in _raises(DataError, load, _csv(tmp_path / "n.csv", text))
    text = "a,b,label\n1,2,0\n3,4,1,9\n"
    assert "expected 3 columns (as in line 1), got 4 at line 3" in _raises(DataError, load, _csv(tmp_path / "r.csv", text))
    text = "a,b,label\n1,2,0\n3,4,\n"
    assert "got an empty cell at line 3" in _raises(DataError, load, _csv(tmp_path / "l.csv", text))


def test_single_class(tmp_path):
    message = _raises(DataError, load, _npz(tmp_path / "one.npz", x=X, y=np.zeros(20, int)))
    assert message == "labels in one.npz: expected at least 2 classes, got only class 0"
    text = "a,label\n" + "".join(f"{i},cat\n" for i in range(6))
    assert "got only class 0 ('cat')" in _raises(DataError, load, _csv(tmp_path / "cats.csv", text))
    message = _raises(DataError, load, _npz(tmp_path / "tr.npz", x_train=X, y_train=np.ones(20, int), x_test=X, y_test=Y))
    assert message == "labels in tr.npz (train split): expected at least 2 classes, got only class 1"


def test_empty_split(tmp_path):
    message = _raises(DataError, load, _npz(tmp_path / "e.npz", x_train=X, y_train=Y,
                                            x_test=np.zeros((0, 2)), y_test=np.zeros(0, int)))
    assert message == "test split of e.npz: expected at least one example, got 0"
    message = _raises(DataError, load, _npz(tmp_path / "two.npz", x=X[:2], y=Y[:2]), test_fraction=0.9)
    assert "train split of two.npz: expected at least one example, got 0" in message


def test_bad_arguments_are_config_errors(tmp_path):
    assert "test_fraction: expected a number in (0, 1), got 1.5" in _raises(ConfigError, load, "iris", test_fraction=1.5)
    assert "test_fraction" in _raises(ConfigError, load, "iris", test_fraction=0)
    assert "seed: expected an integer in [0, 2**32), got -1" in _raises(ConfigError, load, "iris", seed=-1)
    assert "seed" in _raises(ConfigError, load, "iris", seed=1.5)
    assert _raises(ConfigError, load, "digits", label_column="x") == (
        "label_column: expected None for the built-in data set 'digits' (it applies only to .csv files), got 'x'")
    path = _npz(tmp_path / "d.npz", x=X, y=Y)
    assert "label_column" in _raises(ConfigError, load, path, label_column=0)
    assert "source" in _raises(ConfigError, load, 42)


def test_validate_arrays_converts_and_checks_shapes():
    x, y = validate_arrays(np.ones((3, 2), np.int32), np.array([[0], [1], [2]], np.uint8), where="arr")
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (3,)
    assert x.flags.c_contiguous
    assert "got shape (3,)" in _raises(DataError, validate_arrays, np.ones(3), np.zeros(3), where="arr")
    assert "1-D array of class indices" in _raises(DataError, validate_arrays, np.ones((3, 2)), np.zeros((3, 2)), where="arr")
    assert "dtype <U1" in _raises(DataError, validate_arrays, np.array([["a"], ["b"]]), np.zeros(2), where="arr")
    big = np.ones((3, 2))
    big[1, 0] = 1e300
    assert "float32 range" in _raises(DataError, validate_arrays, big, np.zeros(3), where="arr")


def test_build_dataset_checks_classes_and_shapes():
    kw = dict(where="w", source="s")
    assert "expected class indices below 2 (the number of class names), got 2" in _raises(
        DataError, build_dataset, "n", X, np.arange(20) % 3, X, Y, classes=("a", "b"), **kw)
    assert "expected test inputs of the train inputs' shape (2,), got (3,)" in _raises(
        DataError, build_dataset, "n", X, Y, np.ones((4, 3)), Y[:4], **kw)
    data = build_dataset("n", X, Y, X[:4], Y[:4], **kw)
    assert data.classes == ("0", "1") and data.kind == "vector"
