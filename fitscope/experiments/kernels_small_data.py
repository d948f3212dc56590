"""Convolutional kernels against trained networks on few-sample subsets (Arora et al. 2020, small data).

Reads like the small-data part of METHODS section 5:

1. **Subsets**: for every seed, a class-balanced subset of the training split
   of each size (``size // K`` examples per class, the remainder to classes
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
   :func:`fitscope.train.train_ensemble` on the same subsets, the seeds of a
   size batched as one ensemble (masks over the union of its subsets),
   Adam, until every model fits its subset or the step budget runs out.
4. **Accuracy** of every method on the whole test split, mean and standard
   deviation over seeds, against the subset size.

Units (stored as they finish, reused by a resumed run): ``kernel-<readout>``
(the Gram matrices) and ``train-<model>-n<size>`` (one ensemble each).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fitscope.data import Dataset, load
from fitscope.errors import ConfigError
from fitscope.experiments.config_errors import build_config
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
        "none", description="'fit': stop once every model fits its subset (their loss is still high then)")
    threads: int = Field(1, gt=0, description="torch threads while the networks train (tiny batches: 1 is fastest)")
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
        """A small setting: sizes 10-80, two seeds, CNTK-GAP only, the CNN only."""
        base = dict(sizes=[10, 20, 40, 80], seeds=[0, 1], kernels=["cntk-gap"], models=["cnn:32-64"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return make_config(**base)


def make_config(**values) -> SmallDataConfig:
    """Build a :class:`SmallDataConfig`, turning validation errors into one-line ConfigErrors."""
    return build_config(SmallDataConfig, "kernels small-data", values)


# --------------------------------------------------------------------------- subsets


def draw_subsets(y: np.ndarray, sizes: list[int], seeds: list[int], n_classes: int) -> dict[tuple[int, int], np.ndarray]:
    """Class-balanced, nested training subsets per ``(size, seed)``.

    Args:
        y: ``(n,)`` training labels in ``[0, n_classes)``.
        sizes: subset sizes, each at least ``n_classes``.
        seeds: one draw per seed.
        n_classes: K.

    Returns:
        ``{(size, seed): sorted row indices}``: ``size // K`` rows of each
        class plus one more for ``size % K`` classes chosen by the seed; a
        seed's smaller subsets are contained in its larger ones.

    Raises:
        ConfigError: a size below K, or more rows of a class than it has.
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


def base_kernel(pool: str, x_union: np.ndarray, x_test: np.ndarray, cfg: SmallDataConfig) -> dict[str, np.ndarray]:
    """The CNTK matrices of one readout: ``gram`` (union x union), ``cross`` (test x union), ``test_diag``."""
    from fitscope.kernels import ntk
    from fitscope.kernels.conv import cntk_diagonal

    options = dict(depth=cfg.depth, kind="ntk", filter_size=cfg.filter_size, pool=pool,
                   lap_window=cfg.lap_window if pool == "lap" else None, dtype=cfg.kernel_dtype,
                   max_memory_mb=cfg.max_memory_mb)
    gram = np.asarray(ntk(x_union, arch="conv", **options), dtype=np.float64)
    cross = np.asarray(ntk(x_test, x_union, arch="conv", **options), dtype=np.float64)
    test_diag = np.asarray(cntk_diagonal(x_test, **options), dtype=np.float64)
    return dict(gram=gram, cross=cross, test_diag=test_diag)


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
        n_classes: K (one-hot width).
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


@dataclass
class SmallDataOutcome:
    """What :func:`small_data_study` did: one row per method, size and seed; computed and reused units."""

    results: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


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


