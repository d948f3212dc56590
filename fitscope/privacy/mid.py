"""MID, mutual-information regularization against model inversion (Wang, Hong, Zhang, Jia, Zhou 2020).

A variational information bottleneck (Alemi et al. 2017) on the output
layer: the network's penultimate features ``h`` go to an encoder that gives
the mean ``mu`` and log-variance ``log s^2`` of a ``bottleneck``-dimensional
Gaussian ``q(z | x)``; the classifier sees a sample
``z = mu + s * e, e ~ N(0, I)`` (reparameterization, seeded) in training and
``z = mu`` at test time. The loss is

    cross-entropy(classifier(z), y) + beta * KL(q(z | x) || N(0, I))

with the KL summed over the bottleneck dimensions and averaged over the
batch. Larger ``beta`` squeezes the information the output carries about
``x`` beyond its label, which is what a model-inversion attacker decodes
(:mod:`fitscope.privacy.inversion`). *paper* beta 0.003 / 0.01.

:func:`mid_tradeoff` trains one MID model per beta and attacks each with the
decoder inversion attack: test accuracy vs attack success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.models import PlainNet, build_plain
from fitscope.models.spec import parse_spec
from fitscope.privacy.inversion import inversion_attack
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import check_train_arrays, train_plain
from fitscope.validation import check_int, check_number, check_seed, message

__all__ = ["MIDNet", "MIDResult", "MIDTradeoff", "build_mid", "mid_tradeoff", "train_mid"]


class MIDNet(nn.Module):
    """A plain network whose output layer is replaced by a variational information bottleneck.

    ``forward(x)`` ``(B, *input_shape) -> (B, C)`` logits; after each call
    ``self.kl`` holds the batch-mean KL(q(z|x) || N(0, I)) of that call (a
    scalar tensor with grad in training).

    Attributes:
        body: the spec's network without its ``out`` layer (features ``(B, feature_dim)``).
        encoder: ``Linear(feature_dim, 2 * bottleneck)`` -> ``(mu, log-variance)``.
        classifier: ``Linear(bottleneck, C)``.
        bottleneck: dimension of z.
        generator: ``torch.Generator`` for the reparameterization noise in
            training (set by :func:`train_mid`); None uses torch's global RNG.
        kl: the KL of the last forward pass.
    """

    def __init__(self, body: PlainNet, n_classes: int, bottleneck: int) -> None:
        super().__init__()
        self.spec = body.spec
        self.input_shape = body.input_shape
        self.n_classes = int(n_classes)
        self.bottleneck = int(bottleneck)
        self.body = body
        self.encoder = nn.Linear(body.feature_dim, 2 * self.bottleneck)
        self.classifier = nn.Linear(self.bottleneck, self.n_classes)
        self.generator: torch.Generator | None = None
        self.kl = torch.zeros(())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(B, bottleneck)``."""
        mu, logvar = self.encoder(self.body(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)``: from a sample of z in training, from its mean in eval mode."""
        mu, logvar = self.encode(x)
        self.kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        if self.training:
            eps = torch.randn(mu.shape, generator=self.generator, dtype=mu.dtype).to(mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        return self.classifier(z)


def build_mid(spec: str, input_shape: tuple[int, ...], n_classes: int, *, bottleneck: int | None = None,
              seed: int) -> MIDNet:
    """A :class:`MIDNet` of ``spec`` (``mlp``/``cnn``/``cnn1d``), initialised from ``seed`` alone.

    Args:
        spec: plain model spec; its final linear layer is replaced by the bottleneck head.
        input_shape: shape of one input.
        n_classes: number of logits.
        bottleneck: dimension of z; default ``2 * n_classes``.
        seed: initialisation seed.
    """
    seed = check_seed(seed)
    bottleneck = check_int(bottleneck if bottleneck is not None else 2 * n_classes, "bottleneck")
    body = build_plain(spec, input_shape, n_classes, seed=derive_seed(seed, "mid-body"))
    del body.out
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "mid-head"))
        return MIDNet(body, n_classes, bottleneck)


@dataclass
class MIDResult:
    """What :func:`train_mid` returns.

    Attributes:
        model: the trained :class:`MIDNet` (eval mode: predicts from ``mu``).
        beta: KL weight; bottleneck: z dimension.
        train_acc: ``(E,)``; test_acc: ``(E,)`` (NaN without a test set).
        kl: mean KL(q(z|x) || N(0, I)) on the training rows after training (nats).
        train_logits: ``(n, C)``; test_logits: ``(n_test, C)``.
        seed: the seed.
    """

    model: MIDNet
    beta: float
    bottleneck: int
    train_acc: np.ndarray
    test_acc: np.ndarray
    kl: float
    train_logits: np.ndarray
    test_logits: np.ndarray
    seed: int


def train_mid(
    spec: str,
    x,
    y,
    *,
    beta: float,
    bottleneck: int | None = None,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 0.05,
    seed: int = 0,
    x_test=None,
    y_test=None,
    n_classes: int | None = None,
    progress: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> MIDResult:
    """Train a MID model: cross-entropy + ``beta`` * KL of the bottleneck (SGD, momentum 0.9).

    Args:
        spec: plain model spec (``mlp:256x2``, ``cnn:32-64``, ...).
        x: ``(n, *input_shape)`` training inputs.
        y: ``(n,)`` labels.
        beta: KL weight, >= 0 (0 = the same architecture without the information penalty).
        bottleneck: dimension of z; default ``2 * n_classes``.
        epochs, batch_size, lr: SGD training.
        seed: fixes initialisation, batch order and the reparameterization noise.
        x_test: optional ``(n_test, *input_shape)``; y_test: ``(n_test,)``.
        n_classes: default ``max(label) + 1``.
        progress: called after every epoch with ``dict(epoch, epochs, train_acc, test_acc)``.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The model (and its result) stays there; the reparameterization noise is
            drawn on the CPU, so it is the same on every device.

    Returns:
        A :class:`MIDResult`.

    Raises:
        ConfigError: ``beta < 0``, a device not found, or other bad settings. DataError: bad arrays.
    """
    beta = check_number(beta, "beta", low=0.0, high=math.inf, open_high=True)
    seed = check_seed(seed)
    dev = placement_device(device)
    x, y, x_test, y_test, n_classes = check_train_arrays(x, y, x_test, y_test, n_classes)
    model = build_mid(spec, x.shape[1:], n_classes, bottleneck=bottleneck, seed=seed)
    model.generator = torch.Generator().manual_seed(derive_seed(seed, "mid-noise"))
    beta = float(beta)
    try:
        fit = train_plain(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr,
                          seed=derive_seed(seed, "batches"), x_test=x_test, y_test=y_test,
                          extra_loss=lambda m: beta * m.kl, progress=progress, device=dev)
    finally:
        model.generator = None
    model.eval()
    return MIDResult(model=model, beta=beta, bottleneck=model.bottleneck, train_acc=fit.train_acc,
                     test_acc=fit.test_acc, kl=_mean_kl(model, x, dev), train_logits=fit.train_logits,
                     test_logits=fit.test_logits, seed=seed)


@torch.no_grad()
def _mean_kl(model: MIDNet, x: np.ndarray, device: torch.device) -> float:
    """Mean KL(q(z|x) || N(0, I)) over the rows of ``x`` (eval mode; ``x`` copied to ``device`` once)."""
    xt = torch.from_numpy(x).to(device)
    starts = range(0, len(xt), 1024)
    kls = []
    for i in starts:
        model(xt[i:i + 1024])
        kls.append(model.kl)
    total = 0.0
    for i, kl in zip(starts, torch.stack(kls).tolist()):  # the chunks' means come back at once
        total += kl * min(1024, len(xt) - i)
    return total / len(x)


@dataclass
class MIDTradeoff:
    """The table :func:`mid_tradeoff` returns, one row per beta.

    Attributes:
        rows: dicts with ``beta``, ``test_acc``, ``train_acc``, ``kl`` and the
            attack's ``mse``, ``ssim``, ``eval_acc``, ``eval_acc_originals``,
            ``class_mean_mse``, ``class_mean_ssim`` (see :class:`~fitscope.privacy.inversion.InversionResult`).
        spec: model spec; private / aux: rows in the target's training half and the attacker's half.
        seed: the seed of the study.
    """

    rows: list[dict]
    spec: str
    private: int
    aux: int
    seed: int
    config: dict = field(default_factory=dict)

    def to_frame(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def mid_tradeoff(
    x,
    y,
    x_test,
    y_test,
    *,
    betas=(0.0, 0.003, 0.01, 0.1),
    spec: str = "mlp:256x2",
    bottleneck: int | None = None,
    epochs: int = 60,
    decoder_epochs: int = 150,
    seed: int = 0,
    device: str | None = None,
) -> MIDTradeoff:
    """Test accuracy vs model-inversion success of MID models as beta varies.

    The training split ``(x, y)`` is halved at random (``seed``): the target
    trains on the private half; the attacker holds the other half (auxiliary
    data the target never saw), trains its decoder from the target's outputs
    there, and reconstructs the private half. The evaluation classifier is
    trained once on the auxiliary half and shared by every beta. The test
    split measures utility only.

    Args:
        x: ``(n, *input_shape)`` training inputs in ``[0, 1]``.
        y: ``(n,)`` labels.
        x_test: ``(n_test, *input_shape)``; y_test: ``(n_test,)``.
        betas: KL weights, each >= 0.
        spec: plain model spec; bottleneck: z dimension (default ``2 * n_classes``).
        epochs: target training epochs; decoder_epochs: attacker's decoder epochs.
        seed: fixes the split, every model and the attack.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            Every model (targets, evaluator, decoders) trains there.

    Returns:
        A :class:`MIDTradeoff`.
    """
    seed = check_seed(seed)
    dev = placement_device(device)
    x, y, x_test, y_test, n_classes = check_train_arrays(x, y, x_test, y_test, None)
    if x_test is None:
        raise ConfigError(message("x_test", "test inputs (with y_test) to measure utility on", "None"))
    if len(x) < 4:
        raise ConfigError(message("x", "at least 4 training rows (halved into private and auxiliary sets)",
                                  str(len(x))))
    order = np.random.default_rng(derive_seed(seed, "private")).permutation(len(x))
    private, aux = np.sort(order[: len(x) // 2]), np.sort(order[len(x) // 2:])
    evaluator = build_plain("mlp:256x2", x.shape[1:], n_classes, seed=derive_seed(seed, "evaluator"))
    evaluator = train_plain(evaluator, x[aux], y[aux], epochs=40, batch_size=32, lr=0.05,
                            seed=derive_seed(seed, "evaluator-train"), device=dev).model
    rows = []
    for beta in betas:
        res = train_mid(spec, x[private], y[private], beta=beta, bottleneck=bottleneck, epochs=epochs, seed=seed,
                        x_test=x_test, y_test=y_test, n_classes=n_classes, device=dev)
        attack = inversion_attack(res.model, x[private], y[private], x[aux], y[aux], evaluator=evaluator,
                                  decoder_epochs=decoder_epochs, seed=derive_seed(seed, "attack"), device=dev)
        rows.append(dict(beta=float(beta), test_acc=float(res.test_acc[-1]), train_acc=float(res.train_acc[-1]),
                         kl=res.kl, **attack.row()))
    return MIDTradeoff(rows=rows, spec=str(parse_spec(spec)), private=len(private), aux=len(aux), seed=seed,
                       config=dict(betas=[float(b) for b in betas], epochs=epochs, decoder_epochs=decoder_epochs,
                                   bottleneck=bottleneck))
