"""Learning-rate schedules, one value per epoch (epochs counted from 0)."""

from __future__ import annotations

import math

from fitscope.errors import ConfigError
from fitscope.train.config import TrainConfig
from fitscope.validation import message, shorten


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate used during epoch ``epoch`` (0-based).

    - constant: ``lr``
    - step: ``lr * gamma ** (epoch // step_size)``
    - exponential: ``lr * gamma ** epoch``
    - cosine: ``lr * (1 + cos(pi * epoch / epochs)) / 2`` (``lr`` at epoch 0, never exactly 0)
    """
    lr = float(config.lr)
    if config.schedule == "constant":
        return lr
    if config.schedule == "step":
        return lr * config.gamma ** (epoch // config.step_size)
    if config.schedule == "exponential":
        return lr * config.gamma**epoch
    if config.schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    raise ConfigError(message("schedule", "one of constant, step, exponential, cosine", shorten(config.schedule)))


def lr_schedule(config: TrainConfig) -> list[float]:
    """The learning rate of every epoch, ``[lr_at(config, e) for e in range(config.epochs)]``."""
    return [lr_at(config, e) for e in range(config.epochs)]
