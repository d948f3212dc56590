"""Pruning as differential privacy (Huang, Su, Wang, Li, Zhang, Liu 2020): prune a layer vs noise on it.

Huang et al. show that magnitude-pruning a layer's weights perturbs that
layer's output activations like added noise, and so gives a (local)
differential-privacy guarantee on them. This module compares the two
defenses empirically on one trained model: prune a fraction of one layer's
weights, or add Gaussian noise ``N(0, sigma^2)`` to the same layer's outputs
at inference, with ``sigma`` chosen so both have the same test accuracy
(equal utility), and measure each one's membership-inference leakage.

Notation: n training rows (the members), C classes; ``layer`` is the name
of a weight layer of a :class:`~fitscope.train.plain_models.PlainNet`
(``"fc2"``; by default ``model.hidden_layer``, the last hidden layer).

Leakage is the loss-threshold attack (Yeom et al. 2018) of
:mod:`fitscope.estimators.membership`: the score ``log p_y`` of each example
under the defended model, its ROC AUC and TPR at 1% FPR separating members
(the half of the training split the model was trained on) from non-members
(the other half). LiRA is not run here: it would need every shadow model
pruned / noised the same way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from fitscope.errors import ConfigError
from fitscope.estimators.membership import (
    lira_leave_one_out,
    lira_score,
    loss_threshold_scores,
    membership_metrics,
)
from fitscope.models import build_plain
from fitscope.seeding import derive_seed
from fitscope.train.device import placement_device
from fitscope.train.plain_models import accuracy, check_train_arrays, predict_plain, train_plain
from fitscope.validation import check_fraction, check_int, check_number, check_seed, message

__all__ = ["PruningVsNoise", "activation_std", "match_utility", "noisy_accuracy", "noisy_activations",
           "prune_layer", "pruning_vs_noise"]


def _layer(model: nn.Module, layer: str) -> nn.Module:
    try:
        module = model.get_submodule(layer)
    except (AttributeError, TypeError):
        names = [n for n, m in model.named_modules() if hasattr(m, "weight")]
        raise ConfigError(f"layer: expected the name of a layer of the model ({', '.join(names)}), "
                          f"got {layer!r}") from None
    return module


def _check_sigma(sigma) -> float:
    """A noise standard deviation: a finite number >= 0."""
    return check_number(sigma, "sigma", low=0.0, high=math.inf, open_high=True)


def prune_layer(model: nn.Module, layer: str, fraction: float) -> nn.Module:
    """A copy of ``model`` with the smallest-magnitude ``fraction`` of ``layer``'s weights set to 0.

    Uses ``torch.nn.utils.prune.l1_unstructured`` on the layer's ``weight``
    (biases are kept), then makes the mask permanent. ``model`` is not changed.

    Args:
        model: a trained module.
        layer: name of a layer with a ``weight`` (``model.get_submodule(layer)``).
        fraction: share of that layer's weights to zero, in [0, 1].

    Returns:
        The pruned copy (eval mode).

    Raises:
        ConfigError: an unknown layer, a layer without weights, a fraction outside [0, 1].
    """
    fraction = check_fraction(fraction, "fraction")
    pruned = copy.deepcopy(model)
    module = _layer(pruned, layer)
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise ConfigError(f"layer: expected a layer with weights (Linear, Conv), got {layer!r} "
                          f"({type(module).__name__})")
    prune.l1_unstructured(module, "weight", amount=fraction)
    prune.remove(module, "weight")
    return pruned.eval()


class _GaussianNoise:
    """Forward hook adding ``N(0, sigma^2)`` noise, drawn from its own seeded generator, to a layer's output."""

    def __init__(self, sigma: float, *, seed: int) -> None:
        self.sigma = sigma
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(output.shape, generator=self.generator, dtype=output.dtype)
        return output + self.sigma * noise.to(output.device)


def noisy_activations(model: nn.Module, layer: str, sigma: float, *, seed: int) -> nn.Module:
    """A copy of ``model`` that adds ``N(0, sigma^2)`` noise to ``layer``'s outputs on every forward pass.

    The noise is drawn in training and in eval mode alike (a forward hook),
    from a ``torch.Generator`` seeded with ``seed``: the same sequence of
    calls on a fresh copy gives the same outputs. ``model`` is not changed.

    Args:
        model: a trained module.
        layer: name of the layer whose output gets the noise.
        sigma: noise standard deviation (absolute, in the layer's output units), >= 0.
        seed: seed of the noise generator.

    Returns:
        The noisy copy (eval mode).
    """
    sigma = _check_sigma(sigma)
    seed = check_seed(seed)
    noisy = copy.deepcopy(model)
    _layer(noisy, layer).register_forward_hook(_GaussianNoise(sigma, seed=seed))
    return noisy.eval()


