"""The shared argument checks of fitscope.validation: values, exact messages, error types, one seed rule, one copy."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest

import fitscope
from fitscope.errors import ConfigError, DataError
from fitscope.validation import (
    as_array,
    check_binary,
    check_bool,
    check_choice,
    check_features,
    check_finite,
    check_fraction,
    check_int,
    check_labels,
    check_mask,
    check_number,
    check_probs,
    check_real,
    check_seed,
    check_seeds,
    check_shape,
    check_type,
    message,
    shape_text,
    shorten,
)

ROOT = Path(fitscope.__file__).resolve().parent
FORM = re.compile(r"^\S+: expected .+, got .+")


def _error(call) -> Exception:
    with pytest.raises(Exception) as info:
        call()
    return info.value


# --------------------------------------------------------------------------- the message form


def test_message_and_shorten():
    assert message("k", "an integer >= 1", "0") == "k: expected an integer >= 1, got 0"
    assert shorten(np.float32(0.5)) == "0.5" and shorten(np.int64(3)) == "3" and shorten("a") == "'a'"
    long = shorten(list(range(100)))
    assert len(long) == 80 and long.endswith("...")
    assert shape_text(("K", "n"), (2, 3)) == "(K, n) = (2, 3)" and shape_text(("n",)) == "(n,)"


# --------------------------------------------------------------------------- scalars: values


def test_scalar_checks_return_converted_values():
    assert check_number(np.float32(0.25), "x") == 0.25 and type(check_number(3, "x")) is float
    assert check_number(math.inf, "x") == math.inf  # closed infinite bounds admit infinity
    assert check_number(None, "x", allow_none=True) is None
    assert check_fraction(1, "p") == 1.0 and check_fraction(0.0, "p") == 0.0
    assert check_int(np.int64(4), "k") == 4 and type(check_int(np.int64(4), "k")) is int
    assert check_int(0, "k", low=0) == 0 and check_int(None, "k", allow_none=True) is None
    assert check_choice("fc", "arch", ("fc", "conv")) == "fc"
    assert check_choice(np.str_("conv"), "arch", ("fc", "conv")) == "conv"
    assert check_choice(2, "dim", (1, 2)) == 2
    assert check_bool(np.bool_(True), "flag") is True
    assert check_type({}, "config", dict) == {}


@pytest.mark.parametrize("call, error, text", [
    (lambda: check_number("1", "lr"), ConfigError, "lr: expected a number in [-inf, inf], got '1'"),
    (lambda: check_number(True, "lr"), ConfigError, "lr: expected a number in [-inf, inf], got True"),
    (lambda: check_number(math.nan, "lr"), ConfigError, "lr: expected a number in [-inf, inf], got nan"),
    (lambda: check_number(0, "lr", low=0, high=math.inf, open_low=True, open_high=True), ConfigError,
     "lr: expected a number in (0, inf), got 0"),
    (lambda: check_number(math.inf, "lr", low=0, high=math.inf, open_low=True, open_high=True), ConfigError,
     "lr: expected a number in (0, inf), got inf"),
    (lambda: check_number(-1.5, "beta", low=0.0, high=math.inf, open_high=True), ConfigError,
     "beta: expected a number in [0, inf), got -1.5"),
    (lambda: check_number("x", "t", low=0, high=1, allow_none=True), ConfigError,
     "t: expected a number in [0, 1] or None, got 'x'"),
    (lambda: check_fraction(1.0, "test_fraction", open_low=True, open_high=True), ConfigError,
     "test_fraction: expected a number in (0, 1), got 1.0"),
    (lambda: check_fraction(np.float64(-0.1), "noise"), ConfigError, "noise: expected a number in [0, 1], got -0.1"),
    (lambda: check_int(0, "epochs"), ConfigError, "epochs: expected an integer >= 1, got 0"),
    (lambda: check_int(2.0, "epochs"), ConfigError, "epochs: expected an integer >= 1, got 2.0"),
    (lambda: check_int(True, "epochs"), ConfigError, "epochs: expected an integer >= 1, got True"),
    (lambda: check_int(11, "m", low=1, high=10), ConfigError, "m: expected an integer in [1, 10], got 11"),
    (lambda: check_int(-1, "max_retries", low=0), ConfigError, "max_retries: expected an integer >= 0, got -1"),
    (lambda: check_int(0, "batch_size", allow_none=True), ConfigError,
     "batch_size: expected an integer >= 1 or None, got 0"),
    (lambda: check_choice("rnn", "arch", ("fc", "conv")), ConfigError, "arch: expected one of fc, conv, got 'rnn'"),
    (lambda: check_choice(True, "dim", (1, 2)), ConfigError, "dim: expected one of 1, 2, got True"),
    (lambda: check_choice("1", "dim", (1, 2)), ConfigError, "dim: expected one of 1, 2, got '1'"),
    (lambda: check_bool(1, "flag"), ConfigError, "flag: expected True or False, got 1"),
    (lambda: check_type([], "config", dict), ConfigError, "config: expected a dict, got list"),
    (lambda: check_type(3, "spec", (str, dict)), ConfigError, "spec: expected a str or dict, got int"),
])
def test_scalar_checks_raise_exact_messages(call, error, text):
    err = _error(call)
    assert type(err) is error and str(err) == text


# --------------------------------------------------------------------------- seeds: one rule


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, np.int64(7), np.uint32(2**32 - 1), np.int8(0)])
def test_check_seed_accepts_integers_in_range(seed):
    assert check_seed(seed) == int(seed) and type(check_seed(seed)) is int


@pytest.mark.parametrize("seed", [-1, 2**32, True, False, 1.5, 1.0, "3", None, np.bool_(True), np.float64(2.0)])
def test_check_seed_rejects_everything_else(seed):
    err = _error(lambda: check_seed(seed))
    assert type(err) is ConfigError
    assert str(err) == f"seed: expected an integer in [0, 2**32), got {shorten(seed)}"


def test_check_seed_names_the_argument_and_seed_lists_name_the_entry():
    assert str(_error(lambda: check_seed(-1, "data_seed"))) == "data_seed: expected an integer in [0, 2**32), got -1"
    assert str(_error(lambda: check_seed(-1, name="canary_seed"))).startswith("canary_seed: expected")
    assert check_seeds([0, np.int64(2**32 - 1)]) == [0, 2**32 - 1] and check_seeds(np.arange(3)) == [0, 1, 2]
    assert str(_error(lambda: check_seeds([0, 2**32]))) == "seeds[1]: expected an integer in [0, 2**32), got 4294967296"
    assert str(_error(lambda: check_seeds([]))) == "seeds: expected at least one seed, got an empty sequence"
    assert check_seeds([], allow_empty=True) == [] and check_seeds(range(2)) == [0, 1]
    assert check_seeds(s for s in [5]) == [5]
    assert str(_error(lambda: check_seeds(3))) == "seeds: expected a sequence of integer seeds in [0, 2**32), got 3"
    assert str(_error(lambda: check_seeds("01"))).startswith("seeds: expected a sequence")


def test_the_seed_rule_matches_derive_seed():
    from fitscope.seeding import derive_seed

    child = derive_seed(2**32 - 1, "unit", 3)  # the largest seed is a valid parent ...
    assert check_seed(child) == child  # ... and every child is a valid seed


# --------------------------------------------------------------------------- arrays


def test_array_checks_return_values():
    assert check_mask(np.ones((2, 3), bool), "m", axes=("K", "n")).dtype == np.bool_
    assert check_binary([[0, 1.0]], "c", axes=("K", "n")).tolist() == [[False, True]]
    assert check_real(np.arange(3), "s", axes=("n",), shape=(3,)).dtype.kind == "i"  # dtype kept
    assert check_real([np.nan], "s", axes=("n",), allow_nan=True).shape == (1,)
    assert check_features(np.zeros((4, 2, 3)), "x").shape == (4, 6)
    assert check_labels([0.0, 2.0], "y").tolist() == [0, 2] and check_labels([1], "y").dtype == np.int64
    probs = check_probs([[0.5, 0.5], [np.nan, np.nan]], "p", 2)
    assert probs.dtype == np.float64 and np.isnan(probs[1]).all()
    assert check_shape(np.zeros((2, 3)), "a", axes=("K", "n"), shape=(2, None)).shape == (2, 3)
    assert check_finite(np.array([1.0]), "a").tolist() == [1.0]


@pytest.mark.parametrize("call, error, text", [
    (lambda: as_array([[1, 2], [3]], "x"), DataError, None),
    (lambda: as_array(np.array([None]), "x"), DataError, "x: expected a numeric array, got dtype object"),
    (lambda: check_mask(np.ones((2, 3), int), "in_subset", axes=("K", "n"), meaning="True = in"), DataError,
     "in_subset: expected a bool array (True = in), got dtype int64"),
    (lambda: check_mask(np.ones((2, 3), bool), "in_subset", axes=("K", "n"), shape=(2, 4), like="logits"), DataError,
     "in_subset: expected a bool array of shape (K, n) = (2, 4) like logits, got shape (2, 3)"),
    (lambda: check_mask(np.ones((2, 3), bool), "m", axes=("K", "n"), shape=(3, None)), DataError,
     "m: expected a 2-D bool array (K, n) with K = 3, got shape (2, 3)"),
    (lambda: check_mask(np.ones((0, 3), bool), "m", axes=("K", "n")), DataError,
     "m: expected at least one entry on every axis (K, n), got shape (0, 3)"),
    (lambda: check_binary([[0, 2]], "correct", axes=("K", "n")), DataError,
     "correct: expected bool or 0/1 values, got 2 at [0, 1]"),
    (lambda: check_binary([["a"]], "correct", axes=("K", "n")), DataError,
     "correct: expected a bool or 0/1 array, got dtype <U1"),
    (lambda: check_binary([[0, 2]], "masks", axes=("K", "n"), error=ConfigError), ConfigError,
     "masks: expected bool or 0/1 values, got 2 at [0, 1]"),
    (lambda: check_real([1.0, np.inf], "scores", axes=("n",)), DataError,
     "scores: expected finite values, got inf at [1]"),
    (lambda: check_real([np.nan, -np.inf], "scores", axes=("n",), allow_nan=True), DataError,
     "scores: expected finite or NaN values, got -inf at [1]"),
    (lambda: check_real(np.zeros(3), "scores", axes=("n",), shape=(4,), like="labels"), DataError,
     "scores: expected a real array of shape (n,) = (4,) like labels, got shape (3,)"),
    (lambda: check_features(np.zeros(3), "features"), DataError,
     "features: expected an array (n, D) or (n, *shape), got shape (3,)"),
    (lambda: check_labels([0, -1], "labels"), DataError,
     "labels: expected non-negative integer class labels, got -1 at [1]"),
    (lambda: check_labels([0.5], "labels"), DataError,
     "labels: expected non-negative integer class labels, got 0.5 at [0]"),
    (lambda: check_labels([True], "labels"), DataError,
     "labels: expected non-negative integer class labels, got dtype bool"),
    (lambda: check_labels([0, 3], "y", n_classes=3), DataError, "y: expected class labels in [0, 3), got 3 at [1]"),
    (lambda: check_labels([0, 1], "y", 3, like="x"), DataError,
     "y: expected an integer array of shape (n,) = (3,) like x, got shape (2,)"),
    (lambda: check_probs([[0.5, 0.6]], "pred_probs", 1), DataError,
     "pred_probs: expected rows summing to 1 (within 0.001), got 1.1 at row 0"),
    (lambda: check_probs([[1.5, -0.5]], "pred_probs", 1), DataError,
     "pred_probs: expected probabilities in [0, 1], got 1.5 at [0, 0]"),
    (lambda: check_probs([[0.5, np.nan]], "pred_probs", 1), DataError,
     "pred_probs: expected each row all numbers or all NaN (no prediction), got a partly NaN row at index 0"),
    (lambda: check_probs([[1.0]], "pred_probs", 1), DataError,
     "pred_probs: expected probabilities over at least 2 classes (n, C) with C >= 2, got shape (1, 1)"),
    (lambda: check_finite(np.array([[0.0, np.nan]]), "x"), DataError, "x: expected finite values, got nan at [0, 1]"),
])
def test_array_checks_raise_exact_messages(call, error, text):
    err = _error(call)
    assert type(err) is error
    if text is not None:
        assert str(err) == text
    assert FORM.match(str(err)) and "\n" not in str(err)


# --------------------------------------------------------------------------- one form for every check

BAD_INPUTS = [
    lambda: check_number("x", "a"),
    lambda: check_number(2.0, "a", low=0, high=1),
    lambda: check_fraction(-1, "a"),
    lambda: check_int(0.5, "a"),
    lambda: check_int(5, "a", high=3, low=None),
    lambda: check_int(None, "a"),
    lambda: check_choice(None, "a", ("b",)),
    lambda: check_bool("yes", "a"),
    lambda: check_seed(-5, "a"),
    lambda: check_seeds([1, "2"], "a"),
    lambda: check_seeds([], "a"),
    lambda: check_type(1, "a", str),
    lambda: as_array([[1], [1, 2]], "a"),
    lambda: check_shape(np.zeros(2), "a", axes=("K", "n")),
    lambda: check_finite(np.array([np.inf]), "a"),
    lambda: check_mask([1, 0], "a", axes=("n",)),
    lambda: check_binary([0.5], "a", axes=("n",)),
    lambda: check_real(["s"], "a", axes=("n",)),
    lambda: check_features([[np.nan]], "a"),
    lambda: check_labels([[0]], "a"),
    lambda: check_probs([[0.2, 0.2]], "a", 1),
]


@pytest.mark.parametrize("call", BAD_INPUTS)
def test_every_check_speaks_the_one_form(call):
    err = _error(call)
    assert isinstance(err, (ConfigError, DataError)) and isinstance(err, ValueError)
    assert FORM.match(str(err)), str(err)
    assert re.match(r"^a(\[\d+\])?: expected ", str(err)) and "\n" not in str(err)


def test_every_public_check_is_in_the_table():
    import fitscope.validation as v

    checks = {name for name in dir(v) if name.startswith("check_") and callable(getattr(v, name))}
    covered = {name for call in BAD_INPUTS for name in call.__code__.co_names if name.startswith("check_")}
    assert checks <= covered, f"add bad inputs for {sorted(checks - covered)}"


# --------------------------------------------------------------------------- one copy only

#: generic checks live once, in fitscope/validation.py (names compared without leading underscores)
OLD_COPIES = {"check_positive", "check_positive_int", "positive", "positive_int", "non_negative_int"}


def _shared_checks() -> set[str]:
    tree = ast.parse((ROOT / "validation.py").read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("check_")}


def _function_definitions(tree: ast.AST):
    """``(line, name)`` of every function that is not a method (module level or nested in a function)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                stack.extend(child.body)  # a method is not a copy of a check, but look inside it
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield child.lineno, child.name
            stack.append(child)


