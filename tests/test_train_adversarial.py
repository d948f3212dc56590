"""PGD on the inputs (fitscope.train.adversarial) and the ``pgd`` adversarial-training part.

References: the optimal perturbation of a linear model by formula and by brute force over the L-inf ball's
vertices; the L2 projection by its formula; restarts against a hand-made choice of the best run.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fitscope.errors import ConfigError
from fitscope.train import TrainConfig, train_ensemble
from fitscope.train.adversarial import check_norm_name, pgd_perturb, project
from fitscope.train.regularizers import format_regularizers, parse_regularizers
from regularizer_checks import FAMILIES, assert_together_equals_alone, tiny_problem


def _linear(d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    b = torch.randn((), generator=g, dtype=torch.float64)
    x = torch.randn(7, d, generator=g, dtype=torch.float64)
    return w, b, x


def _logistic_loss(w, b):
    # binary label +1: the loss log(1 + exp(-(w.x + b))) grows as w.x falls
    return lambda x: torch.nn.functional.softplus(-(x @ w + b))


@pytest.mark.parametrize("start", [False, True])
def test_linf_pgd_finds_eps_sign_w_on_a_linear_model(start):
    w, b, x = _linear()
    eps = 0.3
    adv = pgd_perturb(_logistic_loss(w, b), x, eps=eps, norm="inf", steps=5, step_size=0.2, start=start,
                      generators=torch.Generator().manual_seed(1))
    expected = x - eps * torch.sign(w)  # the optimum of min w.(x + delta) over ||delta||_inf <= eps
    torch.testing.assert_close(adv, expected)
    # brute force: no vertex of the ball (nor the found point) does better than eps * sign(w)
    vertices = torch.tensor(list(itertools.product([-eps, eps], repeat=len(w))), dtype=torch.float64)
    best = (x[:, None, :] + vertices[None]).matmul(w).min(dim=1).values
    torch.testing.assert_close(adv @ w, best)


def test_l2_pgd_finds_eps_w_over_norm_on_a_linear_model():
    w, b, x = _linear(seed=2)
    eps = 0.5
    optimum = x - eps * w / w.norm()  # min w.(x + delta) over ||delta||_2 <= eps
    adv = pgd_perturb(_logistic_loss(w, b), x, eps=eps, norm="2", steps=5, step_size=0.2, start=False)
    torch.testing.assert_close(adv, optimum, atol=1e-12, rtol=0)
    # from a random start, projected ascent on the sphere closes in on the same point
    adv = pgd_perturb(_logistic_loss(w, b), x, eps=eps, norm="2", steps=40, step_size=0.2,
                      generators=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adv, optimum, atol=1e-4, rtol=0)


def test_l2_projection_by_formula_and_clipping_to_the_range():
    rng = np.random.default_rng(0)
    delta = torch.from_numpy(rng.normal(size=(6, 3, 4)))
    eps = 1.5
    got = project(delta, eps=eps, norm="2")
    for row, out in zip(delta, got):
        r = float(row.norm())
        torch.testing.assert_close(out, row * (eps / r if r > eps else 1.0))
    torch.testing.assert_close(project(delta, eps=0.2, norm="inf"), delta.clamp(-0.2, 0.2))
    # rows on two leading axes (K models x b rows): each row its own norm
    got2 = project(delta.reshape(2, 3, 3, 4), eps=eps, norm="2", batch_dims=2)
    torch.testing.assert_close(got2.reshape(6, 3, 4), got)
    # the range: adversarial rows stay in [low, high] and within eps
    x = torch.from_numpy(rng.uniform(size=(5, 4)))
    w = torch.from_numpy(rng.normal(size=4))
    adv = pgd_perturb(lambda z: z @ w, x, eps=0.3, steps=3, low=0.0, high=1.0,
                      generators=torch.Generator().manual_seed(0))
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) <= 0.3 + 1e-12
    torch.testing.assert_close(adv, (x + 0.3 * torch.sign(w)).clamp(0, 1))


def test_restarts_keep_the_worst_case_per_row():
    # two local maxima per row: the corner (+, +) (value 2) and (-, -) (value 1); PGD climbs to the nearer one,
    # so which value a run reaches depends on its random start
    x = torch.zeros(40, 2, dtype=torch.float64)

    def loss(z):
        return torch.where(z.sum(dim=1) > 0, 2 * z.sum(dim=1), -z.sum(dim=1))

    best = pgd_perturb(loss, x, eps=1.0, steps=3, step_size=1.0, restarts=3,
                       generators=torch.Generator().manual_seed(0))
    # each restart alone, from the same stream of draws
    values = torch.stack([loss(pgd_perturb(loss, x, eps=1.0, steps=3, step_size=1.0, generators=g))
                          for g in _one_stream_generators(3)])
    assert bool((values[0] != values.max(dim=0).values).any())  # a single run misses some worst cases
    torch.testing.assert_close(loss(best), values.max(dim=0).values)


def _one_stream_generators(restarts):
    """Generators reproducing the draws of restarts 0..r-1 made in a row from one generator seeded 0."""
    out = []
    for r in range(restarts):
        g = torch.Generator().manual_seed(0)
        for _ in range(r):
            torch.rand((40, 2), generator=g, dtype=torch.float64)
        out.append(g)
    return out


def test_bad_norm_and_eps_are_one_line_errors():
    assert check_norm_name("Linf") == "inf" and check_norm_name(2) == "2"
    with pytest.raises(ConfigError, match="norm: expected inf or 2"):
        check_norm_name("1")
    with pytest.raises(ConfigError, match="eps"):
        pgd_perturb(lambda z: z.sum(1), torch.zeros(2, 2), eps=-1.0, start=False)
    with pytest.raises(ConfigError, match="steps"):
        pgd_perturb(lambda z: z.sum(1), torch.zeros(2, 2), eps=0.1, steps=0, start=False)
    with pytest.raises(ConfigError, match="pgd:norm"):
        parse_regularizers("pgd:norm=1")


def test_the_part_round_trips_its_grammar():
    parts = parse_regularizers("pgd:eps=0.2,norm=2,steps=3,low=0,high=1")
    assert parts == [{"name": "pgd", "eps": 0.2, "steps": 3, "low": 0.0, "high": 1.0, "norm": "2"}]
    assert parse_regularizers(format_regularizers(parts)) == parts


def test_the_part_trains_on_the_models_own_adversarial_rows():
    # one model, one step, lr 0, full batch: the step's rows equal pgd_perturb on that model (same generator)
    from fitscope.seeding import derive_seed
    from fitscope.models import build

    x, y = tiny_problem((6,), n=8)
    x = (x - x.min()) / (x.max() - x.min())
    model = build("mlp:8", (6,), 3, seeds=[5])
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    from regularizer_checks import make_state

    parts, _, state, objective = make_state("mlp:8", x, y, "pgd:eps=0.1,steps=2,low=0,high=1", seeds=[5])
    state.model.load_state_dict(model.state_dict())
    handle.remove()
    seen.clear()
    handle = state.model.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    idx = torch.arange(8)[None]
    objective(torch.from_numpy(x)[idx], torch.from_numpy(y)[idx], idx)
    handle.remove()
    trained_on = seen[-1]
    gen = torch.Generator().manual_seed(derive_seed(5, "pgd"))
    targets = torch.nn.functional.one_hot(torch.from_numpy(y)[idx], 3).float()
    ref = pgd_perturb(lambda z: -(targets * torch.log_softmax(model(z), -1)).sum(-1), torch.from_numpy(x)[idx],
                      eps=0.1, steps=2, low=0.0, high=1.0, generators=[gen], batch_dims=2)
    torch.testing.assert_close(trained_on, ref)
    assert float((trained_on - torch.from_numpy(x)[idx]).abs().max()) > 0.05


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_pgd_models_together_equal_each_alone(family):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, "pgd:eps=0.3,steps=2,norm=inf")
    assert_together_equals_alone(spec, x, y, "pgd:eps=0.5,steps=2,norm=2")


def test_adversarial_training_lowers_the_robust_loss_on_a_tiny_problem():
    # Madry et al.'s finding in miniature: PGD training lowers the loss under attack against plain training
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(200, 6)).astype(np.float32)
    y = (x[:, :3].sum(1) > x[:, 3:].sum(1)).astype(np.int64)
    eps = 0.15
    out = {}
    for name, parts in (("plain", "ce"), ("pgd", f"pgd:eps={eps},steps=5,low=0,high=1")):
        cfg = TrainConfig(epochs=30, batch_size=32, lr=0.1, regularizers=parts, record="none")
        res = train_ensemble("mlp:32", x, y, config=cfg, seeds=[0], keep_model=True)
        model = res.model
        xt, yt = torch.from_numpy(x)[None], torch.from_numpy(y)[None]

        def loss(z):
            return torch.nn.functional.cross_entropy(model(z)[0], yt[0], reduction="none")[None]

        adv = pgd_perturb(loss, xt, eps=eps, steps=20, low=0.0, high=1.0, generators=[torch.Generator()],
                          batch_dims=2)
        with torch.no_grad():
            out[name] = float((model(adv)[0].argmax(-1) == yt[0]).float().mean())
    assert out["pgd"] > out["plain"] + 0.1, out
