"""Reference computations for tests, written independently of fitscope (no sklearn either)."""

from __future__ import annotations

import numpy as np


def brute_force_auc(scores, is_member) -> float:
    """ROC AUC by its definition: P(member score > non-member score) + P(tie) / 2 over all pairs (NaN dropped)."""
    s = np.asarray(scores, np.float64).ravel()
    truth = np.asarray(is_member, bool).ravel()
    keep = ~np.isnan(s)
    pos, neg = s[keep & truth], s[keep & ~truth]
    wins = 0.0
    for start in range(0, len(pos), 512):  # (512, n_neg) blocks bound the memory
        block = pos[start:start + 512, None]
        wins += float((block > neg[None]).sum()) + 0.5 * float((block == neg[None]).sum())
    return wins / (len(pos) * len(neg))
