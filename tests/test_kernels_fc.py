"""The fully-connected NTK / NNGP: METHODS unit values, structure, blocking and precision."""

import math

import numpy as np
import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.kernels import ntk
from fitscope.kernels.blocks import compute_in_blocks, plan_blocks
from fitscope.kernels.fc import angle_kernel, fc_kernel

# METHODS section 5, unit-norm inputs with cosine rho: (rho, NTK L=1..3, NNGP L=1..3)
UNIT_TABLE = [
    (0.0, (0.318310, 0.685709, 1.060388), (0.318310, 0.493731, 0.604826)),
    (0.5, (0.942331, 1.351480, 1.737845), (0.608998, 0.683906, 0.738128)),
    (1.0, (2.0, 3.0, 4.0), (1.0, 1.0, 1.0)),
]


def _unit_pair(rho):
    return np.array([[1.0, 0.0]]), np.array([[rho, math.sqrt(1.0 - rho * rho)]])


@pytest.mark.parametrize("rho, ntk_values, nngp_values", UNIT_TABLE)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_methods_unit_table(rho, ntk_values, nngp_values, depth):
    a, b = _unit_pair(rho)
    assert ntk(a, b, depth=depth)[0, 0] == pytest.approx(ntk_values[depth - 1], abs=1e-6)
    assert ntk(a, b, depth=depth, kind="nngp")[0, 0] == pytest.approx(nngp_values[depth - 1], abs=1e-6)


def _reference(x, y, depth, fixed, kind):
    """Scalar maths straight from METHODS: sum over trained layers h >= fixed of Sigma^h prod Sigmadot."""
    sig = [float(x @ y)]
    var_x, var_y = float(x @ x), float(y @ y)
    dots = [None]
    for _ in range(depth):
        rho = max(-1.0, min(1.0, sig[-1] / math.sqrt(var_x * var_y)))
        t = math.acos(rho)
        sig.append(math.sqrt(var_x * var_y) * (math.sin(t) + (math.pi - t) * math.cos(t)) / math.pi)
        dots.append((math.pi - t) / math.pi)
    if kind == "nngp":
        return sig[depth]
    return sum(sig[h] * math.prod(dots[h + 1:depth + 1]) for h in range(fixed, depth + 1))


@pytest.mark.parametrize("depth, fixed, kind", [(1, 0, "ntk"), (3, 0, "ntk"), (3, 1, "ntk"), (4, 2, "ntk"),
                                                (2, 2, "ntk"), (3, 0, "nngp")])
def test_matches_scalar_reference_with_fixed_layers(depth, fixed, kind):
    rng = np.random.default_rng(depth * 10 + fixed)
    x, y = rng.standard_normal((5, 4)) * 3, rng.standard_normal((4, 4))
    expected = np.array([[_reference(a, b, depth, fixed, kind) for b in y] for a in x])
    np.testing.assert_allclose(ntk(x, y, depth=depth, fixed=fixed, kind=kind), expected, rtol=1e-10)


