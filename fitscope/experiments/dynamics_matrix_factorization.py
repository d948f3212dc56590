"""Implicit regularization in deep matrix factorization: depth against the nuclear norm in matrix completion.

The study, in the order it runs (``fitscope dynamics matrix-factorization``),
after Arora, Cohen, Hu and Luo 2019 ("Implicit regularization in deep matrix
factorization"):

1. **Ground truth.** A ``size x size`` matrix of rank ``rank``, ``U V^T`` with
   iid ``N(0, 1)`` entries in ``U`` and ``V``, divided by its Frobenius norm
   (:func:`fitscope.dynamics.low_rank_matrix`, seed ``derive_seed(seed,
   "truth")``), as the paper does (100 x 100, rank 5 by default).
2. **Observations.** For each count ``m`` of ``observed`` and each trial, ``m``
   entries drawn uniformly without replacement
   (:func:`fitscope.dynamics.observation_mask`, seed ``derive_seed(seed,
   "mask", m, trial)``). The same entries are given to every method.
3. **Deep matrix factorization** at each depth of ``depths`` and each
   initialisation scale of ``init_scales``: ``W = W_N ... W_1`` (square
   ``size x size`` factors, depth 1 = plain ``W``), trained by plain
   full-batch gradient descent on ``1/2 sum_{observed} (W_ij - W*_ij)^2`` from
   iid ``N(0, init_scale^2)`` entries (seed ``derive_seed(seed, "init", depth,
   init_scale, trial)``, the same for every ``m``) at learning rate ``lr``
   until the loss is below ``tol`` or ``max_steps`` steps
   (:func:`fitscope.dynamics.complete_deep`, float64). The paper emulates
   gradient flow with small steps; ``lr`` = 0.5 keeps a run within a minute
   on one CPU thread while staying far inside GD's stability bound (the loss
   Hessian's top eigenvalue near a solution is about ``depth x
   ||W*||_2^(2 - 2/depth)``, below 2 for depth <= 3 and a unit-norm rank-5
   truth), and ``bench/dynamics_matrix_factorization.py`` checks that a 5x
   smaller step gives the same completions.
4. **Nuclear norm.** ``min ||X||_* s.t. X agrees on the observed entries``,
   solved with cvxpy (:func:`fitscope.dynamics.complete_nuclear`; SCS to
   ``solver_eps``), the convex baseline that Gunasekar et al. 2017 conjectured
   depth 2 converges to.
5. **Measures.** Reconstruction error over all entries, ``||X - W*||_F /
   ||W*||_F`` (with ``||W*||_F = 1`` the paper's Frobenius distance), the
   error on the unobserved entries alone, and the effective rank of Roy and
   Vetterli 2007 (:func:`fitscope.dynamics.effective_rank`). Depth 1 is the
   check: from a small initialisation gradient descent never moves an
   unobserved entry, so it ends at the min-Frobenius interpolant (observed
   values, the initial values elsewhere); its largest distance from the
   observed-values-and-zeros matrix is reported.
6. **Units.** One per (``m``, trial, method): ``m01000-t0-d3-i0.001`` and
   ``m01000-t0-nuclear``, each stored as it finishes (``--resume`` continues a
   killed study). A run whose loss becomes non-finite stops and is marked
   diverged.
7. **Output.** Tables ``completions`` (one row per unit), ``curves`` (the mean
   over trials per ``m`` and method), ``history`` (loss and effective rank
   during training) and ``spectra`` (the leading singular values of every
   completion); ``report.html``: error and effective rank against ``m`` per
   depth and for the nuclear norm, the effective rank during training and
   the singular values at the smallest count.

Training is a plain loop in :func:`fitscope.dynamics.complete_deep`, not
:func:`fitscope.train.train_ensemble`: the model is a product of matrices with
no data batches, trained by exactly ``W_j - lr * grad`` on the full loss until
a loss tolerance, which the engine (epochs of minibatches, an optimizer, a
schedule) does not express.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``);
:func:`dynamics_matrix_factorization` is the Python API.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.dynamics import (
    complete_deep, complete_nuclear, effective_rank, effective_rank_of_spectrum, low_rank_matrix, observation_mask,
    relative_error, singular_values,
)
from fitscope.dynamics.matrix_factorization import MAX_DEPTH
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.seeding import derive_seed

#: the most entries a size may have (size^2): 1000 x 1000
MAX_SIZE = 1000
#: singular values kept per completion in the ``spectra`` table: this many times the rank
SPECTRUM_FACTOR = 3


# --------------------------------------------------------------------------- config


class MatrixFactorizationConfig(BaseModel):
    """Everything that determines a matrix-factorization study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(100, ge=2, le=MAX_SIZE, description="rows = columns of the ground-truth matrix")
    rank: int = Field(5, ge=1, description="rank of the ground truth (at most --size)")
    observed: list[int] = Field(default_factory=lambda: [1000, 1500, 2000, 2500, 3000, 4000],
                                description="numbers of observed entries, each in [1, size^2]")
    trials: int = Field(1, ge=1, le=100, description="random sets of observed entries per count")
    depths: list[int] = Field(default_factory=lambda: [1, 2, 3], description="depths of the factorization, 1 to 10")
    init_scales: list[float] = Field(default_factory=lambda: [1e-3],
                                     description="standard deviations of the initial entries, each in (0, 1]")
    lr: float = Field(0.5, gt=0, le=1, description="learning rate of gradient descent, in (0, 1]")
    max_steps: int = Field(100_000, ge=1, le=1_000_000, description="step budget of each gradient-descent run")
    tol: float = Field(1e-8, gt=0, lt=1, description="stop once the training loss is below this")
    record_every: int = Field(250, ge=1, description="steps between two records of the loss and singular values")
    solver: Literal["scs", "clarabel", "none"] = "scs"
    solver_eps: float = Field(1e-6, gt=0, lt=1, description="SCS's tolerance (eps_abs = eps_rel)")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the ground truth, the observed entries and the inits")

    @field_validator("observed")
    @classmethod
    def _observed(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("expected at least one count of observed entries; got none")
        if any(m < 1 for m in value):
            raise ValueError(f"expected counts of observed entries >= 1; got {min(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct counts; got {value}")
        return sorted(value)

    @field_validator("depths")
    @classmethod
    def _depths(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("expected at least one depth; got none")
        bad = [d for d in value if not 1 <= d <= MAX_DEPTH]
        if bad:
            raise ValueError(f"expected depths in [1, {MAX_DEPTH}]; got {bad[0]}")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct depths; got {value}")
        return sorted(value)

    @field_validator("init_scales")
    @classmethod
    def _init_scales(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("expected at least one initialisation scale; got none")
        bad = [s for s in value if not (math.isfinite(s) and 0 < s <= 1)]
        if bad:
            raise ValueError(f"expected initialisation scales in (0, 1]; got {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"expected distinct initialisation scales; got {value}")
        return sorted((float(s) for s in value), reverse=True)

    @model_validator(mode="after")
    def _across(self) -> "MatrixFactorizationConfig":
        if self.rank > self.size:
            raise ValueError(f"--rank: expected at most --size = {self.size}, got {self.rank}")
        too_many = [m for m in self.observed if m > self.size ** 2]
        if too_many:
            raise ValueError(f"--observed: expected counts in [1, {self.size ** 2}] (size^2 entries), "
                             f"got {too_many[0]}")
        return self


#: ``--quick``: a 40 x 40 matrix of rank 2 (156 degrees of freedom), 240 to 560 observed entries, depths 1 to 3,
#: SCS to 1e-5.
QUICK = dict(size=40, rank=2, observed=[240, 320, 400, 560], max_steps=30_000, solver_eps=1e-5)


def make_config(**values) -> MatrixFactorizationConfig:
    """Build a :class:`MatrixFactorizationConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(MatrixFactorizationConfig, values)


# --------------------------------------------------------------------------- the unit task


@dataclass(frozen=True)
class CompletionTask:
    """The task of one unit: one method on one set of observed entries."""

    key: str
    observed: int
    trial: int
    method: str  # "deep" or "nuclear"
    depth: int  # 0 for the nuclear norm
    init_scale: float  # 0 for the nuclear norm
    mask_seed: int
    init_seed: int
    lr: float
    max_steps: int
    tol: float
    record_every: int
    solver: str
    solver_eps: float


def method_label(depth: int, init_scale: float, several_inits: bool) -> str:
    """``"depth 3"`` (or ``"depth 3, init 0.001"`` when several scales ran); ``"nuclear norm"`` for depth 0."""
    if depth == 0:
        return "nuclear norm"
    return f"depth {depth}" + (f", init {init_scale:g}" if several_inits else "")


def plan_tasks(cfg: MatrixFactorizationConfig) -> list[CompletionTask]:
    """Every unit: per count and trial, each (depth, init scale), then the nuclear norm (unless solver none)."""
    tasks = []
    common = dict(lr=cfg.lr, max_steps=cfg.max_steps, tol=cfg.tol, record_every=cfg.record_every,
                  solver=cfg.solver, solver_eps=cfg.solver_eps)
    for m in cfg.observed:
        for trial in range(cfg.trials):
            mask_seed = derive_seed(cfg.seed, "mask", m, trial)
            for depth in cfg.depths:
                for scale in cfg.init_scales:
                    tasks.append(CompletionTask(
                        f"m{m:06d}-t{trial}-d{depth}-i{scale:g}", m, trial, "deep", depth, scale, mask_seed,
                        derive_seed(cfg.seed, "init", depth, f"{scale:g}", trial), **common))
            if cfg.solver != "none":
                tasks.append(CompletionTask(f"m{m:06d}-t{trial}-nuclear", m, trial, "nuclear", 0, 0.0, mask_seed,
                                            0, **common))
    return tasks


@contextlib.contextmanager
def one_thread():
    """One torch thread inside the block (and one BLAS thread for cvxpy's solver).

    The matrices are small (100 x 100 by default): each of the tens of
    thousands of steps is a handful of such products, and a second thread only
    adds the cost of waking it on a busy machine (the sharpness study measured
    16 to 36 times the CPU time with 2 threads on networks of this size). The
    rule does not depend on the executor, so every executor gives the same bits.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def complete_unit(task: CompletionTask, *, truth: np.ndarray, progress: Callable[[int], None] | None = None
                  ) -> dict[str, np.ndarray]:
    """Complete the truth from ``task.observed`` entries with one method (module-level and pure).

    Returns:
        ``matrix`` (the completion, float64), ``steps``, ``loss`` (training loss), ``converged``,
        ``diverged``, ``history_step``, ``history_loss``, ``history_singular_values`` (empty for the nuclear
        norm) and ``seconds`` (not compared across executors: the tables keep it only in ``completions``).
    """
    size = truth.shape[0]
    mask = observation_mask(size, size, task.observed, seed=task.mask_seed)
    start = time.perf_counter()
    with one_thread():
        if task.method == "deep":
            result = complete_deep(truth, mask, depth=task.depth, init_scale=task.init_scale, lr=task.lr,
                                   max_steps=task.max_steps, tol=task.tol, record_every=task.record_every,
                                   seed=task.init_seed, progress=progress)
            out = {"matrix": result.matrix, "steps": np.asarray(result.steps, np.int64),
                   "loss": np.asarray(result.loss), "converged": np.asarray(result.converged),
                   "diverged": np.asarray(result.diverged), "history_step": result.history_step,
                   "history_loss": result.history_loss, "history_singular_values": result.history_singular_values}
        else:
            matrix = complete_nuclear(truth, mask, solver=task.solver, eps=task.solver_eps)
            residual = np.where(mask, matrix - truth, 0.0)
            out = {"matrix": matrix, "steps": np.asarray(0, np.int64),
                   "loss": np.asarray(0.5 * float(np.sum(residual ** 2))), "converged": np.asarray(True),
                   "diverged": np.asarray(False), "history_step": np.zeros(0, np.int64),
                   "history_loss": np.zeros(0), "history_singular_values": np.zeros((0, size))}
    if progress is not None:
        progress(task.max_steps if task.method == "deep" else 1)
    out["seconds"] = np.asarray(time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- estimates (arrays in, tables out)


def completion_row(task: CompletionTask, stored: dict, truth: np.ndarray, several_inits: bool) -> dict:
    """One row of the ``completions`` table: the errors and effective rank of one unit's completion."""
    size = truth.shape[0]
    mask = observation_mask(size, size, task.observed, seed=task.mask_seed)
    matrix = np.asarray(stored["matrix"], float)
    diverged = bool(stored["diverged"])
    finite = bool(np.isfinite(matrix).all()) and not diverged
    unobserved = ~mask
    row = {
        "unit": task.key, "observed": task.observed, "trial": task.trial,
        "method": method_label(task.depth, task.init_scale, several_inits), "depth": task.depth,
        "init_scale": task.init_scale,
        "error": relative_error(matrix, truth) if finite else math.nan,
        "error_unobserved": (float(np.linalg.norm((matrix - truth)[unobserved]) / np.linalg.norm(truth[unobserved]))
                             if finite and unobserved.any() else math.nan),
        "effective_rank": effective_rank(matrix) if finite and np.any(matrix) else math.nan,
        "train_loss": float(stored["loss"]), "steps": int(stored["steps"]), "converged": bool(stored["converged"]),
        "diverged": diverged,
        # depth 1: the largest distance to the min-norm interpolant (observed values, zeros elsewhere)
        "distance_to_min_norm": (float(np.abs(matrix - np.where(mask, truth, 0.0)).max())
                                 if finite else math.nan),
        "seconds": float(stored["seconds"]),
    }
    return row


@dataclass
class MatrixFactorizationOutcome:
    """What :func:`dynamics_matrix_factorization` computed.

    Attributes:
        completions: one row per unit (see :func:`completion_row`).
        curves: the mean over trials per (observed, method): ``error``, ``error_unobserved``,
            ``effective_rank``, ``train_loss``, ``steps``, ``converged`` (share of trials).
        history: one row per (unit, record) of the deep runs: ``step``, ``loss``, ``effective_rank``.
        spectra: one row per (unit, index) of the leading singular values.
        summary: the headline numbers.
    """

    completions: pd.DataFrame
    curves: pd.DataFrame
    history: pd.DataFrame
    spectra: pd.DataFrame
    summary: dict = field(default_factory=dict)
    trained_units: list[str] = field(default_factory=list)
    reused_units: list[str] = field(default_factory=list)


def prepare(cfg: MatrixFactorizationConfig) -> Prepared:
    """Draw the ground truth; nothing is written yet (the config has checked every size)."""
    truth_seed = derive_seed(cfg.seed, "truth")
    truth = low_rank_matrix(cfg.size, cfg.size, cfg.rank, seed=truth_seed)
    return Prepared(
        seeds={"seed": cfg.seed, "truth_seed": truth_seed,
               "mask_seeds": {f"{m}-{t}": derive_seed(cfg.seed, "mask", m, t) for m in cfg.observed
                              for t in range(cfg.trials)}},
        shared={"truth": truth},
        state=truth,
    )


def plan(cfg: MatrixFactorizationConfig, prepared: Prepared) -> list[Unit]:
    """One unit per (count, trial, method) (:func:`plan_tasks`), computed by :func:`complete_unit`."""
    return [Unit(t.key, complete_unit, t, work=t.max_steps if t.method == "deep" else 1,
                 info=dict(observed=t.observed, trial=t.trial, method=t.method, depth=t.depth,
                           init_scale=t.init_scale))
            for t in plan_tasks(cfg)]


def curves_table(completions: pd.DataFrame) -> pd.DataFrame:
    """The mean over trials per (observed, method), in plan order of the methods."""
    order = list(dict.fromkeys(completions.method))
    grouped = completions.groupby(["observed", "method"], sort=False)
    curves = grouped.agg(depth=("depth", "first"), init_scale=("init_scale", "first"), error=("error", "mean"),
                         error_unobserved=("error_unobserved", "mean"), effective_rank=("effective_rank", "mean"),
                         train_loss=("train_loss", "mean"), steps=("steps", "mean"),
                         converged=("converged", "mean"), trials=("trial", "count")).reset_index()
    curves["method_order"] = curves.method.map({m: i for i, m in enumerate(order)})
    return curves.sort_values(["observed", "method_order"]).drop(columns="method_order").reset_index(drop=True)


def estimate(cfg: MatrixFactorizationConfig, prepared: Prepared, units) -> Outcome:
    """The completion, curve, history and spectrum tables and the headline numbers, from the stored units."""
    truth: np.ndarray = prepared.state
    several = len(cfg.init_scales) > 1
    rows, history, spectra = [], [], []
    keep = SPECTRUM_FACTOR * cfg.rank
    for task in plan_tasks(cfg):
        stored = units[task.key]
        row = completion_row(task, stored, truth, several)
        rows.append(row)
        steps = np.asarray(stored["history_step"], np.int64)
        for i, step in enumerate(steps):
            sv = np.asarray(stored["history_singular_values"][i], float)
            history.append({"unit": task.key, "observed": task.observed, "trial": task.trial, "method": row["method"],
                            "depth": task.depth, "step": int(step), "loss": float(stored["history_loss"][i]),
                            "effective_rank": effective_rank_of_spectrum(sv) if np.isfinite(sv).all() and sv.any()
                            else math.nan})
        matrix = np.asarray(stored["matrix"], float)
        if np.isfinite(matrix).all():
            sv = singular_values(matrix)[:keep]
            spectra.extend({"unit": task.key, "observed": task.observed, "trial": task.trial, "method": row["method"],
                            "index": i + 1, "singular_value": float(v)} for i, v in enumerate(sv))
    completions = pd.DataFrame(rows)
    curves = curves_table(completions)
    history = pd.DataFrame(history, columns=["unit", "observed", "trial", "method", "depth", "step", "loss",
                                             "effective_rank"])
    spectra = pd.DataFrame(spectra, columns=["unit", "observed", "trial", "method", "index", "singular_value"])
    summary = summarize(cfg, curves, completions)
    detail = MatrixFactorizationOutcome(completions=completions, curves=curves, history=history, spectra=spectra,
                                        summary=summary)
    # seconds differ between executors and attempts: kept in the detail (report), not in the stored tables
    tables = {"completions": completions.drop(columns="seconds"), "curves": curves, "history": history,
              "spectra": spectra}
    return Outcome(tables=tables, summary=summary, detail=detail)


def summarize(cfg: MatrixFactorizationConfig, curves: pd.DataFrame, completions: pd.DataFrame) -> dict:
    """Headline numbers: at the smallest count and at each count, deep against the nuclear norm; depth 1's check."""
    out: dict = {"size": f"{cfg.size} x {cfg.size}", "rank": int(cfg.rank),
                 "observed counts": ", ".join(str(m) for m in cfg.observed)}
    nuclear = curves[curves.depth == 0].set_index("observed")
    deep = curves[curves.depth > 0]
    smallest = cfg.observed[0]
    for method, part in deep.groupby("method", sort=False):
        row = part.set_index("observed").loc[smallest]
        out[f"error at m = {smallest}: {method}"] = float(row.error)
        out[f"effective rank at m = {smallest}: {method}"] = float(row.effective_rank)
    if smallest in nuclear.index:
        out[f"error at m = {smallest}: nuclear norm"] = float(nuclear.loc[smallest].error)
        out[f"effective rank at m = {smallest}: nuclear norm"] = float(nuclear.loc[smallest].effective_rank)
    if len(nuclear):
        for method, part in deep[deep.depth >= 2].groupby("method", sort=False):
            part = part.set_index("observed")
            both = [m for m in part.index if m in nuclear.index]
            lower_error = sum(bool(part.loc[m].error < nuclear.loc[m].error) for m in both)
            lower_rank = sum(bool(part.loc[m].effective_rank < nuclear.loc[m].effective_rank) for m in both)
            out[f"counts where {method} beats the nuclear norm (error)"] = f"{lower_error} of {len(both)}"
            out[f"counts where {method} has the lower effective rank"] = f"{lower_rank} of {len(both)}"
    one = completions[completions.depth == 1]
    if len(one):
        out["depth 1: largest distance to the min-norm interpolant"] = float(one.distance_to_min_norm.max())
    out["deep runs converged"] = f"{int(completions[completions.depth > 0].converged.sum())} of " \
                                 f"{int((completions.depth > 0).sum())}"
    return out


def report(cfg: MatrixFactorizationConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The report context (:func:`fitscope.report.dynamics_matrix_factorization.report_context`)."""
    from fitscope.report.dynamics_matrix_factorization import report_context

    detail: MatrixFactorizationOutcome = outcome.detail
    return report_context(cfg.model_dump(), detail.completions, detail.curves, detail.history, detail.spectra,
                          detail.summary)


STUDY = Study(kind="dynamics-matrix-factorization", command="fitscope dynamics matrix-factorization",
              config=MatrixFactorizationConfig, prepare=prepare, plan=plan, estimate=estimate, report=report,
              template="dynamics_matrix_factorization.html.j2", quick=QUICK, work_name="steps")


def dynamics_matrix_factorization(cfg: MatrixFactorizationConfig, out: str | Path, *, resume: bool = False,
                                  **placement) -> tuple:
    """The whole study: validate, complete (or resume), measure, write the tables and ``report.html``.

    Args:
        cfg: the configuration (:func:`make_config`).
        out: the run directory.
        resume: continue the run in ``out`` (only the missing units run).
        placement: ``executor``, ``address``, ``threads``, ``device``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and the :class:`MatrixFactorizationOutcome`.
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: MatrixFactorizationOutcome = result.outcome.detail
    detail.trained_units, detail.reused_units = result.trained, result.reused
    return result.run, detail
