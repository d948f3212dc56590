"""Train K models at once: one ensemble module, in-memory tensors, no DataLoader.

Notation: K models (``len(seeds)``), n training rows, B batch size, C classes.

Each step gathers a ``(K, B)`` index matrix (model ``k``'s row of it comes
from model ``k``'s own permutations, drawn from a generator seeded by
``seeds[k]``), indexes ``x``/``y`` once, runs the ensemble forward and
backward, and updates all K models with one fused optimizer step. The loss is
the sum over models of each model's mean batch loss, so every model gets
exactly the gradient it would get alone. After every epoch an eval-mode pass
over all n training rows (and the test set) gives each model's per-example
loss, correctness and margin, accumulated into the records as they are
produced (``config.record``: by default a summary whose memory does not grow
with the epochs, :class:`~fitscope.train.records.RecordSummary`).

Devices: everything above runs on one torch device (``device=``, else the
placement's, see :mod:`fitscope.train.device`). The inputs are copied there
once, the batch order is drawn on the CPU (the same batches on every device)
and copied once per epoch, the per-example records stay on the device until
the end, and only each epoch's per-model means (K numbers) come back every
epoch, for early stopping and progress.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from fitscope.errors import ConfigError, DataError
from fitscope.models import EnsembleModel, build, flops_per_example, largest_activation
from fitscope.seeding import derive_seed
from fitscope.train.objective import Objective, merged_options
from fitscope.train.regularizers import TrainState, build_parts
from fitscope.train.config import TrainConfig
from fitscope.train.device import placement_device
from fitscope.train.records import DeviceRecords, DeviceSummary, per_example_stats
from fitscope.train.result import EnsembleResult
from fitscope.train.schedules import lr_at
from fitscope.train.threads import configure_threads
from fitscope.validation import (
    as_array,
    check_binary,
    check_finite,
    check_int,
    check_labels,
    check_seeds,
    check_type,
    message,
)

# Evaluation chunks hold at most this many activation values per layer output
# (a few MB: the chunk's activations stay in cache; larger chunks were slower).
_EVAL_VALUES = 1 << 22

# Train MLPs with the hand-written forward/backward (``steps.MLPStep``); the
# tests switch this off to compare with autograd.
HAND_WRITTEN_MLP = True


# --------------------------------------------------------------------------- validation


def _as_inputs(name: str, x, like_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Inputs ``(n, *input_shape)``, n >= 1, numeric and finite (as float32); ``like_shape``: x's input shape."""
    arr = as_array(x, name)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise DataError(message(name, "an array of shape (n, *input_shape) with n >= 1, e.g. (n, D), (n, C, L) "
                                "or (n, C, H, W)", f"shape {arr.shape}"))
    if arr.dtype.kind not in "biuf":
        raise DataError(message(name, "numeric inputs", f"dtype {arr.dtype}"))
    if like_shape is not None and arr.shape[1:] != like_shape:
        raise DataError(message(name, f"inputs of shape (n, {', '.join(map(str, like_shape))}) like x",
                                f"shape {arr.shape}"))
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    return check_finite(arr, name)


def _as_labels(name: str, y) -> np.ndarray:
    """Class labels of any shape (``(n,)`` or ``(K, n)``): non-negative integers, as int64."""
    arr = as_array(y, name)
    return check_labels(arr.reshape(-1), name).reshape(arr.shape)


def _validate(x, y, masks, x_test, y_test, k: int, n_classes: int | None):
    x = _as_inputs("x", x)
    n = x.shape[0]
    y = _as_labels("y", y)
    if y.shape not in ((n,), (k, n)):
        raise DataError(message("y", f"labels of shape ({n},) shared by all models or ({k}, {n}) per model "
                                f"(x has {n} rows, {k} seeds)", f"shape {y.shape}"))
    if (x_test is None) != (y_test is None):
        missing = "x_test" if x_test is None else "y_test"
        raise DataError(message(missing, "both x_test and y_test or neither", "None"))
    if x_test is not None:
        x_test = _as_inputs("x_test", x_test, x.shape[1:])
        y_test = _as_labels("y_test", y_test)
        if y_test.shape != (x_test.shape[0],):
            raise DataError(message("y_test", f"shape ({x_test.shape[0]},) to match x_test", f"shape {y_test.shape}"))
    high = max(int(y.max()), int(y_test.max()) if y_test is not None else 0)
    if n_classes is None:
        n_classes = max(high + 1, 2)
    else:
        n_classes = check_int(n_classes, "n_classes")
        if high >= n_classes:
            raise DataError(message("y", f"labels in [0, {n_classes}) for n_classes={n_classes}", f"label {high}"))
    if masks is not None:
        masks = check_binary(masks, "masks", axes=("K", "n"), shape=(k, n), like="seeds and x",
                             error=ConfigError)
        empty = np.flatnonzero(~masks.any(axis=1))
        if len(empty):
            raise ConfigError(message("masks", "at least one True in every row (every model needs a training row)",
                                      f"{len(empty)} empty row(s), the first for model {int(empty[0])}"))
    return x, y, masks, x_test, y_test, int(n_classes)


