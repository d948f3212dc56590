"""DP-SGD (Abadi et al. 2016) through Opacus: per-example clipping, Gaussian noise, an accountant.

One model of a spec (:func:`~fitscope.models.build_plain`, GroupNorm
instead of BatchNorm) is trained with Opacus's ``PrivacyEngine.make_private_with_epsilon``:
every step samples a Poisson batch (each row independently with probability
``q = 1 / steps_per_epoch``), clips each example's gradient to L2 norm
``max_grad_norm``, adds ``N(0, (noise_multiplier * max_grad_norm)^2)`` to the
sum and divides by the expected batch size. Opacus picks ``noise_multiplier``
so that ``epochs`` epochs spend at most ``eps`` at ``delta`` under the chosen
accountant (``prv``, Gopi et al. 2021, or ``rdp``, Mironov 2017); the ``eps``
reported is the accountant's own ``get_epsilon(delta)`` after training.

Notation: n training rows, C classes.

Notes:
    What voids the guarantee. (1) Reproducibility: the Poisson sampler and the
    noise are drawn from seeded ``torch.Generator`` objects (Opacus
    ``secure_mode=False``), so anyone who knows the seed can subtract the noise;
    the (eps, delta) statement then holds only against an adversary who does
    not know the seed, and a floating-point attack on the Gaussian sampler
    (Mironov 2012) is not ruled out. For a deployment, train with
    ``secure_mode=True`` in Opacus directly (needs ``torchcsprng``).
    (2) Anything computed from the private data outside this function (choosing
    hyperparameters on it, normalising with its statistics, a test set drawn
    from it) is not covered. (3) The guarantee is per example (one row), not
    per user. (4) ``delta`` should be well below ``1/n``; a warning says so.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import check_train_arrays, eval_logits, tensor_accuracy
from fitscope.train.threads import configure_threads
from fitscope.validation import check_bool, check_choice, check_fraction, check_int, check_number, check_seed

__all__ = ["ACCOUNTANTS", "DPSGDResult", "DPTraining", "PrivacyWarning", "make_dp_sgd", "train_dp_sgd"]

ACCOUNTANTS = ("prv", "rdp")


class PrivacyWarning(UserWarning):
    """A setting that weakens a privacy guarantee (e.g. ``delta >= 1/n``)."""


@dataclass
class DPSGDResult:
    """What :func:`train_dp_sgd` returns: the model and the privacy it spent.

    Attributes:
        model: the trained plain module (eval mode, Opacus hooks removed).
        spec: the model spec.
        eps: the privacy budget spent, the accountant's epsilon after the last step (<= ``target_eps``).
        target_eps: the ``eps`` asked for.
        delta: the delta of the guarantee.
        accountant: ``"prv"`` or ``"rdp"``.
        noise_multiplier: sigma (noise std / ``max_grad_norm``) Opacus chose.
        max_grad_norm: per-example L2 clipping norm.
        sample_rate: Poisson sampling rate q per step.
        steps: optimizer steps taken.
        epochs: epochs trained.
        batch_size: expected (Poisson) batch size.
        lr: learning rate.
        secure_mode: always False here (seeded RNG; see the module Notes).
        train_acc: ``(epochs,)`` training accuracy after each epoch: a statistic of the private labels,
            so all NaN unless ``train_dp_sgd(..., reveal_private_stats=True)`` asked for it.
        test_acc: ``(epochs,)`` test accuracy after each epoch (NaN without a test set).
        reveal_private_stats: whether ``train_acc`` holds the private-label accuracy (see :func:`train_dp_sgd`).
        train_logits: ``(n, C)`` float32 final logits on the training rows.
        test_logits: ``(n_test, C)`` float32 final test logits (``n_test = 0`` without a test set).
        seed: the seed (model init, sampler and noise are derived from it).
        seconds: wall time.
    """

    model: nn.Module
    spec: str
    eps: float
    target_eps: float
    delta: float
    accountant: str
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    epochs: int
    batch_size: int
    lr: float
    secure_mode: bool
    train_acc: np.ndarray
    test_acc: np.ndarray
    train_logits: np.ndarray
    test_logits: np.ndarray
    seed: int
    seconds: float
    reveal_private_stats: bool = False

    def privacy(self) -> dict:
        """``dict(epsilon, delta, accountant, noise_multiplier, max_grad_norm, sample_rate, steps, secure_mode)``.

        The spent budget :attr:`eps` is stored under the key ``"epsilon"``: the
        key of the ``privacy`` records that runs have always written (``result.json``,
        unit records) and that reports read.
        """
        return dict(epsilon=self.eps, delta=self.delta, accountant=self.accountant,
                    noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                    sample_rate=self.sample_rate, steps=self.steps, secure_mode=self.secure_mode)


@dataclass
class DPTraining:
    """The Opacus objects of one DP-SGD run (from :func:`make_dp_sgd`).

    Attributes:
        engine: the ``opacus.PrivacyEngine`` (its accountant tracks the steps).
        module: the model wrapped in Opacus's ``GradSampleModule``.
        optimizer: Opacus's ``DPOptimizer`` (clips, adds noise, scales); its noise is
            drawn on the CPU and copied to the device.
        loader: the Poisson-sampling ``DPDataLoader`` over the row indices ``0..n-1``
            (batches of indices, drawn on the CPU); :meth:`batches` gives the rows.
        model: the plain model that ``module`` wraps (same parameters), on the device.
        x: ``(n, *input_shape)`` the training inputs, on the device.
        y: ``(n,)`` their labels, on the device.
    """

    engine: object
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of Poisson batches ``(x_batch, y_batch)``, gathered on the device.

        The epoch's indices are drawn on the CPU first and copied to the device at once.
        """
        index = [idx for (idx,) in self.loader]
        flat = torch.cat(index).to(self.x.device)
        for idx in flat.split([len(i) for i in index]):
            yield self.x[idx], self.y[idx]


