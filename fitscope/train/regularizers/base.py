"""What a regularizer is: a part of the training objective of K models trained at once.

Notation: K models, n training rows, b rows per model in a step, C classes.

A part is a :class:`Regularizer` subclass with a ``name``, a one-line
``summary``, its ``paper`` and its hyperparameters (:class:`Param`: default
and range). It changes training through any of these hooks, each a no-op by
default (the :class:`~fitscope.train.objective.Objective` calls them in this
order every step):

- :meth:`Regularizer.model_options` / :meth:`Regularizer.optimizer_options`:
  before the model is built (dropout) and the optimizer made (weight decay);
- :meth:`Regularizer.attach`: once, after the model is built: check that the
  part applies (a one-line :class:`~fitscope.errors.ConfigError` if not),
  reparameterize weights, allocate per-example and per-model state;
- :meth:`Regularizer.targets`: change the ``(K, b, C)`` soft targets (label
  smoothing, PS-KD); :meth:`Regularizer.inputs`: change the inputs alone
  (augmentation); :meth:`Regularizer.mix`: change both (mixup);
- :meth:`Regularizer.loss`: replace cross-entropy (GCE, SCE; one such part at
  most); :meth:`Regularizer.extra`: add a per-model term computed from the
  logits (ELR); :meth:`Regularizer.penalty`: add a per-model term of the
  weights (orthogonality, polarization);
- :meth:`Regularizer.update`: after the step's first forward pass, with the
  detached logits (ELR's running targets);
- :meth:`Regularizer.step`: wrap the gradient computation (SAM; one such part
  at most);
- :meth:`Regularizer.after_step`: after every optimizer step (projections:
  the polarizer's clamp of the gates to [0, 1], pruned channels kept at 0);
- :meth:`Regularizer.end_epoch`: after each epoch's evaluation pass, with the
  eval-mode logits of every model on every training row (PS-KD);
- :meth:`Regularizer.measures`: per-model numbers reported with the result
  (the orthogonality error, the fraction of channels pruned).

K models at once: every term is a ``(K,)`` vector, one value per model, and
the objective sums them; model ``k``'s parameters then get exactly the
gradient model ``k`` would get alone. A part's random draws come from one
generator per model (:meth:`TrainState.generators`), so they depend only on
that model's seed. Every parameter of an ensemble module has the models on
its first axis in blocks (``(K, ...)`` or ``(K * C, ...)``), so
:func:`per_model` views any of them as ``(K, -1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from fitscope.errors import ConfigError
from fitscope.seeding import derive_seed
from fitscope.validation import message, shorten


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a regularizer: its default and the range it must lie in.

    Attributes:
        default: the value used when none is given (None: decided from the data, said in ``help``).
        low, high: bounds; ``low_open`` / ``high_open`` exclude them.
        integer: whether the value must be a whole number.
        help: one line for ``fitscope regularizers list``.
    """

    default: float | None
    low: float = -math.inf
    high: float = math.inf
    help: str = ""
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def range_text(self) -> str:
        """The range as a person reads it: ``(0, 1]``, ``[0, inf)``, ``an integer in [1, 100]``."""
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open or math.isinf(self.high) else "]"
        text = f"{lo}{_num(self.low)}, {_num(self.high)}{hi}"
        return f"an integer in {text}" if self.integer else text

    def check(self, value: Any, name: str) -> float | int:
        """``value`` as a number in range, else a one-line :class:`ConfigError` naming ``name`` and the range."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(message(name, f"a number in {self.range_text()}", repr(value))) from None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(message(name, f"a number in {self.range_text()}", shorten(value)))
        value = float(value)
        ok = math.isfinite(value) and (value > self.low if self.low_open else value >= self.low) and (
            value < self.high if self.high_open else value <= self.high)
        if self.integer and ok:
            ok = value == int(value)
        if not ok:
            raise ConfigError(message(name, f"a value in {self.range_text()}", _num(value)))
        return int(value) if self.integer else value


def _num(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:g}"


@dataclass
class TrainState:
    """What a part may read while the ensemble trains (the engine fills it; parts read it).

    Attributes:
        model: the ensemble module (``K`` models).
        seeds: the K model seeds.
        n: training rows; ``n_classes``: C; ``epochs``: the epoch budget;
        epoch: the current epoch, 0-based (the engine advances it).
        device: where the models and batches live.
        input_shape: shape of one input.
        labels: the given training labels on the device, ``(n,)`` or ``(K, n)``.
    """

    model: torch.nn.Module
    seeds: Sequence[int]
    n: int
    n_classes: int
    epochs: int
    device: torch.device
    input_shape: tuple[int, ...]
    labels: torch.Tensor
    epoch: int = 0
    _generators: dict[str, list[torch.Generator]] = field(default_factory=dict, repr=False)

    @property
    def k(self) -> int:
        """The number of models."""
        return len(self.seeds)

    def generators(self, tag: str) -> list[torch.Generator]:
        """One CPU generator per model, seeded ``derive_seed(seed_k, tag)`` (made once per tag, then reused)."""
        if tag not in self._generators:
            self._generators[tag] = [torch.Generator().manual_seed(derive_seed(int(s), tag)) for s in self.seeds]
        return self._generators[tag]

    def labels_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The given labels of the ``(K, b)`` row indices ``idx``, ``(K, b)``."""
        return self.labels[idx] if self.labels.dim() == 1 else self.labels.gather(1, idx)


