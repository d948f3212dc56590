"""The defenses of the privacy study, each as one training procedure with a common shape.

A defense trains K models, model k on the rows where ``masks[k]`` is True, and
returns every model's logits on *every* training row (members and
non-members alike, what membership inference needs) and its test accuracy.
The procedures wire the trainers of :mod:`fitscope.train` to the mechanisms of
:mod:`fitscope.privacy`; they hold no maths of their own.

Defense names on the command line: ``none``, ``label-dp:EPS`` (LP-1ST,
randomized response with a uniform prior), ``dp-sgd:EPS`` (Opacus),
``instahide:K``, ``pruning:FRACTION`` (magnitude pruning of the last hidden
layer after training) and ``mid:BETA`` (variational information bottleneck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fitscope.errors import ConfigError
from fitscope.seeding import derive_seed

KINDS = ("none", "label-dp", "dp-sgd", "instahide", "pruning", "mid")
_PARAM = {"label-dp": "eps", "dp-sgd": "eps", "instahide": "k", "pruning": "fraction", "mid": "beta"}


@dataclass(frozen=True)
class Defense:
    """One defense setting: a kind and its one parameter (None for ``none``)."""

    kind: str
    param: float | None = None

    @property
    def name(self) -> str:
        """``"none"`` or ``"<kind>:<param>"``, the form :func:`parse_defense` reads."""
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"

    @property
    def label(self) -> str:
        """A human label for plots, e.g. ``"DP-SGD eps=1"``."""
        if self.kind == "none":
            return "no defense"
        pretty = {"label-dp": "label DP", "dp-sgd": "DP-SGD", "instahide": "InstaHide", "pruning": "pruning",
                  "mid": "MID"}[self.kind]
        return f"{pretty} {_PARAM[self.kind]}={self.param:g}"

    @property
    def claimed_eps(self) -> float:
        """The epsilon the defense claims: its parameter for label DP and DP-SGD, inf for the others."""
        return float(self.param) if self.kind in ("label-dp", "dp-sgd") else math.inf


def parse_defense(text: str) -> Defense:
    """Read ``none`` or ``KIND:VALUE`` (e.g. ``dp-sgd:1``, ``instahide:4``) into a :class:`Defense`.

    Raises:
        ConfigError: unknown kind, missing or out-of-range value.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"defense: expected none or KIND:VALUE with KIND in {', '.join(KINDS[1:])}; got {text!r}")
    kind, _, value = text.strip().partition(":")
    if kind == "none" and not value:
        return Defense("none")
    if kind not in KINDS[1:]:
        raise ConfigError(f"defense {text!r}: unknown kind {kind!r}; expected none or one of "
                          f"{', '.join(k + ':' + _PARAM[k].upper() for k in KINDS[1:])}")
    try:
        param = float(value)
    except ValueError:
        raise ConfigError(f"defense {text!r}: expected {kind}:{_PARAM[kind].upper()} with a number; "
                          f"got {value!r}") from None
    ok = {"label-dp": param > 0, "dp-sgd": param > 0, "instahide": param >= 1 and param == int(param),
          "pruning": 0 <= param <= 1, "mid": param >= 0}[kind]
    if not ok or not math.isfinite(param):
        need = {"label-dp": "eps > 0", "dp-sgd": "eps > 0", "instahide": "an integer k >= 1",
                "pruning": "a fraction in [0, 1]", "mid": "beta >= 0"}[kind]
        raise ConfigError(f"defense {text!r}: expected {need}; got {value}")
    return Defense(kind, param)


@dataclass(frozen=True)
class Settings:
    """How every defense trains (shared so that only the defense differs between rows).

    Attributes:
        spec: model spec.
        epochs: epochs of the non-DP trainers (ensemble, plain, InstaHide, MID).
        lr: Adam learning rate of the ensemble trainer (no defense, label DP) and InstaHide.
        batch_size: minibatch size.
        dp_epochs: DP-SGD epochs.
        dp_lr: DP-SGD learning rate.
        delta: DP-SGD delta.
        max_grad_norm: DP-SGD clipping norm.
        n_classes: number of classes.
        input_range: (min, max) of every input value, train and test (InstaHide maps it to [-1, 1]).
    """

    spec: str
    epochs: int
    lr: float
    batch_size: int
    dp_epochs: int
    dp_lr: float
    delta: float
    max_grad_norm: float
    n_classes: int
    input_range: tuple[float, float] = (0.0, 1.0)


@dataclass
class Trained:
    """What :func:`train_defended` returns: logits on every row, test accuracy, and what privacy was spent."""

    logits: np.ndarray  # (K, n, C) float32
    test_acc: np.ndarray  # (K,)
    spent_eps: float  # the largest epsilon any model spent (DP-SGD's accountant), else the claim