def _check_privacy(eps, delta, max_grad_norm, accountant) -> tuple[float, float, float, str]:
    return (check_number(eps, "eps", low=0.0, high=math.inf, open_low=True, open_high=True),
            check_fraction(delta, "delta", open_low=True, open_high=True),
            check_number(max_grad_norm, "max_grad_norm", low=0.0, high=math.inf, open_low=True, open_high=True),
            check_choice(accountant, "accountant", ACCOUNTANTS))


def make_dp_sgd(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    delta: float,
    max_grad_norm: float,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float = 0.0,
    accountant: str = "prv",
    device: str | None = None,
) -> DPTraining:
    """Wrap ``model`` and an SGD optimizer for DP-SGD over ``(x, y)`` with Opacus.

    Arguments are as in :func:`train_dp_sgd` (``x``: ``(n, *input_shape)``
    float32, ``y``: ``(n,)`` int64, already validated). The sampler's and the
    noise's generators are seeded from ``seed``; both draw on the CPU, so the
    batches and the noise are the same on every device.

    Args:
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            ``model`` is moved there (in place) and ``(x, y)`` copied there once.

    Returns:
        A :class:`DPTraining` ready for the usual ``loss.backward(); optimizer.step()`` loop
        over :meth:`DPTraining.batches`.
    """
    from opacus import PrivacyEngine  # imported here: opacus is slow to import

    dev = placement_device(device)
    model.to(dev)
    # Opacus samples indices (on the CPU); the rows are gathered from the copy on the device
    loader = DataLoader(TensorDataset(torch.arange(len(x))), batch_size=batch_size,
                        generator=torch.Generator().manual_seed(derive_seed(seed, "dp-sgd-sampler")))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    with warnings.catch_warnings():
        # Opacus's "secure RNG turned off" notice: this module documents it once, in its Notes.
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG turned off.*")
        # The noise search tries small sigmas whose RDP optimum sits at the largest order: expected, harmless.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        # secure_mode=False so that a seed replays a run exactly; see the module Notes for what that voids.
        engine = PrivacyEngine(accountant=accountant, secure_mode=False)
        module, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=eps, target_delta=delta,
            epochs=epochs, max_grad_norm=max_grad_norm, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(derive_seed(seed, "dp-sgd-noise")),
        )
    _noise_on_the_cpu(optimizer)
    return DPTraining(engine, module, optimizer, loader, model, torch.from_numpy(x).to(dev),
                      torch.from_numpy(y).to(dev))


