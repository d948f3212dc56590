"""The IHT sparse-Fourier defense (fitscope.robustness.fourier_defense): exact recovery on a synthetic case.

References: a signal built from k known Fourier coefficients (NumPy's FFT), corrupted in t pixels; the plain
top-k Fourier projection without IHT as the control that fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness import FourierIHTDefense, fourier_sparse_projection, iht_recover, l0_pixel_attack


def _sparse_image(rng, n=8, pairs=3):
    """A real n x n image with a DC term and ``pairs`` conjugate pairs of Fourier coefficients: 2 pairs + 1 = k."""
    spectrum = np.zeros((n, n), complex)
    spectrum[0, 0] = 4.0
    freqs = [(1, 2), (3, 1), (2, 5), (0, 3)][:pairs]
    for (u, v), amp in zip(freqs, (3.0, 2.2, 1.5, 1.1)):
        c = amp * np.exp(1j * rng.uniform(0, 2 * np.pi))
        spectrum[u, v] = c
        spectrum[-u % n, -v % n] = np.conj(c)
    image = np.fft.ifft2(spectrum, norm="ortho")
    assert np.abs(image.imag).max() < 1e-12
    return image.real, 1 + 2 * pairs


def test_fourier_projection_keeps_the_k_largest_coefficients_like_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 8, 8))
    got = fourier_sparse_projection(torch.from_numpy(x), k=9).numpy()
    for row, out in zip(x, got):
        spec = np.fft.fft2(row[0], norm="ortho")
        keep = np.abs(spec) >= np.sort(np.abs(spec).ravel())[-9] - 1e-12
        expect = np.fft.ifft2(spec * keep, norm="ortho").real
        np.testing.assert_allclose(out[0], expect, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iht_recovers_a_fourier_sparse_image_corrupted_in_t_pixels_exactly(seed):
    rng = np.random.default_rng(seed)
    image, k = _sparse_image(rng)
    t = 3
    corrupted = image.copy()
    where = rng.choice(64, t, replace=False)
    corrupted.flat[where] += rng.choice([-1, 1], t) * rng.uniform(1.0, 2.0, t)  # as large as the image itself
    y = torch.from_numpy(corrupted[None, None])
    x_hat, e_hat = iht_recover(y, k=k, pixels=t, rounds=30)
    np.testing.assert_allclose(x_hat[0, 0].numpy(), image, atol=1e-8)
    np.testing.assert_allclose(e_hat[0, 0].numpy(), corrupted - image, atol=1e-8)
    # the control: the top-k Fourier projection alone does not undo the corruption
    plain = fourier_sparse_projection(y, k=k)[0, 0].numpy()
    assert np.abs(plain - image).max() > 0.05


def test_iht_on_a_signal_and_without_corruption():
    rng = np.random.default_rng(3)
    n = 40
    spec = np.zeros(n, complex)
    spec[0], spec[3], spec[-3], spec[7], spec[-7] = 2.0, 1 + 1j, 1 - 1j, 0.5j, -0.5j
    signal = np.fft.ifft(spec, norm="ortho").real
    y = signal.copy()
    y[[5, 22]] += [1.5, -1.2]
    x_hat, _ = iht_recover(torch.from_numpy(y[None, None]), k=5, pixels=2, rounds=30)
    np.testing.assert_allclose(x_hat[0, 0].numpy(), signal, atol=1e-8)
    clean, e = iht_recover(torch.from_numpy(signal[None, None]), k=5, pixels=0)
    np.testing.assert_allclose(clean[0, 0].numpy(), signal, atol=1e-10)
    assert float(e.abs().max()) == 0.0


def test_the_defense_wraps_any_classifier_and_stops_a_small_l0_attack():
    # a linear classifier on Fourier-sparse images: class = sign of one Fourier feature
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(40):
        img, k = _sparse_image(rng)
        label = i % 2
        img = img * (1 if label else -1)
        images.append(img[None])
        labels.append(label)
    x = np.asarray(images, np.float32)
    y = np.asarray(labels)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        direction = torch.from_numpy(x[y == 1].mean(0).reshape(-1))
        net[1].weight.copy_(torch.stack([-direction, direction]))
        net[1].bias.zero_()
    defended = FourierIHTDefense(net, k=k, pixels=2, input_shape=(1, 8, 8), rounds=20)
    with torch.no_grad():
        assert (net(torch.from_numpy(x)).argmax(1).numpy() == y).all()
        assert (defended(torch.from_numpy(x)).argmax(1).numpy() == y).all()
    adv = l0_pixel_attack(net, x, y, pixels=2, steps=20, step_size=10.0, seed=0)  # unbounded: large pixel changes
    with torch.no_grad():
        undefended = float((net(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())
        kept = float((defended(torch.from_numpy(adv)).argmax(1).numpy() == y).mean())
    assert undefended < 0.5 and kept == 1.0, (undefended, kept)


def test_bad_budgets_are_one_line_errors():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ConfigError, match=r"pixels: expected an integer in \[0, 64\]"):
        FourierIHTDefense(net, k=5, pixels=65, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="k: expected"):
        iht_recover(torch.zeros(1, 1, 8, 8), k=0, pixels=1)