def copies_of_shared_checks(sources: dict[str, str], shared: set[str]) -> list[str]:
    """``path:line: name`` of every function outside fitscope/validation.py named like a shared generic check."""
    forbidden = shared | OLD_COPIES
    out = []
    for path, text in sorted(sources.items()):
        for line, name in _function_definitions(ast.parse(text)):
            if name.lstrip("_") in forbidden:
                out.append(f"{path}:{line}: {name}")
    return out


def test_no_second_copy_of_a_generic_check():
    shared = _shared_checks()
    assert {"check_seed", "check_int", "check_number", "check_fraction", "check_labels"} <= shared
    sources = {str(p.relative_to(ROOT.parent)): p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.py"))
               if p != ROOT / "validation.py" and "__pycache__" not in p.parts}
    assert len(sources) > 50
    copies = copies_of_shared_checks(sources, shared)
    assert not copies, ("generic checks belong in fitscope/validation.py only; import them from there:\n  "
                        + "\n  ".join(copies))


def test_the_copy_scan_catches_a_planted_copy():
    planted = {
        "fitscope/data/corruptions.py": "def _check_seed(seed):\n    return seed\n",
        "fitscope/train/plain_models.py": "def f():\n    def check_positive(v):\n        return v\n",
        "fitscope/kernels/machines.py": "class A:\n    def check_int(self):\n        pass\n",  # a method: not a copy
        "fitscope/runs/executors.py": "from fitscope.validation import check_int\nx = check_int(1, 'x')\n",
    }
    found = copies_of_shared_checks(planted, {"check_seed", "check_int"})
    assert found == ["fitscope/data/corruptions.py:1: _check_seed", "fitscope/train/plain_models.py:2: check_positive"]


def test_the_old_locations_hold_no_generic_check():
    import fitscope.data.validation as data_validation
    import fitscope.estimators.validation as estimator_validation
    import fitscope.kernels.validation as kernel_validation
    import fitscope.validation as shared

    for module in (data_validation, estimator_validation, kernel_validation):
        for name in ("check_seed", "check_number", "check_int", "check_mask", "check_labels", "check_real"):
            value = getattr(module, name, None)
            assert value is None or value is getattr(shared, name), f"{module.__name__}.{name} is a copy"
