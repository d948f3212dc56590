"""One place that seeds Python, NumPy and torch (nanoGPT-style ``set_seed``)."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A reproducible child seed of ``seed`` for the sub-task named by ``keys``.

    Uses NumPy's ``SeedSequence`` so that children are independent streams,
    and the same ``(seed, keys)`` always gives the same child.
    """
    entropy = [int(seed)] + [
        k if isinstance(k, int) else int.from_bytes(str(k).encode()[:16].ljust(16, b"\0"), "little")
        for k in keys
    ]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])
