"""CNTK / CNN-GP against a slow reference written here with explicit loops over positions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fitscope.errors import ConfigError, DataError
from fitscope.kernels.conv import cntk

# --------------------------------------------------------------------------- slow reference


def _relu(cov, v1, v2):
    """c_sigma = 2 ReLU step for one scalar entry; zero variance gives (0, 1/2)."""
    if v1 <= 0 or v2 <= 0:
        return 0.0, 0.5
    rho = min(1.0, max(-1.0, cov / math.sqrt(v1 * v2)))
    t = math.acos(rho)
    return math.sqrt(v1 * v2) * (math.sin(t) + (math.pi - t) * math.cos(t)) / math.pi, (math.pi - t) / math.pi


def _reference(xa, xb, *, depth, k, pool, c=None, fixed=0, kind="ntk"):
    """One pair of inputs ``C x *S``: full position-pair matrices, every sum an explicit loop."""
    spatial = xa.shape[1:]
    positions = list(itertools.product(*[range(n) for n in spatial]))
    window = list(itertools.product(*[range(-((k - 1) // 2), k // 2 + 1)] * len(spatial)))

    def inside(p):
        return all(0 <= v < n for v, n in zip(p, spatial))

    def add(p, a):
        return tuple(u + v for u, v in zip(p, a))

    def cov_input(u, v):
        out = {}
        for p in positions:
            for q in positions:
                out[p, q] = float(sum(u[(ch,) + p] * v[(ch,) + q] for ch in range(u.shape[0])))
        return out

    def window_mean(m):
        out = {}
        for p in positions:
            for q in positions:
                s = 0.0
                for a in window:
                    pa, qa = add(p, a), add(q, a)
                    if inside(pa) and inside(qa):
                        s += m[pa, qa]
                out[p, q] = s / len(window)
        return out

    saa, sbb, sab = cov_input(xa, xa), cov_input(xb, xb), cov_input(xa, xb)
    theta = dict(sab) if fixed == 0 else {key: 0.0 for key in sab}
    for h in range(1, depth + 1):
        laa, lbb, lab, tpre = window_mean(saa), window_mean(sbb), window_mean(sab), window_mean(theta)
        new_aa, new_bb, new_ab, new_theta = {}, {}, {}, {}
        for p in positions:
            for q in positions:
                new_aa[p, q] = _relu(laa[p, q], laa[p, p], laa[q, q])[0]
                new_bb[p, q] = _relu(lbb[p, q], lbb[p, p], lbb[q, q])[0]
                s, sd = _relu(lab[p, q], laa[p, p], lbb[q, q])
                new_ab[p, q] = s
                new_theta[p, q] = tpre[p, q] * sd + (s if h >= fixed else 0.0)
        saa, sbb, sab, theta = new_aa, new_bb, new_ab, new_theta
    final = theta if kind == "ntk" else sab
    n_pos = len(positions)
    if pool == "none":
        return sum(final[p, p] for p in positions) / n_pos
    if pool == "gap":
        return sum(final.values()) / n_pos**2
    # LAP: average pooling (window c, stride 1, 'same' zeros, divisor c^d) then the vanilla readout
    pool_window = list(itertools.product(*[range(-((c - 1) // 2), c // 2 + 1)] * len(spatial)))
    total = 0.0
    for o in positions:
        for a in pool_window:
            for b in pool_window:
                pa, pb = add(o, a), add(o, b)
                if inside(pa) and inside(pb):
                    total += final[pa, pb]
    return total / (n_pos * len(pool_window) ** 2)


def _reference_matrix(x1, x2, **kw):
    return np.array([[_reference(a, b, **kw) for b in x2] for a in x1])


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(2, 1, 4, 4))
    x2 = rng.normal(size=(2, 1, 4, 4))
    x2[1, :, :2, :] = 0.0  # a zero region: zero-variance patches
    return x1, x2


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(1)
    return rng.normal(size=(3, 2, 6)), rng.normal(size=(2, 2, 6))


CASES_2D = [
    # (depth, k, pool, c, fixed, kind)
    (1, 3, "none", None, 0, "ntk"),
    (2, 3, "gap", None, 0, "ntk"),
    (3, 3, "lap", 2, 0, "ntk"),
    (2, 3, "lap", 3, 1, "ntk"),
    (2, 3, "gap", None, 1, "nngp"),
    (3, 3, "none", None, 1, "ntk"),
    (2, 2, "gap", None, 0, "ntk"),
    (1, 3, "gap", None, 1, "ntk"),
]

CASES_1D = [
    (1, 3, "gap", None, 0, "ntk"),
    (2, 3, "none", None, 0, "nngp"),
    (3, 3, "lap", 3, 0, "ntk"),
    (2, 5, "lap", 2, 1, "ntk"),
    (3, 3, "gap", None, 2, "ntk"),
]


@pytest.mark.parametrize("depth,k,pool,c,fixed,kind", CASES_2D)
def test_images_match_reference(images, depth, k, pool, c, fixed, kind):
    x1, x2 = images
    got = cntk(x1, x2, depth=depth, filter_size=k, pool=pool, lap_window=c, fixed=fixed, kind=kind)
    want = _reference_matrix(x1, x2, depth=depth, k=k, pool=pool, c=c, fixed=fixed, kind=kind)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("depth,k,pool,c,fixed,kind", CASES_1D)
def test_signals_match_reference(signals, depth, k, pool, c, fixed, kind):
    x1, x2 = signals
    got = cntk(x1, x2, depth=depth, filter_size=k, pool=pool, lap_window=c, fixed=fixed, kind=kind)
    want = _reference_matrix(x1, x2, depth=depth, k=k, pool=pool, c=c, fixed=fixed, kind=kind)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_rectangular_images_match_reference():
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(2, 2, 3, 5)), rng.normal(size=(1, 2, 3, 5))
    for pool, c in [("gap", None), ("lap", 2), ("none", None)]:
        got = cntk(x1, x2, depth=2, pool=pool, lap_window=c)
        want = _reference_matrix(x1, x2, depth=2, k=3, pool=pool, c=c)
        np.testing.assert_allclose(got, want, rtol=1e-10)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("pool,c", [("gap", None), ("none", None), ("lap", 3)])
def test_gram_symmetric_psd_and_equal_to_cross(pool, c):
    x = np.random.default_rng(3).normal(size=(7, 2, 5, 5))
    g = cntk(x, depth=3, pool=pool, lap_window=c)
    assert np.array_equal(g, g.T)
    assert np.linalg.eigvalsh(g).min() > -1e-10 * np.abs(g).max()
    np.testing.assert_allclose(g, cntk(x, x, depth=3, pool=pool, lap_window=c), rtol=1e-12)


@pytest.mark.parametrize("pool,c", [("gap", None), ("lap", 2)])
def test_block_size_does_not_change_result(pool, c):
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=(9, 1, 6, 6)), rng.normal(size=(5, 1, 6, 6))
    big = cntk(x1, x2, depth=2, pool=pool, lap_window=c, max_memory_mb=512, max_block=100)  # one block
    small = cntk(x1, x2, depth=2, pool=pool, lap_window=c, max_memory_mb=0.7)  # a handful of pairs per block
    np.testing.assert_allclose(small, big, rtol=1e-13)
    gram_big = cntk(x1, depth=2, pool=pool, lap_window=c, max_memory_mb=512, max_block=100)
    gram_small = cntk(x1, depth=2, pool=pool, lap_window=c, max_memory_mb=0.7)
    np.testing.assert_allclose(gram_small, gram_big, rtol=1e-13)
    np.testing.assert_allclose(cntk(x1, x2, depth=2, pool=pool, lap_window=c, max_block=2), big, rtol=1e-13)


def test_float32_close_to_float64():
    x = np.random.default_rng(5).normal(size=(6, 1, 6, 6))
    k64 = cntk(x, depth=3, pool="gap")
    k32 = cntk(x, depth=3, pool="gap", dtype="float32")
    assert k32.dtype == np.float32 and k64.dtype == np.float64
    np.testing.assert_allclose(k32, k64, rtol=2e-3)


def test_kernel_is_homogeneous_and_translation_invariant_under_gap():
    x = np.random.default_rng(6).normal(size=(3, 1, 8))
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 0.0
    k = cntk(x, depth=2, pool="gap", filter_size=3)
    np.testing.assert_allclose(cntk(3.0 * x, depth=2, pool="gap"), 9.0 * k, rtol=1e-8)  # arccos near rho=1 amplifies rounding
    # a shift that keeps the support inside the signal: GAP (zeros around) is unchanged, vanilla too
    shifted = np.roll(x, 1, axis=2)
    np.testing.assert_allclose(cntk(shifted, depth=1, pool="gap", filter_size=1), cntk(x, depth=1, pool="gap", filter_size=1), rtol=1e-12)


# Unit-norm values from METHODS section 5 (FC ReLU, c_sigma = 2): rho -> (NTK L=1..3, NNGP L=1..3)
METHODS_TABLE = {
    0.0: ((0.318310, 0.685709, 1.060388), (0.318310, 0.493731, 0.604826)),
    0.5: ((0.942331, 1.351480, 1.737845), (0.608998, 0.683906, 0.738128)),
    1.0: ((2.0, 3.0, 4.0), (1.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("rho", sorted(METHODS_TABLE))
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_one_by_one_filters_reduce_to_the_fc_kernel(rho, depth):
    """1x1 filters: positions never mix, so the kernel is an average of FC kernels of the channel vectors."""
    u = np.array([1.0, 0.0])
    v = np.array([rho, math.sqrt(1 - rho**2)])
    ntk_want, nngp_want = METHODS_TABLE[rho][0][depth - 1], METHODS_TABLE[rho][1][depth - 1]
    # a 1x1 image: every pooling is the FC kernel itself
    a, b = u.reshape(1, 2, 1, 1), v.reshape(1, 2, 1, 1)
    for pool in ("none", "gap"):
        assert cntk(a, b, depth=depth, filter_size=1, pool=pool)[0, 0] == pytest.approx(ntk_want, abs=1e-6)
        assert cntk(a, b, depth=depth, filter_size=1, pool=pool, kind="nngp")[0, 0] == pytest.approx(nngp_want, abs=1e-6)
    # a 1 x 3 signal with unit vectors at every position and pool="none": the mean of the per-position FC kernels
    xa = np.stack([u, u, u], axis=1)[None]
    xb = np.stack([v, u, v], axis=1)[None]
    want = (2 * ntk_want + METHODS_TABLE[1.0][0][depth - 1]) / 3
    assert cntk(xa, xb, depth=depth, filter_size=1, pool="none")[0, 0] == pytest.approx(want, abs=1e-6)


def test_fixed_equal_depth_gives_nngp():
    x = np.random.default_rng(7).normal(size=(3, 1, 5, 5))
    np.testing.assert_allclose(cntk(x, depth=2, fixed=2), cntk(x, depth=2, kind="nngp"), rtol=1e-12)


def test_lap_window_one_is_vanilla():
    x = np.random.default_rng(8).normal(size=(3, 2, 4, 5))
    np.testing.assert_allclose(cntk(x, depth=2, pool="lap", lap_window=1), cntk(x, depth=2, pool="none"), rtol=1e-12)


def test_zero_image_gives_zero_row():
    x = np.random.default_rng(9).normal(size=(3, 1, 4, 4))
    x[1] = 0.0
    g = cntk(x, depth=2)
    assert np.all(g[1] == 0.0) and np.all(np.isfinite(g))


# --------------------------------------------------------------------------- bad input


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_mismatched_shapes():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(DataError) as e:
        cntk(x, np.zeros((2, 1, 4, 5)), depth=1)
    assert "x2" in _one_line(e)
    with pytest.raises(DataError):
        cntk(x, np.zeros((2, 3, 4, 4)), depth=1)
    with pytest.raises(DataError):
        cntk(x, np.zeros((2, 1, 16)), depth=1)


def test_no_channel_axis():
    with pytest.raises(DataError) as e:
        cntk(np.zeros((5, 16)), depth=1)
    msg = _one_line(e)
    assert "x1" in msg and "(N, C, H, W)" in msg and "(5, 16)" in msg


def test_nan_input():
    x = np.ones((3, 1, 4, 4))
    x[2, 0, 1, 1] = np.nan
    with pytest.raises(DataError) as e:
        cntk(x, depth=1)
    assert "x1" in _one_line(e) and "[2, 0, 1, 1]" in _one_line(e)
    with pytest.raises(DataError):
        cntk(np.ones((3, 1, 4, 4)), x, depth=1)


def test_bad_options():
    x = np.ones((2, 1, 4, 4))
    with pytest.raises(ConfigError) as e:
        cntk(x, depth=1, pool="lap", lap_window=5)
    assert "lap_window" in _one_line(e)
    with pytest.raises(ConfigError):
        cntk(x, depth=1, pool="lap")
    with pytest.raises(ConfigError):
        cntk(x, depth=1, pool="gap", lap_window=2)
    with pytest.raises(ConfigError):
        cntk(x, depth=0)
    with pytest.raises(ConfigError):
        cntk(x, depth=2, fixed=3)
    with pytest.raises(ConfigError):
        cntk(x, depth=1, pool="max")
    with pytest.raises(ConfigError):
        cntk(x, depth=1, kind="gp")
    with pytest.raises(ConfigError):
        cntk(x, depth=1, dtype="float16")


def test_memory_cap_too_small():
    with pytest.raises(ConfigError) as e:
        cntk(np.ones((2, 1, 16, 16)), depth=1, pool="gap", max_memory_mb=1)
    assert "max_memory_mb" in _one_line(e)


@pytest.mark.parametrize("pool,c,kind,fixed", [("gap", None, "ntk", 0), ("lap", 2, "ntk", 1), ("none", None, "nngp", 0)])
def test_diagonal_matches_gram(pool, c, kind, fixed):
    from fitscope.kernels.conv import cntk_diagonal

    x = np.random.default_rng(10).normal(size=(5, 2, 4, 5))
    g = cntk(x, depth=2, pool=pool, lap_window=c, kind=kind, fixed=fixed)
    d = cntk_diagonal(x, depth=2, pool=pool, lap_window=c, kind=kind, fixed=fixed, max_memory_mb=0.5)
    np.testing.assert_allclose(d, np.diag(g), rtol=1e-8)  # arccos near rho = 1 amplifies rounding
    s = np.random.default_rng(11).normal(size=(4, 1, 7))
    np.testing.assert_allclose(cntk_diagonal(s, depth=3, pool=pool, lap_window=c), np.diag(cntk(s, depth=3, pool=pool, lap_window=c)), rtol=1e-8)


@pytest.mark.parametrize("fixed,kind", [(0, "ntk"), (1, "ntk"), (0, "nngp")])
def test_one_by_one_images_equal_the_fc_kernel(fixed, kind):
    import torch

    from fitscope.kernels.fc import fc_kernel

    x = np.random.default_rng(12).normal(size=(6, 5))
    want = fc_kernel(x, None, depth=3, fixed=fixed, kind=kind, dtype=torch.float64, device=torch.device("cpu"),
                     max_memory_mb=64, method="exact")
    got = cntk(x.reshape(6, 5, 1, 1), depth=3, filter_size=1, pool="gap", fixed=fixed, kind=kind)
    np.testing.assert_allclose(got, want, rtol=1e-7)  # the diagonal: arccos near rho = 1 amplifies rounding
    # 3x3 filters on a 1x1 image see one pixel out of 9 (zero padding): each layer scales by 1/9
    got3 = cntk(x.reshape(6, 5, 1, 1), depth=3, filter_size=3, pool="none", fixed=fixed, kind=kind)
    np.testing.assert_allclose(got3, want / 9**3, rtol=1e-7)


def test_worker_threads_restore_torch_threads_and_match_one_worker():
    import torch

    x = np.random.default_rng(13).normal(size=(9, 1, 5, 5))
    before = torch.get_num_threads()
    many = cntk(x, depth=2, max_block=2)  # 15 block pairs on the worker threads
    assert torch.get_num_threads() == before
    torch.set_num_threads(1)
    try:
        one = cntk(x, depth=2, max_block=2)  # one worker: the sequential path
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(many, one)
