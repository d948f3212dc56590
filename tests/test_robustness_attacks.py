"""Evasion attacks on a user's own module (fitscope.robustness.attacks).

References: the Adversarial Robustness Toolbox's PGD on the same tiny model (ours at least as strong); the
optimal L-inf perturbation of a linear classifier by formula; the L0 projection by brute force over supports.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.robustness import (
    l0_pixel_attack, l0_projection, margin, patch_attack, pgd_attack, pixel_count, robust_accuracy,
)


def _blobs(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.uniform(0.2, 0.8, size=(3, d))
    x = np.clip(centers[y] + rng.normal(scale=0.12, size=(n, d)), 0, 1).astype(np.float32)
    return x, y.astype(np.int64)


def _tiny_net(x, y, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def tiny():
    x, y = _blobs()
    return _tiny_net(x, y), x, y


@pytest.mark.parametrize("norm, eps", [("inf", 0.08), ("2", 0.25)])
def test_our_pgd_is_at_least_as_strong_as_art(tiny, norm, eps):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    net, x, y = tiny
    clf = PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=(x.shape[1],), nb_classes=3,
                            clip_values=(0.0, 1.0))
    # 4 random starts on both sides: with 2, either side's worst case still moved by 1-4 of the 300 rows from one
    # draw to the next (measured over 8 seeds); ART draws its starts from NumPy's global generator, seeded here
    np.random.seed(0)
    art = ProjectedGradientDescentPyTorch(clf, norm=np.inf if norm == "inf" else 2, eps=eps, eps_step=eps / 4,
                                          max_iter=20, num_random_init=4, batch_size=512, verbose=False)
    art_acc = float((clf.predict(art.generate(x=x, y=y)).argmax(1) == y).mean())
    ours = robust_accuracy(net, x, y, attack="pgd", eps=eps, norm=norm, steps=20, step_size=eps / 4, restarts=4,
                           low=0.0, high=1.0, seed=0, keep_inputs=True)
    clean = float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert ours.clean_accuracy == pytest.approx(clean)
    assert 0.05 < art_acc < clean - 0.1  # the attack bites, so the comparison means something
    assert ours.accuracy <= art_acc + 0.01, (ours.accuracy, art_acc)
    delta = ours.x_adv - x
    if norm == "inf":
        assert np.abs(delta).max() <= eps + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= eps + 1e-5
    assert ours.x_adv.min() >= 0 and ours.x_adv.max() <= 1


def test_pgd_attack_on_a_linear_classifier_moves_by_eps_sign_w():
    # two classes, logits (0, w.x + b): the best L-inf attack on class 1 rows moves x by -eps sign(w)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(4), w]))
        lin.bias.zero_()
    x = np.full((3, 4), 0.5, np.float32)
    y = np.ones(3, np.int64)
    adv = pgd_attack(lin, x, y, eps=0.1, steps=4, step_size=0.05, low=0.0, high=1.0, seed=0)
    np.testing.assert_allclose(adv, x - 0.1 * np.sign(w.numpy()), atol=1e-6)


def test_restarts_never_weaken_the_attack(tiny):
    net, x, y = tiny
    one = robust_accuracy(net, x, y, eps=0.06, steps=5, restarts=1, low=0.0, high=1.0, seed=3)
    three = robust_accuracy(net, x, y, eps=0.06, steps=5, restarts=3, low=0.0, high=1.0, seed=3)
    # restart 0 of the three-restart run is the one-restart run (same stream): a row broken there stays broken
    assert not np.any(three.correct & ~one.correct)
    assert three.accuracy <= one.accuracy


def test_margin_is_positive_exactly_when_misclassified():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 5.0]])
    y = torch.tensor([0, 0, 2])
    torch.testing.assert_close(margin(logits, y), torch.tensor([-2.0, 2.0, -4.0]))


def test_l0_projection_is_the_brute_force_projection():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(size=(4, 1, 3, 2)))  # 6 pixels
    v = torch.from_numpy(rng.normal(scale=0.8, size=(4, 1, 3, 2)))
    got = l0_projection(v, x, pixels=2, low=0.0, high=1.0)
    for i in range(4):
        best, best_d = None, np.inf
        for support in itertools.combinations(range(6), 2):
            cand = torch.zeros(6, dtype=v.dtype)
            for p in support:
                cand[p] = (x[i].flatten()[p] + v[i].flatten()[p]).clamp(0, 1) - x[i].flatten()[p]
            dist = float(((cand - v[i].flatten()) ** 2).sum())
            if dist < best_d:
                best, best_d = cand, dist
        torch.testing.assert_close(got[i].flatten(), best)


def test_l0_attack_changes_at_most_k_pixels_and_hurts(tiny):
    net, x, y = tiny
    for k in (1, 3):
        adv = l0_pixel_attack(net, x, y, pixels=k, steps=10, low=0.0, high=1.0, seed=0)
        changed = (np.abs(adv - x) > 0).sum(axis=1)
        assert changed.max() <= k
        assert adv.min() >= 0 and adv.max() <= 1
    res = robust_accuracy(net, x, y, attack="l0", pixels=3, steps=10, low=0.0, high=1.0, seed=0)
    assert res.accuracy < res.clean_accuracy - 0.1


def test_patch_attack_changes_only_one_square_patch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(20, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    adv = patch_attack(net, x, y, size=2, steps=3, low=0.0, high=1.0, seed=0)
    for a, b in zip(adv, x):
        rows, cols = np.nonzero(np.abs(a - b)[0] > 0)
        if len(rows):
            assert rows.max() - rows.min() <= 1 and cols.max() - cols.min() <= 1
    assert pixel_count((1, 6, 6)) == 36 and pixel_count((1, 40)) == 40 and pixel_count((64,)) == 64


@pytest.mark.parametrize("call, text", [
    (dict(attack="fgsm"), "attack: expected one of pgd, l0, patch"),
    (dict(attack="pgd", eps=0.1, norm="1"), "norm: expected inf or 2"),
    (dict(attack="pgd", eps=-0.1), "eps: expected a number in [0, inf)"),
    (dict(attack="pgd", eps=1.5, low=0.0, high=1.0), "eps: expected a radius in [0, 1]"),
    (dict(attack="pgd", eps=0.1, steps=0), "steps: expected an integer >= 1"),
    (dict(attack="l0", pixels=9), "pixels: expected an integer in [1, 8]"),
])
def test_bad_settings_are_one_line_errors(tiny, call, text):
    net, x, y = tiny
    with pytest.raises(ConfigError) as info:
        robust_accuracy(net, x[:4], y[:4], seed=0, **call)
    assert text in str(info.value) and "\n" not in str(info.value)