def per_model(param: torch.Tensor, k: int) -> torch.Tensor:
    """View a parameter (or its gradient) of a K-model ensemble module as ``(K, -1)``: one row per model."""
    return param.reshape(k, -1)


class Regularizer:
    """Base class of the parts of a training objective (see the module docstring for the hooks).

    Subclasses set the class attributes and override the hooks they need.
    ``Regularizer(**values)`` checks every hyperparameter against its
    :class:`Param` (unknown names and values out of range: one-line
    :class:`ConfigError`) and stores them in ``self.values`` (defaults filled).

    Class attributes:
        name: the name used on the command line.
        summary: one line for ``fitscope regularizers list``.
        paper: where it comes from.
        params: hyperparameter name -> :class:`Param`.
        hand_written_ok: True when the part leaves the loss and targets alone
            (it only changes inputs, the model or the optimizer), so the
            hand-written MLP step can still be used.
        replaces_loss / wraps_step: the part overrides :meth:`loss` /
            :meth:`step` (at most one part of each in an objective).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    hand_written_ok: ClassVar[bool] = False
    replaces_loss: ClassVar[bool] = False
    wraps_step: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A part that says it replaces the loss or wraps the step must define that hook (checked at import)."""
        super().__init_subclass__(**kwargs)
        for flag, hook in (("replaces_loss", "loss"), ("wraps_step", "step")):
            if getattr(cls, flag) and getattr(cls, hook) is getattr(Regularizer, hook):
                raise TypeError(f"{cls.__name__} sets {flag} but does not define {hook}()")

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise ConfigError(message(f"{self.name}:{unknown[0]}", f"a hyperparameter of {self.name} ({known})",
                                      f"unknown {unknown[0]!r}"))
        self.values: dict[str, Any] = {}
        for key, spec in self.params.items():
            value = values.get(key, spec.default)
            self.values[key] = None if value is None else spec.check(value, f"{self.name}:{key}")

    def __repr__(self) -> str:
        inner = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values.items()
                         if v is not None)
        return f"{self.name}:{inner}" if inner else self.name

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **values}``: how a run records this part (and :func:`make_part` rebuilds it)."""
        return {"name": self.name, **{k: v for k, v in self.values.items() if v is not None}}

    # ---- hooks (no-ops by default)

    def model_options(self) -> dict[str, Any]:
        """Options for building the model (``{"dropout": p}``)."""
        return {}

    def optimizer_options(self) -> dict[str, Any]:
        """Options for the optimizer (``{"weight_decay": w}``)."""
        return {}

    def attach(self, state: TrainState) -> None:
        """Check that the part applies to ``state.model`` and set up its state (once, before training)."""

    def targets(self, targets: torch.Tensor, idx: torch.Tensor, state: TrainState) -> torch.Tensor:
        """New ``(K, b, C)`` soft targets for the rows ``idx`` ``(K, b)`` (one-hot of the given labels at first)."""
        return targets

    def inputs(self, x: torch.Tensor, state: TrainState) -> torch.Tensor:
        """New ``(K, b, *input_shape)`` inputs, the targets unchanged (augmentation)."""
        return x

    def mix(self, x: torch.Tensor, targets: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """New inputs and targets together (mixup)."""
        return x, targets

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, state: TrainState) -> torch.Tensor:
        """The ``(K,)`` per-model mean loss replacing cross-entropy (only parts with ``replaces_loss``, which must
        define it: see :meth:`__init_subclass__`; the objective calls it on no other part)."""
        raise TypeError(f"{type(self).__name__} does not replace the loss (replaces_loss is False)")

    def extra(self, logits: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor,
              state: TrainState) -> torch.Tensor | None:
        """A ``(K,)`` per-model term added to the loss, from the ``(K, b, C)`` logits (None: nothing)."""
        return None

    def penalty(self, state: TrainState) -> torch.Tensor | None:
        """A ``(K,)`` per-model term of the weights added to the loss (None: nothing)."""
        return None

    def update(self, logits: torch.Tensor, idx: torch.Tensor, state: TrainState) -> None:
        """After the step's first forward pass: the detached ``(K, b, C)`` logits of the rows ``idx``."""

    def step(self, gradients: Callable[[], None], state: TrainState) -> None:
        """Fill ``p.grad`` of every parameter; the default calls ``gradients()`` once (SAM calls it twice)."""
        gradients()

    def after_step(self, state: TrainState) -> None:
        """After every optimizer step, outside autograd: project parameters in place (clamp, masks)."""

    def end_epoch(self, train_logits: torch.Tensor, state: TrainState) -> None:
        """After an epoch's evaluation pass: eval-mode logits ``(K, n, C)`` of every model on every training row."""

    def measures(self, state: TrainState) -> dict[str, np.ndarray]:
        """Per-model numbers to report after training: name -> ``(K,)`` array."""
        return {}
