"""Ensemble layers: K independent models evaluated as one module.

Notation: K models, B examples per model.

- :class:`EnsembleLinear` holds stacked weights ``(K, in, out)`` and maps
  ``(K, B, in)`` to ``(K, B, out)`` with one batched matmul (bias fused).
- :class:`EnsembleConv` is one grouped convolution with ``groups=K`` on the
  "grouped layout" ``(B, K*C, *spatial)``; channels ``k*C .. (k+1)*C - 1``
  belong to model ``k``, so BatchNorm over ``K*C`` channels, ReLU and pooling
  are per model by construction.
- :class:`EnsembleDropout` draws model ``k``'s mask from model ``k``'s own
  generator.

Initialisation is PyTorch's default (``kaiming_uniform_(a=sqrt(5))`` for
weights, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for biases, exactly as
``nn.Linear`` / ``nn.Conv2d.reset_parameters``), drawn for each model from
that model's own ``torch.Generator``: a model's initial weights depend only on
its seed, never on the other models in the ensemble.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fitscope.seeding import derive_seed
from fitscope.validation import check_choice

# Below this many output features a linear layer computes ``(W^T x^T)^T``:
# batched GEMMs with a tiny N dimension (e.g. 10 classes) run at a small
# fraction of the speed of the same GEMM with M and N swapped.
_SMALL_OUT = 64


def init_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per model for weight initialisation, seeded from ``derive_seed(seed, "init")``."""
    return [torch.Generator().manual_seed(derive_seed(int(s), "init")) for s in seeds]


