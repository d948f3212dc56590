"""Class names to label indices.

Labels inside fitscope are int64 indices in ``[0, n_classes)`` and
``Dataset.classes[c]`` names index ``c``. When a file gives class names
(``"setosa"``, ``"cat"``) instead of indices, the names are sorted and the
``c``-th sorted name becomes label ``c``, so the mapping is reproducible and
independent of row order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_class_names(names: Sequence[str] | np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map class names to indices of their sorted unique values.

    Args:
        names: one class name per example, shape ``(N,)``.

    Returns:
        ``(y, classes)``: int64 labels of shape ``(N,)`` and the sorted class names.
    """
    classes, y = np.unique(np.asarray(names).astype(str), return_inverse=True)
    return y.astype(np.int64).reshape(-1), tuple(str(c) for c in classes)


def index_class_names(n_classes: int) -> tuple[str, ...]:
    """The default names ``("0", "1", ..., str(n_classes - 1))`` of ``n_classes`` integer classes."""
    return tuple(str(c) for c in range(n_classes))
