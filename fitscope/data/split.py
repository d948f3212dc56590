"""Train/test split of a single labelled set.

A single set of ``N`` examples is split with scikit-learn's
``train_test_split(test_size=test_fraction, random_state=seed, stratify=y)``,
so the test split holds ``ceil(test_fraction * N)`` examples with the class
proportions of the whole set. When stratification is impossible (a class with a
single example, or fewer test or train rows than classes) the split is a plain
seeded shuffle split, and the returned ``stratified`` flag says so.
"""

from __future__ import annotations

import math

import numpy as np

from fitscope.errors import DataError


def split_indices(
    y: np.ndarray, *, test_fraction: float, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The rows of the train and test splits of one set, stratified by label when possible.

    Exactly the rows :func:`split_train_test` takes (``x[train]`` is its
    ``x_train``), without touching the inputs: a loader of a memory-mapped
    file gathers the rows itself, block by block.

    Args:
        y: int64 labels, shape ``(N,)``.
        test_fraction: fraction of examples in the test split, in (0, 1).
        seed: the split's random state.
        where: the source for messages.

    Returns:
        ``(train, test, stratified)``: int64 row indices in split order.

    Raises:
        DataError: one of the splits would be empty.
    """
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    for split, count in (("train", n_train), ("test", n_test)):
        if count == 0:
            raise DataError(
                f"{split} split of {where}: expected at least one example, got 0 "
                f"(splitting {n} examples with test_fraction={test_fraction})"
            )
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    stratified = counts.min() >= 2 and n_test >= len(counts) and n_train >= len(counts)
    # the permutation depends only on n, y and the seed: splitting the row numbers splits x the same way
    train, test = train_test_split(
        np.arange(n, dtype=np.int64), test_size=test_fraction, random_state=seed, stratify=y if stratified else None
    )
    return train, test, bool(stratified)


def split_train_test(
    x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Split one set into train and test, stratified by label when possible.

    Args:
        x: inputs, shape ``(N, *input_shape)``.
        y: int64 labels, shape ``(N,)``.
        test_fraction: fraction of examples in the test split, in (0, 1).
        seed: the split's random state.
        where: the source for messages.

    Returns:
        ``(x_train, y_train, x_test, y_test, stratified)`` (new arrays).

    Raises:
        DataError: one of the splits would be empty.
    """
    train, test, stratified = split_indices(y, test_fraction=test_fraction, seed=seed, where=where)
    x, y = np.asarray(x), np.asarray(y)
    return x[train], y[train], x[test], y[test], stratified