def small_data_study(
    cfg: SmallDataConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[str], None] | None = None,
    on_unit_start: Callable[[str, int, int], None] | None = None,
    progress: Callable[[dict], None] | None = None,
):
    """The whole study: subsets, kernels, networks, tables and ``report.html``.

    The data, subsets and model specs are checked before the run directory is
    made, so bad flags leave nothing behind.

    Args:
        cfg: the study configuration.
        out: the run directory to create (or resume with ``resume=True``).
        resume: continue a run with the same config, reusing its finished units.
        on_step: called with a short description before each kernel computation.
        on_unit_start: called with ``(unit key, n_models, epoch budget)`` before each ensemble trains.
        progress: per-epoch callback handed to the trainer.

    Returns:
        ``(run, outcome)``: the finished :class:`fitscope.runs.Run` and a :class:`SmallDataOutcome`.
    """
    from fitscope.models import check_input_shape, parse_spec
    from fitscope.report import kernels as figures
    from fitscope.report import write_report
    from fitscope.runs import Run
    from fitscope.train import train_ensemble

    t0 = time.perf_counter()
    data: Dataset = load(cfg.data, label_column=cfg.label_column, seed=cfg.data_seed)
    if data.kind not in ("image", "signal"):
        raise ConfigError(f"--data: the convolutional kernels need images (N, C, H, W) or signals (N, C, L); "
                          f"{data.name} holds vectors of shape {data.input_shape}")
    for spec in cfg.models:
        check_input_shape(parse_spec(spec), data.input_shape)
    subsets = draw_subsets(data.y_train, cfg.sizes, cfg.seeds, data.n_classes)
    union = np.unique(np.concatenate(list(subsets.values())))
    position = np.full(len(data.y_train), -1)
    position[union] = np.arange(len(union))
    load_seconds = time.perf_counter() - t0
    seeds = {"data_seed": cfg.data_seed, "subset_seeds": cfg.seeds,
             "model_seeds": {f"{m} n={s}": [derive_seed(seed, "small-data", m, s) for seed in cfg.seeds]
                             for m in cfg.models for s in cfg.sizes},
             "patch_seeds": {f"n={s} seed={seed}": derive_seed(seed, "small-data", "patches", s)
                             for s in cfg.sizes for seed in cfg.seeds} if "cntk-lap+patches" in cfg.kernels else {}}
    x_union = data.x_train[union].astype(np.float64)
    x_test = data.x_test.astype(np.float64)
    rows: list[dict] = []
    with Run.create(out, kind="kernels-small-data", config=cfg.model_dump(), seeds=seeds, resume=resume) as run:
        run.timings.setdefault("load data", round(load_seconds, 3))
        outcome = SmallDataOutcome(pd.DataFrame())
        bases: dict[str, dict[str, np.ndarray]] = {}
        for pool in dict.fromkeys(KERNEL_VARIANTS[v] for v in cfg.kernels):
            key = f"kernel-{pool}"
            if run.has_unit(key):
                bases[pool] = run.load_unit(key)
                outcome.reused.append(key)
                continue
            if on_step:
                on_step(f"CNTK ({pool} readout, depth {cfg.depth}): Gram of {len(union)} training "
                        f"+ {len(x_test)} test inputs")
            with run.timer(f"kernel {pool}"):
                t1 = time.perf_counter()
                bases[pool] = base_kernel(pool, x_union, x_test, cfg)
                seconds = time.perf_counter() - t1
            bases[pool]["seconds"] = np.array(seconds)
            run.save_unit(key, dict(bases[pool], union=union),
                          info=dict(union=len(union), test=len(x_test), seconds=round(seconds, 3)))
            outcome.computed.append(key)
        for variant in cfg.kernels:
            base = bases[KERNEL_VARIANTS[variant]]
            for (size, seed), idx in subsets.items():
                t1 = time.perf_counter()
                gram, cross = subset_kernels(variant, base, position[idx], x_union[position[idx]], x_test, cfg,
                                             seed=derive_seed(seed, "small-data", "patches", size))
                acc = kernel_regression_accuracy(gram, cross, data.y_train[idx], data.y_test,
                                                 n_classes=data.n_classes, ridge=cfg.ridge)
                rows.append(dict(method=kernel_label(variant, cfg), kind="kernel", size=size, seed=seed,
                                 test_acc=acc, train_acc=np.nan, epochs=0, epochs_to_fit=0,
                                 seconds=time.perf_counter() - t1, kernel_seconds=float(base["seconds"])))
        for spec in cfg.models:
            for size in cfg.sizes:
                key = f"train-{_safe(spec)}-n{size}"
                idx = [subsets[(size, seed)] for seed in cfg.seeds]
                rows_u = np.unique(np.concatenate(idx))
                masks = np.stack([np.isin(rows_u, i) for i in idx])
                if run.has_unit(key):
                    stored = run.load_unit(key)
                    test_acc, train_acc = stored["test_acc"], stored["train_acc"]
                    to_fit, epochs, seconds = stored["epochs_to_fit"], int(stored["epochs"]), float(stored["seconds"])
                    outcome.reused.append(key)
                else:
                    tcfg = train_config(cfg, size)
                    if on_unit_start:
                        on_unit_start(f"{spec} n={size}", len(cfg.seeds), tcfg.epochs)
                    with run.timer(f"train {spec}"), torch_threads(cfg.threads):
                        # No per-epoch test pass (the test set is far larger than the subsets): the
                        # final models are tested once below.
                        result = train_ensemble(
                            spec, data.x_train[rows_u], data.y_train[rows_u], config=tcfg,
                            seeds=seeds["model_seeds"][f"{spec} n={size}"], masks=masks,
                            progress=progress, n_classes=data.n_classes, keep_model=True)
                        test_acc = _test_accuracy(result.model, data.x_test, data.y_test)
                    last = result.epochs_run - 1
                    train_acc = result.train_acc[:, last]
                    to_fit, epochs, seconds = result.epochs_to_fit, result.epochs_run, result.seconds
                    run.save_unit(key, dict(test_acc=test_acc, train_acc=train_acc, epochs_to_fit=to_fit,
                                            epochs=np.array(epochs), seconds=np.array(seconds)),
                                  info=dict(models=len(cfg.seeds), epochs=int(epochs), seconds=round(seconds, 3)))
                    outcome.computed.append(key)
                for k, seed in enumerate(cfg.seeds):
                    rows.append(dict(method=spec, kind="network", size=size, seed=seed, test_acc=float(test_acc[k]),
                                     train_acc=float(train_acc[k]), epochs=int(epochs),
                                     epochs_to_fit=int(to_fit[k]), seconds=seconds / len(cfg.seeds),
                                     kernel_seconds=np.nan))
        outcome.results = pd.DataFrame(rows)
        run.write_table("results", outcome.results)
        checks = findings(outcome.results)
        run.finish(summary={c["check"]: c["value"] for c in checks})
        with run.timer("report"):
            context = dict(
                title=f"Kernel study: CNTK vs trained networks on few-sample subsets of {data.name}",
                cfg=cfg.model_dump(),
                data=dict(name=data.name, source=data.source, n_train=len(data.y_train), n_test=len(data.y_test),
                          n_classes=data.n_classes, input_shape="x".join(map(str, data.input_shape))),
                n_union=len(union),
                kernel_names=[kernel_label(v, cfg) for v in cfg.kernels],
                findings=checks,
                accuracy_table=figures.small_data_table(outcome.results),
                accuracy_png=figures.small_data_figure(outcome.results),
                fit_table=_fit_table(outcome.results),
                computed=outcome.computed,
                reused=outcome.reused,
            )
            write_report(run, "kernels_small_data.html.j2", context)
    return run, outcome


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    import torch

    from fitscope.train import configure_threads

    configure_threads()  # the trainer's one-time default, so that it leaves our setting alone below
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _test_accuracy(model, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """``(K,)`` test accuracy of every model of a trained ensemble (eval mode)."""
    import torch

    from fitscope.train import predict_logits

    logits = predict_logits(model.eval(), torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)), 512)
    return (logits.argmax(dim=2).numpy() == y_test[None, :]).mean(axis=1)


def _fit_table(results: pd.DataFrame) -> pd.DataFrame:
    nets = results[results.kind == "network"]
    if not len(nets):
        return pd.DataFrame()
    return nets.groupby(["method", "size"]).agg(
        train_acc=("train_acc", "mean"), models_fit=("epochs_to_fit", lambda s: int((s > 0).sum())),
        models=("seed", "count"), epochs_run=("epochs", "max"), seconds=("seconds", "sum")).reset_index()
