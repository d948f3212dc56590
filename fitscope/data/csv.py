"""CSV tables a user brings: one row per example, numeric feature columns and a label column.

- Delimiter: ``,``, ``;`` or tab, whichever the first line holds most of.
- Header: the first row is a header when it names the requested label
  column, holds a cell named ``label``/``target``/``class`` (any case), or has a
  non-numeric cell in a column whose other cells are all numbers.
- Label column (``label_column``): a header name, or an integer index
  (negative counts from the end; a string of digits is an index when no column
  has that name). Default: the first column named ``label``, ``target`` or
  ``class`` (any case), else the last column.
- Labels: when every label cell is a number they must be non-negative
  integers (``"2"`` and ``"2.0"`` both give class 2); otherwise every label is a
  class name and sorted names become indices ``0 .. n_classes - 1``.
- Features: every other column; each cell must be a finite number. They are
  standardized with the train split's per-feature mean and std, like the
  built-in tables.
- The rows are split with ``train_test_split(test_size=test_fraction,
  random_state=seed, stratify=y)``.

Positions in messages are 1-based line numbers of the file (the header is line 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fitscope.data.dataset import Dataset
from fitscope.data.labels import encode_class_names
from fitscope.data.scale import standardize
from fitscope.data.split import split_train_test
from fitscope.data.validation import build_dataset, check_at_least_two_classes, validate_arrays
from fitscope.errors import ConfigError, DataError

DEFAULT_LABEL_NAMES = ("label", "target", "class")
_NAN_TOKENS = ("nan", "+nan", "-nan")


def _delimiter(path: Path) -> str:
    with open(path, "rb") as handle:
        first = handle.read(65536).split(b"\n", 1)[0]
    counts = {d: first.count(d.encode()) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def _read_table(path: Path, where: str) -> tuple[pd.DataFrame, str]:
    try:
        delimiter = _delimiter(path)
        table = pd.read_csv(
            path, header=None, dtype=str, keep_default_na=False, na_filter=False,
            skip_blank_lines=False, sep=delimiter, engine="c", encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: expected rows of comma-separated values, got an empty file") from None
    except pd.errors.ParserError as err:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if match:
            want, line, got = match.groups()
            raise DataError(
                f"rows in {where}: expected {want} columns (as in line 1), got {got} at line {line}"
            ) from None
        raise DataError(f"cannot read {where}: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {where}: expected UTF-8 text, got a byte 0x{err.object[err.start]:02x} "
                        f"that is not (is it a binary file?)") from None
    except OSError as err:
        raise DataError(f"cannot read {where}: {err.strerror or err}") from None
    table = table.apply(lambda col: col.str.strip())
    table = table[~(table == "").all(axis=1)]
    return table, delimiter


def _numeric(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(values, is_number)`` of a column of strings; literal NaN counts as a number (rejected later)."""
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    is_number = ~np.isnan(values)
    missing = np.flatnonzero(~is_number)
    if len(missing):
        is_number[missing] = col.iloc[missing].str.lower().isin(_NAN_TOKENS).to_numpy()
    return values, is_number


def _resolve_label_column(label_column, names: list[str], header: bool, where: str) -> int:
    m = len(names)
    if label_column is None:
        lowered = [n.lower() for n in names] if header else []
        for wanted in DEFAULT_LABEL_NAMES:
            if wanted in lowered:
                return lowered.index(wanted)
        return m - 1
    if isinstance(label_column, str):
        if header:
            if label_column in names:
                return names.index(label_column)
            lowered = [n.lower() for n in names]
            if lowered.count(label_column.lower()) == 1:
                return lowered.index(label_column.lower())
        try:
            label_column = int(label_column.strip())
        except ValueError:
            if header:
                raise ConfigError(
                    f"label_column: expected a column of {where} ({', '.join(names)}) or an index, "
                    f"got {label_column!r}"
                ) from None
            raise ConfigError(
                f"label_column: expected a column index ({where} has no header row), got {label_column!r}"
            ) from None
    if isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer)):
        raise ConfigError(f"label_column: expected a column name or an integer index, got {label_column!r}")
    if not -m <= int(label_column) < m:
        raise ConfigError(
            f"label_column: expected a column index in [{-m}, {m - 1}] ({where} has {m} columns), "
            f"got {int(label_column)}"
        )
    return int(label_column) % m


