"""The sanity checks of saliency maps (Adebayo et al. 2018, "Sanity checks for saliency maps"), on any module.

Two tests of whether a saliency method depends on what the model learned:

1. **Cascading model-parameter randomization.** The model's layers with
   parameters are re-drawn one at a time from the top: the output layer first,
   then the one below it, down to the first layer. Depth ``d`` is the model
   with its top ``d`` layers re-drawn (depth 0: the trained model; the last
   depth: every layer re-drawn). Each layer's new parameters depend only on
   ``(seed, layer name)`` (:func:`fitscope.seeding.derive_seed`), so every depth
   shares the draws of the depth before it and adds one layer. A method whose
   maps stay similar to the trained model's as layers are randomized does not
   explain the model.
2. **Data randomization.** The same architecture retrained on labels permuted
   at random (:func:`random_labels`): it can only memorize, so maps that stay
   similar to the real model's do not explain what it learned
   (:func:`retrain_on_random_labels`).

Layers: by default the leaf modules that hold parameters of their own
(``Conv2d``, ``Linear``, a normalization's affine parameters...), in the order
the module registers them, which for a sequential network is the forward
order; :func:`cascade_layers` reverses it (top first). A different order or
grouping is passed as ``layers`` (module names, top first).

Re-drawing a layer: its ``reset_parameters()`` (torch's default initialisation
of that layer, the distribution the model started from) under torch's
generator seeded for the layer, in a forked RNG; a normalization layer's reset
sets its scale to 1 and shift to 0. A module without ``reset_parameters`` has
each parameter re-drawn from a normal distribution with the standard deviation
the parameter has now (1 where it is constant).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.explain.saliency import METHODS, saliency_maps
from fitscope.seeding import derive_seed
from fitscope.validation import check_choice, check_seed, message


def cascade_layers(model: nn.Module) -> list[str]:
    """Names of the modules with parameters of their own, top (output) first: the order of the cascade."""
    names = [name for name, module in model.named_modules()
             if name and any(True for _ in module.parameters(recurse=False))]
    return names[::-1]


def _check_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """``layers`` (top first) checked against the model's modules; None: :func:`cascade_layers`."""
    if layers is None:
        names = cascade_layers(model)
    else:
        names = list(layers)
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules or not any(True for _ in modules[name].parameters()):
                raise ConfigError(message("layers", "names of modules with parameters of the model "
                                          f"({', '.join(cascade_layers(model))})", repr(name)))
        if len(set(names)) != len(names):
            raise ConfigError(message("layers", "distinct module names", repr(names)))
    if not names:
        raise ConfigError(message("model", "a module with parameters to randomize", "no parameters"))
    return names


def redraw_layer(module: nn.Module, *, seed: int) -> None:
    """Re-draw the parameters of ``module`` in place from its own initialisation, under torch's RNG seeded ``seed``."""
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for p in module.parameters():
                    std = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
                    p.copy_(torch.randn(p.shape, dtype=p.dtype) * std)


def cascading_models(model: nn.Module, *, layers: Sequence[str] | None = None,
                     seed: int) -> Iterator[tuple[int, list[str], nn.Module]]:
    """The cascade: ``(depth, layers re-drawn so far (top first), model)`` for depth 0 to the number of layers.

    Depth 0 yields a copy of ``model`` unchanged; depth ``d`` a copy with the top
    ``d`` layers of ``layers`` re-drawn, layer ``name`` from
    ``derive_seed(seed, "layer", name)``. ``model`` itself is never changed; one
    copy is made and randomized one more layer per step, so each yielded model
    is only valid until the next step (copy it to keep it).
    """
    seed = check_seed(seed)
    names = _check_layers(model, layers)
    current = copy.deepcopy(model).eval()
    modules = dict(current.named_modules())
    yield 0, [], current
    for depth, name in enumerate(names, 1):
        redraw_layer(modules[name], seed=derive_seed(seed, "layer", name))
        yield depth, names[:depth], current


