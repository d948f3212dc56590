"""Identity or constant: what a network trained to reproduce one example computes on new inputs.

Zhang, Bengio, Hardt, Mozer, Singer 2020 ("Identity crisis: memorization and
generalization under extreme overparameterization") train a network on ONE
example ``x0`` to output its input (the square loss between ``f(x0)`` and
``x0``) and ask what the trained ``f`` does to an input ``z`` it never saw.
Two functions fit the one example equally well: the identity ``f(z) = z``
(generalization) and the constant ``f(z) = x0`` (memorization). Which one a
network lands on is its inductive bias: shallow convolutional nets come out
near the identity, fully connected nets and deep convolutional nets near the
constant.

The measure is the paper's: for each new input ``z_i``, the Pearson
correlation over pixels (all values of one input, flattened) of the output
``f(z_i)`` with the input ``z_i`` (``identity``) and with the training example
``x0`` (``constant``). The identity gives ``(1, corr(z_i, x0))``, the constant
``(corr(x0, z_i), 1)``; ``baseline`` is ``corr(z_i, x0)`` itself, the value
either correlation takes when the output is the other function.

- :func:`pixel_correlations`: row-wise Pearson correlation of two arrays of the same shape.
- :func:`output_correlations`: the two correlations (and the baseline) from outputs already computed.
- :func:`identity_or_constant`: the same for a torch model, which is run on the inputs here.
- :func:`function_form`: "identity", "constant" or "neither", from the mean correlations.

A pure NumPy computation: no library offers a row-wise Pearson correlation
without forming the full cross-correlation matrix (``np.corrcoef`` of two
stacked arrays is ``(2n, 2n)``), so it is written out here in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fitscope.errors import DataError
from fitscope.train.device import placement_device
from fitscope.train.modes import eval_mode
from fitscope.validation import check_int, check_number, message

#: a net "computes" a function when its outputs correlate at least this much with that function's outputs on average
#: (and more than with the other function's)
FORM_THRESHOLD = 0.8
#: the three verdicts of :func:`function_form`
FORMS = ("identity", "constant", "neither")


@dataclass(frozen=True)
class IdentityCorrelations:
    """Per new input ``z_i`` (``n`` of them), how its output correlates with the input and with the training example.

    Attributes:
        identity: ``corr(f(z_i), z_i)``, shape ``(n,)``; 1 for the identity function.
        constant: ``corr(f(z_i), x0)``, shape ``(n,)``; 1 for the constant function ``x0``.
        baseline: ``corr(z_i, x0)``, shape ``(n,)``: what ``identity`` is for the constant function and
            ``constant`` for the identity.
    A correlation with an output that is constant over its pixels is NaN (it has no direction).
    """

    identity: np.ndarray
    constant: np.ndarray
    baseline: np.ndarray

    @property
    def mean_identity(self) -> float:
        """The mean of :attr:`identity` over the inputs (NaN ones left out)."""
        return _nanmean(self.identity)

    @property
    def mean_constant(self) -> float:
        """The mean of :attr:`constant` over the inputs (NaN ones left out)."""
        return _nanmean(self.constant)

    @property
    def form(self) -> str:
        """:func:`function_form` of the two means."""
        return function_form(self.mean_identity, self.mean_constant)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _as_rows(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(message(name, "a numeric array or tensor", type(value).__name__)) from err
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise DataError(message(name, "an array of n >= 1 rows of one input each, shape (n, ...)",
                                f"shape {arr.shape}"))
    if not np.isfinite(arr).all():
        raise DataError(message(name, "finite values", "NaN or inf"))
    return arr.reshape(len(arr), -1)


def pixel_correlations(a, b) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, over all the values of the row.

    Args:
        a, b: arrays (or tensors) of the same shape ``(n, ...)``; each row is flattened.

    Returns:
        ``(n,)`` float64 correlations in ``[-1, 1]``; NaN for a row with no variance in ``a`` or ``b``.
    """
    x, y = _as_rows(a, "a"), _as_rows(b, "b")
    if x.shape != y.shape:
        raise DataError(message("b", f"the shape of a, {np.shape(a)}", f"shape {np.shape(b)}"))
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    norms = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(1) / norms
    r[norms == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _train_row(train_x, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(train_x, torch.Tensor):
        train_x = train_x.detach().cpu().numpy()
    x0 = np.asarray(train_x, dtype=np.float64)
    if x0.shape == (1, *shape):
        x0 = x0[0]
    if x0.shape != shape:
        raise DataError(message("train_x", f"one input of shape {shape} (or (1, {', '.join(map(str, shape))}))",
                                f"shape {x0.shape}"))
    if not np.isfinite(x0).all():
        raise DataError(message("train_x", "finite values", "NaN or inf"))
    return x0


def output_correlations(outputs, inputs, train_x) -> IdentityCorrelations:
    """How the outputs of new inputs correlate with those inputs and with the one training example.

    Args:
        outputs: ``(n, ...)``, the trained network's output for each new input.
        inputs: ``(n, ...)`` of the same shape, the new inputs ``z_i``.
        train_x: the training example ``x0``, of one input's shape (or with a leading 1).

    Returns:
        :class:`IdentityCorrelations` (``identity``, ``constant``, ``baseline``, each ``(n,)``).
    """
    z = np.asarray(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs, np.float64)
    if z.ndim < 2:
        raise DataError(message("inputs", "an array of n >= 1 inputs, shape (n, ...)", f"shape {z.shape}"))
    x0 = _train_row(train_x, z.shape[1:])
    repeated = np.broadcast_to(x0, z.shape)
    return IdentityCorrelations(identity=pixel_correlations(outputs, z), constant=pixel_correlations(outputs, repeated),
                                baseline=pixel_correlations(z, repeated))


def model_outputs(model: torch.nn.Module, inputs, *, batch_size: int = 256,
                  device: str | torch.device | None = None) -> np.ndarray:
    """``model(inputs)`` in eval mode without gradients, in batches, as a float64 array (the model's mode restored).

    Args:
        model: any ``torch.nn.Module`` mapping ``(B, ...)`` to ``(B, ...)``.
        inputs: ``(n, ...)`` array or tensor.
        batch_size: rows per forward pass.
        device: where to compute (default: the run's device, else the model's).

    Returns:
        The outputs, ``(n, ...)``.
    """
    batch_size = check_int(batch_size, "batch_size")
    z = torch.as_tensor(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs),
                        dtype=torch.float32)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else placement_device()
    with torch.no_grad(), eval_mode(model):
        parts = [model(z[i:i + batch_size].to(device)).detach().cpu().double() for i in range(0, len(z), batch_size)]
    return torch.cat(parts).numpy()


def identity_or_constant(model: torch.nn.Module, train_x, test_x, *, batch_size: int = 256,
                         device: str | torch.device | None = None) -> IdentityCorrelations:
    """Run ``model`` on new inputs and say how close it is to the identity and to the constant ``train_x``.

    Args:
        model: a network trained to reproduce ``train_x`` (any ``torch.nn.Module`` whose output has its
            input's shape).
        train_x: the one training example ``x0``, of one input's shape (or with a leading 1).
        test_x: ``(n, ...)`` new inputs ``z_i``.
        batch_size: rows per forward pass.
        device: where to compute (default: the model's device).

    Returns:
        :class:`IdentityCorrelations`: per input, ``corr(f(z_i), z_i)`` and ``corr(f(z_i), x0)``
        (Pearson over the values of one input) and the baseline ``corr(z_i, x0)``.

    Raises:
        DataError: inputs that are not ``(n, ...)`` numbers, or a model whose output does not have the input's shape.
    """
    z = _as_rows(test_x, "test_x").reshape(np.shape(test_x))
    out = model_outputs(model, z, batch_size=batch_size, device=device)
    if out.shape != z.shape:
        raise DataError(message("model", f"outputs of the input's shape {z.shape}", f"shape {out.shape}"))
    return output_correlations(out, z, train_x)


def function_form(identity: float, constant: float, *, threshold: float = FORM_THRESHOLD) -> str:
    """"identity", "constant" or "neither", from a net's mean correlations with the inputs and with ``x0``.

    A net computes the identity when its outputs correlate with the inputs at
    least ``threshold`` on average and more than with the training example;
    the constant likewise the other way round; otherwise neither (e.g. noise
    on top of a faint copy of either).
    """
    threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
    if not (np.isfinite(identity) and np.isfinite(constant)):
        return "neither"
    if identity >= threshold and identity > constant:
        return "identity"
    if constant >= threshold and constant > identity:
        return "constant"
    return "neither"


__all__ = ["FORMS", "FORM_THRESHOLD", "IdentityCorrelations", "function_form", "identity_or_constant",
           "model_outputs", "output_correlations", "pixel_correlations"]