def _ensemble(defense: Defense, x, y, masks, seeds, s: Settings, x_test, y_test,
              progress: Callable[[int], None] | None) -> Trained:
    from fitscope.privacy.label_dp import rr_with_prior
    from fitscope.train import TrainConfig, train_ensemble

    labels = y
    if defense.kind == "label-dp":  # LP-1ST: every model draws its own randomized responses
        uniform = np.full((len(y), s.n_classes), 1.0 / s.n_classes)
        labels = np.stack([rr_with_prior(y, uniform, defense.param, seed=derive_seed(seed, "label-dp"))
                           for seed in seeds])
    config = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, optimizer="adam", lr=s.lr)
    k = len(seeds)
    tick = None if progress is None else (lambda info: progress(k * int(info["epoch"])))
    result = train_ensemble(s.spec, x, labels, config=config, seeds=seeds, masks=masks, x_test=x_test,
                            y_test=y_test, n_classes=s.n_classes, progress=tick)
    return Trained(result.train_logits.astype(np.float32), result.test_acc[:, -1], defense.claimed_eps)


def _one_plain(defense: Defense, x, y, seed: int, s: Settings, x_test, y_test,
               progress: Callable[[int], None] | None = None) -> tuple[Callable, float]:
    """Train one model on ``(x, y)`` with a plain-model defense; return ``(predict(x) -> logits, spent eps)``.

    ``progress(epochs done)`` is called after every epoch (InstaHide: as each epoch's encodings are drawn).
    """
    from fitscope.models import build_plain
    from fitscope.train.plain_models import predict_plain, train_plain

    tick = None if progress is None else (lambda info: progress(int(info["epoch"])))
    if defense.kind == "dp-sgd":
        from fitscope.train.dp_sgd import train_dp_sgd

        r = train_dp_sgd(s.spec, x, y, eps=defense.param, delta=s.delta, max_grad_norm=s.max_grad_norm,
                         epochs=s.dp_epochs, batch_size=s.batch_size, lr=s.dp_lr, seed=seed,
                         n_classes=s.n_classes, progress=tick)
        return (lambda rows: predict_plain(r.model, rows)), r.eps
    if defense.kind == "pruning":
        from fitscope.privacy.pruning import prune_layer

        model = build_plain(s.spec, tuple(x.shape[1:]), s.n_classes, seed=seed)
        trained = train_plain(model, x, y, epochs=s.epochs, batch_size=s.batch_size, seed=seed,
                              progress=tick).model
        pruned = prune_layer(trained, model.hidden_layer, defense.param)
        return (lambda rows: predict_plain(pruned, rows)), math.inf
    if defense.kind == "instahide":
        from fitscope.privacy.instahide import predict_instahide, train_instahide

        on_epoch = None if progress is None else (lambda epoch, _encoding: progress(int(epoch)))
        r = train_instahide(s.spec, x, y, k=int(defense.param), seed=seed, x_test=x_test, y_test=y_test,
                            epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, n_classes=s.n_classes,
                            input_range=s.input_range, keep_model=True, on_epoch=on_epoch)
        return (lambda rows: predict_instahide(r.model, rows, input_range=s.input_range)), math.inf
    if defense.kind == "mid":
        from fitscope.privacy.mid import train_mid

        r = train_mid(s.spec, x, y, beta=defense.param, epochs=s.epochs, batch_size=s.batch_size, seed=seed,
                      n_classes=s.n_classes, progress=tick)
        return (lambda rows: predict_plain(r.model, rows)), math.inf  # eval mode: logits from the mean of z
    raise ConfigError(f"defense: {defense.kind!r} is not a plain-model defense")


def defense_epochs(defense: Defense, settings: Settings) -> int:
    """Epochs one model of ``defense`` trains: ``dp_epochs`` for DP-SGD, ``epochs`` for the others."""
    return settings.dp_epochs if defense.kind == "dp-sgd" else settings.epochs


def train_defended(defense: Defense, x: np.ndarray, y: np.ndarray, masks: np.ndarray, settings: Settings,
                   x_test: np.ndarray, y_test: np.ndarray, *, seeds,
                   progress: Callable[[int], None] | None = None) -> Trained:
    """Train ``len(seeds)`` models under ``defense``, model k on the rows of ``masks[k]``.

    Args:
        defense: the defense setting.
        x: ``(n, *input_shape)`` training inputs; y: ``(n,)`` their labels.
        masks: ``(K, n)`` bool training membership of each model.
        seeds: K model seeds.
        settings: shared training settings.
        x_test, y_test: test set for the accuracy column.
        progress: called after every epoch with the model-epochs done so far, out of
            ``K * defense_epochs(defense, settings)`` (the ensemble defenses train their K models
            together, the others one after another).

    Returns:
        :class:`Trained` with ``(K, n, C)`` logits on every training row.
    """
    seeds = [int(s) for s in seeds]
    if defense.kind in ("none", "label-dp"):
        return _ensemble(defense, x, y, masks, seeds, settings, x_test, y_test, progress)
    epochs = defense_epochs(defense, settings)
    logits, accs, spent = [], [], []
    for i, (seed, mask) in enumerate(zip(seeds, masks)):
        tick = None if progress is None else (lambda done, i=i: progress(i * epochs + min(done, epochs)))
        predict, eps = _one_plain(defense, x[mask], y[mask], seed, settings, x_test, y_test, progress=tick)
        logits.append(predict(x))
        accs.append(float((predict(x_test).argmax(1) == y_test).mean()))
        spent.append(eps)
        if progress is not None:
            progress((i + 1) * epochs)
    return Trained(np.stack(logits).astype(np.float32), np.asarray(accs), float(max(spent)))
