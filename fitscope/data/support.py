"""Can this data support a study? Checked before any training, so a study never runs on data it can't use."""

from __future__ import annotations

import numpy as np

from fitscope.data.dataset import Dataset
from fitscope.errors import DataError
from fitscope.validation import message


def check_supports_study(data: Dataset, *, study: str, min_per_class: int = 2, need_test: bool = True) -> None:
    """Raise :class:`DataError` unless every class has ``min_per_class`` training rows (and a test split exists).

    A class with no training row cannot be learned, and one with a single row
    cannot be both in and out of a subset, or in two cross-validation folds.

    Args:
        data: the loaded dataset.
        study: the study's name, for the message.
        min_per_class: fewest training rows of each class of ``data.classes``.
        need_test: the study evaluates on the test split, so it must not be empty.
    """
    counts = np.bincount(np.asarray(data.y_train, np.int64), minlength=data.n_classes)
    short = [(c, int(k)) for c, k in enumerate(counts) if k < min_per_class]
    if short:
        c, k = short[0]
        name = data.classes[c] if c < len(data.classes) else str(c)
        more = f" (and {len(short) - 1} more classes)" if len(short) > 1 else ""
        raise DataError(message(data.name, f"at least {min_per_class} training rows of every class ({study} "
                                "needs them)", f"{k} of class {name!r}{more} in the training split of "
                                f"{len(data.y_train)} rows; use more data or drop the class"))
    if need_test and len(data.y_test) == 0:
        raise DataError(message(data.name, f"a test split ({study} evaluates on it)", "an empty one"))
