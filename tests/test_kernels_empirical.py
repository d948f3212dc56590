"""The analytic NTK against the empirical NTK of finite ReLU MLPs (torch.func Jacobians).

A network in NTK parameterization with ``L`` hidden layers of width ``w``:
``h^1 = W^1 x``, ``g^l = sqrt(2 / w) relu(h^l)``, ``h^{l+1} = W^{l+1} g^l``,
output ``f(x) = W^{L+1} g^L``, all weights N(0, 1), no bias. Its tangent kernel
``sum_theta df(x)/dtheta df(x')/dtheta`` tends to ``ntk(x, x', depth=L)`` as
``w -> inf`` with fluctuations of order ``1 / sqrt(w)``.
"""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from fitscope.kernels import ntk


class _MLP(torch.nn.Module):
    def __init__(self, d: int, width: int, depth: int):
        super().__init__()
        sizes = [d] + [width] * depth + [1]
        self.layers = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(sizes[i + 1], sizes[i])) for i in range(depth + 1))
        self.width = width

    def forward(self, x):
        h = self.layers[0] @ x
        for i in range(1, len(self.layers)):  # index, not slice: slices bypass functional_call
            h = self.layers[i] @ (math.sqrt(2.0 / self.width) * torch.relu(h))
        return h


def empirical_ntk(x: np.ndarray, width: int, depth: int, seed: int) -> np.ndarray:
    """``(N, N)`` tangent kernel of one random network at initialization."""
    gen = torch.Generator().manual_seed(seed)
    model = _MLP(x.shape[1], width, depth)
    params = {}
    for name, p in model.named_parameters():
        params[name] = torch.randn(p.shape, generator=gen, dtype=torch.float32)
    inputs = torch.as_tensor(x, dtype=torch.float32)
    jac = vmap(jacrev(lambda prm, xi: functional_call(model, prm, (xi,))), in_dims=(None, 0))(params, inputs)
    gram = torch.zeros(len(x), len(x), dtype=torch.float64)
    for block in jac.values():  # one parameter tensor at a time
        flat = block.reshape(len(x), -1).double()
        gram += flat @ flat.T
        del flat
    return gram.numpy()


def _relative_error(x, width, depth, seeds):
    """Frobenius error of the seed-averaged empirical NTK, relative to the analytic one."""
    analytic = ntk(x, depth=depth)
    mean = np.mean([empirical_ntk(x, width, depth, seed) for seed in seeds], axis=0)
    return np.linalg.norm(mean - analytic) / np.linalg.norm(analytic)


@pytest.mark.slow
@pytest.mark.parametrize("depth, widths", [(1, (256, 4096, 16384)), (2, (64, 1024))])
def test_empirical_ntk_approaches_analytic_ntk_as_width_grows(depth, widths):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5))
    x[1] = 0.6 * x[0] + 0.8 * x[1]  # a pair with a large cosine
    errors = {w: _relative_error(x, w, depth, seeds=range(8)) for w in widths}
    # fluctuations of a width-w network shrink like 1 / sqrt(w): so does the tolerance
    for width, err in errors.items():
        assert err < 2.5 / math.sqrt(width), errors
    smallest = errors[widths[0]]
    for width in widths[1:]:
        assert errors[width] < (0.5 if depth == 1 else 1.0) * smallest, errors
