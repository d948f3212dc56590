"""Models built from a short spec: ensembles of K independent models, and single plain models.

Both are built from one layer plan per spec (:func:`layer_plan`), so a spec
and a ``norm`` name one network: :func:`build` (the batched K-model ensembles,
BatchNorm by default) and :func:`build_plain` (one ``nn.Sequential`` of stock
layers, GroupNorm by default, for Opacus and the privacy defenses).

Every model returned by :func:`build` takes ``x`` of shape
``(K, B, *input_shape)`` and returns logits ``(K, B, n_classes)``, where
``K = len(seeds)``; model ``k`` is initialised from ``seeds[k]`` alone, so
model ``k`` of an ensemble equals a single model built with the same seed.

>>> model = build("mlp:512x2", (64,), 10, seeds=[0, 1, 2])
>>> model(torch.zeros(3, 5, 64)).shape
torch.Size([3, 5, 10])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fitscope.errors import ConfigError
from fitscope.models.base import EnsembleModel
from fitscope.models.cnn import EnsembleCNN, EnsembleCNN1d
from fitscope.models.layers import EnsembleConv, EnsembleDropout, EnsembleLinear
from fitscope.models.mlp import EnsembleMLP
from fitscope.models.plain import PLAIN_FAMILIES, PlainNet, build_plain
from fitscope.models.plan import NORM_BY_STUDY, NORMS, Block, LayerPlan, check_norm, group_count, layer_plan
from fitscope.models.resnet import EnsembleResNet
from fitscope.models.spec import SPEC_HELP, ModelSpec, check_input_shape, input_kind, input_shape_tuple, parse_spec
from fitscope.validation import check_int, check_seeds

__all__ = [
    "NORMS",
    "NORM_BY_STUDY",
    "PLAIN_FAMILIES",
    "SPEC_HELP",
    "Block",
    "LayerPlan",
    "PlainNet",
    "build_plain",
    "check_norm",
    "group_count",
    "layer_plan",
    "EnsembleConv",
    "EnsembleDropout",
    "EnsembleLinear",
    "EnsembleModel",
    "ModelSpec",
    "build",
    "check_input_shape",
    "flops_per_example",
    "input_kind",
    "largest_activation",
    "parse_spec",
]

_FAMILIES = {"mlp": EnsembleMLP, "cnn": EnsembleCNN, "resnet": EnsembleResNet, "cnn1d": EnsembleCNN1d}


def _check_common(input_shape: Sequence[int], n_classes: int) -> tuple[int, ...]:
    shape = input_shape_tuple(input_shape)
    check_int(n_classes, "n_classes")
    return shape


def build(
    spec: str | ModelSpec,
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    seeds: Sequence[int],
    dropout: float | None = None,
    norm: str = "batch",
) -> EnsembleModel:
    """Build an ensemble of ``len(seeds)`` independent models from a spec.

    Args:
        spec: model spec, e.g. ``"mlp:512x2"``, ``"cnn:32-64,dropout=0.25"``
            (grammar in :data:`SPEC_HELP`).
        input_shape: shape of one input: ``(D,)``, ``(C, L)`` or ``(C, H, W)``.
        n_classes: number of output logits.
        seeds: one integer seed per model; model ``k``'s initial weights and
            dropout masks depend only on ``seeds[k]``.
        dropout: overrides the spec's dropout probability when not None.
        norm: ``"batch"`` (default, what every ensemble study trains) or
            ``"group"`` for the conv families; model ``k`` is then the same
            network as ``build_plain(spec, ..., norm=norm)`` (one layer plan,
            :func:`~fitscope.models.plan.layer_plan`). ``resnet`` has BatchNorm only.

    Returns:
        An :class:`EnsembleModel`: ``(K, B, *input_shape) -> (K, B, n_classes)``.

    Raises:
        ConfigError: bad spec or norm, a family that does not fit the input shape, no seeds or a seed
            outside ``[0, 2**32)``.
    """
    parsed = parse_spec(spec).with_dropout(dropout)
    norm = check_norm(norm)
    shape = _check_common(input_shape, n_classes)
    check_input_shape(parsed, shape)
    seeds = check_seeds(seeds)
    if parsed.family == "mlp":
        return EnsembleMLP(parsed, shape, int(n_classes), seeds=seeds)
    if parsed.family == "resnet":
        if norm != "batch":
            raise ConfigError(f"norm: expected 'batch' for a resnet spec (it has no GroupNorm version), got {norm!r}")
        return EnsembleResNet(parsed, shape, int(n_classes), seeds=seeds)
    return _FAMILIES[parsed.family](parsed, shape, int(n_classes), seeds=seeds, norm=norm)


def flops_per_example(spec: str | ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Forward FLOPs of ONE model on one example: 2 x the multiply-adds of its linear and conv layers.

    BatchNorm, ReLU, pooling, bias adds and the loss are not counted. A
    training step costs about 3x this per example (forward + backward).

    Args:
        spec: model spec.
        input_shape: shape of one input.
        n_classes: number of logits.

    Returns:
        The FLOP count as an int.
    """
    parsed = parse_spec(spec)
    shape = _check_common(input_shape, n_classes)
    check_input_shape(parsed, shape)
    macs = 0

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, EnsembleLinear):
            macs += module.in_features * module.out_features
        else:  # EnsembleConv, batch of one: output (1, C_out, *spatial)
            macs += output.numel() * module.in_channels * module.kernel_size**module.dim

    with torch.device("meta"):
        model = _FAMILIES[parsed.family](parsed, shape, int(n_classes), seeds=[0])
    for m in model.modules():
        if isinstance(m, (EnsembleLinear, EnsembleConv)):
            m.register_forward_hook(count)
    model.eval()
    with torch.no_grad():
        model(torch.empty(1, 1, *shape, device="meta"))
    return 2 * macs


def largest_activation(spec: str | ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Number of values in the largest activation of ONE model on one example (sizes evaluation chunks)."""
    parsed = parse_spec(spec)
    shape = _check_common(input_shape, n_classes)
    check_input_shape(parsed, shape)
    largest = 1

    def track(module: torch.nn.Module, inputs: tuple, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    with torch.device("meta"):
        model = _FAMILIES[parsed.family](parsed, shape, int(n_classes), seeds=[0])
    for m in model.modules():
        m.register_forward_hook(track)
    model.eval()
    with torch.no_grad():
        model(torch.empty(1, 1, *shape, device="meta"))
    return max(largest, math.prod(shape))
