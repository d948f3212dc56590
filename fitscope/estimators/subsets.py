"""Random subsets for subset-model estimators: each example in some models' subsets and out of others.

Memorization and influence (Feldman & Zhang), the holdout C-score (Jiang et al.)
and LiRA's shadow models all train models on random subsets of the training
rows and compare models that saw an example with models that did not; these
two functions draw such subsets and say how many models that needs.
"""

from __future__ import annotations

import math

import numpy as np

from fitscope.errors import ConfigError
from fitscope.validation import check_fraction, check_int, check_seed, message


def min_models(ratio: float) -> int:
    """Fewest subset models at ``ratio`` for which every example is in some subset and out of another.

    ``ceil(1 / min(r, 1 - r))`` models are the least that can cover every
    example both ways; twice that leaves the random draw room to do so.
    """
    return 2 * math.ceil(1.0 / min(ratio, 1.0 - ratio) - 1e-9)



def subset_masks(n: int, ratio: float, n_models: int, *, seed: int) -> np.ndarray:
    """``(n_models, n)`` bool masks, each holding ``round(ratio * n)`` examples, every example in and out.

    Each row is a uniform random subset drawn with ``numpy.random.default_rng(seed)``;
    an example that lands in every subset (or in none) is then swapped with a
    random example of a random model that can spare it, so that every example
    is in at least one subset and out of at least one.

    Raises:
        ConfigError: ``n`` or ``n_models`` is not a positive integer, ``ratio`` is not in (0, 1),
            ``n_models`` is below :func:`min_models`, the subset size is 0 or n, or a bad ``seed``.
    """
    n = check_int(n, "n")
    ratio = check_fraction(ratio, "ratio", open_low=True, open_high=True)
    n_models = check_int(n_models, "n_models")
    seed = check_seed(seed)
    size = int(round(ratio * n))
    if not 0 < size < n:
        raise ConfigError(message("ratio", f"a ratio that puts between 1 and {n - 1} of the {n} examples in a subset",
                                  f"{ratio:g} ({size} examples)"))
    if n_models < min_models(ratio):
        raise ConfigError(message("n_models", f"at least {min_models(ratio)} models for ratio {ratio:g}",
                                  str(n_models)))
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_models, n), bool)
    for k in range(n_models):
        masks[k, rng.choice(n, size, replace=False)] = True
    n_in = masks.sum(axis=0)
    for want_out in (True, False):  # examples never out, then examples never in
        stuck = np.flatnonzero(n_in == (n_models if want_out else 0))
        for i in stuck:
            for k in rng.permutation(n_models):
                # a partner j on the other side in model k that stays on that side in another model
                side = ~masks[k] if want_out else masks[k]
                spare = n_in < n_models - 1 if want_out else n_in > 1
                partners = np.flatnonzero(side & spare)
                if len(partners):
                    j = int(rng.choice(partners))
                    masks[k, i], masks[k, j] = not want_out, want_out
                    n_in[i] += -1 if want_out else 1
                    n_in[j] += 1 if want_out else -1
                    break
    if (n_in == 0).any() or (n_in == n_models).any():  # pragma: no cover - impossible above min_models
        raise ConfigError(message("n_models", f"enough models for subsets of ratio {ratio:g} to cover every example",
                                  str(n_models)))
    return masks