def test_fixed_depth_is_nngp_and_fixed_layers_only_remove_terms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6))
    np.testing.assert_array_equal(ntk(x, depth=3, fixed=3), ntk(x, depth=3, kind="nngp"))
    grams = [ntk(x, depth=3, fixed=f) for f in range(4)]
    for bigger, smaller in zip(grams, grams[1:]):
        assert np.all(np.diag(bigger) > np.diag(smaller))  # each trained layer adds |x|^2 on the diagonal
    np.testing.assert_allclose(np.diag(grams[0]), 4 * np.sum(x * x, axis=1), rtol=1e-12)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_gram_is_symmetric_psd_and_matches_cross_kernel(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((80, 10))
    x[1] = 2.5 * x[0]  # parallel rows
    x[2] = -x[3]
    gram = ntk(x, depth=4, kind=kind)
    np.testing.assert_array_equal(gram, gram.T)
    eig = np.linalg.eigvalsh(gram)
    assert eig.min() >= -1e-8 * eig.max()
    np.testing.assert_allclose(ntk(x, x, depth=4, kind=kind), gram, rtol=1e-12, atol=1e-12)


def test_homogeneous_in_the_inputs():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((7, 3))
    np.testing.assert_allclose(ntk(3.0 * x, 0.5 * y), 1.5 * ntk(x, y), rtol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_block_sizes_do_not_change_the_result(symmetric):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((37, 5)), rng.standard_normal((23, 5))
    other = None if symmetric else y
    whole = ntk(x, other, depth=3)
    # 80 bytes per entry: 0.004 MiB holds about 52 entries, i.e. blocks of 7 x 7 rows
    small = ntk(x, other, depth=3, max_memory_mb=0.004)
    np.testing.assert_allclose(small, whole, rtol=1e-13, atol=1e-13)
    kw = dict(depth=3, fixed=0, kind="ntk", dtype=torch.float64, device="cpu", max_memory_mb=1024)
    np.testing.assert_allclose(fc_kernel(x, other, max_block=5, **kw), whole, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("depth, fixed, kind", [(5, 0, "ntk"), (5, 2, "ntk"), (2, 0, "nngp")])
def test_angle_table_agrees_with_exact_recursion(depth, fixed, kind):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((150, 8))
    x[:10] = x[10:20] * 1.7  # parallel pairs
    x[20:25] = -x[25:30]  # opposite pairs
    kw = dict(depth=depth, fixed=fixed, kind=kind, dtype=torch.float64, device="cpu", max_memory_mb=1024)
    exact, table = fc_kernel(x, None, method="exact", **kw), fc_kernel(x, None, method="table", **kw)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert np.max(np.abs(exact - table) / scale) < 1e-12


def test_float32_is_close_to_float64():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 12)), rng.standard_normal((30, 12))
    k64 = ntk(x, y, depth=3)
    k32 = ntk(x, y, depth=3, dtype="float32")
    assert k32.dtype == np.float32 and k64.dtype == np.float64  # the dtype asked for
    np.testing.assert_allclose(k32, k64, rtol=1e-4, atol=1e-4 * np.abs(k64).max())
    assert not np.array_equal(k32, k64)  # it really computed in float32


def test_equal_rows_give_the_diagonal_value_in_any_block():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 5))
    row = ntk(x[3:4], x, depth=3)
    np.testing.assert_allclose(row[0, 3], 4 * x[3] @ x[3], rtol=1e-15)
    np.testing.assert_array_equal(ntk(x[3:4], x[:4], depth=3)[0], row[0, :4])


def test_angle_kernel_is_the_relu_recursion():
    cos = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(angle_kernel(cos.clone(), depth=2, fixed=0, kind="ntk").numpy(),
                               [0.685709, 1.351480, 3.0], atol=1e-6)


@pytest.mark.parametrize("n1, n2, symmetric", [(10, 10, True), (10, 7, False), (1, 9, False), (50, 50, True)])
def test_block_plan_covers_every_entry_once_within_the_cap(n1, n2, symmetric):
    bytes_per_pair, cap = 100.0, 0.002  # ~20 entries per block pair
    plan = plan_blocks(n1, n2, bytes_per_pair=bytes_per_pair, max_memory_mb=cap, symmetric=symmetric)
    count = np.zeros((n1, n2), dtype=int)
    for s1, s2 in plan:
        assert (s1.stop - s1.start) * (s2.stop - s2.start) * bytes_per_pair <= cap * 2**20
        count[s1, s2] += 1
        if symmetric and s1 != s2:
            assert s1.start < s2.start
            count[s2, s1] += 1
    np.testing.assert_array_equal(count, 1)


def test_compute_in_blocks_mirrors_and_the_cap_error_names_the_smallest_cap():
    full = np.arange(36.0).reshape(6, 6)
    full = full + full.T
    out = compute_in_blocks(6, 6, lambda s1, s2: full[s1, s2], bytes_per_pair=8.0, max_memory_mb=8 * 4 / 2**20,
                            symmetric=True)
    np.testing.assert_array_equal(out, full)
    with pytest.raises(ConfigError, match=r"max_memory_mb: expected at least 2 MiB.*got 1"):
        plan_blocks(4, 4, bytes_per_pair=2**20, bytes_per_row=2**19, max_memory_mb=1)


def test_table_path_is_block_independent_and_symmetric():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 5))
    kw = dict(depth=4, fixed=1, kind="ntk", dtype=torch.float64, device="cpu", max_memory_mb=1024, method="table")
    gram = fc_kernel(x, None, **kw)
    np.testing.assert_array_equal(gram, gram.T)
    np.testing.assert_allclose(fc_kernel(x, None, max_block=7, **kw), gram, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(fc_kernel(x, x, **kw), gram, rtol=1e-13, atol=1e-13)
    eig = np.linalg.eigvalsh(gram)
    assert eig.min() >= -1e-8 * eig.max()