@torch.no_grad()
def activation_std(model: nn.Module, layer: str, x, *, device: str | None = None) -> float:
    """Standard deviation of ``layer``'s output values over inputs ``x`` ``(n, *input_shape)`` (eval mode).

    ``device``: torch device; None: the placement's, see :mod:`fitscope.train.device` (the model is moved there).
    """
    values: list[torch.Tensor] = []
    handle = _layer(model, layer).register_forward_hook(lambda m, i, o: values.append(o.detach().flatten()))
    try:
        predict_plain(model, x, device=placement_device(device))
    finally:
        handle.remove()
    return float(torch.cat(values).std())


def noisy_accuracy(model: nn.Module, layer: str, sigma: float, x, y, *, seed: int, repeats: int = 5,
                   device: str | None = None) -> float:
    """Mean accuracy on ``(x, y)`` over ``repeats`` independent noise draws on ``layer`` (one seeded stream).

    Averaging over draws estimates the expected accuracy under the noise,
    which moves smoothly with sigma (one draw flips single test rows at random).
    ``device``: torch device; None: the placement's, see :mod:`fitscope.train.device`.
    The noise is drawn on the CPU: the same on every device.
    """
    dev = placement_device(device)
    noisy = noisy_activations(model, layer, sigma, seed=seed)
    return float(np.mean([accuracy(predict_plain(noisy, x, device=dev), y) for _ in range(repeats)]))


