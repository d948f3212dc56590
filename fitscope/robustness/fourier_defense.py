"""The L0-robust sparse Fourier defense of Bafna, Murtagh & Vyas 2018, by iterative hard thresholding.

Paper: Bafna, Murtagh & Vyas 2018, "Thwarting Adversarial Examples: An
L0-Robust Sparse Fourier Transform" (NeurIPS). Model: the input is
``y = x + e`` where ``x`` is ``k``-sparse in the (2-D, for images) discrete
Fourier basis and ``e`` is a corruption of at most ``t`` pixels (an L0
attack: a patch, a few pixels). Since the Fourier and pixel bases are
incoherent, ``x`` can be recovered from ``y`` by iterative hard thresholding
(IHT) in the two bases, alternately; the classifier is trained on, and at test
time sees, the recovered Fourier-sparse image.

The algorithm (:func:`iht_recover`), with ``F`` the orthonormal DFT over the
pixel axes, ``H_k`` keeping the ``k`` largest Fourier coefficients and ``P_t``
keeping the ``t`` largest pixels (by magnitude over channels):

    x_0 = 0
    for r = 1 .. T:
        e_r = P_t(y - x_{r-1})             # the corruption: the largest pixels of the residual
        x_r = F^-1 H_k F (y - e_r)          # the image: the k-sparse Fourier part of what is left
    return x_T

A real image's spectrum is conjugate-symmetric; ``H_k`` ranks a coefficient
by ``|X(u)|^2 + |X(-u)|^2`` (equal for the two of a pair, so pairs are kept
or dropped together) and keeps every coefficient at least as large as the
``k``-th (ties kept), so the result is real.

What we simplify, and why: the paper's Algorithm 1 thresholds the pixel
residual at a level that shrinks every round (the schedule its proof
needs, from the corruption's and the signal's magnitudes); we keep a fixed
budget of ``t`` pixels per round instead (the budget form of the same hard
threshold, as in the robust-regression IHT of Bhatia, Jain & Kar 2015),
since the L0 budget is the known quantity here. ``T`` is a fixed number of
rounds (default 10) rather than the paper's ``O(log)`` bound. Written here:
no installed library has this recovery.

:class:`FourierIHTDefense` wraps any classifier ``nn.Module``: IHT first,
then the classifier. It is differentiable almost everywhere (the thresholds
pick supports; gradients flow through the kept values), so white-box
attacks can run through it.
"""

from __future__ import annotations

import torch
from torch import nn

from fitscope.robustness.attacks import pixel_axes, pixel_count
from fitscope.validation import check_int, check_type, message
from fitscope.errors import ConfigError

#: default IHT rounds
ROUNDS = 10


