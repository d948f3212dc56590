"""The loss-Hessian functions of fitscope.dynamics against the dense Hessian of small models.

The reference is ``torch.autograd.functional.hessian`` of the loss as a function of the flat parameter vector
(computed here, in float64, independently of the code under test), and its eigenvalues by ``torch.linalg.eigvalsh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitscope.dynamics import (
    check_hessian_memory,
    hessian_memory_bytes,
    hessian_top_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    parameter_count,
)
from fitscope.errors import ConfigError, DataError


def eigvalsh(h: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the symmetric ``h``, by torch (one thread; NumPy's BLAS spins on a busy machine)."""
    return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(h))).numpy()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these models are tiny, and a second thread only waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mlp(seed: int = 0) -> torch.nn.Sequential:
    """A user's own model: 8 -> 16 -> 3 with tanh, 195 parameters."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def dense_hessian(model: torch.nn.Module, x, y, loss: str) -> np.ndarray:
    """The P x P Hessian of the mean loss, in float64, by torch.autograd.functional.hessian."""
    model = model.double()
    try:
        names = [n for n, _ in model.named_parameters()]
        shapes = [p.shape for _, p in model.named_parameters()]
        sizes = [p.numel() for _, p in model.named_parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        xd = torch.as_tensor(x).double()
        yl = torch.as_tensor(y).long()

        def mean_loss(theta):
            params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
            out = torch.func.functional_call(model, params, (xd,))
            if loss == "ce":
                return F.cross_entropy(out, yl)
            return 0.5 * ((out - F.one_hot(yl, out.shape[1]).double()) ** 2).sum(1).mean()

        h = torch.autograd.functional.hessian(mean_loss, flat).numpy()
    finally:
        model.float()
    return (h + h.T) / 2


@pytest.fixture(scope="module", params=["ce", "mse"])
def case(request):
    model = _mlp()
    x, y = _data()
    h = dense_hessian(model, x, y, request.param)
    return dict(model=model, x=x, y=y, loss=request.param, h=h, eig=eigvalsh(h)[::-1])


# --------------------------------------------------------------------------- against the dense Hessian


def test_top_eigenvalues_match_the_dense_hessian_within_one_percent(case):
    one = hessian_top_eigenvalues(case["model"], case["x"], case["y"], k=1, loss=case["loss"])
    three = hessian_top_eigenvalues(case["model"], case["x"], case["y"], k=3, loss=case["loss"], seed=1)
    assert one.converged and three.converged and one.parameters == 195
    np.testing.assert_allclose(one.eigenvalues, case["eig"][:1], rtol=1e-2)
    np.testing.assert_allclose(three.eigenvalues, case["eig"][:3], rtol=1e-2)
    assert np.all(np.diff(three.eigenvalues) <= 0) and one.top == one.eigenvalues[0]
    assert three.iterations < 195  # far fewer products than the dense Hessian's P
    # the eigenvectors are the dense Hessian's: H u = lambda u, unit length
    for value, u in zip(three.eigenvalues, three.eigenvectors.astype(np.float64)):
        assert abs(np.linalg.norm(u) - 1) < 1e-5
        assert np.linalg.norm(case["h"] @ u - value * u) < 2e-2 * abs(value)


def test_trace_and_frobenius_are_within_three_standard_errors(case):
    est = hessian_trace(case["model"], case["x"], case["y"], samples=100, loss=case["loss"], seed=3)
    exact_trace = float(np.trace(case["h"]))
    exact_fro = float(np.linalg.norm(case["h"], "fro"))
    assert est.samples == 100 and est.trace_se > 0 and est.frobenius_se > 0
    assert abs(est.trace - exact_trace) <= 3 * est.trace_se, (est.trace, exact_trace, est.trace_se)
    assert abs(est.frobenius - exact_fro) <= 3 * est.frobenius_se, (est.frobenius, exact_fro, est.frobenius_se)
    assert abs(est.frobenius_sq - exact_fro ** 2) <= 3 * est.frobenius_sq_se


def test_hessian_vector_product_is_the_dense_product_by_either_method(case):
    v = np.random.default_rng(0).standard_normal(195)
    expected = case["h"] @ v
    for method in ("double-backward", "forward-over-reverse"):
        got = hessian_vector_product(case["model"], case["x"], case["y"], v, loss=case["loss"], method=method)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # chunks of rows sum to the full batch
    got = hessian_vector_product(case["model"], case["x"], case["y"], v, loss=case["loss"], chunk=10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# --------------------------------------------------------------------------- any user's model


def test_a_plain_sequential_with_conv_dropout_and_frozen_layers_works_and_is_left_as_it_was():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(2 * 4 * 4, 3))
    model[0].bias.requires_grad_(False)  # a frozen parameter is not part of the Hessian
    x = np.random.default_rng(0).standard_normal((20, 1, 6, 6)).astype(np.float32)  # NumPy in
    y = np.arange(20) % 3
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    res = hessian_top_eigenvalues(model, x, y, k=2, loss="ce")
    assert res.converged and res.parameters == parameter_count(model) == 18 + 99
    assert model.training and model[3].training  # the mode is restored
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # eval mode (dropout off) is what was differentiated: compare with the dense Hessian of the eval model
    model.eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    flat = torch.cat([params[n].detach().reshape(-1) for n in names]).double()
    xd, yl = torch.from_numpy(x).double(), torch.from_numpy(y)
    model.double()

    def mean_loss(theta):
        parts = torch.split(theta, [params[n].numel() for n in names])
        new = {n: t.view(params[n].shape) for n, t in zip(names, parts)}
        return F.cross_entropy(torch.func.functional_call(model, new, (xd,)), yl)

    h = torch.func.hessian(mean_loss)(flat).numpy()  # one vectorised pass (the conv's double backward is slow)
    model.float()
    np.testing.assert_allclose(res.eigenvalues, eigvalsh((h + h.T) / 2)[::-1][:2], rtol=1e-2)


def test_mse_takes_float_targets_of_the_outputs_shape_and_a_callable_loss():
    model = _mlp()
    x, y = _data()
    onehot = F.one_hot(y, 3).float()
    a = hessian_top_eigenvalues(model, x, y, loss="mse")
    b = hessian_top_eigenvalues(model, x, onehot, loss="mse")
    c = hessian_top_eigenvalues(model, x, onehot, loss=lambda out, t: 0.5 * ((out - t) ** 2).sum(1))
    np.testing.assert_allclose([b.top, c.top], a.top, rtol=1e-5)


def test_a_warm_start_converges_in_fewer_steps_and_a_small_budget_says_so(case):
    first = hessian_top_eigenvalues(case["model"], case["x"], case["y"], loss=case["loss"])
    again = hessian_top_eigenvalues(case["model"], case["x"], case["y"], loss=case["loss"],
                                    start=first.eigenvectors[0])
    assert again.iterations < first.iterations and again.converged
    short = hessian_top_eigenvalues(case["model"], case["x"], case["y"], k=3, loss=case["loss"], max_iter=3,
                                    tol=1e-6)
    assert not short.converged and short.iterations == 3 and np.all(np.isfinite(short.eigenvalues))


def test_the_same_seed_gives_the_same_bits():
    model, (x, y) = _mlp(), _data()
    a = hessian_trace(model, x, y, samples=5, seed=7)
    b = hessian_trace(model, x, y, samples=5, seed=7)
    assert a == b
    assert hessian_top_eigenvalues(model, x, y, seed=2).top == hessian_top_eigenvalues(model, x, y, seed=2).top


# --------------------------------------------------------------------------- bad input and memory


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, k=0), ConfigError, "k: expected an integer >= 1"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, k=196), ConfigError, "k: expected an integer in [1, 195]"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, tol=0), ConfigError, "tol"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, loss="hinge"), ConfigError, "loss"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, seed=-1), ConfigError, "seed"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, k=3, max_iter=2), ConfigError, "max_iter"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y[:10]), DataError, "y: expected 64 rows"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y + 3), DataError, "y: expected class labels in [0, 3)"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x * float("nan"), y), DataError, "x: expected finite"),
        (lambda m, x, y: hessian_top_eigenvalues(m, x, y, start=np.zeros(195)), DataError, "start"),
        (lambda m, x, y: hessian_top_eigenvalues("model", x, y), ConfigError, "model: expected a torch.nn.Module"),
        (lambda m, x, y: hessian_trace(m, x, y, samples=1), ConfigError, "samples"),
        (lambda m, x, y: hessian_trace(m, x, y.float(), loss="mse"), DataError, "y: expected targets"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(call, error, needle):
    x, y = _data()
    with pytest.raises(error) as info:
        call(_mlp(), x, y)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_memory_estimate_and_a_model_over_the_limit_is_refused_before_any_computation():
    assert hessian_memory_bytes(1000, max_iter=100) == 1000 * (8 * 102 + 6 * 4)
    assert hessian_memory_bytes(10, max_iter=100) == 10 * (8 * 12 + 6 * 4)  # the basis never exceeds P vectors
    assert hessian_memory_bytes(1000, what="trace") == 1000 * (8 * 3 + 6 * 4)

    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3_000_000))

        def forward(self, x):
            raise AssertionError("the memory check must come before any computation")

    with pytest.raises(ConfigError) as info:
        hessian_top_eigenvalues(Exploding(), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                                memory_limit_gb=1.0)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("model: expected a Hessian computation within the memory limit of 1 GiB")
    assert "3,000,000 parameters needing about 2.35 GiB" in text
    with pytest.raises(ConfigError, match="--memory-limit"):
        check_hessian_memory(3_000_000, limit_gb=0.001, what="trace", name="--model", hint="--memory-limit")
    assert check_hessian_memory(195, limit_gb=1.0) == hessian_memory_bytes(195)
