"""Are all layers created equal? Re-initialisation and re-randomisation robustness of each layer of a trained model.

Zhang, Bengio and Singer 2019 ("Are all layers created equal?") take a trained
network and, for one layer at a time, put that layer's parameters back where
they were at an earlier checkpoint (epoch 0 is the initialisation: *re-initialisation*)
or replace them by a fresh draw from the initialisation distribution
(*re-randomisation*), leave every other layer trained, and measure the test
error. A layer is *robust* when re-initialising it barely changes the error,
*critical* when it destroys it; in fully connected nets the first layer is
critical and the later ones robust.

Notation: a model with layers ``l = 1..L`` (:func:`layer_groups`), checkpoints
at epochs ``e_1 < ... < e_E`` (a ``state_dict`` each), ``theta_l`` the
parameters of layer ``l``.

- **A layer** (:func:`layer_groups`) is a module with parameters of its own (a
  linear or convolutional layer) together with the normalisation layers that
  directly follow it (their affine scale and shift belong to the layer they
  normalise), or a whole residual block (a module whose class name ends in
  ``Block`` or ``Bottleneck``, or one named in ``blocks=``): the paper treats a
  residual block as one layer of a ResNet.
- **Batch-norm statistics.** Only *parameters* are reset. Buffers (batch
  norm's running mean and variance) keep their trained values, as in the paper,
  so that the network evaluates in eval mode exactly as trained except for the
  reset parameters; :func:`reinitialize` can copy the buffers too (``buffers=True``).
- **Re-randomisation** (:func:`rerandomize`) draws the layer's parameters again
  from the initialisation distribution with a seed: by default each module's
  own ``reset_parameters()`` (torch's default initialisation for ``nn.Linear``,
  ``nn.Conv2d``, ``nn.BatchNorm2d`` ...) under a forked, seeded torch RNG, or,
  for models whose layers have no ``reset_parameters`` (fitscope's ensembles),
  the layer's parameters of a freshly built model (``fresh(seed)``).
- :func:`layer_robustness` runs the whole grid (every layer x every
  checkpoint, and one re-randomisation per layer) on any ``torch.nn.Module``
  with the caller's ``evaluate(model) -> error``, restores the trained
  parameters after every measurement, and returns a :class:`LayerRobustness`.

No library does this grid (the paper's code is not a package), so the loops
here are written by hand; each reset is a plain ``copy_`` of parameter tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.seeding import derive_seed
from fitscope.validation import check_seed, message

#: normalisation modules: their parameters join the layer they follow
NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: class-name endings of residual blocks, each kept whole as one layer
BLOCK_SUFFIXES = ("Block", "Bottleneck")


@dataclass(frozen=True)
class LayerGroup:
    """One layer of a model, as :func:`layer_groups` defines it.

    Attributes:
        name: the name of its first module (``"fc1"``, ``"net.blocks.0"``).
        modules: the names of its modules (a weight layer and the norms that follow it, or one block).
        parameters: the names of its parameters, as in ``model.named_parameters()``.
        size: how many numbers its parameters hold.
    """

    name: str
    modules: tuple[str, ...]
    parameters: tuple[str, ...]
    size: int


def _is_block(name: str, module: nn.Module, blocks: Sequence[str] | None) -> bool:
    if blocks is not None:
        return name in blocks
    return type(module).__name__.endswith(BLOCK_SUFFIXES)


def layer_groups(model: nn.Module, *, blocks: Sequence[str] | None = None) -> list[LayerGroup]:
    """The layers of ``model`` in the order its modules are registered (input to output for a sequential net).

    Args:
        model: any module.
        blocks: names of modules to keep whole as one layer each (residual
            blocks); None: every module whose class name ends in ``Block`` or
            ``Bottleneck`` (fitscope's and torchvision's ResNet blocks).

    Returns:
        One :class:`LayerGroup` per layer; every trainable parameter belongs to exactly one.
        A weight layer (any module with parameters of its own that is not a
        normalisation) starts a layer; a normalisation module joins the layer
        before it (one with no layer before it is a layer of its own).

    Raises:
        ConfigError: a name in ``blocks`` that is not a module of the model; a model without parameters.
    """
    modules = dict(model.named_modules())
    if blocks is not None:
        missing = [b for b in blocks if b not in modules]
        if missing:
            raise ConfigError(message("blocks", "names of modules of the model", repr(missing[0])))
    groups: list[dict] = []
    inside: str | None = None  # the block whose descendants are skipped
    for name, module in modules.items():
        if inside is not None and name.startswith(inside + "."):
            continue
        inside = None
        if name and _is_block(name, module, blocks):
            params = [f"{name}.{n}" for n, p in module.named_parameters() if p.requires_grad]
            if params:
                groups.append(dict(name=name, modules=[name], parameters=params, block=True))
            inside = name
            continue
        own = [f"{name}.{n}" if name else n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, NORM_TYPES) and groups and not groups[-1]["block"]:
            groups[-1]["modules"].append(name)
            groups[-1]["parameters"].extend(own)
        else:
            groups.append(dict(name=name or "(root)", modules=[name], parameters=own, block=False))
    if not groups:
        raise ConfigError(message("model", "a module with trainable parameters", type(model).__name__))
    params = dict(model.named_parameters())
    return [LayerGroup(g["name"], tuple(g["modules"]), tuple(g["parameters"]),
                       int(sum(params[p].numel() for p in g["parameters"]))) for g in groups]


def _group(model: nn.Module, layer: LayerGroup | str) -> LayerGroup:
    if isinstance(layer, LayerGroup):
        return layer
    groups = {g.name: g for g in layer_groups(model)}
    if layer not in groups:
        raise ConfigError(message("layer", f"one of the model's layers ({', '.join(groups)})", repr(layer)))
    return groups[layer]


def _members(model: nn.Module, group: LayerGroup) -> list[tuple[str, nn.Module]]:
    """Every module of the layer with its full name (the root module alone, without its children)."""
    out = []
    for m in group.modules:
        if not m:
            out.append(("", model))
            continue
        out += [(f"{m}.{n}" if n else m, sub) for n, sub in model.get_submodule(m).named_modules()]
    return out


def _buffer_names(model: nn.Module, group: LayerGroup) -> list[str]:
    return [f"{m}.{n}" if m else n for m, module in _members(model, group)
            for n, _ in module.named_buffers(recurse=False)]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()`` (parameters and buffers): a checkpoint :func:`reinitialize` reads."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@torch.no_grad()
def reinitialize(model: nn.Module, layer: LayerGroup | str, state: Mapping[str, torch.Tensor], *,
                 buffers: bool = False) -> None:
    """Set the parameters of one layer of ``model`` (in place) to their values in ``state``; the rest stays.

    Args:
        model: the module.
        layer: a :class:`LayerGroup` of :func:`layer_groups` or its name.
        state: a checkpoint: a ``state_dict`` (e.g. :func:`snapshot`) holding every parameter of the layer.
        buffers: also copy the layer's buffers (batch norm's running statistics);
            default False: they keep their current (trained) values, as in
            Zhang, Bengio, Singer 2019.

    Raises:
        ConfigError: an unknown layer; a state that lacks a parameter of the layer or has it in another shape.
    """
    group = _group(model, layer)
    names = list(group.parameters) + (_buffer_names(model, group) if buffers else [])
    current = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in names:
        if name not in state:
            raise ConfigError(message("state", f"a checkpoint holding {name!r} (layer {group.name})",
                                      "a state without it"))
        value = state[name]
        if tuple(value.shape) != tuple(current[name].shape):
            raise ConfigError(message("state", f"{name!r} of shape {tuple(current[name].shape)}",
                                      f"shape {tuple(value.shape)}"))
        current[name].copy_(value)


@torch.no_grad()
def rerandomize(model: nn.Module, layer: LayerGroup | str, *, seed: int,
                fresh: Callable[[int], nn.Module] | None = None) -> None:
    """Replace the parameters of one layer (in place) by a fresh, seeded draw from the initialisation distribution.

    Buffers (batch norm's running statistics) keep their trained values, as in
    :func:`reinitialize`.

    Args:
        model: the module.
        layer: a :class:`LayerGroup` of :func:`layer_groups` or its name.
        seed: the draw depends on this seed alone (the global torch RNG is left as it was).
        fresh: optional ``fresh(seed) -> module`` building a new model of the
            same architecture from ``seed``; the layer's parameters are taken from
            it. None: each module of the layer calls its own
            ``reset_parameters()`` under ``torch.manual_seed(seed)`` in a forked RNG.

    Raises:
        ConfigError: an unknown layer; without ``fresh``, a module of the layer
            with parameters of its own and no ``reset_parameters``.
    """
    group = _group(model, layer)
    seed = check_seed(seed)
    if fresh is not None:
        reinitialize(model, group, fresh(seed).state_dict())
        return
    kept = {name: buf.detach().clone() for name, buf in model.named_buffers() if name in _buffer_names(model, group)}
    targets = []
    for where, sub in _members(model, group):
        if any(True for _ in sub.parameters(recurse=False)):
            if not callable(getattr(sub, "reset_parameters", None)):
                raise ConfigError(message("layer", f"modules with reset_parameters() (or pass fresh=), "
                                          f"layer {group.name}", f"{type(sub).__name__} {where!r}"))
            targets.append(sub)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in targets:
            sub.reset_parameters()
    buffers = dict(model.named_buffers())
    for name, value in kept.items():
        buffers[name].copy_(value)


@dataclass
class LayerRobustness:
    """What :func:`layer_robustness` measured.

    Attributes:
        layers: the ``L`` layers (:class:`LayerGroup`), input to output.
        epochs: ``(E,)`` the checkpoint epochs, ascending.
        trained: the trained model's error (nothing reset).
        reinit: ``(L, E)`` error with layer ``l`` re-initialised to checkpoint ``e``.
        rerandom: ``(L, draws)`` error with layer ``l`` re-randomised (one column per seeded draw; ``(L, 0)``: none).
        distance: ``(L, E)`` relative distance ``||theta_l(trained) - theta_l(e)|| / ||theta_l(e)||``
            (NaN where the checkpoint's norm is 0).
    """

    layers: list[LayerGroup]
    epochs: np.ndarray
    trained: float
    reinit: np.ndarray
    rerandom: np.ndarray
    distance: np.ndarray

    def table(self) -> pd.DataFrame:
        """One row per measurement: ``layer``, ``index``, ``kind`` (reinit / rerandom), ``epoch`` (-1 for
        rerandom), ``draw``, ``error``."""
        rows = []
        for i, g in enumerate(self.layers):
            for j, e in enumerate(self.epochs):
                rows.append(dict(layer=g.name, index=i, kind="reinit", epoch=int(e), draw=0,
                                 error=float(self.reinit[i, j])))
            for d in range(self.rerandom.shape[1]):
                rows.append(dict(layer=g.name, index=i, kind="rerandom", epoch=-1, draw=d,
                                 error=float(self.rerandom[i, d])))
        return pd.DataFrame(rows)


def _flat(state: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    return torch.cat([state[n].detach().reshape(-1).double().cpu() for n in names])


def layer_robustness(model: nn.Module, checkpoints: Mapping[int, Mapping[str, torch.Tensor]],
                     evaluate: Callable[[nn.Module], float], *, layers: Sequence[LayerGroup] | None = None,
                     seed: int | None = None, draws: int = 1,
                     fresh: Callable[[int], nn.Module] | None = None) -> LayerRobustness:
    """Re-initialise each layer alone to each checkpoint, and re-randomise it, measuring ``evaluate`` every time.

    Args:
        model: the trained module; it is modified during the call and left
            exactly as it came (its parameters are copied back after every measurement).
        checkpoints: epoch -> ``state_dict`` of the same model at that epoch
            (epoch 0: its initial weights), e.g. :func:`snapshot` taken during training.
        evaluate: ``evaluate(model) -> float``, e.g. the test error; called
            ``1 + L x (E + draws)`` times. It sets the mode it needs (eval mode
            keeps batch norm on its trained running statistics).
        layers: the layers (default :func:`layer_groups` of ``model``).
        seed: seed of the re-randomisations (draw ``d`` of layer ``l`` uses
            ``derive_seed(seed, l, d)``); None: no re-randomisation.
        draws: re-randomisations per layer.
        fresh: passed to :func:`rerandomize`.

    Returns:
        A :class:`LayerRobustness`.

    Raises:
        ConfigError: no checkpoints, a negative epoch, draws < 1, a checkpoint missing a parameter.
    """
    if not checkpoints:
        raise ConfigError(message("checkpoints", "at least one epoch -> state_dict", "none"))
    epochs = sorted(int(e) for e in checkpoints)
    if epochs[0] < 0:
        raise ConfigError(message("checkpoints", "epochs >= 0", str(epochs[0])))
    if seed is not None:
        seed = check_seed(seed)
        if int(draws) < 1:
            raise ConfigError(message("draws", "at least 1 re-randomisation per layer", str(draws)))
    groups = list(layers) if layers is not None else layer_groups(model)
    trained_state = snapshot(model)
    trained = float(evaluate(model))
    reinit = np.full((len(groups), len(epochs)), np.nan)
    distance = np.full((len(groups), len(epochs)), np.nan)
    rerandom = np.full((len(groups), int(draws) if seed is not None else 0), np.nan)
    for i, group in enumerate(groups):
        final = _flat(trained_state, group.parameters)
        for j, epoch in enumerate(epochs):
            state = checkpoints[epoch]
            reinitialize(model, group, state)
            reinit[i, j] = float(evaluate(model))
            reinitialize(model, group, trained_state, buffers=True)
            start = _flat(state, group.parameters)
            norm = float(start.norm())
            distance[i, j] = float((final - start).norm()) / norm if norm > 0 else np.nan
        for d in range(rerandom.shape[1]):
            rerandomize(model, group, seed=derive_seed(seed, i, d), fresh=fresh)
            rerandom[i, d] = float(evaluate(model))
            reinitialize(model, group, trained_state, buffers=True)
    return LayerRobustness(layers=groups, epochs=np.asarray(epochs, np.int64), trained=trained, reinit=reinit,
                           rerandom=rerandom, distance=distance)
