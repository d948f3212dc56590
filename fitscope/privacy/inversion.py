"""Model inversion by a learned decoder: from a model's output vector back to its input.

The attacker (Yang et al. 2019, "training-based" inversion; the attack MID
is evaluated against in Wang et al. 2020) can query the target model and
holds auxiliary data from the same distribution that the model was NOT
trained on. It trains a decoder from the target's output vector on the
auxiliary inputs back to those inputs, then feeds the target's outputs on
the private training inputs through the decoder to reconstruct them.

Notation: n private rows, m auxiliary rows, C classes, inputs of shape
``input_shape`` with values in ``[0, data_range]``.

The output vector the attacker sees is the log of the released probability
vector, ``log softmax(logits)`` (clipped below at ``log 1e-8``): everything a
probability API gives, on a scale a decoder can use.

Attack success is measured three ways on the private rows:

- ``mse``: mean squared error between reconstructions and originals;
- ``ssim``: mean SSIM (:func:`fitscope.privacy.ssim.ssim`, Gaussian window,
  over each channel of each image; NaN for inputs that are not images);
- ``eval_acc``: accuracy of a separate evaluation classifier (trained on the
  auxiliary rows, a different architecture seed from the target) on the
  reconstructions against the private labels: does the reconstruction still
  show the right class?

and next to a floor that knows only the label: ``class_mean_ssim`` /
``class_mean_mse`` of the auxiliary class-mean image of each private row's
true class. An attack that does no better than that floor has recovered the
class, not the example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fitscope.data.validation import validate_arrays
from fitscope.errors import DataError
from fitscope.models import build_plain
from fitscope.privacy.ssim import ssim
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import accuracy, predict_plain, train_plain
from fitscope.validation import check_int, check_seed

__all__ = ["InversionResult", "inversion_attack", "mean_ssim", "released_outputs", "train_inversion_decoder"]

_LOG_FLOOR = math.log(1e-8)


def released_outputs(model: nn.Module, x, *, device: str | None = None) -> np.ndarray:
    """What the attacker sees: ``(n, C)`` float32 ``max(log softmax(logits), log 1e-8)`` of ``model`` on ``x``.

    Args:
        model: the target (moved to the device in place, as :func:`~fitscope.train.plain_models.predict_plain` does).
        x: ``(n, *input_shape)`` inputs.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
    """
    logits = torch.from_numpy(predict_plain(model, x, device=placement_device(device)))
    return F.log_softmax(logits, dim=1).clamp_min(_LOG_FLOOR).numpy()


def mean_ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> np.ndarray:
    """Per-row SSIM ``(n,)`` of image batches ``(n, C, H, W)`` (mean over channels); NaN rows for non-images."""
    if a.ndim != 4:
        return np.full(len(a), np.nan)
    n, c, h, w = a.shape
    return ssim(a.reshape(n * c, h, w), b.reshape(n * c, h, w), data_range=data_range).reshape(n, c).mean(axis=1)


class _Decoder(nn.Module):
    """MLP ``C -> hidden -> hidden -> prod(input_shape)``, sigmoid scaled to ``[0, data_range]``."""

    def __init__(self, n_outputs: int, input_shape: tuple[int, ...], hidden: int, data_range: float) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.data_range = float(data_range)
        self.net = nn.Sequential(nn.Linear(n_outputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, math.prod(input_shape)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` output vectors -> ``(B, *input_shape)`` reconstructions."""
        return (self.data_range * torch.sigmoid(self.net(v))).reshape(len(v), *self.input_shape)