def _fft_dims(x: torch.Tensor, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    offset = x.dim() - len(input_shape)
    return tuple(offset + a for a in pixel_axes(input_shape))


def _mirror(spectrum: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``X(-u)`` for every frequency ``u`` of the DFT over ``dims`` (indices ``-u mod N`` on each axis)."""
    out = spectrum
    for d in dims:
        n = spectrum.shape[d]
        index = (-torch.arange(n, device=spectrum.device)) % n
        out = out.index_select(d, index)
    return out


def fourier_sparse_projection(x: torch.Tensor, *, k: int, input_shape: tuple[int, ...] | None = None
                              ) -> torch.Tensor:
    """``F^-1 H_k F x``: each row of ``x`` ``(n, *input_shape)`` reduced to its ``k`` largest Fourier coefficients.

    The DFT runs over the pixel axes (see :func:`fitscope.robustness.attacks.pixel_axes`), per channel;
    the ``k`` largest (by the conjugate-pair score of the module docstring, over all channels of the row)
    are kept, ties included.
    """
    shape = tuple(x.shape[1:]) if input_shape is None else tuple(input_shape)
    dims = _fft_dims(x, shape)
    spectrum = torch.fft.fftn(x, dim=dims, norm="ortho")
    power = spectrum.real ** 2 + spectrum.imag ** 2
    score = power + _mirror(power, dims)
    flat = score.reshape(len(x), -1)
    kth = flat.topk(min(k, flat.shape[1]), dim=1).values[:, -1:]
    keep = (flat >= kth).reshape(score.shape)
    return torch.fft.ifftn(spectrum * keep, dim=dims, norm="ortho").real.to(x.dtype)


def _top_pixels(v: torch.Tensor, t: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``P_t v``: keep the ``t`` pixels of largest magnitude (summed over channels) per row, zero the rest."""
    energy = v ** 2
    if len(shape) >= 2:
        energy = energy.sum(dim=1)
    flat = energy.reshape(len(v), -1)
    top = flat.topk(t, dim=1).indices
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True).reshape(energy.shape)
    if len(shape) >= 2:
        keep = keep.unsqueeze(1)
    return v * keep


def iht_recover(y: torch.Tensor, *, k: int, pixels: int, rounds: int = ROUNDS,
                input_shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``y`` ``(n, *input_shape)`` into a Fourier-``k``-sparse part and a ``pixels``-sparse corruption by IHT.

    Args:
        y: the (possibly corrupted) inputs.
        k: Fourier coefficients kept (``>= 1``).
        pixels: pixels the corruption may touch (``t``; ``0``: no corruption, one projection).
        rounds: IHT rounds ``T``.
        input_shape: one input's shape (default ``y.shape[1:]``).

    Returns:
        ``(x_hat, e_hat)``: the recovered Fourier-sparse inputs and the estimated corruption, both like ``y``.
    """
    shape = tuple(y.shape[1:]) if input_shape is None else tuple(input_shape)
    k = check_int(k, "k", low=1, high=max(1, int(torch.tensor(shape).prod())))
    pixels = check_int(pixels, "pixels", low=0, high=pixel_count(shape))
    rounds = check_int(rounds, "rounds")
    if pixels == 0:
        return fourier_sparse_projection(y, k=k, input_shape=shape), torch.zeros_like(y)
    x_hat = torch.zeros_like(y)
    e_hat = torch.zeros_like(y)
    for _ in range(rounds):
        e_hat = _top_pixels(y - x_hat, pixels, shape)
        x_hat = fourier_sparse_projection(y - e_hat, k=k, input_shape=shape)
    return x_hat, e_hat


class FourierIHTDefense(nn.Module):
    """A classifier behind the IHT recovery: ``classifier(iht_recover(x).x_hat)``.

    Args:
        classifier: any module mapping ``(b, *input_shape)`` to logits (trained on Fourier-``k``-sparse inputs,
            :func:`fourier_sparse_projection`, as in the paper).
        k: Fourier coefficients kept; pixels: the corruption budget ``t`` IHT assumes; rounds: IHT rounds.
        input_shape: one input's shape.
    """

    def __init__(self, classifier: nn.Module, *, k: int, pixels: int, input_shape: tuple[int, ...],
                 rounds: int = ROUNDS) -> None:
        super().__init__()
        check_type(classifier, "classifier", nn.Module)
        shape = tuple(int(s) for s in input_shape)
        if not shape:
            raise ConfigError(message("input_shape", "the shape of one input", repr(input_shape)))
        self.classifier = classifier
        self.k = check_int(k, "k", low=1, high=max(1, int(torch.tensor(shape).prod())))
        self.pixels = check_int(pixels, "pixels", low=0, high=pixel_count(shape))
        self.rounds = check_int(rounds, "rounds")
        self.input_shape = shape

    def recover(self, x: torch.Tensor) -> torch.Tensor:
        """The recovered Fourier-sparse inputs the classifier sees."""
        return iht_recover(x, k=self.k, pixels=self.pixels, rounds=self.rounds, input_shape=self.input_shape)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the classifier on the recovered inputs."""
        return self.classifier(self.recover(x))

    def extra_repr(self) -> str:
        """k, pixels and rounds."""
        return f"k={self.k}, pixels={self.pixels}, rounds={self.rounds}"
