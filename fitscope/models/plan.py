"""The architecture of a spec, defined once: a layer plan that every builder consumes.

:func:`layer_plan` turns a spec (``mlp:512x2``, ``cnn:32-64``, ``cnn1d:32x3``)
and an input shape into a :class:`LayerPlan`: the hidden blocks (linear or
convolution, sizes, kernel, whether a 2x max-pool follows), the normalisation
and whether the convolutions carry a bias, and the linear head. The batched
K-model ensembles (:func:`fitscope.models.build`) and the single plain models
(:func:`fitscope.models.build_plain`) are both built from it, so the same spec
and the same ``norm`` give the same network in every study.

Normalisation (convolutional families only; an MLP has none):

- ``"batch"``: BatchNorm, the ensembles' default (``audit``, ``seed-agreement``,
  ``randomization``, ``leak`` and the other ensemble studies). The convolution
  has no bias (BatchNorm removes a per-channel shift).
- ``"group"``: GroupNorm with :func:`group_count` groups, the plain models'
  default (``privacy-study``, ``private-training``: DP-SGD through Opacus, which
  forbids BatchNorm since it mixes the examples of a batch). The convolution
  keeps its bias (GroupNorm removes only a per-group shift).

``resnet`` has no layer plan: it exists only as an ensemble (BatchNorm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fitscope.errors import ConfigError
from fitscope.models.spec import ModelSpec, check_input_shape, input_shape_tuple, parse_spec
from fitscope.validation import check_choice, check_int, message

NORMS = ("batch", "group")
PLAN_FAMILIES = ("mlp", "cnn", "cnn1d")

#: Which studies build which models, with which normalisation (shown by ``fitscope models list``).
NORM_BY_STUDY = {
    "batch": "ensemble models (fitscope.models.build, trained by train_ensemble): audit, seed-agreement, "
             "randomization, leak, federated, and the non-private, label-DP and InstaHide models of "
             "privacy-study and train",
    "group": "plain models (fitscope.models.build_plain): the DP-SGD (Opacus forbids BatchNorm), pruning "
             "and MID models of privacy-study, and train --mechanism dp-sgd",
}


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is <= 8."""
    return max(g for g in range(1, 9) if channels % g == 0)


def check_norm(norm: str) -> str:
    """``norm`` if it is ``"batch"`` or ``"group"``; a one-line :class:`ConfigError` otherwise."""
    return check_choice(norm, "norm", NORMS)


@dataclass(frozen=True)
class Block:
    """One hidden block of a plan.

    ``kind="linear"``: linear ``in_size -> out_size``, ReLU (then dropout, if any).
    ``kind="conv"``: convolution ``in_size -> out_size`` channels of side
    ``kernel`` ("same" padding), the plan's norm, ReLU, then a 2x max-pool when ``pool``.
    """

    kind: str
    in_size: int
    out_size: int
    kernel: int = 0
    pool: bool = False


@dataclass(frozen=True)
class LayerPlan:
    """The architecture of one model of a spec (see the module docstring).

    Attributes:
        spec: the parsed spec.
        input_shape: shape of one input.
        n_classes: number of logits.
        dim: 0 for an MLP (input flattened), 1 for signals, 2 for images.
        norm: ``"batch"`` or ``"group"`` (conv families), None for an MLP.
        conv_bias: whether each convolution adds a bias (True exactly with ``norm="group"``).
        blocks: the hidden blocks, first to last.
        head_in: input width of the final linear layer (after global average pooling for conv nets).
        dropout: dropout probability (after every hidden ReLU of an MLP; before the head of a conv net).
    """

    spec: ModelSpec
    input_shape: tuple[int, ...]
    n_classes: int
    dim: int
    norm: str | None
    conv_bias: bool
    blocks: tuple[Block, ...]
    head_in: int
    dropout: float

    def norm_groups(self, channels: int) -> int:
        """GroupNorm groups for a block of ``channels`` (``norm="group"``)."""
        return group_count(channels)

    def parameter_count(self) -> int:
        """Trainable parameters of one model of this plan (weights, biases, norm scales and shifts)."""
        total = 0
        for b in self.blocks:
            if b.kind == "linear":
                total += b.in_size * b.out_size + b.out_size
            else:
                total += b.in_size * b.out_size * b.kernel ** self.dim + (b.out_size if self.conv_bias else 0)
                total += 2 * b.out_size
        return total + self.head_in * self.n_classes + self.n_classes


def layer_plan(spec: str | ModelSpec, input_shape: tuple[int, ...], n_classes: int, *,
               norm: str = "batch") -> LayerPlan:
    """The layer plan of one model of ``spec`` on inputs of ``input_shape``.

    Args:
        spec: an ``mlp``, ``cnn`` or ``cnn1d`` spec (grammar in :data:`fitscope.models.SPEC_HELP`).
        input_shape: ``(D,)``, ``(C, L)`` or ``(C, H, W)``.
        n_classes: number of logits, >= 1.
        norm: ``"batch"`` or ``"group"`` (ignored for ``mlp``, which has no normalisation).

    Returns:
        The :class:`LayerPlan`.

    Raises:
        ConfigError: a bad spec or norm, ``resnet`` (no plan), a family that does not fit the input.
    """
    parsed = parse_spec(spec)
    norm = check_norm(norm)
    shape = input_shape_tuple(input_shape)
    n_classes = check_int(n_classes, "n_classes")
    if parsed.family not in PLAN_FAMILIES:
        raise ConfigError(message("spec", f"a family with a layer plan ({', '.join(PLAN_FAMILIES)})",
                                  f"{str(parsed)!r} (family {parsed.family!r})"))
    check_input_shape(parsed, shape)
    if parsed.family == "mlp":
        dims = [math.prod(shape), *parsed.widths]
        blocks = tuple(Block("linear", a, b) for a, b in zip(dims[:-1], dims[1:]))
        return LayerPlan(parsed, shape, int(n_classes), 0, None, False, blocks, dims[-1], parsed.dropout)
    kernel = parsed.kernel if parsed.family == "cnn1d" else 3
    channels, spatial = shape[0], list(shape[1:])
    blocks = []
    for width in parsed.widths:
        pool = all(s >= 2 for s in spatial)
        blocks.append(Block("conv", channels, width, kernel, pool))
        if pool:
            spatial = [s // 2 for s in spatial]
        channels = width
    return LayerPlan(parsed, shape, int(n_classes), len(shape) - 1, norm, norm == "group", tuple(blocks),
                     channels, parsed.dropout)
