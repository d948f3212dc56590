"""What the estimators return: small frozen records that know how they were made.

Notation: K models, n training examples, m test examples, C classes, R subset
ratios, S label-issue signals. Every result names its ``method``, the number of
models (or examples) it used, and how many of its scores are undefined (NaN)
and why. The arrays are the caller's to keep; results are compared by identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class MemorizationResult:
    """Feldman-Zhang memorization estimates, one per training example.

    Attributes:
        mem: ``(n,)`` float64, ``p_in - p_out``; NaN where ``n_in == 0`` or ``n_out == 0``.
        mem_se: ``(n,)`` float64 standard error
            ``sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)``; NaN with ``mem``.
        p_in: ``(n,)`` float64 mean correctness over the models whose subset holds the example
            (NaN where ``n_in == 0``).
        p_out: ``(n,)`` float64 mean correctness over the other models (NaN where ``n_out == 0``).
        n_in: ``(n,)`` int64 number of models whose subset holds the example.
        n_out: ``(n,)`` int64 number of models whose subset does not.
        n_models: K.
        method: ``"feldman-zhang"``.
    """

    mem: np.ndarray
    mem_se: np.ndarray
    p_in: np.ndarray
    p_out: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    n_models: int
    method: str = "feldman-zhang"

    @property
    def n_examples(self) -> int:
        """n."""
        return int(self.mem.shape[0])

    @property
    def n_undefined(self) -> int:
        """Examples without an estimate: in every model's subset or in none."""
        return int(np.count_nonzero(np.isnan(self.mem)))

    def to_frame(self) -> pd.DataFrame:
        """One row per training example: ``index, mem, mem_se, p_in, p_out, n_in, n_out``."""
        return pd.DataFrame({
            "index": np.arange(self.n_examples), "mem": self.mem, "mem_se": self.mem_se,
            "p_in": self.p_in, "p_out": self.p_out, "n_in": self.n_in, "n_out": self.n_out,
        })


@dataclass(frozen=True, eq=False)
class InfluenceResult:
    """Feldman-Zhang influence of every training example on every test example.

    Attributes:
        infl: ``(n, m)`` float32, ``infl[i, j] = P[test j correct | i in S] - P[... | i not in S]``;
            rows of NaN where ``n_in[i] == 0`` or ``n_out[i] == 0``.
        se: ``(n, m)`` float32 standard error of ``infl`` (same formula as memorization).
        n_in: ``(n,)`` int64 models whose subset holds train example i.
        n_out: ``(n,)`` int64 models whose subset does not.
        n_models: K.
        method: ``"feldman-zhang"``.
    """

    infl: np.ndarray
    se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    n_models: int
    method: str = "feldman-zhang"

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return tuple(self.infl.shape)  # type: ignore[return-value]

    @property
    def n_undefined(self) -> int:
        """Training examples (rows) without an estimate."""
        return int(np.count_nonzero((self.n_in == 0) | (self.n_out == 0)))


@dataclass(frozen=True, eq=False)
class InfluencePairs:
    """The high-influence (train, test) pairs, found block by block (no ``(n, m)`` matrix kept).

    Attributes:
        pairs: DataFrame with ``train_index``, ``test_index`` (int64), ``infl``, ``infl_se``
            (float32) and ``mem`` (float64, NaN without memorization), most influential first.
        mean_se: mean standard error of the influence over every defined (train, test) pair.
        n_models: K.
        n_undefined: training examples without an estimate (in every subset or in none).
        infl_threshold: the influence threshold used.
        mem_threshold: the memorization threshold used (None when no memorization was given).
        block_rows: training rows per block.
        method: ``"feldman-zhang"``.
    """

    pairs: pd.DataFrame
    mean_se: float
    n_models: int
    n_undefined: int
    infl_threshold: float
    mem_threshold: float | None
    block_rows: int
    method: str = "feldman-zhang"