def _noise_on_the_cpu(optimizer) -> None:
    """Make Opacus's ``optimizer`` draw its Gaussian noise on the CPU and copy it to the gradients' device.

    Opacus draws ``N(0, (noise_multiplier * max_grad_norm)^2)`` per parameter on the
    parameter's device, from its ``generator``: a CPU generator there fails on a GPU,
    and a GPU generator draws other numbers. Drawn by Opacus's own function on a CPU
    tensor of the same shape, the noise is that of a CPU run, on every device.
    """
    from opacus.optimizers.optimizer import _check_processed_flag, _generate_noise, _mark_as_processed

    def add_noise() -> None:
        for p in optimizer.params:
            grad = p.summed_grad
            _check_processed_flag(grad)
            noise = _generate_noise(std=optimizer.noise_multiplier * optimizer.max_grad_norm,
                                    reference=torch.empty(grad.shape, dtype=grad.dtype),
                                    generator=optimizer.generator, secure_mode=optimizer.secure_mode)
            p.grad = (grad + noise.to(grad.device)).view_as(p)
            _mark_as_processed(grad)

    optimizer.add_noise = add_noise


def train_dp_sgd(
    spec: str,
    x,
    y,
    *,
    eps: float,
    delta: float,
    max_grad_norm: float = 1.0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 0.5,
    momentum: float = 0.0,
    seed: int = 0,
    x_test=None,
    y_test=None,
    n_classes: int | None = None,
    accountant: str = "prv",
    progress: Callable[[dict], None] | None = None,
    reveal_private_stats: bool = False,
    device: str | None = None,
) -> DPSGDResult:
    """Train one model of ``spec`` with DP-SGD to an (eps, delta) target.

    Args:
        spec: ``mlp:...``, ``cnn:...`` or ``cnn1d:...`` (built by
            :func:`~fitscope.models.build_plain`, GroupNorm instead of BatchNorm).
        x: ``(n, *input_shape)`` private training inputs.
        y: ``(n,)`` integer labels.
        eps: target epsilon, > 0; Opacus chooses the noise so that the whole
            run spends at most this.
        delta: target delta in (0, 1); keep it below ``1/n`` (a
            :class:`PrivacyWarning` is raised otherwise).
        max_grad_norm: per-example L2 clipping norm, > 0.
        epochs: epochs of ``ceil(n / batch_size)`` Poisson-sampled steps each.
        batch_size: expected batch size (Poisson sampling rate ``q = 1 / ceil(n / batch_size)``).
        lr: SGD learning rate (DP-SGD likes larger rates than plain SGD: the
            noisy mean gradient is small).
        momentum: SGD momentum (post-processing; does not change the privacy).
        seed: fixes the initial weights, the Poisson batches and the noise.
        x_test: optional ``(n_test, *input_shape)`` public test inputs, evaluated every epoch.
        y_test: ``(n_test,)`` test labels (with ``x_test``).
        n_classes: number of classes; default ``max(label) + 1``.
        accountant: ``"prv"`` (default, tighter) or ``"rdp"``.
        progress: called after every epoch with ``dict(epoch, epochs, train_acc,
            test_acc, eps)`` (``eps`` spent so far) (``train_acc`` NaN unless ``reveal_private_stats``).
        reveal_private_stats: compute and return the training accuracy on the
            private rows (``result.train_acc`` and ``progress``'s ``train_acc``).
            Default False: the accuracy on the private labels is a statistic of
            them that the (eps, delta) guarantee does not cover, so it is kept
            out of the results (all NaN) unless asked for.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The model and the arrays are copied there once; the Poisson batches
            and the noise are drawn on the CPU (the same on every device), and
            the logits come back as NumPy once.

    Returns:
        A :class:`DPSGDResult`: model, per-epoch accuracies, final logits, and
        ``eps`` (spent, from the accountant), ``delta``, ``accountant``,
        ``noise_multiplier``.

    Raises:
        ConfigError: ``eps <= 0``, ``delta`` outside (0, 1), ``max_grad_norm <= 0``,
            an unknown accountant, bad epochs / batch size / lr / seed / spec / device.
        DataError: bad arrays.

    Notes:
        Not secure-mode: the RNG is seeded for reproducibility (see the module
        docstring for what that voids). The epsilon covers the trained model
        only; using ``x_test`` for monitoring leaks nothing about the training
        rows, but a statistic computed from them after training (the training
        accuracy) is not covered: it is withheld unless ``reveal_private_stats=True``.
        ``train_logits`` are the model's outputs on the private inputs, returned for
        membership audits; publishing them, or anything computed from them with the
        labels, is likewise outside the guarantee.
    """
    t0 = time.perf_counter()
    eps, delta, max_grad_norm, accountant = _check_privacy(eps, delta, max_grad_norm, accountant)
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_number(lr, "lr", low=0.0, high=math.inf, open_low=True, open_high=True)
    momentum = check_number(momentum, "momentum", low=0.0, high=1.0, open_high=True)
    seed = check_seed(seed)
    reveal_private_stats = check_bool(reveal_private_stats, "reveal_private_stats")
    dev = placement_device(device)
    configure_threads()
    x, y, x_test, y_test, n_classes = check_train_arrays(x, y, x_test, y_test, n_classes)
    n = len(x)
    if delta >= 1.0 / n:
        warnings.warn(
            f"delta={delta:g} >= 1/n = {1.0 / n:.3g}: a mechanism that publishes one random training row "
            f"satisfies (0, delta)-DP at this delta; use delta well below 1/n (e.g. {0.1 / n:.1g})",
            PrivacyWarning, stacklevel=2)

    model = build_plain(spec, x.shape[1:], n_classes, seed=derive_seed(seed, "dp-sgd-init"))
    run = make_dp_sgd(model, x, y, eps=eps, delta=delta, max_grad_norm=max_grad_norm, epochs=epochs,
                      batch_size=batch_size, lr=lr, seed=seed, momentum=momentum, accountant=accountant,
                      device=dev)
    xt_test = torch.from_numpy(x_test).to(dev) if x_test is not None else None
    yt_test = torch.from_numpy(y_test).to(dev) if x_test is not None else None
    criterion = nn.CrossEntropyLoss()
    train_acc, test_acc = np.full(epochs, np.nan), np.full(epochs, np.nan)
    steps = 0
    for epoch in range(epochs):
        run.module.train()
        for xb, yb in run.batches():
            run.optimizer.zero_grad(set_to_none=True)
            loss = criterion(run.module(xb), yb)
            with warnings.catch_warnings():
                # torch notes that Opacus's backward hooks fire although the inputs need no grad: expected.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            run.optimizer.step()
            steps += 1
        if reveal_private_stats:
            train_acc[epoch] = tensor_accuracy(eval_logits(model, run.x), run.y)
        if x_test is not None:
            test_acc[epoch] = tensor_accuracy(eval_logits(model, xt_test), yt_test)
        if progress is not None:
            progress(dict(epoch=epoch + 1, epochs=epochs, train_acc=train_acc[epoch], test_acc=test_acc[epoch],
                          eps=run.engine.get_epsilon(delta)))
    spent = float(run.engine.get_epsilon(delta))
    noise_multiplier = float(run.optimizer.noise_multiplier)
    sample_rate = float(run.loader.sample_rate)
    run.module.to_standard_module()  # drop Opacus's hooks and per-sample buffers
    train_logits = eval_logits(model, run.x).cpu().numpy()
    no_test = np.zeros((0, n_classes), np.float32)
    test_logits = eval_logits(model, xt_test).cpu().numpy() if x_test is not None else no_test
    return DPSGDResult(
        model=model, spec=str(model.spec), eps=spent, target_eps=eps, delta=delta, accountant=accountant,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, sample_rate=sample_rate, steps=steps,
        epochs=epochs, batch_size=batch_size, lr=lr, secure_mode=False, train_acc=train_acc, test_acc=test_acc,
        train_logits=train_logits, test_logits=test_logits, seed=seed, seconds=time.perf_counter() - t0,
        reveal_private_stats=reveal_private_stats,
    )