def load_csv(path: Path, *, label_column: str | int | None, test_fraction: float, seed: int) -> Dataset:
    """Load a CSV table (rules in the module docstring) and split it with ``seed``.

    Args:
        path: an existing ``.csv`` file.
        label_column: the label column's header name or integer index; None for the default.
        test_fraction: share of rows in the test split.
        seed: split seed.

    Raises:
        DataError: unreadable file, ragged rows, non-numeric or empty feature
            cells, bad labels, a single class, or an empty split.
        ConfigError: ``label_column`` names no column of the file.
    """
    where = path.name
    table, delimiter = _read_table(path, where)
    if table.shape[1] < 2:
        raise DataError(f"columns in {where}: expected at least 2 (features and a label), got {table.shape[1]}")
    lines = table.index.to_numpy() + 1
    columns = [table[c] for c in table.columns]
    parsed = [_numeric(c) for c in columns]
    first = [str(c.iloc[0]) for c in columns]

    header = False
    if isinstance(label_column, str) and label_column.lower() in (f.lower() for f in first):
        header = True
    elif any(f.lower() in DEFAULT_LABEL_NAMES for f in first):
        header = True
    elif any(not ok[0] and ok[1:].all() for _, ok in parsed) and len(table) > 1:
        header = True
    names = [f or f"column {j}" for j, f in enumerate(first)] if header else [f"column {j}" for j in range(len(first))]

    j_label = _resolve_label_column(label_column, names, header, where)
    start = 1 if header else 0
    lines = lines[start:]
    if len(lines) == 0:
        raise DataError(f"data rows in {where}: expected at least one row below the header, got none")

    def locate(i: int) -> str:
        return f"line {lines[i]}"

    label_cells = columns[j_label].iloc[start:]
    label_values, label_is_number = parsed[j_label][0][start:], parsed[j_label][1][start:]
    empty = (label_cells == "").to_numpy()
    if empty.any():
        at = locate(int(np.argmax(empty)))
        raise DataError(f"labels in {where}: expected a class in every row, got an empty cell at {at}")
    if label_is_number.all():
        y = label_values
        classes = None
        encoding = "integers"
    else:
        y, classes = encode_class_names(label_cells.to_numpy())
        encoding = "sorted class names"

    features = [j for j in range(len(columns)) if j != j_label]
    x = np.empty((len(lines), len(features)), dtype=np.float64)
    for k, j in enumerate(features):
        values, ok = parsed[j][0][start:], parsed[j][1][start:]
        if not ok.all():
            i = int(np.argmin(ok))
            cell = columns[j].iloc[start + i]
            got = "an empty cell" if cell == "" else repr(cell)
            raise DataError(f"inputs in {where}: expected numbers, got {got} at {locate(i)}, column {names[j]!r}")
        x[:, k] = values

    x, y = validate_arrays(x, y, where=where, locate=locate)
    check_at_least_two_classes(y, where=where, classes=classes)
    x_train, y_train, x_test, y_test, stratified = split_train_test(
        x, y, test_fraction=test_fraction, seed=seed, where=where
    )
    x_train, x_test = standardize(x_train, x_test)
    kind = "stratified split" if stratified else "shuffle split"
    return build_dataset(
        path.stem, x_train, y_train, x_test, y_test,
        where=where, classes=classes,
        source=f"{path} (label column {names[j_label]!r}; {kind}, test_fraction={test_fraction}, seed={seed})",
        meta=dict(format="csv", label_column=names[j_label], header=header, delimiter=delimiter,
                  feature_columns=[names[j] for j in features], label_encoding=encoding,
                  scaling="standardized with train mean/std", split_seed=seed,
                  test_fraction=test_fraction, stratified=stratified),
    )