@dataclass(frozen=True, eq=False)
class CScoreResult:
    """Holdout C-scores (Jiang et al. 2021), one per training example.

    Attributes:
        cscore: ``(n,)`` float64 mean over ratios of ``per_ratio``, ignoring the
            ratios where an example was never held out; NaN where it never was.
        per_ratio: ``(R, n)`` float64 mean held-out correctness at each ratio
            (NaN where the example was in every subset of that ratio).
        counts: ``(R, n)`` int64 number of models that held the example out, per ratio.
        ratios: ``(R,)`` float64 subset ratios, ascending.
        n_models: ``(R,)`` int64 models per ratio.
        method: ``"holdout"``.
    """

    cscore: np.ndarray
    per_ratio: np.ndarray
    counts: np.ndarray
    ratios: np.ndarray
    n_models: np.ndarray
    method: str = "holdout"

    @property
    def n_examples(self) -> int:
        """n."""
        return int(self.cscore.shape[0])

    @property
    def n_undefined(self) -> int:
        """Examples never held out at any ratio."""
        return int(np.count_nonzero(np.isnan(self.cscore)))

    def to_frame(self) -> pd.DataFrame:
        """One row per training example: ``index, cscore`` and a ``cscore_<ratio>`` column per ratio."""
        cols = {"index": np.arange(self.n_examples), "cscore": self.cscore}
        for r, row in zip(self.ratios, self.per_ratio):
            cols[f"cscore_{r:g}"] = row
        return pd.DataFrame(cols)


@dataclass(frozen=True, eq=False)
class ProxyScores:
    """One score per training example from a cheap proxy of the C-score (higher = more typical).

    Attributes:
        scores: ``(n,)`` float64; NaN where the proxy is undefined for an example.
        method: ``"learning_speed"``, ``"kernel_density"`` or ``"relative_distance"``.
        params: the settings used, resolved (e.g. the bandwidth the median heuristic chose).
    """

    scores: np.ndarray
    method: str
    params: dict = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        """n."""
        return int(self.scores.shape[0])

    @property
    def n_undefined(self) -> int:
        """Examples without a score (see the proxy's docstring for when)."""
        return int(np.count_nonzero(np.isnan(self.scores)))


@dataclass(frozen=True, eq=False)
class LabelIssueResult:
    """Per-example scores that the given label is wrong (higher = more likely wrong).

    Attributes:
        scores: ``(n,)`` float64 in (0, 1): weighted mean of the available signals'
            suspicion ranks; NaN where no signal is available.
        signals: the S signal names used, in order (see :func:`~fitscope.estimators.label_issue_scores`).
        weights: ``(S,)`` the weight of each signal.
        ranks: ``(S, n)`` float64 suspicion rank of each signal, scaled to (0, 1)
            (``(rank - 0.5) / n_valid``, ties averaged); NaN where the signal is missing.
        given_label_prob: ``(n,)`` float64 out-of-fold probability of the given label, ``p[y]``.
        normalized_margin: ``(n,)`` float64 ``p[y] - max_{c != y} p[c]`` in [-1, 1].
        method: ``"rank-average"``.
    """

    scores: np.ndarray
    signals: tuple[str, ...]
    weights: np.ndarray
    ranks: np.ndarray
    given_label_prob: np.ndarray
    normalized_margin: np.ndarray
    method: str = "rank-average"

    @property
    def n_examples(self) -> int:
        """n."""
        return int(self.scores.shape[0])

    @property
    def n_undefined(self) -> int:
        """Examples without any signal."""
        return int(np.count_nonzero(np.isnan(self.scores)))

    def ranked(self) -> np.ndarray:
        """``(n,)`` int64 example indices, most likely mislabeled first (NaN scores last, ties by index)."""
        key = np.where(np.isnan(self.scores), -np.inf, self.scores)
        return np.argsort(-key, kind="stable").astype(np.int64)
