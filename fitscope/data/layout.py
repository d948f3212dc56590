"""Array layout: put user arrays into fitscope's channels-first layout.

fitscope stores one example as ``(D,)`` (vector), ``(C, L)`` (signal) or
``(C, H, W)`` (image). Files a user brings often hold images without a channel
axis ``(N, H, W)`` or channels last ``(N, H, W, C)``. The rules, applied to the
full array ``x`` of shape ``(N, ...)``:

- 2-D ``(N, D)``: vectors, kept.
- 3-D ``(N, a, b)``: signals ``(N, C, L)`` when ``a <= 4`` (few channels),
  otherwise grayscale images ``(N, H, W)`` that get a channel axis ``(N, 1, H, W)``.
- 4-D ``(N, a, b, c)``: channels first when ``a`` is 1, 3 or 4; channels last
  (moved first) when ``c`` is 1, 3 or 4 and ``a`` is not; otherwise kept.
"""

from __future__ import annotations

import numpy as np

from fitscope.errors import DataError

CHANNEL_COUNTS = (1, 3, 4)


def channels_first(x: np.ndarray, *, where: str) -> tuple[np.ndarray, str]:
    """Return ``x`` in channels-first layout and a note of what was done.

    Args:
        x: array of shape ``(N, ...)`` with 2 to 4 axes.
        where: the source for messages.

    Returns:
        ``(x, note)`` where ``note`` is ``"as given"``, ``"added a channel axis"``
        or ``"moved the channel axis first"``. ``x`` is a view of the input,
        never a copy (a moved axis is not C-contiguous: the float32
        conversion that follows makes it so, so that a memory-mapped input
        is copied once, not twice).

    Raises:
        DataError: ``x`` has fewer than 2 or more than 4 axes.
    """
    x = np.asarray(x)
    if x.ndim == 2:
        return x, "as given"
    if x.ndim == 3:
        if x.shape[1] <= 4:
            return x, "as given"
        return x[:, None, :, :], "added a channel axis"
    if x.ndim == 4:
        if x.shape[1] in CHANNEL_COUNTS:
            return x, "as given"
        if x.shape[3] in CHANNEL_COUNTS:
            return np.moveaxis(x, 3, 1), "moved the channel axis first"
        return x, "as given"
    raise DataError(
        f"inputs in {where}: expected an array of shape (N, D), (N, C, L), (N, H, W), "
        f"(N, C, H, W) or (N, H, W, C), got shape {x.shape}"
    )
