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
    """Feldman-Zhang memorization estimates, one per training example, with confidence intervals.

    The rates get Wilson score intervals and ``mem`` Newcombe's hybrid score interval
    (method 10) built from them, at level ``confidence`` (see
    :mod:`fitscope.estimators.intervals`). Every array is ``(n,)``; NaN where
    ``n_in == 0`` (for the ``p_in`` fields and ``mem``) or ``n_out == 0`` (``p_out``, ``mem``).

    Attributes:
        mem: float64, ``p_in - p_out``.
        mem_lo, mem_hi: float64 bounds of ``mem``'s interval, in [-1, 1].
        mem_se: float64 ``(mem_hi - mem_lo) / (2 z)``: the standard error of a normal
            interval as wide as the reported one (never 0 from finitely many models;
            it is not the plug-in ``sqrt(p (1 - p) / n)`` terms, which are 0 at rates 0 and 1).
        p_in: float64 mean correctness over the models whose subset holds the example.
        p_in_lo, p_in_hi: float64 Wilson bounds of ``p_in``.
        p_out: float64 mean correctness over the other models.
        p_out_lo, p_out_hi: float64 Wilson bounds of ``p_out``.
        n_in: int64 number of models whose subset holds the example.
        n_out: int64 number of models whose subset does not.
        n_models: K.
        confidence: the two-sided level of the intervals (0.95 by default).
        method: ``"feldman-zhang"``.
    """

    mem: np.ndarray
    mem_lo: np.ndarray
    mem_hi: np.ndarray
    mem_se: np.ndarray
    p_in: np.ndarray
    p_in_lo: np.ndarray
    p_in_hi: np.ndarray
    p_out: np.ndarray
    p_out_lo: np.ndarray
    p_out_hi: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    n_models: int
    confidence: float = 0.95
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
        """One row per training example: ``index``, then every array in the order of the attributes."""
        return pd.DataFrame({
            "index": np.arange(self.n_examples), "mem": self.mem, "mem_lo": self.mem_lo, "mem_hi": self.mem_hi,
            "mem_se": self.mem_se, "p_in": self.p_in, "p_in_lo": self.p_in_lo, "p_in_hi": self.p_in_hi,
            "p_out": self.p_out, "p_out_lo": self.p_out_lo, "p_out_hi": self.p_out_hi,
            "n_in": self.n_in, "n_out": self.n_out,
        })


@dataclass(frozen=True, eq=False)
class InfluenceResult:
    """Feldman-Zhang influence of every training example on every test example, with confidence intervals.

    Attributes:
        infl: ``(n, m)`` float32, ``infl[i, j] = P[test j correct | i in S] - P[... | i not in S]``;
            rows of NaN where ``n_in[i] == 0`` or ``n_out[i] == 0``.
        infl_lo, infl_hi: ``(n, m)`` float32 Newcombe interval of ``infl`` (Wilson intervals of
            the two rates, as for memorization), at level ``confidence``.
        se: ``(n, m)`` float32 ``(infl_hi - infl_lo) / (2 z)`` (see :class:`MemorizationResult`'s ``mem_se``).
        n_in: ``(n,)`` int64 models whose subset holds train example i.
        n_out: ``(n,)`` int64 models whose subset does not.
        n_models: K.
        confidence: the two-sided level of the intervals.
        method: ``"feldman-zhang"``.
    """

    infl: np.ndarray
    infl_lo: np.ndarray
    infl_hi: np.ndarray
    se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    n_models: int
    confidence: float = 0.95
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
    """The high-influence (train, test) pairs, found block by block (no ``(n, m)`` matrix kept), with their FDR.

    *Candidates* pass the fixed thresholds (``infl >= infl_threshold``, ``mem >= mem_threshold``);
    the *kept* pairs are the candidates whose q-value ``fdr`` is at most ``fdr_target``
    (:mod:`fitscope.estimators.influence_fdr`). Without a target every candidate is kept.

    Attributes:
        pairs: the kept pairs: DataFrame with ``train_index``, ``test_index`` (int64), ``infl``,
            ``infl_lo``, ``infl_hi``, ``infl_se`` (float32), ``mem`` (float64, NaN without
            memorization) and ``fdr`` (float64 q-value, NaN without a target), most influential first.
        candidates: every candidate, the same columns.
        mean_se: mean of ``infl_se`` over every defined (train, test) pair.
        n_models: K.
        n_undefined: training examples without an estimate (in every subset or in none).
        infl_threshold: the influence threshold used.
        mem_threshold: the memorization threshold used (None when no memorization was given).
        block_rows: training rows per block.
        confidence: the two-sided level of the intervals.
        n_candidates: how many candidates passed the fixed thresholds.
        fdr_target: the target FDR (None: no null computed, every candidate kept).
        fdr: estimated FDR of the kept list (NaN when nothing is kept or no target).
        fdr_threshold: the kept pairs have ``infl_lo >= fdr_threshold`` (inf when none is kept;
            NaN without a target).
        candidates_fdr: estimated FDR of the candidates (the fixed-threshold list).
        null_candidates: null candidates per permutation (their mean plus one pseudo-count over P).
        permutations: null permutations P (0 without a target).
        seed: seed of the permutations (None without a target).
        models_for_target: projected models for the fixed-threshold list to reach ``fdr_target``
            (None when the candidates show no real pairs; K when already within it).
        statistic: the candidates' statistic compared with the null, ``"infl_lo"``.
        method: ``"feldman-zhang"``.
        train_max: ``(n,)`` float32, each training example's largest influence on any test example
            (NaN where undefined); None where not computed.
        train_argmax: ``(n,)`` int64, the test example of ``train_max`` (-1 where undefined).
        test_max: ``(m,)`` float32, the largest influence any training example has on each test example.
        test_argmax: ``(m,)`` int64, the training example of ``test_max`` (-1 where undefined).
    """

    pairs: pd.DataFrame
    mean_se: float
    n_models: int
    n_undefined: int
    infl_threshold: float
    mem_threshold: float | None
    block_rows: int
    candidates: pd.DataFrame | None = None
    confidence: float = 0.95
    n_candidates: int = 0
    fdr_target: float | None = None
    fdr: float = float("nan")
    fdr_threshold: float = float("nan")
    candidates_fdr: float = float("nan")
    null_candidates: float = float("nan")
    permutations: int = 0
    seed: int | None = None
    models_for_target: int | None = None
    statistic: str = "infl_lo"
    method: str = "feldman-zhang"
    train_max: np.ndarray | None = None
    train_argmax: np.ndarray | None = None
    test_max: np.ndarray | None = None
    test_argmax: np.ndarray | None = None

    def metadata(self) -> dict:
        """The settings and FDR figures as plain JSON values (stored with ``influence.parquet``)."""
        def number(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "method": self.method, "statistic": self.statistic, "confidence": self.confidence,
            "n_models": self.n_models, "infl_threshold": self.infl_threshold, "mem_threshold": self.mem_threshold,
            "n_candidates": self.n_candidates, "n_kept": int(len(self.pairs)),
            "fdr_target": self.fdr_target, "fdr": number(self.fdr), "fdr_threshold": number(self.fdr_threshold),
            "candidates_fdr": number(self.candidates_fdr), "null_candidates": number(self.null_candidates),
            "permutations": self.permutations, "seed": self.seed, "models_for_target": self.models_for_target,
            "mean_se": number(self.mean_se),
        }


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