# --------------------------------------------------------------------------- batches


class EpochSampler:
    """The ``(K, T)`` row-index matrix of one epoch; model ``k``'s row uses only its own generator.

    Without masks (or when every mask has the same size) an epoch is one
    fresh permutation of each model's rows, cut into batches of
    ``batch_size`` (the last one smaller). With subsets of different sizes,
    an epoch is ``ceil(max size / batch_size)`` full batches and each model
    cycles through successive permutations of its own rows.

    Args:
        n: number of training rows.
        rows: per-model row indices (None: every model uses every row).
        seeds: the K model seeds (generators seeded ``derive_seed(seed, "order")``).
        batch_size: rows per model per step.
    """

    def __init__(self, n: int, rows: list[torch.Tensor] | None, *, seeds: Sequence[int], batch_size: int) -> None:
        self.n, self.rows, self.batch_size = n, rows, batch_size
        self.generators = [torch.Generator().manual_seed(derive_seed(int(s), "order")) for s in seeds]
        sizes = [n] * len(seeds) if rows is None else [len(r) for r in rows]
        self.sizes = sizes
        self.equal = len(set(sizes)) == 1
        self.steps = math.ceil(max(sizes) / batch_size)
        self._buffers = [torch.empty(0, dtype=torch.int64) for _ in seeds]

    def _perm(self, k: int) -> torch.Tensor:
        perm = torch.randperm(self.sizes[k], generator=self.generators[k])
        return perm if self.rows is None else self.rows[k][perm]

    def epoch(self) -> torch.Tensor:
        """Draw the next epoch's ``(K, T)`` int64 index matrix (T = size, or steps x batch_size)."""
        if self.equal:
            return torch.stack([self._perm(k) for k in range(len(self.generators))])
        total = self.steps * self.batch_size
        out = []
        for k in range(len(self.generators)):
            buf = self._buffers[k]
            while len(buf) < total:
                buf = torch.cat([buf, self._perm(k)])
            out.append(buf[:total])
            self._buffers[k] = buf[total:]
        return torch.stack(out)

    def batches(self, index: torch.Tensor) -> list[torch.Tensor]:
        """Cut an epoch's index matrix into ``(K, b)`` step matrices."""
        return [index[:, i : i + self.batch_size] for i in range(0, index.shape[1], self.batch_size)]


# --------------------------------------------------------------------------- engine


def _make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in ("cpu", "cuda")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=weight_decay, fused=fused)