@dataclass
class CascadeMaps:
    """The saliency maps of a cascading randomization (:func:`cascading_randomization`).

    Attributes:
        layers: the layers in cascade order (top first); depth ``d`` has the first ``d`` re-drawn.
        maps: ``{method: (depths, n, *input_shape)}`` float32, depth 0 the trained model.
        accuracy: ``(depths,)`` accuracy on ``(x, labels)`` at each depth (NaN without labels).
    """

    layers: list[str]
    maps: dict[str, np.ndarray]
    accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))


def cascading_randomization(model: nn.Module, x, target, *, methods: Sequence[str] = METHODS,
                            layers: Sequence[str] | None = None, labels=None, seed: int,
                            progress: Callable[[int], None] | None = None, **options) -> CascadeMaps:
    """Saliency maps of every method at every depth of the cascade (Adebayo et al. 2018, section 3).

    Args:
        model: the trained classifier ``(n, *input_shape) -> (n, C)``; not changed.
        x: ``(n, *input_shape)`` inputs whose maps are compared.
        target: the class explained at every depth (one int or ``(n,)``; the
            true or the trained model's predicted class, kept fixed).
        methods: saliency methods (:data:`fitscope.explain.saliency.METHODS`).
        layers: module names, top first; None: :func:`cascade_layers`.
        labels: optional ``(n,)`` labels of ``x`` for the accuracy at each depth.
        seed: the layers' new parameters (and SmoothGrad's noise, the same at every depth).
        progress: called with the depth after each depth's maps.
        options: :func:`fitscope.explain.saliency.saliency_maps`'s options.

    Returns:
        A :class:`CascadeMaps`.
    """
    methods = [check_choice(m, "methods", METHODS) for m in methods]
    names = _check_layers(model, layers)
    out: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    accuracy = []
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    for depth, _, current in cascading_models(model, layers=names, seed=seed):
        for m in methods:
            out[m].append(saliency_maps(current, xt, target, method=m,
                                        seed=derive_seed(seed, "smoothgrad"), **options))
        if labels is not None:
            with torch.no_grad():
                predicted = current(xt.to(next(current.parameters()).device)).argmax(1).cpu().numpy()
            accuracy.append(float((predicted == np.asarray(labels)).mean()))
        else:
            accuracy.append(float("nan"))
        if progress is not None:
            progress(depth)
    return CascadeMaps(layers=names, maps={m: np.stack(v) for m, v in out.items()},
                       accuracy=np.asarray(accuracy))


def random_labels(y, *, seed: int) -> np.ndarray:
    """The labels ``y`` ``(n,)`` permuted at random (Adebayo et al.'s data randomization: same label counts)."""
    y = np.asarray(y)
    return y[np.random.default_rng(check_seed(seed)).permutation(len(y))]


def retrain_on_random_labels(model: nn.Module, x_train, y_train, *, epochs: int, seed: int, batch_size: int = 64,
                             lr: float = 0.05, momentum: float = 0.9, x_test=None, y_test=None, progress=None,
                             device: str | None = None):
    """Train ``model`` (a fresh, untrained module; trained in place) on ``x_train`` with randomly permuted labels.

    The data randomization test: the model can only memorize the permuted
    labels. Training is :func:`fitscope.train.plain_models.train_plain`
    (minibatch SGD on cross-entropy), labels from ``random_labels(y_train,
    seed=derive_seed(seed, "labels"))``, batches from ``derive_seed(seed, "batches")``;
    ``x_test``, ``y_test`` (true labels) are only measured.

    Returns:
        ``(result, permuted labels)``: the
        :class:`~fitscope.train.plain_models.PlainTrainResult` and the labels it was trained on.
    """
    from fitscope.train.plain_models import train_plain

    seed = check_seed(seed)
    permuted = random_labels(y_train, seed=derive_seed(seed, "labels"))
    result = train_plain(model, x_train, permuted, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         seed=derive_seed(seed, "batches"), x_test=x_test, y_test=y_test, progress=progress,
                         device=device)
    return result, permuted
