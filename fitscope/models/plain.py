"""One model of a spec as a plain ``nn.Module`` of stock torch layers (Opacus-compatible).

The models of :func:`fitscope.models.build` are K-model ensembles of custom
batched layers; Opacus cannot compute per-sample gradients for those, and the
privacy defenses (pruning, noise on activations, MID) act on one model's named
layer. :func:`build_plain` builds one model from the same
:func:`~fitscope.models.plan.layer_plan` as the ensembles, so a spec and a
``norm`` give the same network either way. Its default norm is ``"group"``:
BatchNorm mixes the examples of a batch, which per-example clipping (DP-SGD)
forbids, so Opacus rejects it.

>>> model = build_plain("mlp:64x2", (1, 8, 8), 10, seed=0)
>>> model.hidden_layer, model(torch.zeros(5, 1, 8, 8)).shape
('fc2', torch.Size([5, 10]))
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.models.plan import LayerPlan, group_count, layer_plan
from fitscope.models.spec import ModelSpec, parse_spec
from fitscope.validation import check_int, check_seed, message

__all__ = ["PLAIN_FAMILIES", "PlainNet", "build_plain", "group_count"]

PLAIN_FAMILIES = ("mlp", "cnn", "cnn1d")


class PlainNet(nn.Sequential):
    """One network of a spec as an ``nn.Sequential`` with named layers.

    Layer names: ``mlp``: ``flatten, fc1, relu1, [drop1,] fc2, relu2, ...,
    out``; ``cnn`` / ``cnn1d``: ``conv1, norm1, relu1, [pool1,] conv2, ...,
    gap, flatten, [drop,] out``. ``model.get_submodule(name)`` returns a layer.

    Attributes:
        spec: the parsed :class:`~fitscope.models.ModelSpec`.
        input_shape: shape of one input.
        n_classes: number of logits.
        norm: ``"batch"`` or ``"group"`` (conv families), None for an MLP.
        hidden_layer: name of the last hidden weight layer (``fc<depth>`` or
            ``conv<depth>``): where pruning and activation noise act by default.
        feature_layer: name of the layer whose output feeds ``out``
            (the penultimate representation, ``feature_dim`` values per example).
        feature_dim: width of the penultimate representation.
        seed: the initialisation seed.
    """

    def __init__(self, layers: OrderedDict, *, spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int,
                 hidden_layer: str, feature_layer: str, feature_dim: int, seed: int,
                 norm: str | None = None) -> None:
        super().__init__(layers)
        self.spec = spec
        self.input_shape = tuple(input_shape)
        self.n_classes = int(n_classes)
        self.norm = norm
        self.hidden_layer = hidden_layer
        self.feature_layer = feature_layer
        self.feature_dim = int(feature_dim)
        self.seed = int(seed)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation ``(B, feature_dim)`` of ``x`` ``(B, *input_shape)``."""
        for name, layer in self.named_children():
            if name == "out":
                break
            x = layer(x)
        return x

    def extra_repr(self) -> str:
        """The spec and shapes, for ``print(model)``."""
        return (f"spec={str(self.spec)!r}, input_shape={self.input_shape}, n_classes={self.n_classes}, "
                f"norm={self.norm}")


def _mlp_layers(plan: LayerPlan) -> tuple[OrderedDict, str, str, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    last = "flatten"
    for i, block in enumerate(plan.blocks, 1):
        layers[f"fc{i}"] = nn.Linear(block.in_size, block.out_size)
        layers[f"relu{i}"] = nn.ReLU()
        last = f"relu{i}"
        if plan.dropout:
            layers[f"drop{i}"] = nn.Dropout(plan.dropout)
            last = f"drop{i}"
    layers["out"] = nn.Linear(plan.head_in, plan.n_classes)
    return layers, f"fc{len(plan.blocks)}", last, plan.head_in


def _conv_layers(plan: LayerPlan) -> tuple[OrderedDict, str, str, int]:
    conv, pool, gap, batch_norm = (nn.Conv1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d, nn.BatchNorm1d) \
        if plan.dim == 1 else (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, block in enumerate(plan.blocks, 1):
        layers[f"conv{i}"] = conv(block.in_size, block.out_size, block.kernel, padding=block.kernel // 2,
                                  bias=plan.conv_bias)
        layers[f"norm{i}"] = (nn.GroupNorm(plan.norm_groups(block.out_size), block.out_size)
                              if plan.norm == "group" else batch_norm(block.out_size))
        layers[f"relu{i}"] = nn.ReLU()
        if block.pool:
            layers[f"pool{i}"] = pool(2)
    layers["gap"] = gap(1)
    layers["flatten"] = nn.Flatten()
    last = "flatten"
    if plan.dropout:
        layers["drop"] = nn.Dropout(plan.dropout)
        last = "drop"
    layers["out"] = nn.Linear(plan.head_in, plan.n_classes)
    return layers, f"conv{len(plan.blocks)}", last, plan.head_in


def build_plain(spec: str | ModelSpec, input_shape: tuple[int, ...], n_classes: int, *, seed: int,
                norm: str = "group") -> PlainNet:
    """Build one model of ``spec`` from stock torch layers, from the same layer plan as the ensembles.

    Args:
        spec: ``mlp:WxD`` / ``mlp:W1-W2``, ``cnn:W1-W2`` (images) or
            ``cnn1d:W1-W2`` (signals), with ``dropout=P`` allowed
            (grammar in :data:`fitscope.models.SPEC_HELP`). ``resnet`` is not
            available as a plain model.
        input_shape: shape of one input: ``(D,)``, ``(C, L)`` or ``(C, H, W)``.
        n_classes: number of logits.
        seed: the initial weights depend on this seed only (torch's default
            initialisation drawn under a forked, seeded RNG; the global RNG is
            left untouched).
        norm: ``"group"`` (default; Opacus-compatible, used by the privacy
            defenses) or ``"batch"`` (the ensembles' default: the same network as
            model ``k`` of ``build(spec, ..., norm="batch")``). See
            :mod:`fitscope.models.plan`.

    Returns:
        A :class:`PlainNet`: ``(B, *input_shape) -> (B, n_classes)``.

    Raises:
        ConfigError: bad spec or norm, ``resnet``, a family that does not fit the input shape.
    """
    parsed = parse_spec(spec)
    seed = check_seed(seed)
    n_classes = check_int(n_classes, "n_classes")
    if parsed.family not in PLAIN_FAMILIES:
        raise ConfigError(message("spec", f"a family with plain (single, Opacus-compatible) models: "
                                  f"{', '.join(PLAIN_FAMILIES)}", f"{str(parsed)!r} (family {parsed.family!r})"))
    plan = layer_plan(parsed, input_shape, int(n_classes), norm=norm)
    make = _mlp_layers if parsed.family == "mlp" else _conv_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers, hidden, feature, dim = make(plan)
    return PlainNet(layers, spec=parsed, input_shape=plan.input_shape, n_classes=int(n_classes), hidden_layer=hidden,
                    feature_layer=feature, feature_dim=dim, seed=seed, norm=plan.norm)