def train_inversion_decoder(outputs, x, *, hidden: int = 256, epochs: int = 150, batch_size: int = 64,
                            lr: float = 1e-3, data_range: float = 1.0, seed: int,
                            device: str | None = None) -> nn.Module:
    """Train a decoder from output vectors ``(m, C)`` to inputs ``(m, *input_shape)`` (MSE, Adam).

    Args:
        outputs: ``(m, C)`` the target's released outputs on the auxiliary inputs
            (:func:`released_outputs`).
        x: ``(m, *input_shape)`` the auxiliary inputs, values in ``[0, data_range]``.
        hidden: width of the decoder's two hidden layers.
        epochs, batch_size, lr: Adam training; batches in a seeded order.
        data_range: the inputs' value range (the decoder's sigmoid is scaled to it).
        seed: fixes the decoder's initialisation and batch order.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The decoder is initialised and the batch order drawn on the CPU (the
            same on every device); the arrays are copied there once.

    Returns:
        The trained decoder (eval mode, on the device): ``(B, C) -> (B, *input_shape)``.
    """
    seed = check_seed(seed)
    dev = placement_device(device)
    v = torch.as_tensor(np.asarray(outputs, np.float32))
    xt = torch.as_tensor(np.asarray(x, np.float32))
    if v.ndim != 2 or len(v) != len(xt):
        raise DataError(f"outputs: expected (m, C) with m = {len(xt)} rows like x, got shape {tuple(v.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "decoder-init"))
        decoder = _Decoder(v.shape[1], tuple(xt.shape[1:]), hidden, data_range)
    decoder, v, xt = decoder.to(dev), v.to(dev), xt.to(dev)
    gen = torch.Generator().manual_seed(derive_seed(seed, "decoder-batches"))
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    for _ in range(epochs):
        order = torch.randperm(len(v), generator=gen).to(dev)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.mse_loss(decoder(v[idx]), xt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return decoder.eval()


@dataclass
class InversionResult:
    """Success of a model-inversion attack on the private rows.

    Attributes:
        reconstructions: ``(n, *input_shape)`` float32 decoder outputs.
        mse: mean squared error, reconstructions vs originals (lower = better attack).
        ssim: mean SSIM, reconstructions vs originals (higher = better attack; NaN for non-images).
        eval_acc: accuracy of the evaluation classifier on the reconstructions
            against the private labels (higher = the class is recovered).
        eval_acc_originals: the same classifier on the original private inputs (its ceiling).
        class_mean_mse: MSE of the auxiliary class-mean image of each row's true class (label-only floor).
        class_mean_ssim: SSIM of that class-mean image.
        per_example_mse: ``(n,)``; per_example_ssim: ``(n,)``.
        seed: the attack's seed.
    """

    reconstructions: np.ndarray
    mse: float
    ssim: float
    eval_acc: float
    eval_acc_originals: float
    class_mean_mse: float
    class_mean_ssim: float
    per_example_mse: np.ndarray
    per_example_ssim: np.ndarray
    seed: int

    def row(self) -> dict:
        """The headline numbers as a dict."""
        return dict(mse=self.mse, ssim=self.ssim, eval_acc=self.eval_acc, eval_acc_originals=self.eval_acc_originals,
                    class_mean_mse=self.class_mean_mse, class_mean_ssim=self.class_mean_ssim)


def inversion_attack(
    target: nn.Module,
    x_private,
    y_private,
    x_aux,
    y_aux,
    *,
    evaluator: nn.Module | None = None,
    evaluator_spec: str = "mlp:256x2",
    data_range: float = 1.0,
    decoder_epochs: int = 150,
    seed: int,
    device: str | None = None,
) -> InversionResult:
    """Reconstruct the private rows from ``target``'s outputs with a decoder trained on auxiliary rows.

    Args:
        target: the attacked model (logits ``(B, C)``); only its outputs are used.
        x_private: ``(n, *input_shape)`` the target's training inputs (to reconstruct).
        y_private: ``(n,)`` their labels (to score the reconstructions, and for the class-mean floor).
        x_aux: ``(m, *input_shape)`` the attacker's auxiliary inputs, not in the target's training set.
        y_aux: ``(m,)`` their labels (for the evaluation classifier and the class-mean floor).
        evaluator: a trained evaluation classifier; default: train one of
            ``evaluator_spec`` on ``(x_aux, y_aux)`` (SGD, 40 epochs, its own seed).
        evaluator_spec: spec of that default evaluator.
        data_range: span of input values (1 for digits in [0, 1]).
        decoder_epochs: epochs of decoder training.
        seed: fixes the decoder (and the default evaluator).
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            The target, the evaluator and the decoder compute there (the models are
            moved there in place); the results come back as NumPy.

    Returns:
        An :class:`InversionResult`.
    """
    seed = check_seed(seed)
    dev = placement_device(device)
    check_int(decoder_epochs, "decoder_epochs")
    x_private, y_private = validate_arrays(x_private, y_private, where="x_private/y_private")
    x_aux, y_aux = validate_arrays(x_aux, y_aux, where="x_aux/y_aux")
    if x_aux.shape[1:] != x_private.shape[1:]:
        raise DataError(f"x_aux: expected rows of shape {x_private.shape[1:]} like x_private, got {x_aux.shape[1:]}")
    decoder = train_inversion_decoder(released_outputs(target, x_aux, device=dev), x_aux, epochs=decoder_epochs,
                                      data_range=data_range, seed=seed, device=dev)
    with torch.no_grad():
        recon = decoder(torch.from_numpy(released_outputs(target, x_private, device=dev)).to(dev)).cpu().numpy()
    if evaluator is None:
        n_classes = int(max(y_aux.max(), y_private.max())) + 1
        evaluator = build_plain(evaluator_spec, x_aux.shape[1:], n_classes, seed=derive_seed(seed, "evaluator"))
        evaluator = train_plain(evaluator, x_aux, y_aux, epochs=40, batch_size=32, lr=0.05,
                                seed=derive_seed(seed, "evaluator-train"), device=dev).model
    per_mse = ((recon - x_private) ** 2).reshape(len(recon), -1).mean(axis=1)
    per_ssim = mean_ssim(recon, x_private, data_range=data_range)
    means = {int(c): x_aux[y_aux == c].mean(axis=0) for c in np.unique(y_aux)}
    floor = np.stack([means.get(int(c), x_aux.mean(axis=0)) for c in y_private]).astype(np.float32)
    return InversionResult(
        reconstructions=recon.astype(np.float32),
        mse=float(per_mse.mean()),
        ssim=float(per_ssim.mean()),
        eval_acc=accuracy(predict_plain(evaluator, recon, device=dev), y_private),
        eval_acc_originals=accuracy(predict_plain(evaluator, x_private, device=dev), y_private),
        class_mean_mse=float(((floor - x_private) ** 2).mean()),
        class_mean_ssim=float(mean_ssim(floor, x_private, data_range=data_range).mean()),
        per_example_mse=per_mse,
        per_example_ssim=per_ssim,
        seed=seed,
    )