@torch.inference_mode()
def predict_logits(model: EnsembleModel, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Eval-mode logits ``(K, n, C)`` of every model on the shared inputs ``x`` ``(n, *shape)``, in chunks of rows."""
    k, n = model.n_models, x.shape[0]
    out = torch.empty(k, n, model.n_classes, device=x.device)
    for start in range(0, n, chunk):
        out[:, start : start + chunk] = model.forward_shared(x[start : start + chunk])
    return out


def _own_row_means(values: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    """Mean (float64, on the values' device) of ``(K, n)`` values over each model's own rows."""
    values = values.double()
    if masks is None:
        return values.mean(dim=1)
    return (values * masks).sum(dim=1) / masks.sum(dim=1)


def train_ensemble(
    spec: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: TrainConfig,
    seeds: Sequence[int],
    masks: np.ndarray | None = None,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    dropout: float | None = None,
    device: str | None = None,
    progress: Callable[[dict], None] | None = None,
    n_classes: int | None = None,
    keep_model: bool = False,
) -> EnsembleResult:
    """Train ``len(seeds)`` models of one spec at once and record how they fit.

    Args:
        spec: model spec (see :data:`fitscope.models.SPEC_HELP`).
        x: ``(n, *input_shape)`` inputs shared by every model.
        y: ``(n,)`` labels shared by every model, or ``(K, n)`` per model
            (e.g. a different label corruption for each).
        config: how to train; ``config.record`` says which per-example records
            come back: ``result.summary`` (``"summary"``, the default, and
            ``"full"``) and every epoch in ``result.records`` (``"full"`` only).
        seeds: one seed per model; model ``k``'s initial weights, batch order,
            dropout masks and augmentations come from ``seeds[k]`` alone.
        masks: optional ``(K, n)`` bool; model ``k`` trains only on rows where
            ``masks[k]`` is True (and is evaluated on all rows). Subsets may
            differ in size: an epoch then has ``ceil(max size / batch_size)``
            steps and smaller subsets are cycled.
        x_test: optional ``(n_test, *input_shape)`` test inputs.
        y_test: ``(n_test,)`` test labels (with ``x_test``).
        dropout: overrides the spec's dropout when not None.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``);
            None: the placement's (``FITSCOPE_DEVICE``, which a study's
            executor sets to its ``--device``), else the CPU. See
            :mod:`fitscope.train.device`. The models, batches and records
            stay on it; the result is copied back to NumPy once.
        progress: called after every epoch with ``dict(epoch, epochs,
            train_acc_mean, test_acc_mean, seconds, models, examples_per_second)``.
        n_classes: number of classes; default ``max(label) + 1`` over ``y`` and ``y_test``.
        keep_model: put the trained ensemble module (eval mode) in ``result.model``.

    Returns:
        An :class:`EnsembleResult`.

    Raises:
        DataError: inputs/labels of the wrong shape, type or range.
        ConfigError: bad spec, config, seeds, masks or device (a CUDA device not found here).
    """
    t_start = time.perf_counter()
    check_type(config, "config", TrainConfig)
    dev = placement_device(device)
    configure_threads()
    seeds = check_seeds(seeds)
    k = len(seeds)
    x, y, masks, x_test, y_test, n_classes = _validate(x, y, masks, x_test, y_test, k, n_classes)
    n, input_shape = x.shape[0], tuple(x.shape[1:])
    has_test = x_test is not None and len(x_test) > 0
    if config.early_stop == "patience" and not has_test:
        raise ConfigError(message("x_test", "test data with early_stop='patience' (it watches the test loss; "
                                  "or use early_stop='fit' or 'none')", "no test rows"))
    parts = build_parts(config.parts())
    model_options = merged_options(parts, "model")
    if dropout is not None and "dropout" in model_options:
        raise ConfigError(message("dropout", "either dropout= or the regularizer 'dropout', not both",
                                  f"dropout={dropout} and {config.regularizers}"))
    model = build(spec, input_shape, n_classes, seeds=seeds,
                  dropout=model_options.get("dropout", dropout)).to(dev)
    flops_train = 3 * flops_per_example(model.spec, input_shape, n_classes)
    chunk = max(1, min(config.eval_batch_size,
                       _EVAL_VALUES // (k * largest_activation(model.spec, input_shape, n_classes))))

    # The inputs as given: a read-only memory map or a view of Ray's object store is wrapped, not copied (on the
    # CPU; on a GPU, copied there once). Batches are gathered from them; train and test rows are evaluated apart.
    xt = torch.from_numpy(x).to(dev)
    xt_test = torch.from_numpy(x_test).to(dev) if has_test else None
    yt = torch.from_numpy(y).to(dev)
    yt_test = torch.from_numpy(y_test).to(dev) if has_test else None
    shared_labels = yt.dim() == 1
    mask_t = torch.from_numpy(masks).to(dev) if masks is not None else None
    rows = [torch.from_numpy(np.flatnonzero(m)) for m in masks] if masks is not None else None
    sampler = EpochSampler(n, rows, seeds=seeds, batch_size=config.batch_size)
    state = TrainState(model=model, seeds=seeds, n=n, n_classes=n_classes, epochs=config.epochs, device=dev,
                       input_shape=input_shape, labels=yt)
    for part in parts:
        part.attach(state)
    # after attach: a part may add parameters (learned hyperparameters) or reparameterize weights
    optimizer = _make_optimizer(model, config, dev, merged_options(parts, "optimizer").get("weight_decay", 0.0))
    objective = Objective(parts, state, hand_written=HAND_WRITTEN_MLP)

    epochs = config.epochs
    train_acc = np.full((k, epochs), np.nan)
    train_loss = np.full((k, epochs), np.nan)
    test_acc = np.full((k, epochs), np.nan)
    test_loss = np.full((k, epochs), np.nan)
    epochs_to_fit = np.full(k, -1, np.int64)
    # on the device until the end: every epoch (``"full"`` only) and the summary (not growing with epochs)
    records = DeviceRecords(epochs, k, n, dev) if config.record == "full" else None
    summary = None
    if config.record != "none":
        summary = DeviceSummary(k, n, dev, at=tuple(e for e in config.record_epochs if e != -1),
                                last=-1 in config.record_epochs)
    train_logits = test_logits = None
    examples_seen, train_seconds, eval_seconds = 0, 0.0, 0.0
    best_test, waited, epochs_run = math.inf, 0, 0

    for epoch in range(epochs):
        # ---- training steps
        t0 = time.perf_counter()
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        state.epoch = epoch
        index = sampler.epoch().to(dev)
        for idx in sampler.batches(index):
            xb = xt[idx]
            yb = yt[idx] if shared_labels else yt.gather(1, idx)
            objective(xb, yb, idx)
            optimizer.step()
            objective.after_step()
            examples_seen += idx.numel()
        if dev.type == "cuda":  # the steps were only queued: wait, so that train_seconds is their time
            torch.cuda.synchronize(dev)
        t1 = time.perf_counter()
        train_seconds += t1 - t0

        # ---- evaluation pass: every model on every training row (and the test set)
        model.eval()
        with torch.inference_mode():
            train_logits = predict_logits(model, xt, chunk)
            test_logits = predict_logits(model, xt_test, chunk) if has_test else train_logits[:, :0]
            losses, correct, margin = per_example_stats(train_logits, yt)
            means = [_own_row_means(correct, mask_t), _own_row_means(losses, mask_t)]
            if records is not None:
                records.put(epoch, losses, correct, margin)
            if summary is not None:
                summary.add(epoch, losses, correct, margin)
            if has_test:
                t_losses, t_correct, _ = per_example_stats(test_logits, yt_test)
                means += [t_correct.double().mean(dim=1), t_losses.double().mean(dim=1)]
            # the per-model means (early stopping and progress need them now): one small copy per epoch
            host = torch.stack(means).cpu().numpy()
            train_acc[:, epoch], train_loss[:, epoch] = host[0], host[1]
            if has_test:
                test_acc[:, epoch], test_loss[:, epoch] = host[2], host[3]
        objective.end_epoch(train_logits)
        eval_seconds += time.perf_counter() - t1
        epochs_run = epoch + 1
        newly_fit = (epochs_to_fit < 0) & (train_acc[:, epoch] >= 1.0)
        epochs_to_fit[newly_fit] = epochs_run

        if progress is not None:
            elapsed = time.perf_counter() - t_start
            progress(dict(
                epoch=epochs_run,
                epochs=epochs,
                train_acc_mean=float(train_acc[:, epoch].mean()),
                test_acc_mean=float(test_acc[:, epoch].mean()) if has_test else float("nan"),
                seconds=elapsed,
                models=k,
                examples_per_second=examples_seen / train_seconds if train_seconds > 0 else 0.0,
            ))

        if config.early_stop == "fit" and (epochs_to_fit > 0).all():
            break
        if config.early_stop == "patience":
            mean_test = float(test_loss[:, epoch].mean())
            if mean_test < best_test:
                best_test, waited = mean_test, 0
            else:
                waited += 1
                if waited >= config.patience:
                    break

    e = epochs_run
    return EnsembleResult(
        seeds=np.asarray(seeds, np.int64),
        train_acc=train_acc[:, :e],
        train_loss=train_loss[:, :e],
        test_acc=test_acc[:, :e],
        test_loss=test_loss[:, :e],
        epochs_to_fit=epochs_to_fit,
        records=records.to_records(e) if records is not None else None,
        summary=summary.to_summary() if summary is not None else None,
        train_logits=train_logits.cpu().numpy().copy(),
        test_logits=test_logits.cpu().numpy().copy(),
        epochs_run=e,
        seconds=time.perf_counter() - t_start,
        examples_seen=int(examples_seen),
        flops=float(flops_train) * examples_seen,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        masks=masks,
        spec=str(model.spec),
        config=config.model_dump(),
        model=model.eval() if keep_model else None,
        measures=objective.measures(),
    )
