"""One training step of an ensemble: gradients of the summed per-model mean losses.

Notation: K models, b rows per model in this step, C classes.

Every step function fills ``p.grad`` of every parameter with the gradient of
``sum_k mean_b CE(model_k(x[k]), y[k])``, so model ``k`` gets exactly the
gradient it would get if trained alone; the optimizer step is separate.

- :class:`AutogradStep`: any model, through autograd.
- :class:`MLPStep`: :class:`~fitscope.models.mlp.EnsembleMLP` only, forward
  and backward written by hand with batched GEMMs into preallocated buffers
  (no autograd graph, no allocations after the first step of a batch size,
  ReLU and dropout backward as in-place masks). Same gradients as autograd up
  to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitscope.models.layers import _SMALL_OUT
from fitscope.models.mlp import EnsembleMLP


class AutogradStep:
    """Gradients through autograd; works for every model family.

    Args:
        model: the ensemble model (in train mode when called).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set ``p.grad`` for ``x`` ``(K, b, *input_shape)`` and labels ``y`` ``(K, b)``."""
        logits = self.model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        for p in self.params:
            p.grad = None
        (loss / x.shape[1]).backward()


class MLPStep:
    """Hand-written forward + backward for :class:`EnsembleMLP` with batched GEMMs.

    Forward ``a_{i+1} = dropout(relu(a_i W_i + b_i))`` into reused buffers;
    the output layer with few classes computes ``z^T = W^T a^T`` (batched
    GEMMs with a tiny N dimension are slow). Backward writes straight into
    the ``.grad`` tensors with ``out=``.

    Args:
        model: the ensemble MLP.
    """

    def __init__(self, model: EnsembleMLP) -> None:
        self.model = model
        self.layers = list(model.hidden)
        self.out = model.out
        self.dropout = model.dropout
        self._buffers: dict[int, dict[str, list[torch.Tensor] | torch.Tensor]] = {}
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _bufs(self, b: int, like: torch.Tensor) -> dict:
        if b not in self._buffers:
            k = self.model.n_models
            widths = [layer.out_features for layer in self.layers]
            self._buffers[b] = dict(
                act=[like.new_empty(k, b, w) for w in widths],
                grad=[like.new_empty(k, b, w) for w in widths],
                tmp=[like.new_empty(k, b, w) for w in widths],
            )
        return self._buffers[b]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set ``p.grad`` for ``x`` ``(K, b, *input_shape)`` and labels ``y`` ``(K, b)``."""
        k, b = x.shape[:2]
        a = x.reshape(k, b, -1)
        bufs = self._bufs(b, a)
        drop = self.model.training and self.dropout.p > 0.0
        acts, masks = [a], []
        for i, layer in enumerate(self.layers):
            h = torch.baddbmm(layer.bias.unsqueeze(1), acts[-1], layer.weight, out=bufs["act"][i]).relu_()
            if drop:
                mask = self.dropout.scaled_mask(h)
                h.mul_(mask)
                masks.append(mask)
            acts.append(h)
        last, out = acts[-1], self.out
        scale = 1.0 / b
        if out.out_features < _SMALL_OUT and b > out.out_features:
            # Logits transposed: (K, C, b); softmax over classes, minus one-hot, over b.
            z = torch.baddbmm(out.bias.unsqueeze(2), out.weight.transpose(1, 2), last.transpose(1, 2))
            g = torch.softmax(z, dim=1)
            g.scatter_add_(1, y.unsqueeze(1), g.new_full((k, 1, b), -1.0)).mul_(scale)
            out.weight.grad.copy_(torch.bmm(g, last).transpose(1, 2))
            torch.sum(g, dim=2, out=out.bias.grad)
            grad_a = g.transpose(1, 2)
        else:
            z = torch.baddbmm(out.bias.unsqueeze(1), last, out.weight)
            g = torch.softmax(z, dim=2)
            g.scatter_add_(2, y.unsqueeze(2), g.new_full((k, b, 1), -1.0)).mul_(scale)
            torch.bmm(last.transpose(1, 2), g, out=out.weight.grad)
            torch.sum(g, dim=1, out=out.bias.grad)
            grad_a = g
        weight_t = out.weight.transpose(1, 2)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            ga = torch.bmm(grad_a, weight_t, out=bufs["grad"][i])
            if drop:
                ga.mul_(masks[i])
            gz = torch.ops.aten.threshold_backward.grad_input(ga, acts[i + 1], 0, grad_input=bufs["tmp"][i])
            torch.bmm(acts[i].transpose(1, 2), gz, out=layer.weight.grad)
            torch.sum(gz, dim=1, out=layer.bias.grad)
            grad_a, weight_t = gz, layer.weight.transpose(1, 2)


def make_step(model: torch.nn.Module, *, hand_written: bool = True) -> AutogradStep | MLPStep:
    """The fastest step for ``model``: :class:`MLPStep` for MLPs (unless ``hand_written`` is False), else autograd."""
    if hand_written and isinstance(model, EnsembleMLP):
        return MLPStep(model)
    return AutogradStep(model)
