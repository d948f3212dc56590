"""Convolutional kernels against trained networks on few-sample subsets (Arora et al. 2020, small data).

Reads like the small-data part of METHODS section 5:

1. **Subsets**: for every seed, a class-balanced subset of the training split
   of each size (``size // C`` examples per class, the remainder to classes
   chosen by the seed; at least one per class). A seed's subsets are nested:
   the size-20 subset holds the size-10 one.
2. **Kernels**: for each readout the variants need (global average pooling,
   local average pooling, vanilla), the CNTK Gram matrix of the union of all
   subsets and the cross matrix of the test set against it, computed once and
   sliced per subset; ``cntk-lap+patches`` adds the random-patch feature
   kernel (filters from the subset's own images) to the normalized CNTK-LAP.
   Prediction: kernel ridge regression (scikit-learn's ``KernelRidge`` on the
   precomputed kernel, ``alpha = ridge * mean(diag K_train)``) on one-hot
   targets, argmax. (The CNTK paper's 0.9 / -0.1 targets give the same
   argmax: they are ``one_hot - 0.1``, and the constant shifts every class's
   prediction by the same amount.)
3. **Networks**: each model spec (a CNN and a small ResNet) trained with
   :func:`fitscope.train.train_ensemble` on the same subsets, one network
   per size and seed, Adam, for the step budget (or, with ``early_stop="fit"``,
   until every network of the size fits its subset). The seeds of one size
   train together as one batched ensemble: network ``k`` sees only the rows
   of its own subset (``masks`` over the union of the size's subsets), with
   its own initial weights and batch order, so it trains on exactly the
   batches it would alone (the numbers agree up to float summation order).
   Batching saves per-step overhead: on one CPU thread about 1.3-2x faster
   than one network after another at the smallest sizes, about even at the
   largest (each network of the ensemble is evaluated on every row of the
   union once an epoch, not only on its own).
4. **Accuracy** of every method on the whole test split, mean and standard
   deviation over seeds, against the subset size.

The study runs on :mod:`fitscope.experiments.study` (``STUDY``). Units, stored
as they finish and reused by a resumed run: ``kernel-<readout>`` (the Gram
matrices, :func:`kernel_task`, progress per piece of test rows, counted in
thousands of kernel entries) and ``train-<model>-n<size>`` (the networks of
every seed at that size as one ensemble, :func:`ensemble_task`, progress per
epoch, counted in network training steps). The kernel regressions are cheap
and run in ``estimate``. The union of the subsets and the test set are the
shared arrays; wall times go to ``timings.json``, not to the results table
(which has one row per network).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.data.support import check_supports_study
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
from fitscope.experiments.study import Outcome, Prepared, Study, StudyResult, Unit, run_study
from fitscope.seeding import derive_seed

#: Kernel variants -> the pooling of the CNTK readout they use. ``+patches`` adds the random-patch
#: (Coates-Ng) feature kernel to the cosine-normalized CNTK-LAP (Li et al. 2019).
KERNEL_VARIANTS = {
    "cntk-gap": "gap",
    "cntk-lap": "lap",
    "cntk": "none",
    "cntk-lap+patches": "lap",
}


class SmallDataConfig(BaseModel):
    """Everything that determines a small-data kernel study; stored in run.json. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    data: str = "digits"
    label_column: str | None = None
    data_seed: int = Field(0, ge=0, description="seed of the train/test split")
    sizes: list[int] = Field(default_factory=lambda: [10, 20, 40, 80, 160, 320])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    kernels: list[str] = Field(default_factory=lambda: ["cntk", "cntk-gap", "cntk-lap+patches"])
    depth: int = Field(3, ge=1, description="CNTK conv layers")
    filter_size: int = Field(3, ge=1)
    lap_window: int = Field(4, ge=1, description="LAP window (per axis) of the lap variants")
    ridge: float = Field(1e-4, ge=0, description="kernel ridge: alpha = ridge * mean diagonal of the train Gram")
    patches: int = Field(256, gt=0, description="random patches (filters) of the +patches variant")
    patch_size: int = Field(3, ge=1, description="patch side of the +patches variant")
    patch_pool: int = Field(2, ge=1, description="pooled grid side of the random-patch features")
    patch_weight: float = Field(1.0, ge=0, description="weight of the patch-feature kernel next to the unit-diagonal CNTK-LAP")
    models: list[str] = Field(default_factory=lambda: ["cnn:32-64", "resnet:16x2"])
    steps: int = Field(500, gt=0, description="training steps per model (epochs = steps / batches per epoch)")
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = Field(False, description="random-crop augmentation for the networks")
    early_stop: Literal["fit", "none"] = Field(
        "none", description="'fit': stop once a network fits its subset (its loss is still high then)")
    kernel_dtype: Literal["float64", "float32"] = "float64"
    max_memory_mb: int = Field(1024, gt=0)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if not value or any(s < 1 for s in value):
            raise ValueError(f"expected positive subset sizes like 10,20,40; got {value}")
        return sorted(set(value))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"expected distinct non-negative integer seeds; got {value}")
        return value

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in KERNEL_VARIANTS]
        if bad:
            raise ValueError(f"expected kernel variants from {', '.join(KERNEL_VARIANTS)}; got {bad[0]!r}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _some_method(self) -> "SmallDataConfig":
        if not self.kernels and not self.models:
            raise ValueError("expected at least one kernel variant or model to compare; got neither")
        return self

    @classmethod
    def quick(cls, **overrides) -> "SmallDataConfig":
        """The ``--quick`` setting (:data:`QUICK`) with ``overrides`` (None values ignored) on top."""
        return make_config(**{**QUICK, **{k: v for k, v in overrides.items() if v is not None}})


#: ``--quick``: sizes 10-80, two seeds, CNTK-GAP only, the CNN only (8 networks of 500 steps).
QUICK = dict(sizes=[10, 20, 40, 80], seeds=[0, 1], kernels=["cntk-gap"], models=["cnn:32-64"])


def make_config(**values) -> SmallDataConfig:
    """Build a :class:`SmallDataConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(SmallDataConfig, values)


# --------------------------------------------------------------------------- subsets


def draw_subsets(y: np.ndarray, sizes: list[int], n_classes: int, *, seeds: list[int]) -> dict[tuple[int, int], np.ndarray]:
    """Class-balanced, nested training subsets per ``(size, seed)``.

    Args:
        y: ``(n,)`` training labels in ``[0, n_classes)``.
        sizes: subset sizes, each at least ``n_classes``.
        seeds: one draw per seed.
        n_classes: C.

    Returns:
        ``{(size, seed): sorted row indices}``: ``size // C`` rows of each
        class plus one more for ``size % C`` classes chosen by the seed; a
        seed's smaller subsets are contained in its larger ones.

    Raises:
        ConfigError: a size below C, or more rows of a class than it has.
    """
    counts = np.bincount(y, minlength=n_classes)
    out: dict[tuple[int, int], np.ndarray] = {}
    for size in sizes:
        if size < n_classes:
            raise ConfigError(f"--sizes: expected every size >= the number of classes ({n_classes}, at least one "
                              f"example per class); got {size}")
    for seed in seeds:
        rng = np.random.default_rng(derive_seed(seed, "small-data", "subsets"))
        rank = np.argsort(rng.permutation(n_classes))  # the order in which classes get a remainder row
        perms = [rng.permutation(np.flatnonzero(y == c)) for c in range(n_classes)]
        for size in sizes:
            base, extra = divmod(size, n_classes)
            take = [base + int(rank[c] < extra) for c in range(n_classes)]
            short = [c for c in range(n_classes) if take[c] > counts[c]]
            if short:
                c = short[0]
                raise ConfigError(f"--sizes: a balanced subset of {size} needs {take[c]} examples of class {c}, "
                                  f"the training split has {counts[c]}; use smaller sizes")
            out[(size, seed)] = np.sort(np.concatenate([perms[c][: take[c]] for c in range(n_classes)]))
    return out


# --------------------------------------------------------------------------- kernels


#: Test rows per piece of the cross matrix (test x union); progress is reported after each piece.
CROSS_ROWS = 256
#: Kernel entries per unit of progress of a ``kernel-<readout>`` unit (a network counts its training steps),
#: so neither kind of unit swamps the other on the one progress bar.
ENTRIES_PER_TICK = 1000


def kernel_work(n_union: int, n_test: int) -> int:
    """The work of one readout's kernels, in kernel entries: the Gram's upper triangle, the cross matrix, the diagonal."""
    return n_union * (n_union + 1) // 2 + n_test * n_union + n_test


def base_kernel(pool: str, x_union: np.ndarray, x_test: np.ndarray, cfg: SmallDataConfig,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The CNTK matrices of one readout: ``gram`` (union x union), ``cross`` (test x union), ``test_diag``.

    The cross matrix is computed in pieces of :data:`CROSS_ROWS` test rows; ``progress`` gets the
    kernel entries done so far (of :func:`kernel_work`) after the Gram, each piece and the diagonal.
    """
    from fitscope.kernels import ntk
    from fitscope.kernels.conv import cntk_diagonal

    tick = progress or (lambda done: None)
    options = dict(depth=cfg.depth, kind="ntk", filter_size=cfg.filter_size, pool=pool,
                   lap_window=cfg.lap_window if pool == "lap" else None, dtype=cfg.kernel_dtype,
                   max_memory_mb=cfg.max_memory_mb)
    n_union = len(x_union)
    gram = np.asarray(ntk(x_union, arch="conv", **options), dtype=np.float64)
    done = n_union * (n_union + 1) // 2
    tick(done)
    pieces = []
    for start in range(0, len(x_test), CROSS_ROWS):
        part = x_test[start:start + CROSS_ROWS]
        pieces.append(np.asarray(ntk(part, x_union, arch="conv", **options), dtype=np.float64))
        done += len(part) * n_union
        tick(done)
    cross = np.concatenate(pieces) if pieces else np.zeros((0, n_union))
    test_diag = np.asarray(cntk_diagonal(x_test, **options), dtype=np.float64)
    tick(done + len(x_test))
    return dict(gram=gram, cross=cross, test_diag=test_diag)


def kernel_task(task: tuple[str, SmallDataConfig], *, x_union: np.ndarray, x_test: np.ndarray,
                y_union: np.ndarray | None = None, y_test: np.ndarray | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """The task of a ``kernel-<readout>`` unit: ``task = (pool, cfg)``; :func:`base_kernel` plus its seconds.

    Module-level and pure (the shared arrays are read-only), so both executors give the same bits.
    The labels (``y_union``, ``y_test``) are shared with the network units and not used here.
    """
    pool, cfg = task
    tick = None if progress is None else (lambda done: progress(done // ENTRIES_PER_TICK))
    t0 = time.perf_counter()
    out = base_kernel(pool, x_union, x_test, cfg, tick)
    out["seconds"] = np.asarray(time.perf_counter() - t0)
    return out


def _unit(values: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1.0)


def subset_kernels(variant: str, base: dict[str, np.ndarray], pos: np.ndarray, x_train: np.ndarray,
                   x_test: np.ndarray, cfg: SmallDataConfig, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K_train (m, m), K_test (n_test, m))`` of one variant for the subset at union positions ``pos``.

    For ``cntk-lap+patches`` the random-patch features are fit on the subset's own ``x_train`` rows
    (``(m, C, H, W)``) with ``seed``, and the kernel is the combination of
    :func:`fitscope.kernels.patches.cntk_lap_patch_kernel` (cosine-normalized CNTK-LAP plus
    ``patch_weight`` times the linear kernel of unit-norm features), built from the stored LAP
    matrices instead of recomputing them.
    """
    gram, cross = base["gram"][np.ix_(pos, pos)], base["cross"][:, pos]
    if variant != "cntk-lap+patches":
        return gram, cross
    from fitscope.kernels.patches import RandomPatchFeatures

    s_train = np.sqrt(np.clip(np.diag(gram), 0, None))
    s_test = np.sqrt(np.clip(base["test_diag"], 0, None))
    s_train, s_test = np.where(s_train > 0, s_train, 1.0), np.where(s_test > 0, s_test, 1.0)
    features = RandomPatchFeatures(n_filters=cfg.patches, patch_size=cfg.patch_size, pool=cfg.patch_pool,
                                   seed=seed).fit(x_train)
    p_train, p_test = _unit(features.transform(x_train)), _unit(features.transform(x_test))
    gram = gram / s_train[:, None] / s_train[None, :] + cfg.patch_weight * (p_train @ p_train.T)
    cross = cross / s_test[:, None] / s_train[None, :] + cfg.patch_weight * (p_test @ p_train.T)
    return 0.5 * (gram + gram.T), cross


def kernel_regression_accuracy(gram: np.ndarray, cross: np.ndarray, y_train: np.ndarray, y_test: np.ndarray,
                               *, n_classes: int, ridge: float) -> float:
    """Test accuracy of kernel ridge regression on one-hot targets, predicting the argmax.

    Args:
        gram: ``(m, m)`` kernel of the training rows.
        cross: ``(n_test, m)`` kernel of the test rows against them.
        y_train: ``(m,)`` labels; y_test: ``(n_test,)`` labels.
        n_classes: C (one-hot width).
        ridge: ``alpha = ridge * mean(diag(gram))``.
    """
    from sklearn.kernel_ridge import KernelRidge

    targets = np.eye(n_classes)[y_train]
    alpha = ridge * float(np.mean(np.diag(gram)))
    # A tiny floor keeps a singular Gram (duplicate images) solvable when ridge is 0.
    model = KernelRidge(alpha=max(alpha, 1e-12 * float(np.mean(np.diag(gram)))), kernel="precomputed")
    model.fit(gram, targets)
    return float(np.mean(model.predict(cross).argmax(axis=1) == y_test))


# --------------------------------------------------------------------------- networks


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=@,-]", "_", text)


def train_config(cfg: SmallDataConfig, size: int):
    """The :class:`~fitscope.train.TrainConfig` of the ensemble for subsets of ``size`` rows."""
    from fitscope.train import TrainConfig

    batches = math.ceil(size / cfg.batch_size)
    return TrainConfig(epochs=max(1, math.ceil(cfg.steps / batches)), batch_size=cfg.batch_size, optimizer="adam",
                       lr=cfg.lr, weight_decay=cfg.weight_decay, augment=cfg.augment, flip=False,
                       early_stop=cfg.early_stop, record=False)


@dataclass(frozen=True)
class EnsembleJob:
    """The networks of one model spec and subset size, one per seed (the task of a ``train-<model>-n<size>`` unit).

    Attributes:
        key: the unit key.
        spec: the model spec; size: the subset size.
        seeds: the subset seeds, one network each (K); model_seeds: their initial weights and batch orders.
        rows: ``(n,)`` positions in the union (the shared ``x_union``) of the rows of any of the K subsets.
        masks: ``(K, n)`` bool: network ``k`` trains on the rows of ``rows`` in subset ``seeds[k]``.
        n_classes: the number of classes.
        cfg: the study configuration (training settings).
    """

    key: str
    spec: str
    size: int
    seeds: tuple[int, ...]
    model_seeds: tuple[int, ...]
    rows: np.ndarray
    masks: np.ndarray
    n_classes: int
    cfg: SmallDataConfig


def network_key(spec: str, size: int) -> str:
    """The unit key of the networks of ``spec`` at ``size``, e.g. ``train-cnn_32-64-n10``."""
    return f"train-{_safe(spec)}-n{size}"


def model_seed(spec: str, size: int, *, seed: int) -> int:
    """The seed of the network of ``spec`` on the subset of ``size`` drawn with ``seed``."""
    return derive_seed(seed, "small-data", spec, size)


def steps_per_epoch(cfg: SmallDataConfig, size: int) -> int:
    """Training steps per epoch of a network on a subset of ``size`` rows."""
    return math.ceil(size / cfg.batch_size)


def ensemble_task(job: EnsembleJob, *, x_union: np.ndarray, y_union: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Train the K networks of one spec and size as one batched ensemble and test each: the arrays of its unit.

    Network ``k`` trains only on its own subset (``job.masks[k]``; all subsets of a size have the same
    size, so every network takes the same steps per epoch) from its own seed. Module-level and pure
    (the seeds are in ``job``; the shared arrays are read-only), so both executors give the same bits.
    ``progress(network training steps done)`` is called after every epoch (K networks x steps per
    epoch x epochs in all).

    Returns:
        ``seeds`` ``(K,)``; per network ``(K,)``: ``test_acc`` (its own predictions on the whole test
        set), ``train_acc`` (on its own subset, eval mode), ``epochs_to_fit`` (-1: never); and, shared,
        ``epochs`` (run; with ``early_stop="fit"`` until every network fits) and ``seconds`` (training
        and test).
    """
    from fitscope.train import train_ensemble

    t0 = time.perf_counter()
    k = len(job.model_seeds)
    steps = steps_per_epoch(job.cfg, job.size)
    tick = None if progress is None else (lambda info: progress(k * steps * int(info["epoch"])))
    # No per-epoch test pass (the test set is far larger than the subsets): the final networks are tested once.
    result = train_ensemble(job.spec, x_union[job.rows].astype(np.float32), y_union[job.rows],
                            config=train_config(job.cfg, job.size), seeds=list(job.model_seeds), masks=job.masks,
                            progress=tick, n_classes=job.n_classes, keep_model=True)
    test_acc = _test_accuracy(result.model, x_test.astype(np.float32), y_test)
    return dict(seeds=np.asarray(job.seeds, np.int64), test_acc=np.asarray(test_acc, np.float64),
                train_acc=np.asarray(result.train_acc[:, result.epochs_run - 1], np.float64),
                epochs_to_fit=np.asarray(result.epochs_to_fit, np.int64), epochs=np.asarray(result.epochs_run),
                seconds=np.asarray(time.perf_counter() - t0))


@dataclass
class SmallDataOutcome:
    """What :func:`small_data_study` did: one row per method, size and seed; computed and reused units.

    Attributes:
        results: one row per method, size and seed.
        computed, reused: unit keys computed by this call and found stored.
        seconds: unit key -> wall seconds (kernels: the Gram matrices; networks: the ensemble of a
            model and size, training and test).
    """

    results: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def kernel_label(variant: str, cfg: SmallDataConfig) -> str:
    """The method name of a kernel variant in tables, e.g. ``CNTK-GAP (depth 3)``."""
    names = {"cntk-gap": "CNTK-GAP", "cntk-lap": f"CNTK-LAP (c={cfg.lap_window})", "cntk": "CNTK (vanilla)",
             "cntk-lap+patches": f"CNTK-LAP (c={cfg.lap_window}) + random patches"}
    return f"{names[variant]}, depth {cfg.depth}"


def findings(results: pd.DataFrame) -> list[dict]:
    """At each of the two smallest sizes: best kernel mean accuracy minus best network mean accuracy."""
    out = []
    means = results.groupby(["kind", "method", "size"]).test_acc.mean().reset_index()
    for size in sorted(results["size"].unique())[:2]:
        at = means[means["size"] == size]
        kernels, nets = at[at.kind == "kernel"], at[at.kind == "network"]
        if not len(kernels) or not len(nets):
            continue
        k, n = kernels.loc[kernels.test_acc.idxmax()], nets.loc[nets.test_acc.idxmax()]
        diff = float(k.test_acc - n.test_acc)
        out.append(dict(check=f"n = {size}: best kernel ({k.method}) minus best network ({n.method}), "
                              "mean test accuracy over seeds",
                        value=diff, target="> 0 (CNTK beats the trained networks at the smallest sizes)",
                        holds=diff > 0))
    return out


@dataclass
class SmallDataState:
    """What ``prepare`` found: the data, the subsets and where their rows are in the union."""

    data: Dataset
    subsets: dict[tuple[int, int], np.ndarray]
    union: np.ndarray
    position: np.ndarray


def pools(cfg: SmallDataConfig) -> list[str]:
    """The CNTK readouts the kernel variants need, in order (one ``kernel-<readout>`` unit each)."""
    return list(dict.fromkeys(KERNEL_VARIANTS[v] for v in cfg.kernels))


def prepare(cfg: SmallDataConfig) -> Prepared:
    """Load the data, check the models, draw the subsets; nothing is written yet."""
    from fitscope.models import check_input_shape, parse_spec

    data: Dataset = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    if data.kind not in ("image", "signal"):
        raise ConfigError(f"--data: the convolutional kernels need images (N, C, H, W) or signals (N, C, L); "
                          f"{data.name} holds vectors of shape {data.input_shape}")
    for spec in cfg.models:
        check_input_shape(parse_spec(spec), data.input_shape)
    check_supports_study(data, study="the small-data study", min_per_class=1)
    subsets = draw_subsets(data.y_train, cfg.sizes, data.n_classes, seeds=cfg.seeds)
    union = np.unique(np.concatenate(list(subsets.values())))
    position = np.full(len(data.y_train), -1)
    position[union] = np.arange(len(union))
    seeds = {"data_seed": cfg.data_seed, "subset_seeds": cfg.seeds,
             "model_seeds": {f"{m} n={s}": [model_seed(m, s, seed=seed) for seed in cfg.seeds]
                             for m in cfg.models for s in cfg.sizes},
             "patch_seeds": {f"n={s} seed={seed}": derive_seed(seed, "small-data", "patches", s)
                             for s in cfg.sizes for seed in cfg.seeds} if "cntk-lap+patches" in cfg.kernels else {}}
    shared = {"x_union": data.x_train[union].astype(np.float64), "y_union": data.y_train[union].astype(np.int64),
              "x_test": data.x_test.astype(np.float64), "y_test": data.y_test.astype(np.int64)}
    return Prepared(seeds=seeds, shared=shared, state=SmallDataState(data, subsets, union, position))


def ensemble_jobs(cfg: SmallDataConfig, state: SmallDataState) -> list[EnsembleJob]:
    """One ensemble per model spec and size (one network per seed), in that order."""
    jobs = []
    for spec in cfg.models:
        for size in cfg.sizes:
            subsets = [state.position[state.subsets[(size, seed)]] for seed in cfg.seeds]
            rows = np.unique(np.concatenate(subsets))
            masks = np.stack([np.isin(rows, sub) for sub in subsets])
            jobs.append(EnsembleJob(network_key(spec, size), spec, size, tuple(cfg.seeds),
                                    tuple(model_seed(spec, size, seed=seed) for seed in cfg.seeds), rows, masks,
                                    state.data.n_classes, cfg))
    return jobs


def plan(cfg: SmallDataConfig, prepared: Prepared) -> list[Unit]:
    """A ``kernel-<readout>`` unit per readout (:func:`kernel_task`), one per model and size (:func:`ensemble_task`)."""
    state: SmallDataState = prepared.state
    n_union, n_test = len(state.union), len(state.data.y_test)
    units = [Unit(f"kernel-{pool}", kernel_task, (pool, cfg),
                  work=math.ceil(kernel_work(n_union, n_test) / ENTRIES_PER_TICK),
                  label=f"CNTK {pool}", info=dict(union=n_union, test=n_test))
             for pool in pools(cfg)]
    units += [Unit(job.key, ensemble_task, job,
                   work=len(job.seeds) * train_config(cfg, job.size).epochs * steps_per_epoch(cfg, job.size),
                   label=f"{job.spec} n={job.size}",
                   info=dict(model=job.spec, size=job.size, seeds=list(job.seeds), rows=len(job.rows)))
              for job in ensemble_jobs(cfg, state)]
    return units


def estimate(cfg: SmallDataConfig, prepared: Prepared, units) -> Outcome:
    """Kernel regression on every subset from the stored Gram matrices, plus every network's accuracy."""
    state: SmallDataState = prepared.state
    data = state.data
    x_union, x_test = prepared.shared["x_union"], prepared.shared["x_test"]
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    bases = {}
    for pool in pools(cfg):
        bases[pool] = units[f"kernel-{pool}"]
        seconds[f"kernel-{pool}"] = float(bases[pool]["seconds"])
    for variant in cfg.kernels:
        base = bases[KERNEL_VARIANTS[variant]]
        for (size, seed), idx in state.subsets.items():
            pos = state.position[idx]
            gram, cross = subset_kernels(variant, base, pos, x_union[pos], x_test, cfg,
                                         seed=derive_seed(seed, "small-data", "patches", size))
            acc = kernel_regression_accuracy(gram, cross, data.y_train[idx], data.y_test,
                                             n_classes=data.n_classes, ridge=cfg.ridge)
            rows.append(dict(method=kernel_label(variant, cfg), kind="kernel", size=size, seed=seed,
                             test_acc=acc, train_acc=np.nan, epochs=0, epochs_to_fit=0))
    for job in ensemble_jobs(cfg, state):
        stored = units[job.key]
        seconds[job.key] = float(stored["seconds"])
        for k, seed in enumerate(job.seeds):  # one row per network
            rows.append(dict(method=job.spec, kind="network", size=job.size, seed=seed,
                             test_acc=float(stored["test_acc"][k]), train_acc=float(stored["train_acc"][k]),
                             epochs=int(stored["epochs"]), epochs_to_fit=int(stored["epochs_to_fit"][k])))
    outcome = SmallDataOutcome(pd.DataFrame(rows), seconds=seconds)
    checks = findings(outcome.results)
    return Outcome(tables={"results": outcome.results}, summary={c["check"]: c["value"] for c in checks},
                   files={"timings.json": {"seconds per unit": seconds}}, detail=outcome)


def report(cfg: SmallDataConfig, prepared: Prepared, outcome: Outcome) -> dict:
    """The context of ``kernels_small_data.html.j2``."""
    from fitscope.report import kernels as figures

    state: SmallDataState = prepared.state
    data = state.data
    detail: SmallDataOutcome = outcome.detail
    return dict(
        title=f"Kernel study: CNTK vs trained networks on few-sample subsets of {data.name}",
        cfg=cfg.model_dump(),
        data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                  n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape))),
        n_union=len(state.union),
        kernel_names=[kernel_label(v, cfg) for v in cfg.kernels],
        findings=findings(detail.results),
        accuracy_table=figures.small_data_table(detail.results),
        accuracy_png=figures.small_data_figure(detail.results),
        fit_table=fit_table(detail.results, detail.seconds),
        computed=detail.computed,
        reused=detail.reused,
    )


STUDY = Study(kind="kernels-small-data", command="fitscope kernels small-data", config=SmallDataConfig,
              prepare=prepare, plan=plan, estimate=estimate, report=report, template="kernels_small_data.html.j2",
              quick=QUICK)


def small_data_study(cfg: SmallDataConfig, out: str | Path, *, resume: bool = False, **placement) -> tuple:
    """The whole study: subsets, kernels, networks, tables and ``report.html``.

    The data, subsets and model specs are checked before the run directory is
    made, so bad flags leave nothing behind.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a run with the same config, reusing its finished units.
        placement: ``executor``, ``address``, ``threads``, ``progress`` of
            :func:`fitscope.experiments.study.run_study`.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`SmallDataOutcome`
        (``computed`` / ``reused``: the unit keys this call computed or found stored).
    """
    result: StudyResult = run_study(STUDY, cfg, out, resume=resume, **placement)
    detail: SmallDataOutcome = result.outcome.detail
    detail.computed, detail.reused = list(result.trained), list(result.reused)
    return result.run, detail


def _test_accuracy(model, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """``(K,)`` test accuracy of every model of a trained ensemble (eval mode)."""
    import torch

    from fitscope.train import predict_logits

    logits = predict_logits(model.eval(), torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)), 512)
    return (logits.argmax(dim=2).numpy() == y_test[None, :]).mean(axis=1)


def fit_table(results: pd.DataFrame, seconds: dict[str, float]) -> pd.DataFrame:
    """The networks per model and size: mean train accuracy, models that fit, epochs run, training seconds.

    Args:
        results: the results table.
        seconds: unit key -> wall seconds (:attr:`SmallDataOutcome.seconds`); the seconds of a
            model and size are those of its one ensemble unit (all its seeds together).
    """
    nets = results[results.kind == "network"]
    if not len(nets):
        return pd.DataFrame()
    table = nets.groupby(["method", "size"]).agg(
        train_acc=("train_acc", "mean"), models_fit=("epochs_to_fit", lambda s: int((s > 0).sum())),
        models=("seed", "count"), epochs_run=("epochs", "max")).reset_index()
    table["seconds"] = [seconds.get(network_key(m, int(n)), np.nan) for m, n in zip(table.method, table["size"])]
    return table