def match_utility(model: nn.Module, layer: str, target_acc: float, x, y, *, seed: int, repeats: int = 5,
                  iterations: int = 20, device: str | None = None) -> float:
    """The noise ``sigma`` on ``layer``'s outputs at which the expected accuracy on ``(x, y)`` falls to ``target_acc``.

    Bisection on sigma for the boundary where :func:`noisy_accuracy` (mean over
    ``repeats`` draws, noise seed fixed, so it is a deterministic function of
    sigma: the draws are ``sigma`` times the same standard normals) crosses
    ``target_acc``; returns the lower end, whose accuracy is >= ``target_acc``.
    The bracket starts at ``[0, 0.1 * activation std]`` and doubles its upper
    end until the accuracy falls below the target.

    Args:
        model: a trained module.
        layer: the noisy layer's name.
        target_acc: accuracy to match (e.g. the pruned model's test accuracy).
        x: ``(n, *input_shape)`` evaluation inputs.
        y: ``(n,)`` labels.
        seed: noise seed, the same one the caller evaluates with.
        repeats: noise draws averaged per accuracy.
        iterations: bisection steps after bracketing.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.

    Returns:
        sigma (0.0 when even the noise-free model is below ``target_acc``).
    """
    seed = check_seed(seed)
    dev = placement_device(device)

    def acc(sigma: float) -> float:
        return noisy_accuracy(model, layer, sigma, x, y, seed=seed, repeats=repeats, device=dev)

    if acc(0.0) < target_acc:
        return 0.0
    lo, hi = 0.0, 0.1 * max(activation_std(model, layer, x, device=dev), 1e-6)
    for _ in range(40):
        if acc(hi) < target_acc:
            break
        lo, hi = hi, 2 * hi
    else:
        return hi  # accuracy never dropped: the target is at or below what pure noise gives
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if acc(mid) >= target_acc:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class PruningVsNoise:
    """The table :func:`pruning_vs_noise` returns, one row per pruning fraction.

    Attributes:
        rows: dicts with ``fraction``, ``pruned_test_acc``, ``pruned_auc``,
            ``pruned_tpr_at_1pct``, ``sigma`` (matched), ``sigma_rel`` (sigma /
            the layer's activation std on the members), ``noisy_test_acc``
            (mean over the noise draws),
            ``noisy_auc``, ``noisy_tpr_at_1pct``.
        baseline: ``dict(test_acc, train_acc, auc, tpr_at_1pct)`` of the undefended model.
        spec: model spec; layer: the layer defended; attack: ``"loss-threshold"``.
        members: members (= training rows of the target model); non_members: held-out rows scored.
        seed: the seed of the whole study.
    """

    rows: list[dict]
    baseline: dict
    spec: str
    layer: str
    members: int
    non_members: int
    seed: int
    attack: str = "loss-threshold"
    config: dict = field(default_factory=dict)

    def to_frame(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def _leak(logits_in, y_in, logits_out, y_out) -> tuple[float, float]:
    scores = np.concatenate([loss_threshold_scores(logits_in, y_in), loss_threshold_scores(logits_out, y_out)])
    truth = np.concatenate([np.ones(len(y_in), bool), np.zeros(len(y_out), bool)])
    m = membership_metrics(scores, truth)
    return m.auc, m.tpr_at_1pct


def pruning_vs_noise(
    x,
    y,
    x_test,
    y_test,
    *,
    spec: str = "mlp:256x2",
    layer: str | None = None,
    fractions=(0.5, 0.8, 0.9, 0.95, 0.98),
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 0.05,
    repeats: int = 5,
    models: int = 0,
    seed: int = 0,
    device: str | None = None,
) -> PruningVsNoise:
    """Pruning vs Gaussian activation noise at equal test accuracy, with membership-inference AUC of each.

    The training split ``(x, y)`` is halved at random (``seed``): a model of
    ``spec`` is trained to overfit on one half (the members) and the other
    half are the non-members. For each pruning fraction: prune ``layer``,
    measure test accuracy and the loss-threshold attack; then find the noise
    sigma on ``layer`` with the same expected test accuracy
    (:func:`match_utility`, mean over ``repeats`` draws of one seeded noise
    stream) and measure the attack on the noisy model (one query per example).

    With ``models = K >= 5``, LiRA is run too: K more models of the
    same recipe, each on its own random half of ``(x, y)``, each pruned (and,
    separately, noised at its own matched sigma) exactly like the target;
    every one in turn is the target and the others its shadows (online,
    pooled variance, :func:`~fitscope.estimators.membership.lira_leave_one_out`),
    so the attacker knows the defense. Columns ``pruned_lira_auc``,
    ``noisy_lira_auc`` (and their TPR at 1% FPR) are added.

    Args:
        x: ``(n, *input_shape)`` training inputs (half become members).
        y: ``(n,)`` labels.
        x_test: ``(n_test, *input_shape)`` test inputs (utility, and the matching).
        y_test: ``(n_test,)`` test labels.
        spec: plain model spec (``mlp``/``cnn``/``cnn1d``).
        layer: layer to prune / perturb; default the model's last hidden layer.
        fractions: pruning fractions in [0, 1].
        epochs, batch_size, lr: training of the target model (SGD, momentum 0.9).
        repeats: noise draws averaged for the noisy model's test accuracy (and the matching).
        models: 0 (loss threshold only) or K >= 5 models for LiRA.
        seed: fixes the member split, the model, its training and the noise.
        device: torch device; None: the placement's, see :mod:`fitscope.train.device`.
            Every model trains and predicts there; batch orders and noise are
            drawn on the CPU (the same on every device).

    Returns:
        A :class:`PruningVsNoise` table.
    """
    seed = check_seed(seed)
    dev = placement_device(device)
    x, y, x_test, y_test, n_classes = check_train_arrays(x, y, x_test, y_test, None)
    if x_test is None:
        raise ConfigError(message("x_test", "test inputs (with y_test): the noise is matched to the pruned "
                                  "model's test accuracy", "None"))
    if len(x) < 4:
        raise ConfigError(message("x", "at least 4 training rows (half of them members)", str(len(x))))
    fractions = [check_fraction(f, f"fractions[{i}]") for i, f in enumerate(fractions)]
    models = check_int(models, "models", low=0)
    if 0 < models < 5:
        raise ConfigError(message("models", "0 (no LiRA) or an integer >= 5 (LiRA's leave-one-model-out "
                                  "on random halves needs 2 'in' and 2 'out' models per example on average)",
                                  str(models)))
    order = np.random.default_rng(derive_seed(seed, "members")).permutation(len(x))
    inside, outside = np.sort(order[: len(x) // 2]), np.sort(order[len(x) // 2:])
    model = build_plain(spec, x.shape[1:], n_classes, seed=derive_seed(seed, "init"))
    fit = train_plain(model, x[inside], y[inside], epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=derive_seed(seed, "train"), x_test=x_test, y_test=y_test, device=dev)
    model = fit.model.eval()
    layer = layer or getattr(model, "hidden_layer", None)
    if layer is None:
        raise ConfigError(message("layer", "a layer name (the model names no hidden layer)", "None"))
    _layer(model, layer)
    noise_seed = derive_seed(seed, "noise")
    scale = activation_std(model, layer, x[inside], device=dev)

    def evaluate(m: nn.Module) -> tuple[float, float, float]:
        # logits of the rows in a fixed order, so a noisy copy's draws are the same for every evaluation
        acc = accuracy(predict_plain(m, x_test, device=dev), y_test)
        auc, tpr = _leak(predict_plain(m, x[inside], device=dev), y[inside],
                         predict_plain(m, x[outside], device=dev), y[outside])
        return acc, auc, tpr

    base_acc, base_auc, base_tpr = evaluate(model)
    rows = []
    for fraction in fractions:
        p_acc, p_auc, p_tpr = evaluate(prune_layer(model, layer, fraction))
        sigma = match_utility(model, layer, p_acc, x_test, y_test, seed=noise_seed, repeats=repeats, device=dev)
        n_acc = noisy_accuracy(model, layer, sigma, x_test, y_test, seed=noise_seed, repeats=repeats, device=dev)
        # the attacker queries the noisy model once per example
        _, n_auc, n_tpr = evaluate(noisy_activations(model, layer, sigma, seed=derive_seed(noise_seed, "attack")))
        rows.append(dict(fraction=fraction, pruned_test_acc=p_acc, pruned_auc=p_auc, pruned_tpr_at_1pct=p_tpr,
                         sigma=sigma, sigma_rel=sigma / scale if scale > 0 else math.nan, noisy_test_acc=n_acc,
                         noisy_auc=n_auc, noisy_tpr_at_1pct=n_tpr))
    baseline = dict(test_acc=base_acc, train_acc=float(fit.train_acc[-1]), auc=base_auc, tpr_at_1pct=base_tpr)
    if models:
        lira = _lira_columns(x, y, x_test, y_test, spec, layer, fractions, int(models), n_classes,
                             dict(epochs=epochs, batch_size=batch_size, lr=lr, device=dev), repeats, seed)
        baseline.update(lira.pop("baseline"))
        for row, extra in zip(rows, lira["rows"]):
            row.update(extra)
    return PruningVsNoise(
        rows=rows,
        baseline=baseline,
        spec=str(model.spec), layer=layer, members=len(inside), non_members=len(outside), seed=seed,
        config=dict(epochs=epochs, batch_size=batch_size, lr=lr, fractions=fractions, repeats=repeats,
                    models=int(models)),
    )


def _lira_columns(x, y, x_test, y_test, spec, layer, fractions, k, n_classes, recipe, repeats, seed) -> dict:
    """LiRA AUC / TPR at 1% FPR of k models (random halves), undefended, pruned and noised (see pruning_vs_noise).

    ``recipe``: the keywords of :func:`train_plain`, ``device`` (resolved) among them.
    """
    dev = recipe["device"]
    rng = np.random.default_rng(derive_seed(seed, "shadow-split"))
    in_mask = np.zeros((k, len(x)), bool)
    for i in range(k):
        in_mask[i, rng.permutation(len(x))[: len(x) // 2]] = True
    models = []
    for i in range(k):
        m = build_plain(spec, x.shape[1:], n_classes, seed=derive_seed(seed, "shadow-init", i))
        models.append(train_plain(m, x[in_mask[i]], y[in_mask[i]], seed=derive_seed(seed, "shadow-train", i),
                                  **recipe).model.eval())

    def lira(logits: list[np.ndarray]) -> tuple[float, float]:
        scores = lira_leave_one_out(lira_score(np.stack(logits), y), in_mask, method="online", global_variance=True)
        m = membership_metrics(scores, in_mask)
        return m.auc, m.tpr_at_1pct

    auc, tpr = lira([predict_plain(m, x, device=dev) for m in models])
    rows = []
    for fraction in fractions:
        pruned, noisy = [], []
        for i, m in enumerate(models):
            p = prune_layer(m, layer, fraction)
            pruned.append(predict_plain(p, x, device=dev))
            noise_seed = derive_seed(seed, "shadow-noise", i)
            sigma = match_utility(m, layer, accuracy(predict_plain(p, x_test, device=dev), y_test), x_test, y_test,
                                  seed=noise_seed, repeats=repeats, device=dev)
            noisy_model = noisy_activations(m, layer, sigma, seed=derive_seed(noise_seed, "attack"))
            noisy.append(predict_plain(noisy_model, x, device=dev))
        p_auc, p_tpr = lira(pruned)
        n_auc, n_tpr = lira(noisy)
        rows.append(dict(pruned_lira_auc=p_auc, pruned_lira_tpr_at_1pct=p_tpr, noisy_lira_auc=n_auc,
                         noisy_lira_tpr_at_1pct=n_tpr))
    return dict(baseline=dict(lira_auc=auc, lira_tpr_at_1pct=tpr), rows=rows)