def _init_weight_(weight: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    # nn.Linear / nn.ConvNd: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)


def _init_bias_(bias: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound, generator=gen)


class EnsembleLinear(nn.Module):
    """K independent linear layers: ``(K, B, in) -> (K, B, out)``.

    Args:
        n_models: K.
        in_features: input features per model.
        out_features: output features per model.
        generators: K generators; model ``k``'s weight (drawn in ``nn.Linear``'s
            ``(out, in)`` order) and then bias come from ``generators[k]``.
        bias: whether to add a bias.

    Attributes:
        weight: ``(K, in, out)``.
        bias: ``(K, out)`` or None.
    """

    def __init__(
        self,
        n_models: int,
        in_features: int,
        out_features: int,
        *,
        generators: Sequence[torch.Generator],
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.n_models, self.in_features, self.out_features = n_models, in_features, out_features
        weight = torch.empty(n_models, out_features, in_features)
        b = torch.empty(n_models, out_features) if bias else None
        with torch.no_grad():
            for k, gen in enumerate(generators):
                _init_weight_(weight[k], in_features, gen)
                if b is not None:
                    _init_bias_(b[k], in_features, gen)
        self.weight = nn.Parameter(weight.transpose(1, 2).contiguous())
        self.bias = nn.Parameter(b) if b is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, B, in)`` -> ``(K, B, out)``."""
        w, b = self.weight, self.bias
        if self.out_features < _SMALL_OUT and x.shape[1] > self.out_features:
            # out^T = W^T x^T: (K, out, in) @ (K, in, B); returned as a transposed view.
            if b is None:
                return torch.bmm(w.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)
            return torch.baddbmm(b.unsqueeze(2), w.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)
        if b is None:
            return torch.bmm(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w)

    def extra_repr(self) -> str:
        """Shapes, for ``print(model)``."""
        return f"K={self.n_models}, in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class EnsembleConv(nn.Module):
    """K independent convolutions as one grouped convolution (``groups=K``).

    Works on the grouped layout ``(B, K*C_in, *spatial) -> (B, K*C_out, *spatial')``.

    Args:
        n_models: K.
        dim: 1 (signals) or 2 (images).
        in_channels: input channels per model.
        out_channels: output channels per model.
        kernel_size: square kernel size.
        generators: K generators for model ``k``'s slice of the weight.
        stride: stride.
        padding: zero padding (default ``kernel_size // 2``, "same" size).
        bias: whether to add a bias (off by default: a BatchNorm follows).

    Attributes:
        weight: ``(K*C_out, C_in, *kernel)``; rows ``k*C_out .. (k+1)*C_out - 1`` are model ``k``'s.
    """

    def __init__(
        self,
        n_models: int,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        generators: Sequence[torch.Generator],
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        dim = check_choice(dim, "dim", (1, 2))
        self.n_models, self.dim = n_models, dim
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        kernel = (kernel_size,) * dim
        weight = torch.empty(n_models * out_channels, in_channels, *kernel)
        b = torch.empty(n_models * out_channels) if bias else None
        fan_in = in_channels * kernel_size**dim
        with torch.no_grad():
            for k, gen in enumerate(generators):
                rows = slice(k * out_channels, (k + 1) * out_channels)
                _init_weight_(weight[rows], fan_in, gen)
                if b is not None:
                    _init_bias_(b[rows], fan_in, gen)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(b) if b is not None else None
        self._conv = F.conv1d if dim == 1 else F.conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, K*C_in, *spatial)`` -> ``(B, K*C_out, *spatial')``."""
        return self._conv(x, self.weight, self.bias, self.stride, self.padding, 1, self.n_models)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """The same inputs for every model: ``(B, C_in, *spatial)`` -> grouped layout, as one dense convolution."""
        return self._conv(x, self.weight, self.bias, self.stride, self.padding, 1, 1)

    def out_size(self, size: int) -> int:
        """Spatial size after this convolution for an input of ``size``."""
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1

    def extra_repr(self) -> str:
        """Shapes, for ``print(model)``."""
        return (
            f"K={self.n_models}, {self.in_channels}->{self.out_channels}, kernel={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dim={self.dim}"
        )


class EnsembleDropout(nn.Module):
    """Dropout with an independent mask per model, each from that model's own generator.

    Works on tensors whose first axis is the model axis ``(K, ...)``. The
    generators are seeded from ``derive_seed(seed, "dropout")`` and created on
    the device of the first input, so model ``k``'s masks depend only on its
    seed.

    Args:
        p: drop probability in ``[0, 1)``.
        seeds: the K model seeds.
    """

    def __init__(self, p: float, *, seeds: Sequence[int]) -> None:
        super().__init__()
        self.p = float(p)
        self.seeds = [int(s) for s in seeds]
        self._generators: list[torch.Generator] | None = None

    def _gens(self, device: torch.device) -> list[torch.Generator]:
        if self._generators is None or self._generators[0].device != device:
            self._generators = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout")) for s in self.seeds
            ]
        return self._generators

    def scaled_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Draw the next mask for ``x`` ``(K, ...)``: 0 where dropped, ``1 / (1 - p)`` where kept."""
        mask = torch.empty_like(x, memory_format=torch.contiguous_format)
        for k, gen in enumerate(self._gens(x.device)):
            mask[k].bernoulli_(1.0 - self.p, generator=gen)
        return mask.mul_(1.0 / (1.0 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity in eval mode or when ``p == 0``; else ``x * mask / (1 - p)``."""
        if not self.training or self.p == 0.0:
            return x
        return x * self.scaled_mask(x)

    def extra_repr(self) -> str:
        """The drop probability."""
        return f"p={self.p}"


def to_grouped(x: torch.Tensor) -> torch.Tensor:
    """``(K, B, C, *spatial)`` -> grouped layout ``(B, K*C, *spatial)`` (one copy)."""
    k, b, c = x.shape[:3]
    return x.transpose(0, 1).reshape(b, k * c, *x.shape[3:])


def grouped_to_features(h: torch.Tensor, n_models: int) -> torch.Tensor:
    """Global average pool of the grouped layout ``(B, K*C, *spatial)`` -> ``(K, B, C)``."""
    b = h.shape[0]
    pooled = h.mean(dim=tuple(range(2, h.dim()))) if h.dim() > 2 else h
    return pooled.view(b, n_models, -1).transpose(0, 1)
