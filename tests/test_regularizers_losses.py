"""The loss-side parts: mixup, ELR, PS-KD, GCE, SCE and SAM, each against its formula and K models against one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitscope.errors import ConfigError
from fitscope.models import build
from fitscope.seeding import derive_seed
from fitscope.train import TrainConfig
from fitscope.train.regularizers import per_model
from regularizer_checks import FAMILIES, assert_together_equals_alone, make_state, objective_logit_grads, tiny_problem

B = 8


def two_batches():
    """Rows of two models, ``(2, 8)``: different rows per model."""
    return np.stack([np.arange(0, B), np.arange(10, 10 + B)])


def onehot(y, idx):
    return F.one_hot(torch.from_numpy(y[idx]), 3).float()


# ------------------------------------------------------------------ mixup


def test_mixup_mixes_inputs_and_targets_with_each_models_own_draws():
    x, y = tiny_problem((6,))
    seeds = (5, 9)
    _, model, _, objective = make_state("mlp:8", x, y, "mixup:alpha=0.4", seeds=seeds)
    seen = {}
    handle = model.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].detach()))
    idx = two_batches()
    try:
        logits, grad = objective_logit_grads(objective, x, y, idx)
    finally:
        handle.remove()
    # the draws, made independently: model k's generator seeded derive_seed(seed_k, "mixup"), lam then perm
    xs, ts = [], []
    t = onehot(y, idx)
    for k, s in enumerate(seeds):
        rng = np.random.default_rng(derive_seed(s, "mixup"))
        lam, perm = rng.beta(0.4, 0.4), rng.permutation(B)
        xk = torch.from_numpy(x[idx[k]])
        xs.append(lam * xk + (1 - lam) * xk[perm])
        ts.append(lam * t[k] + (1 - lam) * t[k][perm])
    torch.testing.assert_close(seen["x"], torch.stack(xs))
    torch.testing.assert_close(grad, (torch.softmax(logits, -1) - torch.stack(ts)) / B)
    assert not torch.allclose(seen["x"], torch.from_numpy(x[idx]))


# ------------------------------------------------------------------ ELR


def test_elr_target_average_and_gradient_follow_the_formula():
    x, y = tiny_problem((6,))
    parts, model, _, objective = make_state("mlp:8", x, y, "elr:lambda=2,beta=0.6")
    elr = parts[0]
    assert elr.ema.shape == (2, 24, 3) and not elr.ema.any()

    def expected(logits, t, idx):
        p = torch.softmax(logits, -1)
        dot = (p * t).sum(-1, keepdim=True)
        return (p - onehot(y, idx)) / B + 2.0 * (-(p * (t - dot)) / (1 - dot)) / B

    def normalized(logits):
        p = torch.softmax(logits, -1).clamp(1e-4, 1 - 1e-4)
        return p / p.sum(-1, keepdim=True)

    idx = two_batches()
    logits1, grad1 = objective_logit_grads(objective, x, y, idx)
    t1 = 0.4 * normalized(logits1)  # zero at first: the term uses the already updated target
    torch.testing.assert_close(grad1, expected(logits1, t1, idx))
    for k in range(2):
        torch.testing.assert_close(elr.ema[k, idx[k]], t1[k])
        assert not elr.ema[k, np.setdiff1d(np.arange(24), idx[k])].any()
    before = elr.ema.clone()

    # new weights, half the rows seen before: those average the old target with the new prediction
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.7)
    idx2 = idx + 4
    logits2, grad2 = objective_logit_grads(objective, x, y, idx2)
    old = torch.stack([before[k, idx2[k]] for k in range(2)])
    t2 = 0.6 * old + 0.4 * normalized(logits2)
    assert old[:, :4].any() and not old[:, 4:].any()
    torch.testing.assert_close(grad2, expected(logits2, t2, idx2))
    for k in range(2):
        torch.testing.assert_close(elr.ema[k, idx2[k]], t2[k])


# ------------------------------------------------------------------ PS-KD


def test_pskd_mixes_targets_with_the_previous_epochs_predictions():
    x, y = tiny_problem((6,))
    parts, _, state, objective = make_state("mlp:8", x, y, "pskd:alpha_T=0.6", epochs=10)
    pskd = parts[0]
    idx = two_batches()
    g = torch.Generator().manual_seed(0)
    # epoch 0: one-hot targets, whatever predictions are there
    pskd.end_epoch(torch.randn(2, 24, 3, generator=g), state)
    logits, grad = objective_logit_grads(objective, x, y, idx)
    torch.testing.assert_close(grad, (torch.softmax(logits, -1) - onehot(y, idx)) / B)
    # epoch 3 of 10: alpha = 0.6 * 3 / 10, with the latest epoch's probabilities
    old, latest = torch.randn(2, 24, 3, generator=g), torch.randn(2, 24, 3, generator=g)
    objective.end_epoch(old)
    objective.end_epoch(latest)
    state.epoch = 3
    assert pskd.alpha(state) == pytest.approx(0.18)
    logits, grad = objective_logit_grads(objective, x, y, idx)
    prev = torch.stack([torch.softmax(latest[k, idx[k]], -1) for k in range(2)])
    target = 0.82 * onehot(y, idx) + 0.18 * prev
    torch.testing.assert_close(grad, (torch.softmax(logits, -1) - target) / B)


# ------------------------------------------------------------------ GCE and SCE


@pytest.mark.parametrize("text, eps", [("gce:q=0.5", 0.0), ("gce:q=0.5+ls:eps=0.3", 0.3)])
def test_gce_gradient_is_the_closed_form(text, eps):
    x, y = tiny_problem((6,))
    parts, _, state, objective = make_state("mlp:8", x, y, text)
    idx = two_batches()
    logits, grad = objective_logit_grads(objective, x, y, idx)
    t = onehot(y, idx) * (1 - eps) + eps / 3
    p = torch.softmax(logits, -1)
    pq = p ** 0.5
    # d/dz_j sum_c t_c (1 - p_c^q) / q = -t_j p_j^q + p_j sum_c t_c p_c^q
    torch.testing.assert_close(grad, (-t * pq + p * (t * pq).sum(-1, keepdim=True)) / B)
    if eps == 0:  # the hard form (1 - p_y^q) / q, per example
        py = p.gather(-1, torch.from_numpy(y[idx])[..., None])[..., 0]
        torch.testing.assert_close(parts[0].loss(logits, t, state), ((1 - py ** 0.5) / 0.5).mean(1))


def sce_reference(logits, t, alpha, beta, a):
    """Per example, straightforwardly: alpha * CE(t, p) + beta * RCE with log t_c clamped below at A."""
    out = []
    for z, tt in zip(logits.reshape(-1, 3), t.reshape(-1, 3)):
        p = torch.softmax(z, 0)
        ce = -sum(tt[c] * torch.log(p[c]) for c in range(3))
        rce = -sum(p[c] * max(math.log(float(tt[c])) if tt[c] > 0 else -math.inf, a) for c in range(3))
        out.append(alpha * ce + beta * rce)
    return torch.stack(out).reshape(t.shape[:2]).mean(1)


@pytest.mark.parametrize("text, eps", [("sce:alpha=0.3,beta=2,A=-3", 0.0),
                                       ("sce:alpha=0.3,beta=2,A=-3+ls:eps=0.3", 0.3)])
def test_sce_gradient_equals_autograd_of_a_per_example_reference(text, eps):
    x, y = tiny_problem((6,))
    parts, _, state, objective = make_state("mlp:8", x, y, text)
    idx = two_batches()
    logits, grad = objective_logit_grads(objective, x, y, idx)
    t = onehot(y, idx) * (1 - eps) + eps / 3
    z = logits.clone().requires_grad_(True)
    ref = sce_reference(z, t, 0.3, 2.0, -3.0)
    (ref_grad,) = torch.autograd.grad(ref.sum(), z)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(parts[0].loss(logits, t, state), ref.detach())
    if eps == 0:  # one-hot: RCE = -A (1 - p_y), gradient -A * dp_y/dz, closed form
        p = torch.softmax(logits, -1)
        h = onehot(y, idx)
        py = (p * h).sum(-1, keepdim=True)
        closed = 0.3 * (p - h) - 2.0 * 3.0 * py * (h - p)
        torch.testing.assert_close(grad, closed / B)


# ------------------------------------------------------------------ SAM


def sam_reference(spec, seed, x, y, rho):
    """One model alone: its loss gradient at w + rho g / ||g|| (g the gradient at w, ||.|| over all its weights)."""
    model = build(spec, x.shape[1:], 3, seeds=[seed])
    params = list(model.parameters())
    xb, yb = torch.from_numpy(x)[None], torch.from_numpy(y)

    def grads():
        return torch.autograd.grad(F.cross_entropy(model(xb)[0], yb), params)

    g = grads()
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / (norm + 1e-12))
    return [gi.reshape(-1) for gi in grads()], [gi.reshape(-1) for gi in g]


@pytest.mark.parametrize("seeds", [(7,), (7, 8)])
def test_sam_uses_the_gradient_at_each_models_own_ascent_point(seeds):
    x, y = tiny_problem((6,))
    _, model, _, objective = make_state("mlp:8", x, y, "sam:rho=0.5", seeds=seeds)
    weights = [p.detach().clone() for p in model.parameters()]
    idx = two_batches()[:len(seeds)]
    idx_t = torch.from_numpy(idx)
    objective(torch.from_numpy(x)[idx_t], torch.from_numpy(y)[idx_t], idx_t)
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(p.detach(), w)  # restored exactly
    k = len(seeds)
    for m, s in enumerate(seeds):
        want, plain = sam_reference("mlp:8", s, x[idx[m]], y[idx[m]], 0.5)
        got = [per_model(p.grad, k)[m] for p in model.parameters()]
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        assert not all(torch.allclose(a, b) for a, b in zip(got, plain))


# ------------------------------------------------------------------ K models together equal each alone

CHEAP = ["mixup:alpha=0.4", "elr", "pskd", "gce", "sce", "sam:rho=0.2"]


@pytest.mark.parametrize("text", CHEAP)
def test_mlp_models_together_equal_each_alone(text):
    x, y = tiny_problem(FAMILIES["mlp"][1])
    assert_together_equals_alone(FAMILIES["mlp"][0], x, y, text)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"mlp"}))
@pytest.mark.parametrize("text", ["mixup:alpha=0.4", "sam:rho=0.2"])
def test_other_families_together_equal_each_alone(family, text):
    spec, shape = FAMILIES[family]
    x, y = tiny_problem(shape)
    assert_together_equals_alone(spec, x, y, text)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("text, expected", [
    ("mixup:alpha=0", "mixup:alpha: expected a value in (0, inf), got 0"),
    ("mixup:beta=1", "mixup:beta: expected a hyperparameter of mixup (alpha), got unknown 'beta'"),
    ("elr:lambda=0", "elr:lambda: expected a value in (0, 100], got 0"),
    ("elr:beta=1", "elr:beta: expected a value in [0, 1), got 1"),
    ("pskd:alpha_T=1.5", "pskd:alpha_T: expected a value in (0, 1], got 1.5"),
    ("gce:q=0", "gce:q: expected a value in (0, 1], got 0"),
    ("sce:A=0", "sce:A: expected a value in [-100, 0), got 0"),
    ("sce:alpha=-1", "sce:alpha: expected a value in [0, 100], got -1"),
    ("sam:rho=-0.1", "sam:rho: expected a value in (0, inf), got -0.1"),
    ("sam:radius=1", "sam:radius: expected a hyperparameter of sam (rho), got unknown 'radius'"),
    ("gce+sce", "regularizers: expected at most one loss part, got gce and sce"),
])
def test_bad_hyperparameters_are_one_line_config_errors(text, expected):
    with pytest.raises(ConfigError) as err:
        TrainConfig(regularizers=text)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
