"""Networks whose output has their input's shape: fully connected and convolutional stacks of a given depth.

The classifiers of :func:`fitscope.models.build_plain` end in ``n_classes``
logits; a network trained to reproduce its input (an autoencoder without a
bottleneck, the identity-mapping task of Zhang et al. 2020) must instead
return an array of the input's shape. :func:`build_same_shape` builds one:

- ``"fc"``: flatten, ``depth`` linear layers ``D -> width -> ... -> width -> D``
  (``D`` values per input) with a ReLU between two layers, reshaped back to
  the input's shape; depth 1 is one linear map ``D -> D``.
- ``"cnn"``: ``depth`` convolutions with "same" padding (odd ``kernel``, stride 1,
  no pooling, so every layer keeps the spatial size) ``C -> channels -> ... ->
  channels -> C`` (``C`` the input's channels) with a ReLU between two
  layers; 2-D for images ``(C, H, W)``, 1-D for signals ``(C, L)``; depth 1 is
  one linear convolution ``C -> C``.

No normalisation and no activation after the last layer. Initialisation
(``init``): ``"he"`` draws every weight from ``N(0, 2 / fan_in)`` (He et al.
2015, the standard initialisation of ReLU networks: it keeps the scale of the
signal through any depth at initialisation) with zero biases; ``"torch"``
keeps PyTorch's default (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and
biases, a third of He's variance, so the signal shrinks with depth). The
weights depend on ``seed`` alone (drawn under a forked RNG; the global RNG is
left untouched).

>>> net = build_same_shape("cnn", (1, 16, 16), depth=3, channels=8, seed=0)
>>> net(torch.zeros(2, 1, 16, 16)).shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from fitscope.errors import ConfigError
from fitscope.validation import check_choice, check_int, check_seed, message

#: the two architectures
ARCHITECTURES = ("fc", "cnn")
#: the two initialisations (module docstring)
INITS = ("he", "torch")
#: the deepest network :func:`build_same_shape` builds
MAX_DEPTH = 50


def _init(layer: nn.Module, init: str) -> None:
    if init == "he":
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)


def build_same_shape(arch: str, input_shape: tuple[int, ...], *, depth: int, width: int = 512, channels: int = 32,
                     kernel: int = 5, init: str = "he", seed: int) -> nn.Sequential:
    """A ReLU network of ``depth`` weight layers mapping inputs of ``input_shape`` to outputs of the same shape.

    Args:
        arch: ``"fc"`` (fully connected) or ``"cnn"`` (same-padding convolutions, no pooling).
        input_shape: one input's shape: any for ``"fc"``; ``(C, H, W)`` or ``(C, L)`` for ``"cnn"``.
        depth: weight layers, in ``[1, MAX_DEPTH]``.
        width: hidden units of each hidden layer (``"fc"``).
        channels: channels of each hidden layer (``"cnn"``).
        kernel: odd kernel size (``"cnn"``).
        init: ``"he"`` or ``"torch"`` (module docstring).
        seed: the weights depend on this seed only.

    Returns:
        An ``nn.Sequential`` ``(B, *input_shape) -> (B, *input_shape)``; its weight layers are named
        ``layer1 ... layer<depth>``.

    Raises:
        ConfigError: an unknown architecture or init, a depth, width, channel count or kernel out of range, or
            a convolutional net for an input that is not an image or a signal.
    """
    arch = check_choice(arch, "arch", ARCHITECTURES)
    init = check_choice(init, "init", INITS)
    depth = check_int(depth, "depth", low=1, high=MAX_DEPTH)
    seed = check_seed(seed)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(message("input_shape", "positive sizes", str(shape)))
    layers: list[tuple[str, nn.Module]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "fc":
            width = check_int(width, "width")
            d = math.prod(shape)
            sizes = [d] + [width] * (depth - 1) + [d]
            layers.append(("flatten", nn.Flatten()))
            make = [nn.Linear(sizes[i], sizes[i + 1]) for i in range(depth)]
        else:
            if len(shape) not in (2, 3):
                raise ConfigError(message("input_shape", "an image (C, H, W) or a signal (C, L) for arch 'cnn'",
                                          str(shape)))
            channels = check_int(channels, "channels")
            kernel = check_int(kernel, "kernel")
            if kernel % 2 == 0:
                raise ConfigError(message("kernel", "an odd kernel size (same padding)", str(kernel)))
            conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
            sizes = [shape[0]] + [channels] * (depth - 1) + [shape[0]]
            make = [conv(sizes[i], sizes[i + 1], kernel, padding=kernel // 2) for i in range(depth)]
        for i, layer in enumerate(make, 1):
            _init(layer, init)
            layers.append((f"layer{i}", layer))
            if i < depth:
                layers.append((f"relu{i}", nn.ReLU()))
    if arch == "fc":
        layers.append(("unflatten", nn.Unflatten(1, shape)))
    return nn.Sequential(OrderedDict(layers))


def same_shape_parameters(arch: str, input_shape: tuple[int, ...], *, depth: int, width: int = 512,
                          channels: int = 32, kernel: int = 5) -> int:
    """Trainable parameters of :func:`build_same_shape`'s network, counted from the shapes (nothing built)."""
    if arch == "fc":
        d = math.prod(input_shape)
        sizes = [d] + [width] * (depth - 1) + [d]
        return sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(depth))
    spatial = len(input_shape) - 1
    sizes = [input_shape[0]] + [channels] * (depth - 1) + [input_shape[0]]
    return sum(sizes[i] * sizes[i + 1] * kernel**spatial + sizes[i + 1] for i in range(depth))


__all__ = ["ARCHITECTURES", "INITS", "MAX_DEPTH", "build_same_shape", "same_shape_parameters"]
